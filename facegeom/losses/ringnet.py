"""RingNet's losses (Sanyal et al. 2019, eqs. 4-8; PIPELINES.md §3.5). No training code was
released: these follow the printed formulas; the landmark normalisation follows HMR's
``keypoint_l1_loss`` **[INFERRED]** (PIPELINES.md §3.5 item 2).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from facegeom import _checks

__all__ = ["RING_ETA", "CONFIDENCE_THRESHOLD", "ring_loss", "landmark_loss", "regularizer", "total_loss"]

RING_ETA = 0.5
CONFIDENCE_THRESHOLD = 0.41  # eq. 7: w_i = 1 if the detector's confidence > 0.41


def ring_loss(shape: Tensor, eta: float = RING_ETA, include_diagonal: bool = True) -> Tensor:
    """Shape-consistency loss ``L_SC`` (eqs. 4-6).

    Args:
        shape: ``[n_b, R, D]`` shape codes of ``n_b`` rings; elements ``0..R-2`` show the same
            identity, element ``R-1`` another one.
        eta: margin (0.5).
        include_diagonal: the printed double sum runs over all ordered ``(j, k)``, ``j = k``
            included (those terms are ``max(0, eta - ||b_ij - b_iR||^2)``); ``False`` drops them.
    Returns:
        ``sum_i sum_{j,k} max(0, ||b_ij - b_ik||^2 - ||b_ij - b_iR||^2 + eta) / (n_b * R)``.
    """
    _checks.floating("shape", shape)
    _checks.shape("shape", shape, [None, None, None], "[n_b, R, D]")
    n_b, R = shape.shape[:2]
    if R < 2:
        raise ValueError(f"shape: a ring needs R >= 2 elements, got R = {R}")
    same, other = shape[:, :-1], shape[:, -1:]
    d_same = ((same[:, :, None] - same[:, None, :]) ** 2).sum(-1)  # [n_b, R-1, R-1] (j, k)
    d_other = ((same - other) ** 2).sum(-1)  # [n_b, R-1] (j)
    terms = torch.relu(d_same - d_other[:, :, None] + eta)
    if not include_diagonal:
        terms = terms * (1 - torch.eye(R - 1, dtype=terms.dtype, device=terms.device))
    return terms.sum() / (n_b * R)


def landmark_loss(pred: Tensor, target: Tensor, confidence: Optional[Tensor] = None,
                  threshold: float = CONFIDENCE_THRESHOLD) -> Tensor:
    """Landmark projection loss (eq. 7), HMR's ``keypoint_l1_loss`` normalisation: the sum of
    ``|pred - target|`` over the coordinates of landmarks with ``confidence > threshold``,
    divided by the number of those coordinates (``SUM_BY_NONZERO_WEIGHTS``; 0 when none).

    Args:
        pred, target: ``[B, N, 2]`` (normalised image coordinates in [-1, 1]).
        confidence: ``[B, N]`` detector confidences (``None``: all visible).
    """
    _checks.shape("pred", pred, [None, None, 2], "[B, N, 2]")
    if not isinstance(target, Tensor) or target.shape != pred.shape:
        raise ValueError(f"target must have pred's shape {list(pred.shape)}")
    if confidence is None:
        weight = torch.ones(pred.shape[:2], dtype=pred.dtype, device=pred.device)
    else:
        if not isinstance(confidence, Tensor) or confidence.shape != pred.shape[:2]:
            raise ValueError(f"confidence must have shape {list(pred.shape[:2])}")
        weight = (confidence > threshold).to(pred.dtype)
    weight = weight[..., None].expand_as(pred)
    count = (weight != 0).sum()
    total = ((pred - target).abs() * weight).sum()
    return total / count.clamp(min=1).to(total.dtype)


def regularizer(code: Tensor) -> Tensor:
    """``||code||^2`` averaged over the batch (``[B, K]`` -> scalar) **[INFERRED: batch mean]**."""
    _checks.shape("code", code, [None, None], "[B, K]")
    return (code ** 2).sum(-1).mean()


def total_loss(shape_rings: Tensor, landmarks: Tensor, target: Tensor, confidence: Optional[Tensor],
               expression: Tensor, weights: Optional[Dict[str, float]] = None,
               include_diagonal: bool = True, eta: float = RING_ETA) -> Dict[str, Tensor]:
    """Eq. 8: ``L = l_sc L_SC + l_proj L_proj + l_shape ||b||^2 + l_exp ||psi||^2`` with
    ``l_sc 1, l_proj 60, l_shape 1e-4, l_exp 1e-4``.

    Args:
        shape_rings: ``[n_b, R, D]``; landmarks, target: ``[n_b * R, 68, 2]``;
        confidence: ``[n_b * R, 68]`` or None; expression: ``[n_b * R, E]``.
    Returns:
        dict of the terms and ``"total"``.
    """
    w = {"sc": 1.0, "proj": 60.0, "shape": 1e-4, "exp": 1e-4}
    w.update(weights or {})
    terms = {"ring": ring_loss(shape_rings, eta=eta, include_diagonal=include_diagonal),
             "landmarks": landmark_loss(landmarks, target, confidence),
             "shape_reg": regularizer(shape_rings.flatten(0, 1)),
             "exp_reg": regularizer(expression)}
    terms["total"] = (w["sc"] * terms["ring"] + w["proj"] * terms["landmarks"] + w["shape"] * terms["shape_reg"]
                      + w["exp"] * terms["exp_reg"])
    return terms
