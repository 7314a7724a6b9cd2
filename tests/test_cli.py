"""The CLI: info reports the build, bench prints its table, demo converges."""
import json
import math
import re

import pytest
import torch

from facegeom import cli, demo
from tests.conftest import cuda, requires_native


def test_info_reports_build(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("facegeom", "torch", "back ends", "cpu threads", "cuda device"):
        assert key in out


def _table_rows(out):
    """The data rows of every table printed by ``facegeom bench``, split on
    whitespace (the case label's own spaces are joined back: it ends in a
    ``v/..f`` token or a resolution)."""
    rows = []
    for line in out.splitlines():
        if line.startswith(("case ", "-", "(", "\n")) or not line.strip() or "float32" in line:
            continue
        rows.append(line)
    return rows


def _figures(row):
    """(kernel min, kernel median, reference min, reference median, speed-up)
    of one printed row; reference figures and speed-up are None when skipped."""
    match = re.search(r"\s(\d+\.\d+)/(\d+\.\d+)\s+(?:(\d+\.\d+)/(\d+\.\d+)\s+(\d+\.\d+)x|-\s+-)", row)
    assert match, row
    return [None if g is None else float(g) for g in match.groups()]


@pytest.fixture
def restore_threads():
    """--threads sets torch's process-wide thread count: give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@requires_native
@pytest.mark.parametrize("op, modes, reference_skipped", [
    ("lbs", {"forward", "forward+backward"}, set()),
    ("rasterize", {"forward", "forward+backward"}, set()),
    ("antialias", {"topology (once per mesh)", "forward", "forward+backward"}, set()),
    ("shading", {"forward", "forward+backward"}, set()),
    ("point_to_surface", {"BVH build", "forward", "forward+backward"}, {"BVH build"}),
])
def test_bench_prints_one_table_per_op(capsys, restore_threads, op, modes, reference_skipped):
    assert cli.main(["bench", "--op", op, "--seconds", "0.05", "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 cpu threads" in out and "speed-up" in out
    rows = _table_rows(out)
    assert {mode for mode in modes if any(f" {mode} " in row for row in rows)} == modes
    for row in rows:
        kernel_min, kernel_median, ref_min, ref_median, speedup = _figures(row)
        assert 0 < kernel_min <= kernel_median
        skipped = any(f" {mode} " in row for mode in reference_skipped)
        if skipped:
            assert ref_min is None and "reference n/a" in row
        else:
            assert 0 < ref_min <= ref_median
            # speed-up = reference / kernel, up to the printed figures' rounding (0.0005 ms, 0.005x)
            low, high = (ref_min - 5e-4) / (kernel_min + 5e-4), (ref_min + 5e-4) / (kernel_min - 5e-4)
            assert low - 5e-3 <= speedup <= high + 5e-3
        if "forward" in row and op != "lbs":
            assert float(re.search(r"(\S+) M(pixel|vertex|query)/s", row).group(1)) > 0


@cuda
@pytest.mark.parametrize("op", ["lbs", "rasterize", "antialias", "shading", "point_to_surface"])
def test_bench_cuda_rows(capsys, op):
    assert cli.main(["bench", "--op", op, "--seconds", "0.05", "--quick", "--cuda"]) == 0
    out = capsys.readouterr().out
    assert "float32, cpu," in out and "float32, cuda," in out
    rows = _table_rows(out)
    assert len(rows) % 2 == 0 and rows
    for row in rows:
        kernel_min, kernel_median, *_ = _figures(row)
        assert 0 < kernel_min <= kernel_median


def test_bench_tables_rejects_unknown_family():
    from facegeom import bench

    with pytest.raises(ValueError, match="unknown op families"):
        bench.bench_tables(["lbs", "raster"])


@requires_native
def test_bench_skips_unaffordable_reference(monkeypatch, capsys):
    """Above the brute-force budget the reference is not run, and the row says so."""
    from facegeom import bench

    monkeypatch.setattr(bench, "BRUTE_FORCE_BUDGET", 100)
    assert cli.main(["bench", "--op", "rasterize", "--op", "point_to_surface", "--seconds", "0.01", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "rasterize + interpolate" in out and "point_to_surface" in out
    rows = [row for row in _table_rows(out) if " forward" in row]
    assert len(rows) == 4
    for row in rows:
        assert _figures(row)[2] is None and "reference skipped (brute force" in row


@requires_native
def test_bench_skips_slow_reference(monkeypatch, capsys):
    """A reference whose single call exceeds the time budget is run once, not
    repeated, and the costlier modes after it are not run at all."""
    from facegeom import bench

    monkeypatch.setattr(bench, "REFERENCE_BUDGET_S", 0.0)
    assert cli.main(["bench", "--op", "antialias", "--seconds", "0.01", "--quick"]) == 0
    rows = _table_rows(capsys.readouterr().out)
    assert len(rows) == 3
    for row, over in zip(rows, ("topology", "forward", "forward")):
        assert _figures(row)[2] is None and f"({over}: one call took " in row and "s, over the 0 s budget)" in row


def test_bench_rejects_bad_options(capsys):
    for argv in (["bench", "--op", "nope"], ["bench", "--threads", "0"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
    assert "--threads" in capsys.readouterr().err


def test_bench_without_kernels_says_so(monkeypatch, capsys):
    from facegeom import _native as native

    monkeypatch.setattr(native, "AVAILABLE", False)
    assert cli.main(["bench", "--op", "shading"]) == 1
    assert "no kernel to time" in capsys.readouterr().err


def test_head_mesh_is_closed_with_target_size():
    from facegeom import testing as bench

    for target, vertices_expected in ((bench.FLAME_FACES, 4990), (bench.BFM_FACES, 35422)):
        vertices, faces = bench.head_mesh(target)
        assert vertices.shape == (vertices_expected, 3) and abs(faces.shape[0] - target) / target < 0.001
        edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        directed = edges[:, 0] * len(vertices) + edges[:, 1]
        reverse = edges[:, 1] * len(vertices) + edges[:, 0]
        # closed and consistently oriented: each directed edge once, its reverse present
        assert directed.unique().numel() == directed.numel()
        assert torch.isin(reverse, directed).all()
        corners = vertices.double()[faces]  # outward winding: positive signed volume, near the ellipsoid's
        volume = (corners[:, 0] * torch.linalg.cross(corners[:, 1], corners[:, 2])).sum() / 6
        assert volume == pytest.approx(4 / 3 * math.pi * 0.08 * 0.1 * 0.09, rel=0.05)
    ndc = bench.clip_space(vertices, batch=3)
    ndc = ndc[..., :3] / ndc[..., 3:]
    assert ndc.abs().max() < 1 and ndc[..., :2].abs().max() > 0.6  # in view and filling it
    points = bench.near_surface_queries(vertices, faces, 1000)
    assert points.shape == (1000, 3) and (points.norm(dim=1) - vertices.norm(dim=1).mean()).abs().max() < 0.05


@pytest.mark.parametrize("converged", [True, False])
def test_demo_forwards_arguments_and_exit_status(monkeypatch, capsys, converged):
    """The CLI passes its flags to demo.run, prints the report and exits 0 only
    when the fit converged (tests/test_demo.py runs a real fit)."""
    calls = []

    def fake_run(**kwargs):
        calls.append(kwargs)
        return {"converged": converged}

    monkeypatch.setattr(demo, "run", fake_run)
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    argv = ["demo", "--out", "x", "--iterations", "7", "--seed", "3", "--image-size", "64", "--quiet",
            "--flame", "m.pkl", "--threads", "1"]
    assert cli.main(argv) == (0 if converged else 1)
    assert threads == [1]
    assert calls == [dict(out_dir="x", iterations=7, seed=3, flame="m.pkl", bfm=None, progress=False,
                          image_size=64)]
    assert json.loads(capsys.readouterr().out) == {"converged": converged}


def test_demo_rejects_two_models():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--flame", "a.pkl", "--bfm", "b.mat"])
