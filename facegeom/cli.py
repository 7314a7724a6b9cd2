"""Command line: ``facegeom info | bench | demo | now-eval | train | reconstruct | track`` (also ``python -m facegeom``)."""
from __future__ import annotations

import argparse
import json
import platform
import sys

# facegeom.bench.OPS's keys, here so that --help does not import torch.
OPS_BENCHED = ("lbs", "rasterize", "antialias", "shading", "point_to_surface")

DESCRIPTION = ("Differentiable rendering and geometry kernels for 3D face reconstruction. "
               "Run 'facegeom COMMAND --help' for a command's options.")


def _version() -> str:
    """facegeom's version without importing torch (``facegeom/__init__.py`` imports it)."""
    import os
    import re

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__init__.py")
    with open(path) as f:
        match = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    return match.group(1) if match else "unknown"


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    """The one flag that turns progress bars off, in every command that has one."""
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


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
    import torch

    from facegeom import _native, bench

    if not _native.AVAILABLE:
        print(f"facegeom._C is not built ({_native.IMPORT_ERROR}): the ops run their pure-PyTorch "
              "references, there is no kernel to time", file=sys.stderr)
        return 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from tqdm import tqdm

    tables = bench.bench_tables(args.op or list(bench.OPS), quick=args.quick)
    runs = [(device, title, table) for device in ["cpu"] + (["cuda"] if args.cuda else [])
            for title, table in tables]
    # The bar goes to stderr, the tables to stdout: `facegeom bench > tables.txt` stays clean.
    bar = tqdm(runs, desc="facegeom bench", unit="table", disable=args.quiet, file=sys.stderr, leave=False)
    for device, title, table in bar:
        bar.set_postfix_str(f"{title.split(',')[0]}, {device}")
        rows = table(seconds=args.seconds, device=device)
        bar.write(f"\n{title}, float32, {device}, {torch.get_num_threads()} cpu threads", file=sys.stdout)
        bar.write(bench.format_table(rows), file=sys.stdout)
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


def _method_config(method, tiny: bool, overrides):
    """The method's Config (``tiny()`` with --tiny) with ``--set key=value`` overrides,
    each value parsed as the field's current type."""
    import dataclasses
    import re

    config = method.Config.tiny() if tiny else method.Config()
    changes = {}
    types = {f.name: str(f.type) for f in dataclasses.fields(config)}
    fields = set(types)
    for item in overrides or ():
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        current = getattr(config, key)
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {item!r}: {key} takes true or false")
            changes[key] = text.lower() in ("true", "1")
        elif isinstance(current, (int, float)):
            try:
                changes[key] = type(current)(text)
            except ValueError:
                raise ValueError(f"--set {item!r}: {key} takes a {type(current).__name__}") from None
        elif current is None and text.lower() == "none":
            changes[key] = None
        elif current is None and re.search(r"\b(int|float)\b", types[key]):  # Optional[int] / [float]
            try:
                changes[key] = int(text) if re.search(r"\bint\b", types[key]) else float(text)
            except ValueError:
                raise ValueError(f"--set {item!r}: {key} takes {types[key]}") from None
        else:
            changes[key] = text
    return dataclasses.replace(config, **changes)


def cmd_train(args) -> int:
    import torch

    from facegeom import train as training

    if args.threads:
        torch.set_num_threads(args.threads)
    method = training.get_method(args.method)
    config = training.TrainConfig(
        steps=args.steps, batch_size=args.batch_size, accumulation=args.accumulation, seed=args.seed, out=args.out,
        schedule=args.lr_schedule, warmup_steps=args.warmup_steps, step_size=args.lr_step_size, gamma=args.lr_gamma,
        grad_clip=args.grad_clip, amp=args.amp, checkpoint_every=args.checkpoint_every, val_every=args.val_every,
        log_every=args.log_every, resume=args.resume, num_workers=args.num_workers, device=args.device,
        progress=not args.quiet)
    result = training.train(args.method, config, _method_config(method, args.tiny, args.set), data=args.data)
    if int(__import__("os").environ.get("RANK", "0")) == 0 and not args.quiet:
        print(json.dumps({"final": result.final_path, "metrics": result.metrics_path, "steps": result.step,
                          "best": result.best}))
    return 0


def cmd_reconstruct(args) -> int:
    from facegeom import reconstruct

    return reconstruct.main(args)


def cmd_track(args) -> int:
    from facegeom.tracking.run import run

    return run(args)


def add_train_arguments(parser) -> None:
    parser.add_argument("--method", required=True, help="registered method (landmarks, deep3d, ringnet, mica, tdasl, "
                        "specular) or package.module:Class")
    parser.add_argument("--data", default="synthetic", help="'synthetic' (default) or a dataset folder")
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=8, help="GLOBAL batch per step, divisible by world size "
                        "x --accumulation (default: 8)")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per step on each rank")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="train_out", help="output folder: final.pt, metrics.jsonl, checkpoints")
    parser.add_argument("--resume", help="checkpoint to resume from, or 'auto' (newest step_*.pt in --out)")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="write step_N.pt every N steps (0: never)")
    parser.add_argument("--val-every", type=int, default=0, help="validate (and keep best.pt) every N steps")
    parser.add_argument("--log-every", type=int, default=1, help="metrics line every N steps")
    parser.add_argument("--lr-schedule", choices=("constant", "step", "exponential"), default="constant")
    parser.add_argument("--lr-step-size", type=int, default=1000, help="steps between 'step' decays")
    parser.add_argument("--lr-gamma", type=float, default=0.1, help="decay factor ('step': per step-size; "
                        "'exponential': per step)")
    parser.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up steps")
    parser.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0: off)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (needs the ops' autocast policy)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--tiny", action="store_true", help="the method's tiny configuration (tests, smoke runs)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field of the method's "
                        "Config (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per process (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="facegeom", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"facegeom {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("info", help="build information: version, torch, back ends, threads, CUDA device")
    bench_parser = sub.add_parser("bench", help="kernel vs reference timings, one table per op family")
    bench_parser.add_argument("--seconds", type=float, default=1.0, help="time spent per measurement")
    bench_parser.add_argument("--cuda", action="store_true", help="also time on the CUDA device")
    bench_parser.add_argument("--op", action="append", choices=OPS_BENCHED,
                              help="op family to time (repeatable; default: all)")
    bench_parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    bench_parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # tiny cases, for tests
    _add_quiet(bench_parser)
    demo_parser = sub.add_parser("demo", help="analysis-by-synthesis: recover a head's shape, expression, pose "
                                 "and light from a rendered image and its landmarks")
    demo_parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo_parser.add_argument("--iterations", type=int, default=300, help="total Adam iterations (default: 300)")
    demo_parser.add_argument("--seed", type=int, default=0)
    demo_parser.add_argument("--image-size", type=int, default=224, help="target image side (default: 224)")
    _add_quiet(demo_parser)
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
    train_parser = sub.add_parser("train", help="train a method on synthetic data or a dataset folder (one process, "
                                  "or under torchrun --nproc_per_node N -m facegeom.cli train ...)")
    add_train_arguments(train_parser)
    reconstruct_parser = sub.add_parser("reconstruct", help="reconstruct faces from images with a pipeline "
                                        "(mesh .obj, parameters .npz, overlay PNG per image)")
    from facegeom.reconstruct import add_arguments as add_reconstruct_arguments

    add_reconstruct_arguments(reconstruct_parser)
    track_parser = sub.add_parser("track", help="the metrical tracker (MICA): FLAME parameters per video frame, "
                                  "or --synthetic to track a rendered sequence with known truth")
    from facegeom.tracking.run import add_arguments as add_track_arguments

    add_track_arguments(track_parser)
    args = parser.parse_args(argv)
    if args.command == "bench" and args.threads is not None and args.threads < 1:
        parser.error(f"--threads: expected a positive integer, got {args.threads}")
    if args.command == "bench" and args.cuda:
        import torch

        if not torch.cuda.is_available():
            parser.error("--cuda: no CUDA device is available")
    handlers = {"info": cmd_info, "bench": cmd_bench, "demo": cmd_demo, "now-eval": cmd_now_eval, "train": cmd_train,
                "reconstruct": cmd_reconstruct, "track": cmd_track}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
