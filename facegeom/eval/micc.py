"""MICC Florence evaluation as Deng et al. 2019 (Deep3DFaceRecon) and Deng et al. 2022 report it.

Sources: Deep3DFaceRecon paper §6 / PIPELINES.md §2.10 (crop the ground truth to 95 mm around
the nose tip, ICP **with isotropic scale**, point-to-plane RMSE); the authors' answer in
``microsoft/Deep3DFaceReconstruction`` issue 23 ("SICP for each mesh, so the scaling factor of
each reconstruction is unique", "the distance for each vertex in a 95 mm radius around the nose
tip of the ground-truth mesh (we also cut the forehead region)", "an RMSE across vertices for
each mesh"); Deng et al. 2022 §5 / PIPELINES.md §5.8 (average the meshes of a clip, then the
same ICP and point-to-plane error). No evaluation code was released (PIPELINES.md §11).

The per-mesh error is :func:`facegeom.eval.icp.icp_rmse` (point-to-plane ICP with isotropic
scale) on the crop of :func:`facegeom.eval.icp.crop_indices`. What no source gives, and the
defaults chosen here **[INFERRED]**:

- **The forehead cut** (:data:`FOREHEAD_CUT_MM`, ``forehead_cut``): a plane perpendicular to the
  scan's ``up`` axis (y for MICC's scans), ``forehead_cut`` mm above the nose tip; vertices
  above it are dropped. Default **60 mm**, "above the eyebrows": on adult faces the nasion is
  roughly 35-40 mm above the nose tip and the top of the eyebrows some 15-20 mm higher (Farkas'
  anthropometric norms, approximate), so the cut keeps the brows and the whole eye region and
  removes the upper forehead, where hair, caps and the varying extent of the scans dominate the
  error. ``forehead_cut=None`` gives the plain 95 mm sphere (Genova et al. 2018's crop).
- **The initial alignment**: ICP needs a start; pass ``initial`` (e.g.
  :func:`facegeom.eval.now.procrustes` of predicted onto ground-truth landmarks, as
  MGCNet's authors describe: 5 picked 3D landmarks, rigid alignment, then ICP).
- **The sequence**: :func:`sequence_rmse` offers both readings: ``mode="mean_mesh"`` averages
  the vertices of the clip's meshes (same topology) and reports one RMSE (Deng et al. 2022),
  ``mode="mean_rmse"`` reports the mean of the per-frame RMSEs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from facegeom.eval.icp import MICC_CROP_RADIUS_MM, IcpResult, crop_indices, icp_rmse
from facegeom.eval.now import REFINEMENT_TOLERANCE, Similarity

__all__ = ["FOREHEAD_CUT_MM", "MICC_CROP_RADIUS_MM", "SEQUENCE_MODES", "SequenceResult", "micc_crop", "micc_rmse",
           "average_mesh", "sequence_rmse"]

#: Height (mm) of the forehead cut above the nose tip, along the scan's up axis (see the module doc).
FOREHEAD_CUT_MM = 60.0
SEQUENCE_MODES = ("mean_mesh", "mean_rmse")


def micc_crop(gt_vertices, gt_nose_tip, crop_radius: float = MICC_CROP_RADIUS_MM,
              forehead_cut: Optional[float] = FOREHEAD_CUT_MM, up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """The scan vertices the protocol keeps (int64 indices): within ``crop_radius`` mm of the
    nose tip and at most ``forehead_cut`` mm above it along ``up``
    (:func:`facegeom.eval.icp.crop_indices` with this module's defaults)."""
    return crop_indices(gt_vertices, gt_nose_tip, crop_radius, forehead_cut, up)


def micc_rmse(predicted_vertices, predicted_faces, gt_vertices, gt_nose_tip, initial: Optional[Similarity] = None,
              crop_radius: float = MICC_CROP_RADIUS_MM, forehead_cut: Optional[float] = FOREHEAD_CUT_MM,
              up=(0.0, 1.0, 0.0), with_scale: bool = True, max_iterations: int = 100,
              tolerance: float = REFINEMENT_TOLERANCE) -> IcpResult:
    """Point-to-plane RMSE (mm) of one predicted mesh against a MICC scan.

    Args:
        predicted_vertices: ``[P, 3]``; predicted_faces: ``[F, 3]``.
        gt_vertices: ``[V, 3]`` scan (mm); gt_nose_tip: ``[3]``.
        initial: starting similarity of the prediction onto the scan (None: identity).
        crop_radius, forehead_cut, up: the crop (:func:`micc_crop`).
        with_scale: ICP with isotropic scale (the protocol) or rigid.
    Returns:
        :class:`facegeom.eval.icp.IcpResult` (``rmse``, per-vertex ``distances``, ``indices``
        of the kept scan vertices, ``alignment``).
    """
    return icp_rmse(predicted_vertices, predicted_faces, gt_vertices, gt_nose_tip, initial=initial,
                    crop_radius=crop_radius, with_scale=with_scale, max_iterations=max_iterations,
                    tolerance=tolerance, forehead_cut=forehead_cut, up=up)


def _as_frames(frames) -> torch.Tensor:
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("frames: need at least one mesh")
        frames = [torch.as_tensor(np.asarray(f, dtype=np.float64)) for f in frames]
        shapes = {tuple(f.shape) for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"frames must share one topology (same [V, 3]), got shapes {sorted(shapes)}")
        frames = torch.stack(frames)
    frames = torch.as_tensor(frames).to(torch.float64)
    if frames.dim() != 3 or frames.shape[0] < 1 or frames.shape[2] != 3:
        raise ValueError(f"frames must be [T >= 1, V, 3], got {list(frames.shape)}")
    if not torch.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinite coordinates")
    return frames


def average_mesh(frames) -> torch.Tensor:
    """Vertex-wise mean ``[V, 3]`` (float64) of a clip's meshes ``[T, V, 3]`` (or a list of
    ``[V, 3]``) sharing one topology, as Deng et al. 2022 average a clip's reconstructions."""
    return _as_frames(frames).mean(0)


@dataclass
class SequenceResult:
    """``rmse``: the clip's error (mm); ``mode``; ``results``: the :class:`IcpResult` of the
    averaged mesh (``mean_mesh``, one entry) or of every frame (``mean_rmse``);
    ``per_frame``: the frames' RMSEs (``mean_rmse`` only)."""

    rmse: float
    mode: str
    results: List[IcpResult]
    per_frame: Optional[List[float]] = None


def sequence_rmse(frames, predicted_faces, gt_vertices, gt_nose_tip,
                  initial: Union[None, Similarity, Sequence[Similarity]] = None, mode: str = "mean_mesh",
                  **kwargs) -> SequenceResult:
    """The error of one clip (a sequence's frames reconstructed with one topology).

    Args:
        frames: ``[T, V, 3]`` or a list of ``[V, 3]`` predicted meshes (one frame each, in one
            common frame, e.g. neutral shapes in the model's frame).
        predicted_faces, gt_vertices, gt_nose_tip: as :func:`micc_rmse`.
        initial: a start for every frame (one :class:`Similarity`), one per frame
            (``mean_rmse``), or None.
        mode: ``"mean_mesh"``: RMSE of :func:`average_mesh` (Deng et al. 2022);
            ``"mean_rmse"``: the mean of the frames' RMSEs.
        kwargs: :func:`micc_rmse`'s crop and ICP options.
    """
    if mode not in SEQUENCE_MODES:
        raise ValueError(f"mode must be one of {SEQUENCE_MODES}, got {mode!r}")
    stack = _as_frames(frames)
    count = stack.shape[0]
    if mode == "mean_mesh":
        if isinstance(initial, (list, tuple)):
            raise ValueError("mode='mean_mesh': give one initial Similarity for the averaged mesh, not a list")
        result = micc_rmse(stack.mean(0), predicted_faces, gt_vertices, gt_nose_tip, initial=initial, **kwargs)
        return SequenceResult(result.rmse, mode, [result])
    starts = list(initial) if isinstance(initial, (list, tuple)) else [initial] * count
    if len(starts) != count:
        raise ValueError(f"initial: {len(starts)} similarities for {count} frames")
    results = [micc_rmse(frame, predicted_faces, gt_vertices, gt_nose_tip, initial=start, **kwargs)
               for frame, start in zip(stack, starts)]
    per_frame = [r.rmse for r in results]
    return SequenceResult(float(np.mean(per_frame)), mode, results, per_frame)
