"""MICC Florence-style shape error (Genova et al. 2018, used by Deep3DFaceRecon
(Deng et al. 2019) and Deng et al. 2022): crop the ground-truth scan to a sphere
of 95 mm around the nose tip, align the prediction to it by ICP with an isotropic
scale, and report the RMSE of the point-to-plane distances.

Here the ICP is the point-to-plane one: each ground-truth vertex ``p`` is paired
with its closest point ``c`` on the (transformed) predicted surface
(``facegeom.ops.point_to_surface``) and contributes ``n . (p - c)`` with ``n`` the
unit normal of ``c``'s triangle; scale, rotation and translation minimise the sum
of squares by Levenberg-Marquardt, re-pairing at every step until the cost stops
decreasing. No pairs are rejected. The RMSE is over the cropped ground-truth vertices.

The crop (:func:`crop_indices`) keeps the scan vertices within ``crop_radius`` of the nose tip
and, with ``forehead_cut`` set, drops those more than ``forehead_cut`` mm above the nose tip
along the face's ``up`` direction (Deng et al. 2019 "also cut the forehead region",
``microsoft/Deep3DFaceReconstruction`` issue 23). :mod:`facegeom.eval.micc` gives the
protocol with its defaults and the per-sequence aggregation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from facegeom.eval.now import (
    REFINEMENT_TOLERANCE,
    RefinementInfo,
    Similarity,
    _as_faces,
    _as_points,
    _fit_similarity,
)

MICC_CROP_RADIUS_MM = 95.0


def crop_indices(gt_vertices, gt_nose_tip, crop_radius: float = MICC_CROP_RADIUS_MM,
                 forehead_cut: Optional[float] = None, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """Indices (int64 ``[K]``, ascending) of the scan vertices the MICC protocol keeps:
    ``||v - tip|| <= crop_radius`` and, when ``forehead_cut`` is not None,
    ``(v - tip) . up_unit <= forehead_cut`` (a plane ``forehead_cut`` mm above the nose tip,
    perpendicular to ``up``, the scan's upward direction; y for MICC's scans).

    Raises ValueError when fewer than 3 vertices are kept or an argument is malformed."""
    gt = _as_points("gt_vertices", gt_vertices)
    tip = _as_points("gt_nose_tip", torch.as_tensor(gt_nose_tip, dtype=torch.float64).reshape(1, -1), count=1)[0]
    if not crop_radius > 0:
        raise ValueError(f"crop_radius must be > 0 (mm), got {crop_radius}")
    keep = torch.linalg.norm(gt - tip, dim=1) <= crop_radius
    if forehead_cut is not None:
        direction = torch.as_tensor(np.asarray(up, dtype=np.float64))
        if direction.shape != (3,) or not torch.isfinite(direction).all() or not float(direction.norm()) > 0:
            raise ValueError(f"up must be a non-zero finite 3-vector, got {up!r}")
        if not np.isfinite(forehead_cut):
            raise ValueError(f"forehead_cut must be a finite height in mm (or None), got {forehead_cut}")
        keep &= (gt - tip) @ (direction / direction.norm()) <= forehead_cut
    indices = torch.nonzero(keep).flatten()
    if indices.numel() < 3:
        what = f"within {crop_radius} mm of gt_nose_tip" + ("" if forehead_cut is None else
                                                             f" and below the forehead cut ({forehead_cut} mm)")
        raise ValueError(f"gt_vertices: only {indices.numel()} vertices lie {what}; need at least 3")
    return indices


@dataclass
class IcpResult:
    """``rmse`` (mm); ``distances`` float64 [N] point-to-plane distance (absolute) of
    each kept ground-truth vertex; ``indices`` int64 [N] of those vertices;
    ``alignment`` maps the prediction onto the ground truth; ``info`` the ICP's."""

    rmse: float
    distances: torch.Tensor
    indices: torch.Tensor
    alignment: Similarity
    info: RefinementInfo


def icp_rmse(
    predicted_vertices,
    predicted_faces,
    gt_vertices,
    gt_nose_tip,
    initial: Optional[Similarity] = None,
    crop_radius: float = MICC_CROP_RADIUS_MM,
    with_scale: bool = True,
    max_iterations: int = 100,
    tolerance: float = REFINEMENT_TOLERANCE,
    forehead_cut: Optional[float] = None,
    up=(0.0, 1.0, 0.0),
) -> IcpResult:
    """Point-to-plane RMSE after ICP with isotropic scale (MICC protocol).

    ``predicted_vertices`` [P, 3], ``predicted_faces`` [F, 3]: the reconstruction;
    ``gt_vertices`` [V, 3] (mm) and ``gt_nose_tip`` [3]: the scan and its nose tip;
    ``initial``: a starting alignment of the prediction onto the scan (e.g.
    ``procrustes(pred_landmarks, gt_landmarks)``); identity when None, so the
    prediction must then already be roughly in place. ``crop_radius`` in mm.
    ``with_scale=False`` gives rigid ICP. ``forehead_cut`` (mm above the nose tip along ``up``;
    None: no cut, the plain 95 mm sphere) and ``up``: see :func:`crop_indices`.

    Example::

        T0 = procrustes(pred_lmk, gt_lmk)
        result = icp_rmse(pred_v, pred_f, scan_v, scan_v[nose_index], initial=T0)
        print(result.rmse)
    """
    gt = _as_points("gt_vertices", gt_vertices)
    pred = _as_points("predicted_vertices", predicted_vertices)
    faces = _as_faces("predicted_faces", predicted_faces, pred.shape[0])
    indices = crop_indices(gt, gt_nose_tip, crop_radius, forehead_cut, up)
    points = gt[indices].numpy()
    alignment, info, residual = _fit_similarity(
        points, pred.numpy(), faces.numpy(), initial, with_scale, max_iterations, tolerance, point_to_plane=True
    )
    distances = torch.from_numpy(np.abs(residual))  # signed point-to-plane residuals at the final alignment
    return IcpResult(float(distances.square().mean().sqrt()), distances, indices, alignment, info)
