"""The GPU check of issue 20 cannot run here; its benchmark script and summary run on the CPU
(``--dry-run``, tiny cases) so that they cannot rot while no GPU is at hand."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_side_by_side", ROOT / "benchmarks" / "gpu_side_by_side.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_side_by_side_dry_run_writes_every_section(tmp_path):
    script = load_script()
    out, md = tmp_path / "rows.json", tmp_path / "rows.md"
    assert script.main(["--dry-run", "--out", str(out), "--markdown", str(md), "--commit", "abc"]) == 0
    result = json.loads(out.read_text())
    assert result["header"]["commit"] == "abc"
    rows = result["rows"]
    assert not [r for r in rows if r["op"] == "error"]
    ours = {r["op"] for r in rows if r["impl"] == "facegeom" and r["timing"]["min_ms"] > 0}
    assert ours == {"rasterize+interpolate", "point_to_surface", "lbs", "shading", "texture"}
    peers = {r["impl"] for r in rows if r["impl"] != "facegeom"}
    assert {"nvdiffrast", "warp", "smplx", "reference"} <= peers
    # A peer without a timing always says why.
    assert all(r["note"] for r in rows if r["timing"] is None)
    assert all("HBM floor" in r["note"] for r in rows if r["op"] == "lbs" and r["impl"] == "facegeom")
    assert "| lbs | B=1 | facegeom |" in md.read_text()


def test_side_by_side_refuses_to_run_without_a_gpu_unless_dry(capsys):
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        load_script().main([])
    assert "no CUDA device" in capsys.readouterr().err
