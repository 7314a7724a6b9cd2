"""Smoke trainings of the specular-albedo method and 2DASL on synthetic data (issue 15):
does every loss term fall, and are held-out synthetic parameters recovered better than the
mean? Runs ``facegeom.train`` with the method's tiny configuration on one CPU thread and
prints (and writes to ``--out``/summary.json) the mean of each training loss term over the
first and the last ``--window`` logged steps, and the last validation.

    python benchmarks/converge_specular_tdasl.py --method specular --steps 600 --out /tmp/spec
    python benchmarks/converge_specular_tdasl.py --method tdasl --steps 300 --out /tmp/tdasl

Figures measured with it are in docs/specular.md (both pipelines' page).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("specular", "tdasl"), required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--window", type=int, default=50, help="logged steps averaged at the start and the end")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the method's tiny Config (as facegeom train --set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm per optimiser (0: none)")
    parser.add_argument("--out", default="converge_out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from facegeom import train
    from facegeom.cli import _method_config

    method = train.get_method(args.method)
    config = _method_config(method, True, args.set)
    start = time.time()
    train.train(args.method, train.TrainConfig(steps=args.steps, batch_size=args.batch_size, out=args.out,
                                               log_every=1, val_every=args.steps, seed=args.seed, progress=False,
                                               device="cpu", grad_clip=args.grad_clip), config, "synthetic")
    records = [json.loads(line) for line in open(os.path.join(args.out, "metrics.jsonl"))]
    steps = [r for r in records if any(k.startswith("loss/") for k in r)]
    terms = sorted(k for k in steps[0] if k.startswith("loss/"))
    window = min(args.window, max(1, len(steps) // 2))
    summary = {"method": args.method, "steps": args.steps, "batch_size": args.batch_size, "settings": args.set, "grad_clip": args.grad_clip,
               "seconds": round(time.time() - start, 1),
               "first": {k: float(np.mean([r[k] for r in steps[:window]])) for k in terms},
               "last": {k: float(np.mean([r[k] for r in steps[-window:]])) for k in terms},
               "validation": [r for r in records if any(k.startswith("val/") for k in r)][-1]}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
