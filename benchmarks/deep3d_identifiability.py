"""Is the synthetic identity recoverable from Deep3D's losses at a given resolution?
(issue 12: why the smoke training did not beat the mean face).

Fits the 257 coefficients of each held-out synthetic image directly (Adam on the coefficients,
no network) with the pipeline's own decoder and losses (:func:`facegeom.pipelines.deep3d.decode`,
:func:`~facegeom.pipelines.deep3d.losses`), then compares the recovered neutral shape with the
truth (``shape_mm_aligned``: mean per-vertex error after a similarity alignment, mm) and with
the mean face's error. A regressor trained on the same losses cannot do better than this
per-image optimum, so when the fit does not beat the mean face, the losses and data at that
size do not determine the identity and no amount of training will.

    OMP_NUM_THREADS=1 python -m benchmarks.deep3d_identifiability --size 64
    OMP_NUM_THREADS=1 python -m benchmarks.deep3d_identifiability --size 64 --set w_lm=0.0196

Prints one JSON line: the settings, the losses and the errors before and after the fit.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from facegeom.pipelines import deep3d as D


def fit(config: D.Config, images: int = 8, iterations: int = 300, lr: float = 0.01, seed: int = 0) -> dict:
    method = D.Deep3DMethod()
    dataset = method.dataset(config, "synthetic", "val", seed)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(images)])
    face_model = D.synthetic_bfm(config.head_seed)
    renderer = D.Deep3DRenderer(config.focal, config.center, config.z_near, config.z_far)
    coeffs = torch.zeros(images, 257, requires_grad=True)
    optimizer = torch.optim.Adam([coeffs], lr=lr)
    truth = batch["params"]["shape"].float()
    mm = 1000.0 / D.SYNTHETIC_SCALE

    def measure():
        with torch.no_grad():
            out = D.decode(coeffs, face_model, config, renderer)
            terms = D.losses(out, batch, config, None)
            alpha = out.coeffs["id"]
            return {"lm": float(terms["lm"]), "color": float(terms["color"]), "reg": float(terms["reg"]),
                    "shape_mm": float(mm * D._vertex_error(face_model, alpha, truth).mean()),
                    "shape_mm_aligned": float(mm * D._vertex_error(face_model, alpha, truth, aligned=True).mean())}

    before = measure()
    for _ in range(iterations):
        optimizer.zero_grad()
        total = D.losses(D.decode(coeffs, face_model, config, renderer), batch, config, None)["total"]
        total.backward()
        optimizer.step()
    after = measure()
    zero = torch.zeros(images, 80)
    mean_face = {"shape_mm": float(mm * D._vertex_error(face_model, zero, truth).mean()),
                 "shape_mm_aligned": float(mm * D._vertex_error(face_model, zero, truth, aligned=True).mean())}
    return {"before": before, "after": after, "mean_face": mean_face}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="crop size (224: the authors')")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Config field (parsed as the field's type)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = D.Config.tiny(center=args.size / 2.0, focal=1015.0 * args.size / 224.0, val_samples=args.images)
    overrides = {}
    for key, value in (item.split("=", 1) for item in args.set):
        kind = type(getattr(config, key))
        overrides[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    config = dataclasses.replace(config, **overrides)
    start = time.perf_counter()
    result = fit(config, args.images, args.iterations, args.lr)
    result.update(size=args.size, images=args.images, iterations=args.iterations, lr=args.lr, set=overrides,
                  seconds=round(time.perf_counter() - start, 1))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
