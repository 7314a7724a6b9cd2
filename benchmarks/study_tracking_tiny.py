"""Why the tracker's 128-pixel runs recover the expression poorly (docs/tracking.md, "The tiny preset").

Two measurements on ``facegeom track --synthetic`` sequences (3 frames, 128 x 128; not run by CI):

``variants``: face-region vertex error (mm, FLAME frame) of :meth:`Config.tiny` variants against the neutral
expression's (the camera stage's start), via :func:`facegeom.tracking.run.run_synthetic`.

``energies``: after tracking each frame with a configuration, the tracker's energy terms
(``Tracker.energies``, ``MT:tracker.py:475-526``, photometric on at every level) at the tracked parameters
and at the true ones, on every pyramid level, plus a split of the final vertex error into its shape and
expression parts.

    PYTHONPATH=. python benchmarks/study_tracking_tiny.py variants [NAME ...]   (PYTHONPATH: this checkout's facegeom)
    PYTHONPATH=. python benchmarks/study_tracking_tiny.py energies [--levels JSON]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace

import torch

from facegeom.tracking.run import run_synthetic
from facegeom.tracking.synthetic import FOCAL_NDC, render_sequence, synthetic_tracker_model
from facegeom.tracking.tracker import Config, FrameData, Tracker, _aspect_ratio

LEGACY_TINY = ((1.0, 30), (0.5, 10), (1.0, 10))  # Config.tiny's levels before the study
VARIANTS = {
    "legacy tiny": {"pyr_levels": LEGACY_TINY},
    "legacy, w_pho=0": {"pyr_levels": LEGACY_TINY, "w_pho": 0.0},
    "legacy, no blur": {"pyr_levels": LEGACY_TINY, "kernel_size": 1},
    "legacy, sigma 9/4": {"pyr_levels": LEGACY_TINY, "sigma": 2.25},
    "legacy, w_pho/4": {"pyr_levels": LEGACY_TINY, "w_pho": 87.5},
    "legacy, rotation lr 0.02": {"pyr_levels": LEGACY_TINY, "rotation_lr": 0.02},
    "legacy, last level 40": {"pyr_levels": ((1.0, 30), (0.5, 10), (1.0, 40))},
    "tiny (no half level)": {},
    "tiny, no blur": {"kernel_size": 1},
    "tiny, seed 1": {"_seed": 1},
    "legacy tiny, seed 1": {"pyr_levels": LEGACY_TINY, "_seed": 1},
}


def variants(names, out_root):
    for name in names or list(VARIANTS):
        options = dict(VARIANTS[name])
        seed = options.pop("_seed", 0)
        start = time.perf_counter()
        report = run_synthetic(os.path.join(out_root, name.replace(" ", "_").replace("/", "_")),
                               replace(Config.tiny(), **options), num_frames=3, image_size=128, seed=seed,
                               progress=False)
        print(json.dumps({"variant": name, "vertex_mm": round(report["vertex_mm"], 2),
                          "neutral_mm": round(report["initial"]["vertex_mm"], 2),
                          "landmark_px": round(report["landmark_px"], 2),
                          "rotation_deg": round(report["rotation_deg"], 2),
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


def energies(levels, size=128, frames=3):
    config = replace(Config.tiny(), focal_pixels=FOCAL_NDC * size, pyr_levels=tuple(map(tuple, levels)))
    model = synthetic_tracker_model(seed=0, dtype=torch.float32)
    sequence = render_sequence(model, frames, size, seed=0)
    data = [FrameData(sequence.images[i:i + 1], sequence.landmarks[i:i + 1], sequence.landmarks_dense[i:i + 1],
                      [str(i)]) for i in range(frames)]
    tracker = Tracker(model, config)
    tracker.initialize([data[k] for k in config.keyframes], sequence.identity)
    truth = sequence.truth
    names = {"shape": "shape", "exp": "exp", "jaw": "jaw", "eyes": "eyes", "eyelids": "eyelids", "R": "R", "t": "t",
             "focal_length": "focal", "principal_point": "principal_point"}

    def terms(values, frame):
        targets = frame.parse()
        rows = []
        for level in tracker.pyramid(frame, initializing=False):
            scale = level.image_size[0] / size
            iris = {"target_left": targets["left_iris"] * scale, "target_right": targets["right_iris"] * scale,
                    "mask_left": targets["mask_left_iris"] * scale, "mask_right": targets["mask_right_iris"] * scale}
            tracker.renderer.reset()
            with torch.no_grad():
                t = tracker.energies(values, targets, targets["lmk"] * scale, targets["mp"] * scale, iris, level,
                                     True, torch.flip(level.image, [2, 3]),
                                     _aspect_ratio(level.size, level.image.dtype, level.image.device))
            rows.append({"size": level.size[0], "total": round(float(sum(t.values())), 2),
                         "photometric": round(float(t["loss/pho"]), 2)})
        return rows

    for i in range(frames):
        tracker.track_frame(data[i])
        tracked = {n: v.detach().clone() for n, v in tracker.params.items()}
        true_values = dict(tracked, tex=truth["tex"][:, :tracked["tex"].shape[1]].clone(), sh=truth["sh"].clone())
        true_values.update({n: truth[key][i:i + 1].clone() for n, key in names.items()})
        print(json.dumps({"frame": i, "tracked": terms(tracked, data[i]), "truth": terms(true_values, data[i])}),
              flush=True)
    p, i = tracker.params, frames - 1
    region = model.render_mask

    def error(shape, rest):  # rest = (exp, jaw, eyes, eyelids)
        with torch.no_grad():
            v = model(shape, *rest[:3], tracker.camera().R, rest[3]).vertices[0]
        return round(float((v - truth["vertices"][i]).norm(dim=-1)[region].mean() * 1000), 2)

    tracked_rest = (p["exp"], p["jaw"], p["eyes"], p["eyelids"])
    true_rest = tuple(truth[k][i:i + 1] for k in ("exp", "jaw", "eyes", "eyelids"))
    true_shape = truth["shape"][i:i + 1]
    print(json.dumps({"frame": i, "vertex_mm": {
        "tracked": error(p["shape"], tracked_rest), "true shape, tracked rest": error(true_shape, tracked_rest),
        "tracked shape, true rest": error(p["shape"], true_rest),
        "MICA shape, true rest": error(sequence.identity[None], true_rest)},
        "shape_coefficient_rms": {"tracked": round(float((p["shape"] - true_shape).pow(2).mean().sqrt()), 3),
                                  "MICA": round(float((sequence.identity[None] - true_shape).pow(2).mean().sqrt()), 3)}}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("variants", "energies"))
    parser.add_argument("names", nargs="*", help="variants: which (default: all)")
    parser.add_argument("--levels", default=json.dumps(LEGACY_TINY), help="energies: pyr_levels as JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "variants":
        with tempfile.TemporaryDirectory() as out_root:
            variants(args.names, out_root)
    else:
        energies(json.loads(args.levels))


if __name__ == "__main__":
    main()
