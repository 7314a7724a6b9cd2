"""Stirling/ESRC benchmark (Feng et al. 2018, FG2018 challenge) and its NoW-protocol variant.

``protocol="feng2018"``: the 7 predicted landmarks are aligned to the scan's by
Procrustes with scale (or, ``metrical=True``, rigidly after the unit factor, as
MICA's metrical table does), the scan is cropped to the sphere of
``face_crop_sphere`` with radius factor 1.2 (the paper's formula:
1.2 (||lm0 - lm3|| + ||bridge - lm4||) / 2), and each kept scan vertex's distance to
the aligned predicted surface is measured. No refinement. The FG2018 script's
released version uses 1.5 and ``||lm0 + lm3||`` (a typo that makes the radius
depend on where the origin is); pass ``crop_radius_factor`` to change the factor.
The challenge reports the 3D RMSE, ``rmse(distances)``; MICA reports median, mean
and std (``facegeom.eval.now.summarize``).

``protocol="now"``: the NoW metric on Stirling scans (MICA table 3): crop radius
1.4 and the scan-to-mesh refinement (``facegeom.eval.now.now_distances``).

Landmark order as NoW: right eye outer, right eye inner, left eye inner, left eye
outer, nose bottom, right mouth corner, left mouth corner (the FG2018 ``.lnd``
files, read by ``facegeom.eval.io.read_landmarks``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from facegeom.eval.now import NOW_CROP_RADIUS_FACTOR, NoWResult, now_distances

FENG2018_CROP_RADIUS_FACTOR = 1.2


def stirling_distances(
    scan_vertices,
    scan_landmarks,
    predicted_vertices,
    predicted_faces,
    predicted_landmarks,
    protocol: str = "feng2018",
    metrical: bool = False,
    unit: str = "m",
    crop_radius_factor: Optional[float] = None,
) -> NoWResult:
    """Scan-to-mesh distances (mm) of one Stirling image under ``protocol``
    ("feng2018" or "now"); arguments as ``now_distances``.

    Example::

        r = stirling_distances(scan_v, read_landmarks("F1001_N.lnd"), pred_v, pred_f, pred_lmk7)
        print(rmse(r.distances))
    """
    if protocol == "feng2018":
        factor = FENG2018_CROP_RADIUS_FACTOR if crop_radius_factor is None else crop_radius_factor
        refine = False
    elif protocol == "now":
        factor = NOW_CROP_RADIUS_FACTOR if crop_radius_factor is None else crop_radius_factor
        refine = True
    else:
        raise ValueError(f"protocol must be 'feng2018' or 'now', got {protocol!r}")
    return now_distances(
        scan_vertices,
        scan_landmarks,
        predicted_vertices,
        predicted_faces,
        predicted_landmarks,
        metrical=metrical,
        unit=unit,
        refine=refine,
        crop_radius_factor=factor,
    )


def rmse(distances) -> float:
    """Root mean square of distances: ``sqrt(mean(d^2))`` (the FG2018 3D-RMSE of one scan)."""
    d = np.asarray(distances.detach().cpu() if isinstance(distances, torch.Tensor) else distances, dtype=np.float64)
    if d.size == 0:
        raise ValueError("rmse: no distances given")
    return float(np.sqrt(np.mean(d * d)))
