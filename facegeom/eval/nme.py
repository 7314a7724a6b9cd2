"""AFLW2000-3D landmark error: NME normalised by the ground-truth bounding box.

As in 3DDFA's benchmark (used by 2DASL and 3DDFA-V2): for each image,
``NME = mean_k ||pred_k - gt_k|| / sqrt(w * h)`` where ``w``, ``h`` are the width
and height of the axis-aligned bounding box of the ground-truth 68 landmarks in
the image plane (x, y). The 2D variant measures x, y only; the 3D variant
measures x, y, z after shifting each set so that its smallest z is 0 (z is only
defined up to an offset under (scaled) orthographic projection; 3DDFA's code
shifts the ground truth this way). Images are grouped by absolute yaw into
[0, 30], (30, 60] and (60, 90] degrees; the papers report each bin's mean and
the mean of the three (the "balanced" mean), in percent.
"""
from __future__ import annotations

import numpy as np
import torch

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def _landmarks(name, value) -> np.ndarray:
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[-1] not in (2, 3):
        raise ValueError(f"{name} must have shape [N, K, 2] or [N, K, 3] (or [K, 2|3]), got {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has NaN or infinite coordinates")
    return array


def nme(predicted, target, dim: int = 2) -> np.ndarray:
    """Per-image NME (a fraction; x100 for the papers' percent).

    ``predicted``, ``target``: [N, K, 2|3] or [K, 2|3] landmarks in pixels (K = 68
    for AFLW2000-3D; any K >= 2 works); ``dim`` 2 (x, y) or 3 (x, y, z; both inputs
    need z). The normaliser is ``sqrt(w * h)`` of the target's x-y bounding box.
    Returns float64 [N].

    Example::

        errors = nme(pred_68, gt_68, dim=2)          # [N]
        table = nme_by_yaw(errors, yaw_degrees)      # per-bin means in %
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    pred = _landmarks("predicted", predicted)
    gt = _landmarks("target", target)
    if pred.shape[:2] != gt.shape[:2]:
        raise ValueError(f"predicted and target must have the same [N, K], got {list(pred.shape)} and {list(gt.shape)}")
    if pred.shape[1] < 2:
        raise ValueError(f"need at least 2 landmarks per image for a bounding box, got {pred.shape[1]}")
    if dim == 3 and (pred.shape[-1] != 3 or gt.shape[-1] != 3):
        raise ValueError("dim=3 needs x, y, z for predicted and target (shape [N, K, 3])")
    lo, hi = gt[..., :2].min(1), gt[..., :2].max(1)
    size = np.sqrt((hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1]))
    if (size <= 0).any():
        raise ValueError(f"target: {int((size <= 0).sum())} images have a degenerate (zero-area) landmark bounding box")
    if dim == 2:
        diff = pred[..., :2] - gt[..., :2]
    else:
        diff = (pred - pred[..., 2:].min(1, keepdims=True) * [0, 0, 1]) - (gt - gt[..., 2:].min(1, keepdims=True) * [0, 0, 1])
    return np.linalg.norm(diff, axis=-1).mean(1) / size


def nme_by_yaw(errors, yaw_degrees) -> dict:
    """Mean NME per absolute-yaw bin, in percent: ``{"[0, 30]": .., "(30, 60]": ..,
    "(60, 90]": .., "balanced": mean of the three bins, "std": standard deviation
    (population, ``np.std``) of the three bin means, "bin_std": {bin: std of the
    bin's NMEs}, "all": mean over all images, "counts": images per bin}``. Yaws beyond
    90 degrees fall in the last bin (as 3DDFA's ``yaw > 60``); an empty bin gives NaN.

    ``balanced``, ``std`` and the per-bin means and stds are 3DDFA's ``ana``
    (``3DDFA:benchmark_aflw2000.py:21-54``, which 2DASL's benchmark script calls;
    PIPELINES.md §9): its printed ``[ 0, 90] Mean, Std`` are ``balanced`` and ``std``.

    ``errors``: [N] from ``nme``; ``yaw_degrees``: [N]. Example::

        nme_by_yaw(nme(pred, gt), yaws)["balanced"]
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    yaw = np.abs(np.asarray(yaw_degrees, dtype=np.float64).ravel())
    if e.shape != yaw.shape:
        raise ValueError(f"errors and yaw_degrees must have the same length, got {e.size} and {yaw.size}")
    if not np.isfinite(yaw).all():
        raise ValueError("yaw_degrees has NaN or infinite values")
    masks, names = [], []
    for k, (low, high) in enumerate(YAW_BINS):
        first, last = k == 0, k == len(YAW_BINS) - 1
        inside = (yaw >= low) if first else (yaw > low)
        if not last:  # the last bin also takes yaws beyond its upper end
            inside = inside & (yaw <= high)
        masks.append(inside)
        names.append(f"{'[' if first else '('}{low:g}, {high:g}]")
    table = {n: (float(100 * e[m].mean()) if m.any() else float("nan")) for n, m in zip(names, masks)}
    means = [table[n] for n in names]
    table["balanced"] = float(np.mean(means))
    table["std"] = float(np.std(means))
    table["bin_std"] = {n: (float(100 * e[m].std()) if m.any() else float("nan")) for n, m in zip(names, masks)}
    table["all"] = float(100 * e.mean()) if e.size else float("nan")
    table["counts"] = {n: int(m.sum()) for n, m in zip(names, masks)}
    return table
