"""Packaging promises that can be checked without building: the build record and the
torch-mismatch warning, `python -m facegeom`, --version, one --quiet, clean help text,
the sdist manifest. (scripts/check-sdist.sh builds and installs the sdist in CI.)"""
import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import pytest
import torch

import facegeom
from facegeom import _native, cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_build_info_reader_tolerates_missing_and_garbage(tmp_path):
    assert _native.read_build_info(str(tmp_path / "absent.json")) == {}
    (tmp_path / "bad.json").write_text("{not json")
    assert _native.read_build_info(str(tmp_path / "bad.json")) == {}
    (tmp_path / "list.json").write_text("[1, 2]")
    assert _native.read_build_info(str(tmp_path / "list.json")) == {}
    (tmp_path / "ok.json").write_text(json.dumps({"torch": "2.13.0+cpu"}))
    assert _native.read_build_info(str(tmp_path / "ok.json")) == {"torch": "2.13.0+cpu"}


def test_torch_mismatch_message():
    assert _native.torch_mismatch({}, "2.13.0") is None
    assert _native.torch_mismatch({"torch": "2.13.0+cpu"}, "2.13.0+cpu") is None
    message = _native.torch_mismatch({"torch": "2.12.0+cpu"}, "2.13.0+cpu")
    assert "built against torch 2.12.0+cpu" in message and "torch 2.13.0+cpu is running" in message
    assert "pip install --no-build-isolation" in message
    # the local tag is part of the build: a CPU build under a CUDA torch is a mismatch
    assert _native.torch_mismatch({"torch": "2.13.0+cpu"}, "2.13.0+cu126") is not None


def _import_native_copy(tmp_path, build_info):
    """Imports a copy of facegeom/_native.py whose _build.json says ``build_info``."""
    copy = tmp_path / "native_copy.py"
    copy.write_text((ROOT / "facegeom" / "_native.py").read_text())
    (tmp_path / "_build.json").write_text(json.dumps(build_info))
    spec = importlib.util.spec_from_file_location("facegeom_native_copy", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_warns_when_running_torch_differs(tmp_path):
    with pytest.warns(RuntimeWarning, match=r"built against torch 1\.0\.0 but torch .* is running"):
        module = _import_native_copy(tmp_path, {"torch": "1.0.0"})
    assert module.BUILD == {"torch": "1.0.0"} and "1.0.0" in module.TORCH_MISMATCH


def test_import_is_silent_when_torch_matches(tmp_path, recwarn):
    module = _import_native_copy(tmp_path, {"torch": torch.__version__})
    assert module.TORCH_MISMATCH is None
    assert not [w for w in recwarn if "built against torch" in str(w.message)]


def test_built_library_records_its_torch():
    """A library built by setup.py (bootstrap, pip) carries _build.json with this torch."""
    if not _native.BUILD:
        pytest.skip("facegeom._C was not built by setup.py here (no facegeom/_build.json)")
    assert _native.BUILD["torch"] == torch.__version__
    assert _native.BUILD["with_cuda"] == _native.WITH_CUDA


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "facegeom", "--version"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"facegeom {facegeom.__version__}"


def _helps():
    yield cli.main, ["--help"]
    for command in ("info", "bench", "demo", "now-eval"):
        yield cli.main, [command, "--help"]


@pytest.mark.parametrize("argv", [argv for _, argv in _helps()], ids=lambda argv: " ".join(argv))
def test_help_is_plain_text(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: facegeom")
    assert "``" not in text and ":func:" not in text and ":class:" not in text
    if argv[0] in ("bench", "demo", "now-eval"):
        assert "--quiet" in text  # one flag for progress bars
    assert "--no-progress" not in text  # the deprecated alias is hidden


@pytest.mark.parametrize("flag", ["--quiet", "--no-progress"])
def test_now_eval_quiet_and_its_deprecated_alias(monkeypatch, flag):
    from facegeom.eval import now_cli

    seen = []
    monkeypatch.setattr(now_cli, "run", lambda args: seen.append(args.quiet) or 0)
    assert cli.main(["now-eval", "--predictions", "p", "--dataset", "d", flag]) == 0
    assert cli.main(["now-eval", "--predictions", "p", "--dataset", "d"]) == 0
    assert seen == [True, False]


@pytest.fixture
def fast_bench(monkeypatch):
    """bench with a stand-in table: the CLI's loop, bar and printing, not the timings."""
    from facegeom import bench

    def tables(ops, quick=False):
        return [(f"{op} family, case", lambda seconds, device, op=op: [op]) for op in ops]

    monkeypatch.setattr(bench, "bench_tables", tables)
    monkeypatch.setattr(bench, "format_table", lambda rows: f"table of {rows[0]}")
    monkeypatch.setattr(_native, "AVAILABLE", True)


def test_bench_progress_bar_on_stderr_tables_on_stdout(capsys, fast_bench):
    assert cli.main(["bench", "--op", "lbs", "--op", "shading"]) == 0
    captured = capsys.readouterr()
    assert "table of lbs" in captured.out and "table of shading" in captured.out
    assert captured.out.index("table of lbs") < captured.out.index("table of shading")
    assert "facegeom bench" not in captured.out
    assert re.search(r"facegeom bench: .*\d/2 .*shading family, cpu", captured.err)


def test_bench_quiet_has_no_bar(capsys, fast_bench):
    assert cli.main(["bench", "--op", "lbs", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "table of lbs" in captured.out and "facegeom bench" not in captured.err


def test_manifest_ships_what_the_build_needs():
    """setup.py lists only .cpp/.cu sources: MANIFEST.in must carry every header."""
    manifest = (ROOT / "MANIFEST.in").read_text()
    include = re.search(r"^recursive-include csrc (.*)$", manifest, re.M).group(1).split()
    suffixes = {path.suffix for path in (ROOT / "csrc").rglob("*") if path.is_file()}
    assert suffixes <= {pattern.lstrip("*") for pattern in include}, suffixes
    for name in ("LICENSE", "facegeom/py.typed"):
        assert (ROOT / name).is_file() and name in manifest
