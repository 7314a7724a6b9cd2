"""Smoke trainings of the specular-albedo method and 2DASL on synthetic data (issue 15):
does every loss term fall, and are held-out synthetic parameters recovered better than the
mean? Runs ``facegeom.train`` with the method's tiny configuration on one CPU thread and
prints (and writes to ``--out``/summary.json) the mean of each training loss term over the
first and the last ``--window`` logged steps, and the last validation.

    python benchmarks/converge_specular_tdasl.py --method specular --out /tmp/spec   # run S, ~4-7 min
    python benchmarks/converge_specular_tdasl.py --method tdasl --out /tmp/tdasl     # 2000 steps, ~15 min

The defaults (``DEFAULTS``: steps, batch size, window and ``--set`` values per method) are
the settings of the headline runs of the two pages; ``--val-every N`` validates during
the run (every validation lands in summary.json's ``validations``).

Figures measured with it are in docs/specular.md and docs/tdasl.md.

``--sensitivity`` measures identifiability instead of training: how far one standard
deviation of each shape / expression component moves the 68 projected landmarks (mean and
max, pixels of the method's crop) and, for the specular method, the rendered image (mean
absolute change per pixel, summed over RGB), from the mean face, frontal, at the tiny
configuration (``--set`` applies):

    python benchmarks/converge_specular_tdasl.py --method specular --sensitivity
    python benchmarks/converge_specular_tdasl.py --method tdasl --sensitivity

``--fit N`` (specular) fits the coefficients of the first 8 held-out images directly (Adam,
``N`` steps, lr 0.02, no network) with the method's decoder and losses, and reports the
validation metrics of that per-image optimum: a regressor trained on the same losses cannot
recover more than it.

    python benchmarks/converge_specular_tdasl.py --method specular --fit 300

``--evaluate RUN/final.pt`` validates a run's final weights again (same held-out set as the
run: ``--seed``, ``--set`` and ``--batch-size`` as there) with the current metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch


@torch.no_grad()
def sensitivity(method: str, config) -> dict:
    """``{group: [{"lmk_mean", "lmk_max"(, "image")} per component]}`` (see the module doc)."""
    if method == "specular":
        from facegeom.pipelines import specular as S

        model = S.synthetic_model(config)
        renderer = S.SpecularRenderer(model, config)
        sizes, zero = config.sizes, torch.zeros(1, sum(config.sizes.values()))
        offsets = dict(zip(sizes, np.cumsum([0] + list(sizes.values()))[:-1].tolist()))
        base = S.decode(zero, model, config, renderer)
        groups = {"shape": (offsets["shape"], config.n_shape), "expression": (offsets["expression"], config.n_exp)}

        def change(params):
            out = S.decode(params, model, config, renderer)
            d = (out.landmarks - base.landmarks).norm(dim=-1)
            return {"lmk_mean": float(d.mean()), "lmk_max": float(d.max()),
                    "image": float((out.render_full - base.render_full).abs().sum(1).mean())}
    else:
        from facegeom.pipelines import tdasl as T

        net = T.TDASL.build_model(config)  # the synthetic 3DDFA-layout model and its whitening
        zero = torch.zeros(1, 62)
        base = net.landmarks(zero)[1]
        groups = {"shape": (12, 40), "expression": (52, 10)}  # whitened: one unit = one std

        def change(params):
            d = (net.landmarks(params)[1] - base).norm(dim=-1)
            return {"lmk_mean": float(d.mean()), "lmk_max": float(d.max())}
    result = {}
    for group, (start, count) in groups.items():
        rows = []
        for k in range(count):
            params = zero.clone()
            params[0, start + k] = 1.0
            rows.append({key: round(value, 4) for key, value in change(params).items()})
        result[group] = rows
    return result


def fit_specular(config, steps: int, images: int = 8, lr: float = 0.02) -> dict:
    """Validation metrics of the direct per-image fit (see the module doc), before and after."""
    from facegeom.pipelines import specular as S

    method = S.SpecularMethod()
    dataset = method.dataset(config, "synthetic", "val", 0)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(images)])

    class Fixed(S.SpecularModel):  # the "network" answers the fitted coefficients
        def forward(self, x):
            return self.fitted

    model = Fixed(config)
    model.fitted = torch.zeros(images, sum(config.sizes.values()), requires_grad=True)
    face_model, renderer, _ = model.aux(torch.device("cpu"))
    skin = face_model.masks.get("skin")

    def metrics():
        with torch.no_grad():
            return {k: round(float(v), 4) for k, v in method.validation_step(model, batch).items()}

    before = metrics()
    optimizer = torch.optim.Adam([model.fitted], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        S.losses(S.decode(model.fitted, face_model, config, renderer), batch, config, None, None, skin)["total"].backward()
        optimizer.step()
    return {"before": before, "after": metrics()}


def evaluate(method_name: str, config, checkpoint: str, batch_size: int, seed: int, split: str = "val") -> dict:
    """The training loop's validation (mean over the held-out set, or over the first
    ``val_samples`` training images with ``split="train"``) of ``checkpoint``."""
    from facegeom import train

    method = train.get_method(method_name)
    method = method() if isinstance(method, type) else method
    model = method.build_model(config)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model.eval()
    dataset = method.dataset(config, "synthetic", split, seed)
    if split == "train":  # the same number of images as the held-out set
        dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), config.val_samples)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    sums, count = {}, 0
    with torch.no_grad():
        for batch in loader:
            n = len(batch["image"])
            for key, value in method.validation_step(model, batch).items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
            count += n
    return {key: round(value / count, 4) for key, value in sorted(sums.items())}


DEFAULTS = {
    # the settings of the headline runs in docs/specular.md (run H, "Rigid motion in the synthetic
    # bases": pose x0.5, no expression, albedo std 5, 2000 steps, the mouth term from step 1000;
    # the earlier run S is --steps 1000 --set num_samples=8000 --set pose_scale=0.25
    # --set expression_components=3 --set albedo_std=1 --set mouth_start=500 --set rigid_free=False)
    # and docs/tdasl.md (runs td_B, td_B1: micrometre model, 3 shape components of std 4,
    # lr 1e-2, 2000 steps); --steps / --batch-size / --window / --val-every / --warmup / --set
    # override them
    "specular": {"steps": 2000, "batch_size": 8, "window": 50, "val_every": 250, "warmup": 50,
                 "set": ["lr=3e-4", "num_samples=16000", "val_samples=32", "pose_scale=0.5", "shape_components=3",
                         "shape_std=4", "expression_components=0", "expression_std=2", "albedo_components=3",
                         "albedo_std=5", "mouth_start=1000"]},
    "tdasl": {"steps": 2000, "batch_size": 4, "window": 100, "val_every": 250,
              "set": ["num_samples=8000", "val_samples=32", "whitening_samples=64", "model_unit_um=true",
                      "lr_regressor=1e-2", "shape_components=3", "shape_std=4", "expression_components=3"]},
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("specular", "tdasl"), required=True)
    parser.add_argument("--steps", type=int, default=None, help="default: DEFAULTS[method]")
    parser.add_argument("--batch-size", type=int, default=None, help="default: DEFAULTS[method]")
    parser.add_argument("--val-every", type=int, default=None,
                        help="validate every N steps (0: at the end only; default: DEFAULTS[method], else 0)")
    parser.add_argument("--window", type=int, default=None,
                        help="logged steps averaged at the start and the end (default: DEFAULTS[method])")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the method's tiny Config (as facegeom train --set)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm per optimiser (0: none)")
    parser.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="linear learning-rate warm-up over the first N steps (default: DEFAULTS[method])")
    parser.add_argument("--out", default="converge_out")
    parser.add_argument("--sensitivity", action="store_true",
                        help="print each shape / expression component's effect on the landmarks (and image); no training")
    parser.add_argument("--evaluate", default="", metavar="FINAL_PT", help="validate a run's final.pt again; no training")
    parser.add_argument("--split", choices=("val", "train"), default="val",
                        help="--evaluate on the held-out set or on the first val_samples training images")
    parser.add_argument("--fit", type=int, default=0, metavar="STEPS",
                        help="specular: fit 8 held-out images' coefficients directly for STEPS steps; no training")
    args = parser.parse_args(argv)
    defaults = DEFAULTS[args.method]
    for name in ("steps", "batch_size", "window", "warmup", "val_every"):
        if getattr(args, name) is None:
            setattr(args, name, defaults.get(name, 0))
    args.set = list(defaults["set"]) + list(args.set)  # later --set entries win
    torch.set_num_threads(1)
    from facegeom import train
    from facegeom.cli import _method_config

    method = train.get_method(args.method)
    config = _method_config(method, True, args.set)
    if args.evaluate:
        result = {"method": args.method, "settings": args.set, "checkpoint": args.evaluate, "split": args.split,
                  "validation": evaluate(args.method, config, args.evaluate, args.batch_size, args.seed, args.split)}
        print(json.dumps(result))
        return result
    if args.sensitivity or args.fit:
        if args.fit and args.method != "specular":
            raise SystemExit("--fit: specular only (2DASL is supervised by the parameters themselves)")
        result = {"method": args.method, "settings": args.set,
                  **(fit_specular(config, args.fit) if args.fit else sensitivity(args.method, config))}
        print(json.dumps(result))
        return result
    start = time.time()
    train.train(args.method, train.TrainConfig(steps=args.steps, batch_size=args.batch_size, out=args.out,
                                               log_every=1, val_every=args.val_every or args.steps, seed=args.seed,
                                               progress=False, warmup_steps=args.warmup,
                                               device="cpu", grad_clip=args.grad_clip), config, "synthetic")
    records = [json.loads(line) for line in open(os.path.join(args.out, "metrics.jsonl"))]
    steps = [r for r in records if any(k.startswith("loss/") for k in r)]
    terms = sorted({k for r in steps for k in r if k.startswith("loss/")})
    logged = {k: [r[k] for r in steps if k in r] for k in terms}  # the mouth term: from mouth_start on
    window = min(args.window, max(1, len(steps) // 2))
    summary = {"method": args.method, "steps": args.steps, "batch_size": args.batch_size, "settings": args.set,
               "grad_clip": args.grad_clip, "warmup": args.warmup, "seconds": round(time.time() - start, 1),
               "first": {k: float(np.mean(v[:min(window, max(1, len(v) // 2))])) for k, v in logged.items()},
               "last": {k: float(np.mean(v[-min(window, max(1, len(v) // 2)):])) for k, v in logged.items()},
               "logged_steps": {k: len(v) for k, v in logged.items()},
               "validation": [r for r in records if any(k.startswith("val/") for k in r)][-1],
               "validations": [r for r in records if any(k.startswith("val/") for k in r)]}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
