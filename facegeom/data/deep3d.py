"""Deep3DFaceRecon input preprocessing (PIPELINES.md §2.1), with the authors' arithmetic.

Source: sicxu/Deep3DFaceRecon_pytorch at 9167c7136aebef0c54d3ac74f4b0396222a491c1
(``D3D`` below): ``util/preprocess.py:24-46`` (POS), ``:143-164`` (resize_n_crop_img),
``:167-172`` (extract_5p), ``:175-204`` (align_img), ``:207-228`` (estimate_norm),
``util/load_mats.py:105-116`` (load_lm3d), ``test.py:26-36`` (read_data).

Conventions (as coded by the authors):

* Landmarks passed to :func:`align_img` are **y-up**: ``(x, H - 1 - y_img)`` in the original
  image (``D3D:test.py:31``; the training landmark files are stored that way). The returned
  224 crop landmarks are y-up too: ``y_img = 223 - y``.
* The image is resized with PIL BICUBIC to ``(int(w0 s), int(h0 s))`` and cropped with PIL,
  which fills the part of the box outside the image with black.
* ``trans_params = [w0, h0, s, tx, ty]`` (float64). The landmark transform uses ``s`` while
  the image was resized by ``int(w0 s) / w0`` and ``int(h0 s) / h0``; the two differ by less
  than ``1 / w0`` relative — kept as coded.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from facegeom.data._image import as_points, check_file, to_pil
from facegeom.data._image import AFFINE as _AFFINE, BICUBIC as _BICUBIC

#: 1-based iBUG indices used by ``extract_5p`` (D3D:util/preprocess.py:168).
_LM_IDX = np.array([31, 37, 40, 43, 46, 49, 55]) - 1

#: Standard 5 3D landmarks ``[5, 3]``: ``extract_5p`` of ``BFM/similarity_Lm3D_all.mat['lm']``
#: (values from PIPELINES.md §2.1 item 3, computed from the file shipped in D3D).
LM3D_STD = np.array([
    [-0.311487, 0.290361, 0.133780],
    [0.309799, 0.289720, 0.131795],
    [0.003253, -0.046179, 0.552442],
    [-0.252169, -0.381339, 0.224057],
    [0.248466, -0.381282, 0.222358],
])


def extract_5p(lm) -> np.ndarray:
    """Five points from 68 iBUG landmarks (``D3D:util/preprocess.py:167-172``).

    Args:
        lm: ``[68, D]`` array (D = 2 or 3).
    Returns:
        ``[5, D]``: image-left eye centre ``mean(37, 40)``, image-right eye centre
        ``mean(43, 46)``, nose tip ``31``, mouth corners ``49`` and ``55`` (1-based).
    """
    lm = np.asarray(lm)
    if lm.ndim != 2 or lm.shape[0] != 68:
        raise ValueError(f"lm must have shape [68, D], got {list(lm.shape)}")
    i = _LM_IDX
    return np.stack([lm[i[1:3]].mean(0), lm[i[3:5]].mean(0), lm[i[0]], lm[i[5]], lm[i[6]]], axis=0)


def load_lm3d(bfm_folder) -> np.ndarray:
    """``D3D:util/load_mats.py:105-116``: 5 standard 3D points from
    ``<bfm_folder>/similarity_Lm3D_all.mat`` (key ``lm``, ``[68, 3]``)."""
    import scipy.io

    path = check_file(os.path.join(os.fspath(bfm_folder), "similarity_Lm3D_all.mat"), "Deep3D landmark file")
    try:
        lm = np.asarray(scipy.io.loadmat(path)["lm"], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - any read failure is reported with the file
        raise ValueError(f"cannot read 'lm' from {path}: {exc}") from None
    return extract_5p(lm)


def POS(xp, x):
    """Scale and translation of a weak-perspective fit (``D3D:util/preprocess.py:24-46``).

    Solves ``A k = b`` in least squares, rows ``[X Y Z 1 0 0 0 0]`` / ``[0 0 0 0 X Y Z 1]``,
    ``b = [x1, y1, x2, y2, ...]``.

    Args:
        xp: ``[2, N]`` image points (the authors' transposed layout).
        x: ``[3, N]`` 3D points.
    Returns:
        ``(t, s)``: ``t`` ``[2]`` = ``(k[3], k[7])``, ``s = (|k[0:3]| + |k[4:7]|) / 2``.
    """
    xp = np.asarray(xp, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if xp.ndim != 2 or xp.shape[0] != 2 or x.shape != (3, xp.shape[1]) or xp.shape[1] < 4:
        raise ValueError(f"POS needs xp [2, N] and x [3, N] with N >= 4, got {list(xp.shape)} and {list(x.shape)}")
    n = xp.shape[1]
    A = np.zeros((2 * n, 8))
    A[0::2, 0:3] = x.T
    A[0::2, 3] = 1.0
    A[1::2, 4:7] = x.T
    A[1::2, 7] = 1.0
    b = xp.T.reshape(2 * n)
    k = np.linalg.lstsq(A, b, rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(s)


def _crop_box(w0: int, h0: int, t, s: float, target_size: float):
    # D3D:util/preprocess.py:145-150; numpy astype(int32) truncates toward zero, as int() does.
    w = int(w0 * s)
    h = int(h0 * s)
    left = int(w / 2 - target_size / 2 + float((t[0] - w0 / 2) * s))
    up = int(h / 2 - target_size / 2 + float((h0 / 2 - t[1]) * s))
    return w, h, left, up


def resize_n_crop_img(img, lm, t, s: float, target_size: float = 224.0, mask=None):
    """``D3D:util/preprocess.py:143-164``: PIL BICUBIC resize by ``s`` and a
    ``target_size`` crop; landmarks (y-up) moved with the same ``t, s``.

    Returns:
        ``(img, lm, mask)``: PIL images ``target_size`` square (mask None if not given) and
        ``[N, 2]`` float64 landmarks in the crop (y-up).
    """
    img = to_pil("img", img)
    w0, h0 = img.size
    w, h, left, up = _crop_box(w0, h0, t, s, target_size)
    if w < 1 or h < 1:
        raise ValueError(f"resize by s={s} of a {w0}x{h0} image gives an empty image")
    box = (left, up, left + int(target_size), up + int(target_size))
    img = img.resize((w, h), resample=_BICUBIC).crop(box)
    if mask is not None:
        mask = to_pil("mask", mask).resize((w, h), resample=_BICUBIC).crop(box)
    lm = np.stack([lm[:, 0] - t[0] + w0 / 2, lm[:, 1] - t[1] + h0 / 2], axis=1) * s
    lm = lm - np.array([[w / 2 - target_size / 2, h / 2 - target_size / 2]])
    return img, lm, mask


def align_img(img, lm, lm3D=None, mask=None, target_size: float = 224.0, rescale_factor: float = 102.0):
    """Deep3D's test/train alignment (``D3D:util/preprocess.py:175-204``).

    Args:
        img: PIL RGB image or ``[H, W, 3]`` uint8 array (size ``w0 x h0``).
        lm: ``[68, 2]`` or ``[5, 2]`` landmarks, **y-up** (``y = H - 1 - y_img``); 68 are
            reduced with :func:`extract_5p` for the fit, and all of them are transformed.
        lm3D: ``[5, 3]`` standard 3D points (default :data:`LM3D_STD`).
        mask: optional PIL image / uint8 array of the image's size (e.g. the skin mask).
        target_size: crop size (224). rescale_factor: 102.
    Returns:
        ``(trans_params, img_new, lm_new, mask_new)``: ``trans_params = [w0, h0, s, tx, ty]``
        float64 ``[5]``; ``img_new`` PIL ``target_size`` square; ``lm_new`` ``[N, 2]`` float64,
        y-up in the crop; ``mask_new`` PIL or None.

    Example:
        >>> tp, im224, lm224, _ = align_img(pil_image, lm68_yup)  # doctest: +SKIP
    """
    img = to_pil("img", img)
    lm = as_points("lm", lm, (5, 68))
    lm3D = LM3D_STD if lm3D is None else np.asarray(lm3D, dtype=np.float64)
    if lm3D.shape != (5, 3):
        raise ValueError(f"lm3D must have shape [5, 3], got {list(lm3D.shape)}")
    if mask is not None:
        mask = to_pil("mask", mask)
        if mask.size != img.size:
            raise ValueError(f"mask size {mask.size} must equal the image size {img.size}")
    w0, h0 = img.size
    lm5p = extract_5p(lm) if lm.shape[0] != 5 else lm
    t, s = POS(lm5p.T, lm3D.T)
    if not s > 0:
        raise ValueError("lm: the 5 landmarks are degenerate (POS scale is 0)")
    s = rescale_factor / s
    img_new, lm_new, mask_new = resize_n_crop_img(img, lm, t, s, target_size=target_size, mask=mask)
    trans_params = np.array([w0, h0, s, t[0], t[1]], dtype=np.float64)
    return trans_params, img_new, lm_new, mask_new


def _check_trans_params(trans_params) -> np.ndarray:
    tp = np.asarray(trans_params, dtype=np.float64).reshape(-1)
    if tp.shape != (5,) or not np.all(np.isfinite(tp)) or tp[0] < 1 or tp[1] < 1 or tp[2] <= 0:
        raise ValueError(f"trans_params must be [w0, h0, s, tx, ty] with w0, h0 >= 1 and s > 0, got {tp.tolist()}")
    return tp


def landmarks_to_original(lm, trans_params, target_size: float = 224.0) -> np.ndarray:
    """Inverse of :func:`align_img`'s landmark transform: crop (y-up) -> original image (y-up).

    ``lm_orig = (lm + [w/2 - T/2, h/2 - T/2]) / s + [tx - w0/2, ty - h0/2]`` with
    ``w = int(w0 s)``, ``h = int(h0 s)`` (exact inverse of ``D3D:util/preprocess.py:159-162``).
    For image rows use ``y_img = h0 - 1 - y``.
    """
    lm = as_points("lm", lm)
    w0, h0, s, tx, ty = _check_trans_params(trans_params)
    w, h = int(w0 * s), int(h0 * s)
    lm = (lm + np.array([[w / 2 - target_size / 2, h / 2 - target_size / 2]])) / s
    return lm + np.array([[tx - w0 / 2, ty - h0 / 2]])


def image_to_original(img, trans_params):
    """Paste an aligned crop back into the original frame (inverse of the resize + crop).

    The forward map is PIL's: original continuous coordinate ``X`` -> resized ``X w / w0`` ->
    crop ``X w / w0 - left`` (and the same for y with ``h / h0``, ``up``). The inverse is one PIL
    ``AFFINE`` BICUBIC transform; pixels the crop does not cover are 0.

    Args:
        img: PIL image or uint8 array (``T x T``, the aligned crop).
        trans_params: ``[w0, h0, s, tx, ty]`` from :func:`align_img`.
    Returns:
        ``(image, valid)``: PIL image of size ``(w0, h0)`` and a bool ``[h0, w0]`` array that
        is True where the pixel centre maps inside the crop.
    """
    img = to_pil("img", img)
    w0, h0, s, tx, ty = _check_trans_params(trans_params)
    w0, h0 = int(w0), int(h0)
    target = img.size[0]
    if img.size[1] != target:
        raise ValueError(f"img must be square (the aligned crop), got size {img.size}")
    w, h, left, up = _crop_box(w0, h0, (tx, ty), s, float(target))
    ax, ay = w / w0, h / h0
    out = img.transform((w0, h0), _AFFINE, data=(ax, 0.0, -left, 0.0, ay, -up), resample=_BICUBIC)
    cx = (np.arange(w0) + 0.5) * ax - left
    cy = (np.arange(h0) + 0.5) * ay - up
    valid = ((cy >= 0) & (cy <= target))[:, None] & ((cx >= 0) & (cx <= target))[None, :]
    return out, valid


def estimate_norm(lm_68p, H: float) -> np.ndarray:
    """Deep3D's ArcFace warp for an aligned image (``D3D:util/preprocess.py:207-228``).

    Five points from the y-up 68 landmarks, flipped to y-down with ``H - 1 - y``, fitted by a
    similarity (Umeyama, as skimage ``SimilarityTransform.estimate``) to the 112 ArcFace
    template :data:`facegeom.data.arcface.ARCFACE_TEMPLATE` (not rescaled to ``H``: the
    authors warp a ``H x H`` image straight to 112). Identity when the matrix is singular
    (the authors' ``det == 0`` test; also used when the fit is undefined / NaN).

    Args:
        lm_68p: ``[68, 2]`` y-up landmarks (``[5, 2]`` are used as the five points).
        H: image height.
    Returns:
        ``M`` ``[2, 3]`` float64 (source pixel -> 112 template pixel, OpenCV convention).
    """
    from facegeom.data.arcface import ARCFACE_TEMPLATE, umeyama

    lm = as_points("lm_68p", lm_68p, (5, 68))
    lm = extract_5p(lm) if lm.shape[0] == 68 else lm.copy()
    lm[:, -1] = H - 1 - lm[:, -1]
    M = umeyama(torch.from_numpy(lm), torch.from_numpy(ARCFACE_TEMPLATE.astype(np.float64))).numpy()
    if not np.all(np.isfinite(M)) or np.linalg.det(M) == 0:
        M = np.eye(3)
    return M[0:2, :]


def estimate_norm_torch(lm_68p: torch.Tensor, H: float) -> torch.Tensor:
    """``D3D:util/preprocess.py:230-236``: :func:`estimate_norm` per batch item.

    Args:
        lm_68p: ``[B, 68, 2]`` tensor (y-up). Returns ``[B, 2, 3]`` float32 on its device.
    """
    if not isinstance(lm_68p, torch.Tensor) or lm_68p.dim() != 3:
        raise ValueError(f"lm_68p must be a [B, 68, 2] tensor, got {getattr(lm_68p, 'shape', type(lm_68p))}")
    lm = lm_68p.detach().cpu().double().numpy()
    M = np.stack([estimate_norm(x, H) for x in lm]) if len(lm) else np.zeros((0, 2, 3))
    return torch.tensor(M, dtype=torch.float32, device=lm_68p.device)


def to_tensor(img) -> torch.Tensor:
    """``np.array(img) / 255`` as a float32 ``[C, H, W]`` tensor (``D3D:test.py:34``; no
    ImageNet normalisation). 2-D images give ``[1, H, W]``."""
    arr = np.asarray(to_pil("img", img), dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
