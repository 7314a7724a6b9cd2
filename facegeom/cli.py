"""Command line: ``facegeom info | bench | demo | now-eval``."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys


def cmd_info(args) -> int:
    import torch

    import facegeom
    from facegeom import _native

    lines = {
        "facegeom": facegeom.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "compiled kernels (facegeom._C)": "yes" if _native.AVAILABLE else f"no ({_native.IMPORT_ERROR})",
        "back ends": ", ".join(["cpu"] + (["cuda"] if _native.WITH_CUDA else [])) if _native.AVAILABLE
        else "reference (pure PyTorch) only",
        "openmp": "yes" if _native.WITH_OPENMP else "no",
        "cpu threads": str(torch.get_num_threads()),
        "cuda device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    width = max(map(len, lines))
    for key, value in lines.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_bench(args) -> int:
    from facegeom import bench

    devices = ["cpu"] + (["cuda"] if args.cuda else [])
    for device in devices:
        batches = (1, 64, 1024) if device == "cuda" else (1, 64)
        print(f"\nlbs, FLAME-shaped (V=5023, K=400, J=5), float32, {device}")
        print(bench.format_table(bench.lbs_table(batches, seconds=args.seconds, device=device)))
    return 0


def cmd_demo(args) -> int:
    from facegeom import demo

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = demo.run(out_dir=args.out, iterations=args.iterations, seed=args.seed, flame=args.flame, bfm=args.bfm,
                      progress=not args.quiet, image_size=args.image_size)
    print(json.dumps(report, indent=2))
    return 0 if report["converged"] else 1


def cmd_now_eval(args) -> int:
    from facegeom.eval import now_cli

    return now_cli.run(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="facegeom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="build information: version, torch, back ends, threads, CUDA device")
    bench_parser = sub.add_parser("bench", help="kernel vs reference timings of the ops that exist")
    bench_parser.add_argument("--seconds", type=float, default=1.0, help="time spent per measurement")
    bench_parser.add_argument("--cuda", action="store_true", help="also time on the CUDA device")
    demo_parser = sub.add_parser("demo", help="analysis-by-synthesis: recover a head's shape, expression, pose "
                                 "and light from a rendered image and its landmarks")
    demo_parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo_parser.add_argument("--iterations", type=int, default=300, help="total Adam iterations (default: 300)")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument("--image-size", type=int, default=224, help="target image side (default: 224)")
    demo_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    demo_parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's); 1 is "
                             "much faster on a busy machine, where parallel regions wait for descheduled threads")
    model_group = demo_parser.add_mutually_exclusive_group()
    model_group.add_argument("--flame", metavar="PATH", help="fit FLAME's generic_model.pkl (with DECA's "
                             "landmark_embedding.npy beside it) instead of the synthetic head")
    model_group.add_argument("--bfm", metavar="PATH", help="fit Deep3DFaceRecon's BFM_model_front.mat instead "
                             "of the synthetic head")
    now_parser = sub.add_parser("now-eval", help="NoW benchmark (original or metrical) over a predictions folder")
    from facegeom.eval.now_cli import add_arguments as add_now_eval_arguments

    add_now_eval_arguments(now_parser)
    args = parser.parse_args(argv)
    if args.command == "bench" and args.cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error("--cuda: no CUDA device is available")
    handlers = {"info": cmd_info, "bench": cmd_bench, "demo": cmd_demo, "now-eval": cmd_now_eval}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
