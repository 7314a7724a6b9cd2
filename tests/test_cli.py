"""The CLI: info reports the build, bench prints its table, demo converges."""
import json

import pytest
import torch

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
