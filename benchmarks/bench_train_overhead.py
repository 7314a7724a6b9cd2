"""Overhead of facegeom.train over a bare PyTorch loop on the same model and data.

    python -m benchmarks.bench_train_overhead [--steps 60] [--batch-size 16] [--image-size 64] [--threads 1]

Both loops train the built-in ``landmarks`` method's regressor with Adam on the
same pre-rendered synthetic batches (rendering is excluded from both, so only the
loop machinery differs: sampler, micro-batch plumbing, step re-seeding,
scheduler, metrics line per step, no checkpoints). The first steps are warm-up.
Prints milliseconds per step of each and the ratios (steady state, from the
loop's own metrics.jsonl timestamps; and including set-up) (target: facegeom.train <= 1.05 x
the bare loop). Not a timed test: numbers depend on the machine.
"""
import argparse
import json
import os
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import Dataset

from facegeom import train as training
from facegeom.data.synthetic import SyntheticFaces


class _Cached(Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


class _Timed(training.LandmarksMethod):
    samples = None

    def dataset(self, config, data, split, seed):
        return _Cached(self.samples)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = SyntheticFaces(num_samples=args.batch_size * 4, image_size=args.image_size, mask=None)
    samples = [{"image": s["image"], "landmarks": s["landmarks"]} for s in (ds[i] for i in range(len(ds)))]
    config = training.LandmarksConfig(image_size=args.image_size, width=args.width)

    def bare():
        torch.manual_seed(0)
        model = training.LandmarkRegressor(args.width)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        loader = torch.utils.data.DataLoader(_Cached(samples), batch_size=args.batch_size, shuffle=True, drop_last=True)
        it, t0 = iter(loader), None
        for step in range(args.steps + args.warmup):
            if step == args.warmup:
                t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            loss = training.LandmarksMethod._loss(model, batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            float(loss.detach())  # a bare loop logs its loss too
        return (time.perf_counter() - t0) / args.steps

    def ours():
        """(steady-state seconds per step from metrics.jsonl, seconds per step including set-up)."""
        _Timed.samples = samples
        total = args.steps + args.warmup
        with tempfile.TemporaryDirectory() as out:
            cfg = training.TrainConfig(steps=total, batch_size=args.batch_size, out=out, progress=False)
            t0 = time.perf_counter()
            training.train(_Timed, cfg, config)
            overall = (time.perf_counter() - t0) / total
            seconds = [json.loads(line)["seconds"] for line in open(os.path.join(out, "metrics.jsonl"))]
        return (seconds[-1] - seconds[args.warmup - 1]) / args.steps, overall

    bares, steady, overall = [], [], []
    for _ in range(args.repeats):  # interleaved, best of N: robust to a busy machine
        bares.append(bare())
        a, b = ours()
        steady.append(a)
        overall.append(b)
    b, t, o = min(bares), min(steady), min(overall)
    print(f"bare PyTorch loop: {1000 * b:.2f} ms/step; facegeom.train: {1000 * t:.2f} ms/step in steady state "
          f"(ratio {t / b:.3f}, target <= 1.05), {1000 * o:.2f} ms/step including its set-up and final.pt "
          f"over {args.steps + args.warmup} steps (ratio {o / b:.3f})")

if __name__ == "__main__":
    main()
