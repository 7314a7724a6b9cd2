"""Deep3D training augmentation (PIPELINES.md §2.1 "Training-time additions").

Source: ``D3D:data/base_dataset.py:77-131`` (``get_affine_mat``, ``apply_img_affine``,
``apply_lm_affine``) and ``D3D:data/flist_dataset.py:89-91,103-109`` (``_augmentation``), with
the options ``D3D:options/train_options.py:24-25`` (``preprocess='shift_scale_rot_flip'``,
``use_aug=True``) and ``D3D:models/facerecon_model.py:47-49`` (``shift_pixs=10``,
``scale_delta=0.1``, ``rot_angle=10``).

* Parameters: ``shift_x, shift_y ~ U{-10..10}`` (integers, inclusive), ``scale = 1 + 0.1 (2u - 1)``,
  ``rot = 10 (2u - 1)`` degrees, flip if ``u > 0.5`` (drawn in that order). The authors use
  Python's global ``random``; here a ``torch.Generator`` makes it deterministic.
* ``affine = T(w//2, h//2) S Rot Shift Flip T(-w//2, -h//2)`` in y-down pixel coordinates,
  ``Rot = [[cos r, sin r], [-sin r, cos r]]`` with ``r = -rot`` in radians.
* Image: PIL ``AFFINE`` with the inverse matrix and BICUBIC (the mask too: the authors'
  ``apply_img_affine`` ignores its ``method`` argument).
* Landmarks (y-up, as Deep3D stores them): flipped to y-down with ``h - 1 - y``, mapped by
  ``affine``, flipped back; on a horizontal flip re-ordered with :data:`MIRROR_68`.

As coded, the landmarks use pixel-index coordinates while PIL warps continuous coordinates
(pixel centres at ``i + 0.5``), so the warped image sits ``(A - I) (0.5, 0.5)`` pixels from the
warped landmarks: negligible without a flip, about one pixel to the left with a flip. Kept,
so that models trained on the authors' data see the same pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from facegeom.data._image import as_points, to_pil
from facegeom.data._image import AFFINE as _AFFINE, BICUBIC as _BICUBIC


def _mirror_68() -> np.ndarray:
    # D3D:data/base_dataset.py:116-130: new[dst] = old[src] for each (dst slice, src slice).
    perm = np.arange(68)
    pairs = [((0, 17), range(16, -1, -1)), ((17, 22), range(26, 21, -1)), ((22, 27), range(21, 16, -1)),
             ((31, 36), range(35, 30, -1)), ((36, 40), range(45, 41, -1)), ((40, 42), range(47, 45, -1)),
             ((42, 46), range(39, 35, -1)), ((46, 48), range(41, 39, -1)), ((48, 55), range(54, 47, -1)),
             ((55, 60), range(59, 54, -1)), ((60, 65), range(64, 59, -1)), ((65, 68), range(67, 64, -1))]
    for (a, b), src in pairs:
        perm[a:b] = list(src)
    return perm


#: 68-point mirror order: after a horizontal flip, ``lm_new = lm[MIRROR_68]``
#: (``D3D:data/base_dataset.py:116-130``; points 27-30, the nose bridge, keep their index).
MIRROR_68 = _mirror_68()


@dataclass(frozen=True)
class AffineParams:
    """One draw of Deep3D's augmentation: shift (pixels), scale, rotation (degrees), flip."""
    shift_x: int = 0
    shift_y: int = 0
    scale: float = 1.0
    rot_angle: float = 0.0
    flip: bool = False


def sample_affine_params(generator: torch.Generator | None = None, shift_pixs: int = 10,
                         scale_delta: float = 0.1, rot_angle: float = 10.0, flip: bool = True) -> AffineParams:
    """Draw :class:`AffineParams` as ``D3D:data/base_dataset.py:81-92`` does (same distributions,
    same order), from ``generator`` (deterministic for a seeded generator)."""
    def uniform() -> float:
        return float(torch.rand((), generator=generator, dtype=torch.float64))

    sp = int(shift_pixs)
    sx = int(torch.randint(-sp, sp + 1, (), generator=generator))
    sy = int(torch.randint(-sp, sp + 1, (), generator=generator))
    scale = 1 + scale_delta * (2 * uniform() - 1)
    rot = rot_angle * (2 * uniform() - 1)
    do_flip = uniform() > 0.5 if flip else False
    return AffineParams(sx, sy, scale, rot, do_flip)


def get_affine_mat(params: AffineParams, size) -> tuple[np.ndarray, np.ndarray, bool]:
    """``D3D:data/base_dataset.py:94-102``: ``(affine, affine_inv, flip)`` 3x3 float64 for an
    image of ``size = (w, h)``."""
    w, h = int(size[0]), int(size[1])
    r = -params.rot_angle * np.pi / 180
    # As coded: ``-w//2`` is ``(-w) // 2`` in Python, so for odd sizes the shift to the origin
    # (-(w+1)/2) and back (+(w-1)/2) differ by one pixel.
    to_origin = np.array([[1, 0, (-w) // 2], [0, 1, (-h) // 2], [0, 0, 1]], dtype=np.float64)
    flip_mat = np.diag([-1.0 if params.flip else 1.0, 1.0, 1.0])
    shift_mat = np.array([[1, 0, params.shift_x], [0, 1, params.shift_y], [0, 0, 1]], dtype=np.float64)
    rot_mat = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    scale_mat = np.diag([params.scale, params.scale, 1.0])
    to_center = np.array([[1, 0, w // 2], [0, 1, h // 2], [0, 0, 1]], dtype=np.float64)
    affine = to_center @ scale_mat @ rot_mat @ shift_mat @ flip_mat @ to_origin
    return affine, np.linalg.inv(affine), bool(params.flip)


def apply_img_affine(img, affine_inv) -> Image.Image:
    """``D3D:data/base_dataset.py:104-105``: PIL ``AFFINE`` (output pixel -> input pixel with
    ``affine_inv``), BICUBIC, same size, black outside."""
    img = to_pil("img", img)
    return img.transform(img.size, _AFFINE, data=tuple(np.asarray(affine_inv).flatten()[:6]), resample=_BICUBIC)


def apply_lm_affine(landmark, affine, flip: bool, size) -> np.ndarray:
    """``D3D:data/base_dataset.py:107-131``: y-up landmarks through ``affine`` (a y-down map).

    Args:
        landmark: ``[N, 2]`` y-up points (``N = 68`` when ``flip``).
        affine: 3x3. flip: re-order with :data:`MIRROR_68`. size: ``(w, h)``.
    Returns:
        ``[N, 2]`` float64 y-up points.
    """
    _, h = size
    lm = as_points("landmark", landmark).copy()
    if flip and lm.shape[0] != 68:
        raise ValueError(f"landmark must have 68 points to be mirrored, got {lm.shape[0]}")
    lm[:, 1] = h - 1 - lm[:, 1]
    lm = np.concatenate([lm, np.ones((lm.shape[0], 1))], -1) @ np.asarray(affine, dtype=np.float64).T
    lm = lm[:, :2] / lm[:, 2:]
    lm[:, 1] = h - 1 - lm[:, 1]
    if flip:
        lm = lm[MIRROR_68]
    return lm


def augment(img, lm, mask=None, params: AffineParams | None = None, generator: torch.Generator | None = None):
    """Deep3D's ``_augmentation`` (``D3D:data/flist_dataset.py:103-109``).

    Args:
        img: PIL image / uint8 array (the aligned 224 crop). lm: ``[68, 2]`` y-up.
        mask: optional PIL image / uint8 array (same size), warped with BICUBIC as the image.
        params: explicit parameters; otherwise drawn with :func:`sample_affine_params`.
    Returns:
        ``(img, lm, mask, params)``.

    Example::

        img2, lm2, msk2, p = augment(img224, lm224, msk224, generator=torch.Generator().manual_seed(0))
    """
    img = to_pil("img", img)
    if params is None:
        params = sample_affine_params(generator)
    affine, affine_inv, flip = get_affine_mat(params, img.size)
    img_out = apply_img_affine(img, affine_inv)
    lm_out = apply_lm_affine(lm, affine, flip, img.size)
    mask_out = apply_img_affine(mask, affine_inv) if mask is not None else None
    return img_out, lm_out, mask_out, params
