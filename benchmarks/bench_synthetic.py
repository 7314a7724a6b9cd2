"""Synthetic training samples per second (facegeom.data.synthetic.SyntheticFaces).

    python -m benchmarks.bench_synthetic [--size 224] [--samples 20] [--threads 1] [--workers 0]

Prints samples/s for rendering ``ds[i]`` (head decode, 224 x 224 render with
antialiasing, landmarks, alpha mask) in one process, and through a DataLoader
with ``--workers`` worker processes. Not a timed test: numbers depend on the machine.
"""
import argparse
import time

import torch
from torch.utils.data import DataLoader

from facegeom.data.synthetic import SyntheticFaces


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = SyntheticFaces(num_samples=args.samples + 1, image_size=args.size)
    ds[args.samples]  # build the head and renderer once (not timed)
    start = time.perf_counter()
    for i in range(args.samples):
        ds[i]
    seconds = time.perf_counter() - start
    print(f"SyntheticFaces {args.size}x{args.size}, {args.threads} thread(s): "
          f"{args.samples / seconds:.2f} samples/s ({1000 * seconds / args.samples:.1f} ms/sample)")
    if args.workers:
        loader = DataLoader(ds, batch_size=4, num_workers=args.workers)
        start = time.perf_counter()
        n = sum(len(b["image"]) for b in loader)
        seconds = time.perf_counter() - start
        print(f"DataLoader, {args.workers} workers (incl. start-up): {n / seconds:.2f} samples/s")


if __name__ == "__main__":
    main()
