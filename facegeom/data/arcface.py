"""ArcFace 5-point alignment (PIPELINES.md §2.1, §6.1): insightface ``estimate_norm`` /
``norm_crop`` and MICA's input blob.

Sources: deepinsight/insightface @ 7fadd420c2351d0ffa8cac403421c1a3ed733365
``python-package/insightface/utils/face_align.py:6-30``
(``arcface_dst``, ``estimate_norm``, ``norm_crop``); scikit-image
``skimage/transform/_geometric.py`` ``_umeyama`` (what ``SimilarityTransform.estimate``
solves: Umeyama 1991, "Least-squares estimation of transformation parameters between two
point patterns", eq. 40-43); ``MICA:datasets/creation/util.py:27-45`` (``cv2.dnn.blobFromImages``
with ``1/127.5``, mean 127.5, ``swapRB=True``).

The warp is :func:`facegeom.data._image.cv2_warp_affine` (bilinear, border 0); see that module
for the at most one-grey-level difference from OpenCV's fixed-point interpolation and for the
OpenCV 4.x (default) versus OpenCV 5 sub-pixel coordinate choice.
"""
from __future__ import annotations

import numpy as np
import torch

from facegeom.data._image import as_points, as_uint8_image, cv2_warp_affine

#: The 112x112 ArcFace template (insightface ``arcface_dst``; PIPELINES.md §2.1):
#: image-left eye, image-right eye, nose tip, image-left and image-right mouth corners.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def umeyama(src: torch.Tensor, dst: torch.Tensor, estimate_scale: bool = True) -> torch.Tensor:
    """Least-squares similarity ``dst ~ c R src + t`` (Umeyama 1991), as skimage ``_umeyama``.

    Args:
        src, dst: ``[..., N, D]`` float tensors (same shape; batch dims broadcast).
        estimate_scale: fit ``c`` (True, a similarity) or fix ``c = 1`` (rigid).
    Returns:
        ``[..., D+1, D+1]`` homogeneous matrix; NaN when the cross-covariance has rank 0
        (all points identical), as skimage.
    """
    if not isinstance(src, torch.Tensor) or not isinstance(dst, torch.Tensor):
        raise TypeError("src and dst must be torch tensors")
    if src.dim() < 2 or src.shape[-1] < 1 or src.shape[-2] < 1 or src.shape[-2:] != dst.shape[-2:]:
        raise ValueError(f"src and dst must be [..., N, D] with the same N, D; got {list(src.shape)} and {list(dst.shape)}")
    src, dst = torch.broadcast_tensors(src.double(), dst.double())
    n, dim = src.shape[-2], src.shape[-1]
    src_mean, dst_mean = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    src_d, dst_d = src - src_mean, dst - dst_mean
    A = dst_d.transpose(-1, -2) @ src_d / n                       # [..., D, D] (eq. 38)
    d = torch.ones(A.shape[:-1], dtype=A.dtype, device=A.device)  # [..., D]
    d[..., -1] = torch.where(torch.linalg.det(A) < 0, -1.0, 1.0)  # eq. 39
    U, S, V = torch.linalg.svd(A)                                 # numpy/skimage naming: A = U diag(S) V
    rank = torch.linalg.matrix_rank(A)
    # rank == D-1: sign chosen from det(U) det(V) (eq. 43); otherwise U diag(d) V (eq. 40).
    d_low = d.clone()
    d_low[..., -1] = torch.where(torch.linalg.det(U) * torch.linalg.det(V) > 0, 1.0, -1.0)
    d_use = torch.where((rank == dim - 1)[..., None], d_low, d)
    R = U @ torch.diag_embed(d_use) @ V
    if estimate_scale:
        # skimage: 1 / src_demean.var(axis=0).sum() * (S @ d) -- with d, not d_use (eq. 42)
        var = src_d.pow(2).mean(-2).sum(-1)
        scale = (S * d).sum(-1) / var
    else:
        scale = torch.ones(A.shape[:-2], dtype=A.dtype, device=A.device)
    T = torch.zeros(A.shape[:-2] + (dim + 1, dim + 1), dtype=A.dtype, device=A.device)
    T[..., dim, dim] = 1.0
    T[..., :dim, dim] = dst_mean[..., 0, :] - scale[..., None] * (R @ src_mean[..., 0, :, None])[..., 0]
    T[..., :dim, :dim] = R * scale[..., None, None]
    return torch.where((rank == 0)[..., None, None], torch.full_like(T, float("nan")), T)


def estimate_norm(lmk, image_size: int = 112) -> np.ndarray:
    """insightface ``estimate_norm`` (``face_align.py:11-25``, mode ``'arcface'``).

    The template is scaled by ``image_size / 112`` (multiples of 112), or by
    ``image_size / 128`` and shifted right by ``8 image_size / 128`` (multiples of 128).

    Args:
        lmk: ``[5, 2]`` keypoints in image pixels (y down), order of :data:`ARCFACE_TEMPLATE`.
        image_size: output size, a multiple of 112 or 128.
    Returns:
        ``M`` ``[2, 3]`` float64 (source pixel -> aligned pixel, OpenCV convention).
    """
    lmk = as_points("lmk", lmk, (5,))
    if not isinstance(image_size, (int, np.integer)) or image_size <= 0 or (image_size % 112 and image_size % 128):
        raise ValueError(f"image_size must be a positive multiple of 112 or 128, got {image_size!r}")
    if image_size % 112 == 0:
        ratio, diff_x = float(image_size) / 112.0, 0.0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = ARCFACE_TEMPLATE * ratio          # float32, as insightface
    dst[:, 0] += diff_x
    M = umeyama(torch.from_numpy(lmk), torch.from_numpy(dst.astype(np.float64))).numpy()
    if not np.all(np.isfinite(M)):
        raise ValueError("lmk: the 5 keypoints are degenerate (all equal); no similarity exists")
    return M[0:2, :]


def norm_crop(img, landmark, image_size: int = 112, subpixel_bits: int | None = 5) -> np.ndarray:
    """insightface ``norm_crop`` (``face_align.py:27-30``): similarity warp to the template.

    Args:
        img: ``[H, W, 3]`` uint8 (any channel order; MICA passes BGR) or a PIL image.
        landmark: ``[5, 2]`` keypoints (pixels, y down).
        image_size: output size (112 for ArcFace, 224 for MICA's stored ``images``).
        subpixel_bits: 5 = OpenCV 4.x coordinate quantisation, None = exact (OpenCV 5).
    Returns:
        ``[image_size, image_size, 3]`` uint8; outside the source is 0.

    Example::

        aimg = norm_crop(img_bgr, kps)          # kps: [5, 2] from the detector
        blob = arcface_blob(aimg)               # [1, 3, 112, 112], MICA's ArcFace input
    """
    img = as_uint8_image("img", img)
    M = estimate_norm(landmark, image_size)
    return cv2_warp_affine(img, M, (image_size, image_size), border_value=0.0, subpixel_bits=subpixel_bits)


def arcface_blob(aligned_bgr, swap_rb: bool = True) -> torch.Tensor:
    """MICA's network input (``MICA:datasets/creation/util.py:27-45``, PIPELINES.md §6.1 step 4).

    ``cv2.dnn.blobFromImages([img], 1/127.5, (112, 112), (127.5,)*3, swapRB=True)``:
    channels reversed (BGR -> RGB), ``(x - 127.5) / 127.5`` in float32, NCHW.

    Args:
        aligned_bgr: ``[112, 112, 3]`` uint8 (BGR, as :func:`norm_crop` of a cv2 image) or
            ``[B, 112, 112, 3]``.
    Returns:
        ``[B, 3, 112, 112]`` float32 tensor in ``[-1, 1]``.
    """
    arr = np.asarray(aligned_bgr)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (112, 112, 3):
        raise ValueError(f"aligned_bgr must be uint8 [112, 112, 3] or [B, 112, 112, 3], got {arr.dtype} {list(arr.shape)}")
    if swap_rb:
        arr = arr[..., ::-1]
    blob = (arr.astype(np.float32) - np.float32(127.5)) * np.float32(1.0 / 127.5)
    return torch.from_numpy(np.ascontiguousarray(blob.transpose(0, 3, 1, 2)))
