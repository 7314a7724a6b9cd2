"""Image helpers shared by the preprocessing modules: argument checks, PIL <-> numpy,
and numpy equivalents of the three OpenCV calls the authors' code makes
(``cv2.resize`` with ``INTER_LINEAR`` / ``INTER_CUBIC`` and ``cv2.warpAffine`` with
bilinear sampling and a constant 0 border): RingNet's resize (PIPELINES.md §3.1), insightface
``norm_crop``'s warp (§6.1) and the tracker's crop (§7.1).

OpenCV is not a facegeom dependency, so these are written from OpenCV's documented
arithmetic (``modules/imgproc/src/resize.cpp`` and ``imgwarp.cpp``):

* ``resize``: destination pixel ``d`` samples source coordinate
  ``f = (d + 0.5) * (src/dst) - 0.5`` (pixel centres at integers). Linear: the coordinate
  is clamped to ``[0, n-1]``; cubic: Keys kernel with ``A = -0.75`` over the 4 neighbours
  ``floor(f)-1 .. floor(f)+2``, indices clamped to the image (replicate border).
* ``warp_affine``: ``M`` (2x3) maps source to destination; each destination pixel
  ``(x, y)`` (integers, no half-pixel shift) samples the source at ``M^-1 (x, y, 1)``.
  OpenCV 4.x (what the authors ran) quantises that coordinate to 1/32 pixel
  (``INTER_BITS = 5``); that is the default here (``subpixel_bits=5``); OpenCV 5 samples at
  the exact coordinate (``subpixel_bits=None``). Neighbours outside the image read 0.

Differences from OpenCV (tested against it when ``cv2`` is importable): for ``uint8``
images OpenCV uses fixed-point weights (11-bit for resize, 15-bit for warps, and the
"bit-exact" 8-bit path for linear resize) and rounds at the end; this module accumulates
in float64 and rounds half to even once. Results differ by at most 1 grey level (one LSB)
and are identical for float images up to float rounding.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

# PIL's resampling / transform constants, as the authors' code uses them (PIL.Image.BICUBIC, AFFINE).
try:  # Pillow >= 9.1
    BICUBIC = Image.Resampling.BICUBIC
    AFFINE = Image.Transform.AFFINE
except AttributeError:  # pragma: no cover - old Pillow
    BICUBIC = Image.BICUBIC
    AFFINE = Image.AFFINE


def as_uint8_image(name: str, img, channels: tuple = (3,)) -> np.ndarray:
    """``img`` (PIL image or ``H x W x C`` uint8 array) as a uint8 numpy array."""
    if isinstance(img, Image.Image):
        img = np.asarray(img)
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a PIL image or a numpy uint8 array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] not in channels or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{name} must have shape [H, W, C] with C in {channels} and H, W >= 1, got {list(img.shape)}")
    return img


def as_points(name: str, pts, n: tuple | None = None) -> np.ndarray:
    """``pts`` (array-like ``[N, 2]``) as a finite float64 array; ``n`` lists allowed N."""
    try:
        arr = np.asarray(pts.detach().cpu() if hasattr(pts, "detach") else pts, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric [N, 2] array: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or (n is not None and arr.shape[0] not in n):
        want = f"[{' or '.join(map(str, n))}, 2]" if n else "[N, 2]"
        raise ValueError(f"{name} must have shape {want}, got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return arr


def to_pil(name: str, img) -> Image.Image:
    """A PIL image from a PIL image or a uint8 ``H x W x 3`` / ``H x W`` array."""
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim in (2, 3):
        return Image.fromarray(img)
    raise TypeError(f"{name} must be a PIL image or a uint8 numpy array [H, W(, C)], "
                    f"got {type(img).__name__} {getattr(img, 'dtype', '')}")


def _round_cast(out: np.ndarray, dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype)


def _linear_taps(n_src: int, n_dst: int):
    scale = n_src / n_dst
    f = (np.arange(n_dst) + 0.5) * scale - 0.5
    f = np.clip(f, 0.0, n_src - 1)
    i0 = np.floor(f).astype(np.int64)
    frac = f - i0
    i1 = np.minimum(i0 + 1, n_src - 1)
    return [i0, i1], [1.0 - frac, frac]


def _cubic_taps(n_src: int, n_dst: int, a: float = -0.75):
    scale = n_src / n_dst
    f = (np.arange(n_dst) + 0.5) * scale - 0.5
    i = np.floor(f).astype(np.int64)
    x = f - i
    # OpenCV interpolateCubic (resize.cpp): Keys kernel, A = -0.75.
    c0 = ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a
    c1 = ((a + 2) * x - (a + 3)) * x * x + 1
    c2 = ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1
    c3 = 1.0 - c0 - c1 - c2
    idx = [np.clip(i + k, 0, n_src - 1) for k in (-1, 0, 1, 2)]
    return idx, [c0, c1, c2, c3]


def cv2_resize(img: np.ndarray, size: tuple, interpolation: str = "linear") -> np.ndarray:
    """``cv2.resize(img, size, interpolation=...)`` for ``H x W (x C)`` arrays.

    Args:
        img: ``[H, W]`` or ``[H, W, C]`` uint8 or float array.
        size: ``(width, height)`` of the output, as in OpenCV.
        interpolation: ``"linear"`` (``INTER_LINEAR``, OpenCV's default) or ``"cubic"``
            (``INTER_CUBIC``).
    Returns:
        ``[height, width(, C)]`` array of ``img``'s dtype (uint8: rounded and clipped).
    """
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"img must be a numpy array [H, W] or [H, W, C], got {getattr(img, 'shape', type(img))}")
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"size must be (width, height) with both >= 1, got {tuple(size)}")
    taps = {"linear": _linear_taps, "cubic": _cubic_taps}.get(interpolation)
    if taps is None:
        raise ValueError(f"interpolation must be 'linear' or 'cubic', got {interpolation!r}")
    src = img.astype(np.float64)
    iy, wy = taps(img.shape[0], h)
    ix, wx = taps(img.shape[1], w)
    extra = (None,) * (img.ndim - 2)
    rows = sum(src[i] * wt[(slice(None), None) + extra] for i, wt in zip(iy, wy))
    out = sum(rows[:, i] * wt[(None, slice(None)) + extra] for i, wt in zip(ix, wx))
    return _round_cast(out, img.dtype)


def invert_affine(M: np.ndarray) -> np.ndarray:
    """``cv2.invertAffineTransform``: the 2x3 inverse of a 2x3 affine map (0 if singular)."""
    M = np.asarray(M, dtype=np.float64)
    if M.shape != (2, 3):
        raise ValueError(f"M must have shape [2, 3], got {list(M.shape)}")
    d = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22, a12, a21 = M[1, 1] * d, M[0, 0] * d, -M[0, 1] * d, -M[1, 0] * d
    b1 = -a11 * M[0, 2] - a12 * M[1, 2]
    b2 = -a21 * M[0, 2] - a22 * M[1, 2]
    return np.array([[a11, a12, b1], [a21, a22, b2]])


def cv2_warp_affine(img: np.ndarray, M, size: tuple, border_value: float = 0.0,
                    subpixel_bits: int | None = 5) -> np.ndarray:
    """``cv2.warpAffine(img, M, size, borderValue=border_value)`` (bilinear, constant border).

    Args:
        img: ``[H, W]`` or ``[H, W, C]`` uint8 or float array.
        M: ``[2, 3]`` map from source pixel coordinates to destination pixel coordinates
            (integer pixel centres, as OpenCV).
        size: ``(width, height)`` of the output.
        border_value: value read for neighbours outside the image.
        subpixel_bits: ``5`` reproduces OpenCV 4.x (the version the authors ran), which
            quantises every source coordinate to 1/32 pixel (``INTER_BITS = 5``) after
            rounding the column term ``A[:, 0] x`` and the row term ``A[:, 1] y + A[:, 2]``
            to 1/1024 (``AB_BITS = 10``) and adding a rounding delta of 16;
            ``None`` samples at the exact coordinate, as OpenCV 5 does.
    Returns:
        ``[height, width(, C)]`` array of ``img``'s dtype.
    """
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"img must be a numpy array [H, W] or [H, W, C], got {getattr(img, 'shape', type(img))}")
    w, h = int(size[0]), int(size[1])
    if w < 1 or h < 1:
        raise ValueError(f"size must be (width, height) with both >= 1, got {tuple(size)}")
    if subpixel_bits not in (None, 5):
        raise ValueError(f"subpixel_bits must be 5 (OpenCV 4.x) or None (exact), got {subpixel_bits!r}")
    A = invert_affine(M)
    if not np.all(np.isfinite(A)):
        raise ValueError("M must be finite")
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    if subpixel_bits is None:
        sx = A[0, 0] * xs[None, :] + (A[0, 1] * ys + A[0, 2])[:, None]
        sy = A[1, 0] * xs[None, :] + (A[1, 1] * ys + A[1, 2])[:, None]
        x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
        fx, fy = sx - x0, sy - y0
    else:
        ab, half = 1024.0, 16
        col_x = np.rint(A[0, 0] * xs * ab).astype(np.int64)
        col_y = np.rint(A[1, 0] * xs * ab).astype(np.int64)
        row_x = np.rint((A[0, 1] * ys + A[0, 2]) * ab).astype(np.int64) + half
        row_y = np.rint((A[1, 1] * ys + A[1, 2]) * ab).astype(np.int64) + half
        X = (row_x[:, None] + col_x[None, :]) >> 5
        Y = (row_y[:, None] + col_y[None, :]) >> 5
        x0, y0 = X >> 5, Y >> 5
        fx, fy = (X & 31) / 32.0, (Y & 31) / 32.0
    src = img.astype(np.float64)
    H, W = img.shape[:2]
    extra = (None,) * (img.ndim - 2)
    out = np.zeros((h, w) + img.shape[2:], dtype=np.float64)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            val = np.where(inside[(...,) + extra], src[np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)], border_value)
            out += (wx * wy)[(...,) + extra] * val
    return _round_cast(out, img.dtype)


def check_file(path, what: str) -> str:
    """``path`` as a string, or FileNotFoundError naming ``what`` and the path."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path
