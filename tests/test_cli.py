"""The CLI: info reports the build, bench prints its table, demo converges."""
import json

from facegeom import cli, demo


def test_info_reports_build(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("facegeom", "torch", "back ends", "cpu threads", "cuda device"):
        assert key in out


def test_bench_prints_kernel_and_reference(capsys, monkeypatch):
    from facegeom import bench

    real_table = bench.lbs_table
    monkeypatch.setattr(bench, "lbs_table", lambda batches, seconds, device: real_table((1,), 0.01, device))
    assert cli.main(["bench", "--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "forward+backward" in out and "speed-up" in out


def test_demo_converges_and_writes_report(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["converged"] is True
    assert report["final_vertex_rmse_m"] < demo.CONVERGED_VERTEX_RMSE
    assert report["max_coefficient_error"] < demo.CONVERGED_COEFFICIENT_ERROR
    assert report["max_pose_error_rad"] < demo.CONVERGED_POSE_ERROR
    assert (tmp_path / "loss.png").stat().st_size > 0
