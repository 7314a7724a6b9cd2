"""The tracker's energies and weights (PIPELINES.md §7.4), with the authors' function names.

Sources (``MT`` = ``Zielon/metrical-tracker`` at c2a517244759d7eeaa0e84893d6748e75293f81a):
``MT:util.py:93-158`` (``scale_lmks``, ``lmk_loss``, ``face_lmk_loss``, ``oval_lmk_loss``, ``mouth_lmk_loss``,
``eye_closure_lmk_loss``, ``pixel_loss``), ``MT:tracker.py:405-408`` (camera stage) and
``MT:tracker.py:497-526`` (the sum optimised per pyramid level), weights ``MT:configs/config.py:51-63``.

Batching: every function takes a leading batch ``B`` of frames and returns one value per frame ``[B]``;
the authors' ``.mean()`` / ``.sum()`` over their ``B = 1`` tensors is taken over each frame's own entries,
so ``B`` frames optimised together (summing the ``[B]`` values) get the gradients each would get alone.
Landmarks are in PyTorch3D screen pixels of the current image size ``(h, w)``; masks are ``[B, N, 1]``
(bool or float; missing landmarks are all-zero rows, ``MT:tracker.py:662-663``).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from facegeom.tracking.model import LIPS_LANDMARK_IDS, NOSE_LANDMARK_IDS, get_idx, identity_6d

Tensor = torch.Tensor

#: 68-point contour ids (``oval_ids``, ``MT:util.py:116``).
OVAL_IDS = tuple(range(17))
#: Eye-closure pairs on the 105-point array (``MT:util.py:133-134``).
UPPER_EYELID_IDS = (47, 46, 45, 29, 30, 31)
LOWER_EYELID_IDS = (39, 40, 41, 25, 24, 23)
#: Positions of the nose (weight 8, ``MT:util.py:39-42``) and lips (``MT:util.py:126``) in the 105-point array.
NOSE_POSITIONS = tuple(get_idx(NOSE_LANDMARK_IDS))
LIPS_POSITIONS = tuple(get_idx(LIPS_LANDMARK_IDS))
NOSE_WEIGHT = 8.0


def _frame_mean(t: Tensor) -> Tensor:
    return t.flatten(1).mean(1)


def _frame_sum(t: Tensor) -> Tensor:
    return t.flatten(1).sum(1)


def scale_lmks(opt_lmks: Tensor, target_lmks: Tensor, image_size: Sequence[float]):
    """Divide x by ``w`` and y by ``h`` (``MT:util.py:93-98``). ``[B, N, 2]`` each."""
    h, w = image_size
    size = opt_lmks.new_tensor([1.0 / w, 1.0 / h])
    return opt_lmks * size, target_lmks * size


def lmk_loss(opt_lmks: Tensor, target_lmks: Tensor, image_size, lmk_mask: Tensor) -> Tensor:
    """``mean((scaled p̂ - p)² ⊙ mask)`` per frame (``MT:util.py:101-104``). Returns ``[B]``."""
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    return _frame_mean((opt_lmks - target_lmks) ** 2 * lmk_mask)


def face_lmk_loss(opt_lmks: Tensor, target_lmks: Tensor, image_size, lmk_mask: Tensor) -> Tensor:
    """MediaPipe branch of ``face_lmk_loss`` (``is_mediapipe=True``, ``MT:util.py:107-112``): the 105 points
    with the 13 nose points weighted 8. Returns ``[B]``."""
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    nose = opt_lmks.new_ones(1, opt_lmks.shape[1], 1)
    nose[:, list(NOSE_POSITIONS)] = NOSE_WEIGHT
    return _frame_mean((opt_lmks - target_lmks) ** 2 * nose * lmk_mask)


def oval_lmk_loss(opt_lmks: Tensor, target_lmks: Tensor, image_size, lmk_mask: Tensor) -> Tensor:
    """The 17 contour points of the 68 (``MT:util.py:115-119``). Returns ``[B]``."""
    ids = list(OVAL_IDS)
    return lmk_loss(opt_lmks[:, ids], target_lmks[:, ids], image_size, lmk_mask[:, ids])


def mouth_lmk_loss(opt_lmks: Tensor, target_lmks: Tensor, image_size, lmk_mask: Tensor) -> Tensor:
    """The 40 lip points of the 105 (MediaPipe branch, ``MT:util.py:122-129``). Returns ``[B]``."""
    ids = list(LIPS_POSITIONS)
    return lmk_loss(opt_lmks[:, ids], target_lmks[:, ids], image_size, lmk_mask[:, ids])


def eye_closure_lmk_loss(opt_lmks: Tensor, target_lmks: Tensor, image_size, lmk_mask: Tensor) -> Tensor:
    """``mean(((û - l̂) - (u - l))² ⊙ mask_upper)`` on the 105 points (``MT:util.py:132-139``). Returns ``[B]``."""
    opt_lmks, target_lmks = scale_lmks(opt_lmks, target_lmks, image_size)
    upper, lower = list(UPPER_EYELID_IDS), list(LOWER_EYELID_IDS)
    diff_opt = opt_lmks[:, upper] - opt_lmks[:, lower]
    diff_target = target_lmks[:, upper] - target_lmks[:, lower]
    return _frame_mean((diff_opt - diff_target) ** 2 * lmk_mask[:, upper])


def pixel_loss(opt_img: Tensor, target_img: Tensor, mask: Tensor) -> Tensor:
    """``Σ |mask ⊙ (Î - I)| / #{pixels with mask[:, 0] > 0}`` per frame (``MT:util.py:152-158``).

    Args:
        opt_img, target_img: ``[B, 3, H, W]``; mask: ``[B, 1 or 3, H, W]`` (detached).

    Returns:
        ``[B]``. A frame whose mask is empty gives 0 (the authors' code divides 0 by 0 there).
    """
    n_pixels = (mask[:, 0] > 0).flatten(1).sum(1).to(opt_img.dtype).clamp(min=1.0)
    return _frame_sum((mask * (opt_img - target_img)).abs()) / n_pixels


def photometric_loss(samples, flipped: Tensor, aspect: Tensor) -> Tensor:
    """The dense term of ``MT:tracker.py:517-526`` without its weight, on the masked pixels only:
    ``pixel_loss(Î, grid_sample(flip_HW(I), position * aspect, align_corners=False), mask)``, where the masked
    pixels are the only ones contributing to the numerator and the denominator.

    Args:
        samples: :class:`facegeom.tracking.render.PixelSamples` (rendered colour and NDC position per pixel).
        flipped: ``[B, 3, h, w]`` the level's blurred image flipped in H and W (``torch.flip(img, [2, 3])``).
        aspect: ``[1, 2]`` ``get_aspect_ratio`` (``MT:util.py:328-335``).

    Returns:
        ``[B]``; 0 for a frame without masked pixels.
    """
    grid = samples.position * aspect
    batch = flipped.shape[0]
    parts = []
    for b in range(batch):
        rows = grid if batch == 1 else grid[samples.batch == b]
        parts.append(torch.nn.functional.grid_sample(flipped[b:b + 1], rows[None, None], align_corners=False)[0, :, 0].T)
    sampled = parts[0] if batch == 1 else torch.cat(parts)
    l1 = (samples.colour - sampled).abs().sum(1)  # [P]
    sums = l1.new_zeros(batch).index_add(0, samples.batch, l1)
    return sums / samples.counts.to(l1.dtype).clamp(min=1.0)


def reg_terms(params: Dict[str, Tensor], mica_shape: Tensor, weights) -> Dict[str, Tensor]:
    """The regularisers of ``MT:tracker.py:506-515``, ``[B]`` each (``weights``: a
    :class:`facegeom.tracking.Config`): ``reg/exp, reg/sym, reg/jaw, reg/eye_lids, reg/eye_left, reg/eye_right,
    reg/shape, reg/tex, reg/pp``. ``params`` holds ``exp, eyes, jaw, eyelids, shape, tex, principal_point``."""
    eyes, jaw = params["eyes"], params["jaw"]
    right_eye, left_eye = eyes[:, :6], eyes[:, 6:]  # the tracker's names (MT:tracker.py:495)
    i6d = identity_6d(1, eyes.dtype, eyes.device)
    eyelids = params["eyelids"]
    return {
        "reg/exp": _frame_sum(params["exp"] ** 2) * weights.w_exp,
        "reg/sym": _frame_sum((right_eye - left_eye) ** 2) * 8.0,
        "reg/jaw": _frame_sum((i6d - jaw) ** 2) * weights.w_jaw,
        "reg/eye_lids": (eyelids[:, 0] - eyelids[:, 1]) ** 2,
        "reg/eye_left": _frame_sum((i6d - left_eye) ** 2),
        "reg/eye_right": _frame_sum((i6d - right_eye) ** 2),
        "reg/shape": _frame_sum((params["shape"] - mica_shape) ** 2) * weights.w_shape,
        "reg/tex": _frame_sum(params["tex"] ** 2) * weights.w_tex,
        "reg/pp": _frame_sum(params["principal_point"] ** 2),
    }


def landmark_terms(proj68: Tensor, target68: Tensor, mask68: Tensor, image_size, weights,
                   proj_mp: Optional[Tensor] = None, target_mp: Optional[Tensor] = None,
                   mask_mp: Optional[Tensor] = None, iris: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
    """The sparse terms of ``MT:tracker.py:497-504``, ``[B]`` each: ``loss/lmk_oval``, ``loss/lmk_68`` and, with
    MediaPipe points, ``loss/lmk_MP``, ``loss/lmk_eye``, ``loss/lmk_mouth``; with ``iris`` (keys ``left``,
    ``right``, ``target_left``, ``target_right``, ``mask_left``, ``mask_right``), ``loss/lmk_iris_left/right``.
    The iris masks are passed as the tracker computes them: the boolean mask times the level's scale
    (``MT:tracker.py:464-465``), so the iris terms are weighted by ``level_h / h``."""
    terms = {
        "loss/lmk_oval": oval_lmk_loss(proj68, target68, image_size, mask68) * weights.w_lmks_oval,
        "loss/lmk_68": lmk_loss(proj68, target68, image_size, mask68) * weights.w_lmks_68,
    }
    if proj_mp is not None:
        terms["loss/lmk_MP"] = face_lmk_loss(proj_mp, target_mp, image_size, mask_mp) * weights.w_lmks
        terms["loss/lmk_eye"] = eye_closure_lmk_loss(proj_mp, target_mp, image_size, mask_mp) * weights.w_lmks_lid
        terms["loss/lmk_mouth"] = mouth_lmk_loss(proj_mp, target_mp, image_size, mask_mp) * weights.w_lmks_mouth
    if iris is not None:
        for side in ("left", "right"):
            terms[f"loss/lmk_iris_{side}"] = lmk_loss(iris[side], iris[f"target_{side}"], image_size,
                                                      iris[f"mask_{side}"]) * weights.w_lmks_iris
    return terms


def camera_terms(proj68: Tensor, target68: Tensor, mask68: Tensor, image_size, principal_point: Tensor, weights,
                 proj_mp: Optional[Tensor] = None, target_mp: Optional[Tensor] = None,
                 mask_mp: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """The camera stage's sum (``MT:tracker.py:405-408``), ``[B]`` each: ``pp_reg = Σ pp²``,
    ``lmk68 = lmk_loss · w_lmks`` and ``lmkMP = lmk_loss · w_lmks`` (plain ``lmk_loss`` on both, weight 7000)."""
    terms = {"pp_reg": _frame_sum(principal_point ** 2),
             "lmk68": lmk_loss(proj68, target68, image_size, mask68) * weights.w_lmks}
    if proj_mp is not None:
        terms["lmkMP"] = lmk_loss(proj_mp, target_mp, image_size, mask_mp) * weights.w_lmks
    return terms
