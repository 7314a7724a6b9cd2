"""facegeom.train: DDP under torchrun equals one process, bit-identical resume,
checkpoint errors, batch divisibility, the CLI's outputs."""
import json
import os
import subprocess
import sys

import pytest
import torch

from facegeom import train as training
from facegeom.cli import main as cli_main
from facegeom.train import CheckpointError, LandmarkRegressor, LandmarksConfig, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = LandmarksConfig.tiny()


def _config(out, **kw):
    base = dict(steps=4, batch_size=4, seed=0, out=str(out), progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _torchrun(args, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "facegeom.cli", "train", "--tiny", "--quiet", "--out", str(out), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("method", ["landmarks", "tests.train_methods:Alternating"])
def test_torchrun_two_processes_match_one(tmp_path, method):
    # 2 ranks x 2 accumulation micro-batches of 2 == one process, one batch of 8.
    # BatchNorm policy: these models have none (see facegeom.train).
    steps = "3"
    _torchrun(["--method", method, "--steps", steps, "--batch-size", "8", "--accumulation", "2", "--seed", "1"],
              tmp_path / "ddp")
    one = training.train(method, _config(tmp_path / "one", steps=3, batch_size=8, seed=1),
                         training.get_method(method).Config.tiny())
    ddp = torch.load(tmp_path / "ddp" / "final.pt")
    assert _max_diff(ddp, one.model.state_dict()) <= 1e-5
    lines = [json.loads(line) for line in open(tmp_path / "ddp" / "metrics.jsonl")]
    assert [r["step"] for r in lines] == [1, 2, 3]
    ref = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    key = next(k for k in ref[0] if k.startswith("loss/"))
    assert abs(lines[-1][key] - ref[-1][key]) < 1e-5


def test_resume_is_bit_identical(tmp_path):
    kw = dict(steps=6, batch_size=4, accumulation=2, schedule="step", step_size=2, gamma=0.5, warmup_steps=2,
              checkpoint_every=3)
    full = training.train("landmarks", _config(tmp_path / "full", **kw), TINY)
    assert (tmp_path / "full" / "step_00000003.pt").exists()
    resumed = training.train("landmarks", _config(tmp_path / "resumed", resume=str(tmp_path / "full" /
                                                                                  "step_00000003.pt"), **kw), TINY)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(line) for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert [r["step"] for r in lines] == [4, 5, 6]
    assert lines[-1]["lr/adam"] == pytest.approx(1e-3 * 0.25)  # warm-up done, decayed twice
    # Manual optimisation: accumulation of 2 == one batch (both losses taken before either step).
    alt = training.get_method("tests.train_methods:Alternating")
    one = training.train(alt, _config(tmp_path / "m1", steps=2, batch_size=4), alt.Config.tiny())
    two = training.train(alt, _config(tmp_path / "m2", steps=2, batch_size=4, accumulation=2), alt.Config.tiny())
    assert _max_diff(one.model.state_dict(), two.model.state_dict()) <= 1e-5


def test_checkpoint_errors(tmp_path):
    out = tmp_path / "run"
    training.train("landmarks", _config(out, steps=2, checkpoint_every=2), TINY)
    ckpt = out / "step_00000002.pt"
    # Truncated file: named in the error.
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*corrupt or truncated"):
        training.train("landmarks", _config(tmp_path / "r1", steps=3, resume=str(bad)), TINY)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        training.load_model_weights(LandmarkRegressor(4), str(tmp_path / "nope.pt"))
    # Mismatched model: missing, unexpected and mis-shaped keys are listed.
    state = torch.load(out / "final.pt")
    state["extra.weight"] = state.pop("head.bias")
    renamed = tmp_path / "renamed.pt"
    torch.save(state, renamed)
    with pytest.raises(CheckpointError, match=r"renamed.pt.*missing keys: head.bias.*unexpected keys: extra.weight"):
        training.load_model_weights(LandmarkRegressor(4), str(renamed))
    with pytest.raises(CheckpointError, match=r"step_00000002.pt.*shape mismatches: features.0.weight"):
        training.train("landmarks", _config(tmp_path / "r2", steps=3, resume=str(ckpt)),
                       LandmarksConfig(image_size=32, width=8, num_samples=64, val_samples=8))
    training.load_model_weights(LandmarkRegressor(4), str(ckpt))  # a checkpoint loads as weights too


def test_atomic_write_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    training._atomic_save({"a": torch.ones(3)}, str(path))

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        training._atomic_save({"a": torch.zeros(3)}, str(path))
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["a"], torch.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_batch_size_divisibility_and_config_errors(tmp_path):
    with pytest.raises(ValueError, match="batch-size 6.*divisible by world size 1 x accumulation steps 4"):
        training.train("landmarks", _config(tmp_path, batch_size=6, accumulation=4), TINY)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="cosine")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        training.get_method("nope")
    if not getattr(__import__("facegeom").ops, "SUPPORTS_AUTOCAST", False):
        with pytest.raises(RuntimeError, match="autocast policy"):
            training.train("landmarks", _config(tmp_path, amp=True), TINY)


def test_lr_lambda():
    f = training.lr_lambda(TrainConfig(schedule="step", step_size=3, gamma=0.1, warmup_steps=2))
    assert [round(f(s), 6) for s in range(7)] == [0.5, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01]
    g = training.lr_lambda(TrainConfig(schedule="exponential", gamma=0.5))
    assert [g(s) for s in range(3)] == [1.0, 0.5, 0.25]


def test_cli_writes_final_and_metrics(tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["train", "--method", "landmarks", "--data", "synthetic", "--steps", "2", "--batch-size", "2",
                     "--seed", "3", "--out", str(out), "--tiny", "--val-every", "2", "--set", "lr=0.01"])
    assert code == 0
    state = torch.load(out / "final.pt")
    LandmarkRegressor(4).load_state_dict(state)
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert records[0]["step"] == 1 and records[0]["lr/adam"] == 0.01 and "loss/total" in records[0]
    assert records[-1]["best"] is True and (out / "best.pt").exists()
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    with pytest.raises(ValueError, match="--set"):
        cli_main(["train", "--method", "landmarks", "--out", str(out), "--set", "nope=1"])


def test_stream_sampler_ranks_see_the_one_process_batches():
    # Step s of the global batch B = world x accumulation x micro covers the one-process
    # stream's positions [s B, (s + 1) B), across epoch boundaries, and resumes mid-stream.
    data = list(range(12))
    world, accumulation, micro, steps = 2, 3, 1, 7
    batch = world * accumulation * micro

    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    one = sum(take(training._StreamSampler(data, 1, 0, 5, batch, 0), steps), [])
    ranks = [take(training._StreamSampler(data, world, r, 5, micro, 0), steps * accumulation) for r in range(world)]
    for s in range(steps):
        seen = sorted(i for r in ranks for b in r[s * accumulation:(s + 1) * accumulation] for i in b)
        assert seen == sorted(one[s * batch:(s + 1) * batch])
    assert sorted(one[:12]) == data and one[:12] != one[12:24]  # reshuffled per epoch
    later = take(training._StreamSampler(data, world, 1, 5, micro, 4 * accumulation * micro), accumulation)
    assert later == ranks[1][4 * accumulation:5 * accumulation]
