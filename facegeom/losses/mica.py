"""MICA's region-weighted vertex loss and its derived FLAME masks.

Source: ``MICA:micalib/models/mica.py:107-120`` (the loss) and
``MICA:utils/masking.py:178-185`` (per-vertex weights), PIPELINES.md §6.4.

- Per-vertex weights ``W [1, V, 3]``: ``whole`` (1) everywhere, then the eyeballs
  (``left_eyeball ∪ right_eyeball``) ``eyes`` (0.01), then the ears (``left_ear ∪
  right_ear``) ``ears`` (0.01), then the ``face`` region ``face`` (150) — assigned in
  that order, so the face wins where regions overlap.
- ``L = 1000 * mean_{b, v, xyz}(|V_pred - V_gt| * W)`` (vertices in metres).

The masks are the dict returned by :func:`facegeom.models.flame.load_flame_masks`
(``FLAME_masks.pkl``: region name -> vertex indices).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from facegeom import _checks

__all__ = ["MASK_WEIGHTS", "mask_eyes", "mask_ears", "mask_lr_eye_region", "triangle_mask",
           "weights_per_vertex", "weights_per_triangle", "vertex_loss"]

#: ``configs/mica.yml`` mask weights used by the loss (``nose/lips/forehead/eye_region`` are unused).
MASK_WEIGHTS: Dict[str, float] = {"whole": 1.0, "eyes": 0.01, "ears": 0.01, "face": 150.0}


def _region(masks: Mapping[str, Tensor], name: str) -> np.ndarray:
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict of region -> vertex indices, got {type(masks).__name__}")
    if name not in masks:
        raise KeyError(f"masks has no region {name!r} (regions: {sorted(masks)})")
    return np.asarray(torch.as_tensor(masks[name]).reshape(-1).cpu().numpy(), dtype=np.int64)


def _union(masks, *names) -> Tensor:
    return torch.from_numpy(np.unique(np.concatenate([_region(masks, n) for n in names])))


def mask_eyes(masks) -> Tensor:
    """Sorted unique ``left_eyeball ∪ right_eyeball`` (``masking.py`` ``get_mask_eyes``)."""
    return _union(masks, "left_eyeball", "right_eyeball")


def mask_ears(masks) -> Tensor:
    """Sorted unique ``left_ear ∪ right_ear`` (``masking.py`` ``get_mask_ears``)."""
    return _union(masks, "left_ear", "right_ear")


def mask_lr_eye_region(masks) -> Tensor:
    """``left_eye_region ∪ right_eye_region ∪ eyeballs`` (``masking.py`` ``get_mask_lr_eye_region``)."""
    return _union(masks, "left_eye_region", "right_eye_region", "left_eyeball", "right_eyeball")


def triangle_mask(faces: Tensor, vertices) -> Tensor:
    """Indices of the triangles whose three vertices all lie in ``vertices``
    (``masking.py`` ``get_triangle_mask``), sorted ascending.

    Args:
        faces: ``[F, 3]`` integer triangles.
        vertices: 1-D vertex indices.
    Returns:
        int64 ``[K]``.
    """
    faces = torch.as_tensor(faces)
    _checks.shape("faces", faces, [None, 3], "[F, 3]")
    vertices = torch.as_tensor(vertices, dtype=torch.int64).reshape(-1)
    num = int(max(int(faces.max()) + 1 if faces.numel() else 0, int(vertices.max()) + 1 if vertices.numel() else 0))
    inside = torch.zeros(num, dtype=torch.bool)
    inside[vertices] = True
    return torch.nonzero(inside[faces.long()].all(1)).reshape(-1)


def weights_per_vertex(masks, num_vertices: int, weights: Optional[Mapping[str, float]] = None,
                       dtype: Optional[torch.dtype] = None) -> Tensor:
    """MICA's per-vertex loss weights ``[1, V, 3]`` (``masking.py:178-185``).

    Order: ``whole`` everywhere, eyeballs ``eyes``, ears ``ears``, ``face`` last.
    """
    w = dict(MASK_WEIGHTS, **(weights or {}))
    if not isinstance(num_vertices, int) or num_vertices < 1:
        raise ValueError(f"num_vertices must be a positive int, got {num_vertices!r}")
    mask = torch.full((1, num_vertices, 3), float(w["whole"]), dtype=dtype or torch.get_default_dtype())
    for value, index in ((w["eyes"], mask_eyes(masks)), (w["ears"], mask_ears(masks)),
                         (w["face"], torch.from_numpy(_region(masks, "face")))):
        if index.numel() and (index.min() < 0 or index.max() >= num_vertices):
            raise IndexError(f"masks index vertices outside [0, {num_vertices})")
        mask[:, index, :] = float(value)
    return mask


def weights_per_triangle(masks, faces: Tensor, weights: Optional[Mapping[str, float]] = None,
                         dtype: Optional[torch.dtype] = None) -> Tensor:
    """MICA's per-triangle weights ``[1, F, 1]`` (``masking.py`` ``get_weights_per_triangle``):
    ``whole``, then triangles inside the eyeballs ``eyes``, then inside ``face`` ``face``."""
    w = dict(MASK_WEIGHTS, **(weights or {}))
    faces = torch.as_tensor(faces)
    _checks.shape("faces", faces, [None, 3], "[F, 3]")
    mask = torch.full((1, faces.shape[0], 1), float(w["whole"]), dtype=dtype or torch.get_default_dtype())
    mask[:, triangle_mask(faces, mask_eyes(masks)), :] = float(w["eyes"])
    mask[:, triangle_mask(faces, torch.from_numpy(_region(masks, "face"))), :] = float(w["face"])
    return mask


def vertex_loss(pred: Tensor, target: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """``1000 * mean(|pred - target| * weights)`` (``MICA:micalib/models/mica.py:107-120``).

    Args:
        pred: ``[B, V, 3]`` predicted canonical vertices (metres).
        target: ``[B, V, 3]`` ground truth (detached here, as the authors do).
        weights: ``[1 or B, V, 3]`` (:func:`weights_per_vertex`) or ``None`` (``use_mask=False``).
    Returns:
        scalar tensor.
    """
    _checks.shape("pred", pred, [None, None, 3], "[B, V, 3]")
    if not isinstance(target, Tensor) or target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {list(pred.shape)}, got "
                         f"{list(target.shape) if isinstance(target, Tensor) else type(target).__name__}")
    diff = (pred - target.detach()).abs()
    if weights is not None:
        if weights.dim() != 3 or weights.shape[1:] != pred.shape[1:] or weights.shape[0] not in (1, pred.shape[0]):
            raise ValueError(f"weights must have shape [1 or B, V, 3] = [.., {pred.shape[1]}, 3], "
                             f"got {list(weights.shape)}")
        diff = diff * weights.to(diff)
    return diff.mean() * 1000.0
