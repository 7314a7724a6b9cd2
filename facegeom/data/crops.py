"""Input crops of RingNet, 2DASL/3DDFA and the metrical tracker, with the authors' arithmetic.

Sources (commits in PIPELINES.md's table):

* RingNet loose crop, PIPELINES.md §3.1: ``RN:demo.py:102-120`` (``preprocess_image``) and
  ``RN:util/image.py:28-62`` (``resize_img``, ``scale_and_crop``).
* 2DASL input, PIPELINES.md §4.1:
  ``2DASL:test_codes/benchmark_0resnet50_4chls_FAN2d_18pts_1998.py:140-178,190-236``
  (18-point map, 4-channel input) and ``2DASL:test_codes/ddfa_utils2.py:86-103``
  (``ToTensorGjz``, ``NormalizeGjz(127.5, 128)``); the 3DDFA ROI helpers
  ``3DDFA:utils/inference.py:20-93`` and the 120 resize ``3DDFA:main.py:95-98``.
* Metrical tracker crop, PIPELINES.md §7.1: ``MT:image.py:22-57,73-79`` (``get_bbox``,
  ``crop_image``, ``squarefiy``, ``crop_image_bbox``), ``MT:datasets/generate_dataset.py:65-75``,
  ``MT:configs/config.py:37,41`` (``bbox_scale = 2.5``, ``image_size = [512, 512]``).

OpenCV resizes use :func:`facegeom.data._image.cv2_resize` (within one grey level of OpenCV).
"""
from __future__ import annotations

from math import sqrt

import numpy as np
import torch

from facegeom.data._image import as_points, as_uint8_image, cv2_resize


# ----------------------------------------------------------------------------- RingNet
def ringnet_crop(img, img_size: int = 224):
    """RingNet's loose-crop preprocessing (``RN:demo.py:102-120``, ``util/image.py:28-62``).

    ``scale = img_size / max(H, W)`` (1 when the longest side already is ``img_size``);
    ``cv2.resize`` (bilinear) to ``floor([H, W] * scale)``; centre ``round([W, H] / 2)`` scaled by
    the actual factors and rounded (numpy: half to even); edge padding by ``img_size // 2``;
    ``img_size`` square crop around the centre; ``2 (x / 255 - 0.5)``.

    Args:
        img: ``[H, W, 3]`` uint8 RGB (skimage ``imread``).
    Returns:
        ``(crop, proc_param)``: ``crop`` ``[img_size, img_size, 3]`` float64 in ``[-1, 1]``
        (NHWC input of the TF graph after adding a batch dim), ``proc_param`` dict with
        ``scale``, ``start_pt`` (``[x, y]`` in the padded image), ``end_pt``, ``img_size``.

    Example::

        crop, proc = ringnet_crop(np.asarray(Image.open(path).convert("RGB")))
        x = torch.from_numpy(crop).float()[None]       # [1, 224, 224, 3] NHWC
    """
    img = as_uint8_image("img", img)
    if np.max(img.shape[:2]) != img_size:
        scale = float(img_size) / np.max(img.shape[:2])
    else:
        scale = 1.0
    center = np.round(np.array(img.shape[:2]) / 2).astype(int)[::-1]    # (x, y)
    new_size = np.floor(np.array(img.shape[0:2]) * scale).astype(int)
    if new_size.min() < 1:
        raise ValueError(f"img of shape {list(img.shape)} resizes to an empty image")
    scaled = cv2_resize(img, (int(new_size[1]), int(new_size[0])), "linear")
    factors = np.array([new_size[1] / float(img.shape[1]), new_size[0] / float(img.shape[0])])
    center_scaled = np.round(center * factors).astype(int)
    margin = int(img_size / 2)
    padded = np.pad(scaled, ((margin,), (margin,), (0,)), mode="edge")
    start = center_scaled + margin - margin
    end = center_scaled + margin + margin
    crop = padded[start[1]:end[1], start[0]:end[0], :]
    crop = 2 * ((crop / 255.0) - 0.5)
    return crop, {"scale": scale, "start_pt": start, "end_pt": end, "img_size": img_size}


# ----------------------------------------------------------------------------- 3DDFA / 2DASL
#: 0-based indices of the 68 used for 2DASL's 18 points; entries 7, 10, 16 are replaced by
#: means (``benchmark_...1998.py:141-145``).
TDASL_18_INDEX = [17, 19, 21, 22, 24, 26, 36, 40, 39, 42, 46, 45, 31, 30, 35, 48, 66, 54]


def _pts_2xn(name: str, pts) -> np.ndarray:
    arr = np.asarray(pts, dtype=np.float64)
    if arr.shape == (68, 2):
        arr = arr.T
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] != 68:
        raise ValueError(f"{name} must have shape [2, 68] (the authors' layout) or [68, 2], got {list(arr.shape)}")
    if not np.all(np.isfinite(arr[:2])):
        raise ValueError(f"{name} must be finite")
    return arr[:2].copy()


def map_2d_18pts_2d(lms2d_68) -> np.ndarray:
    """``benchmark_...1998.py:140-146``: 68 -> 18 points.

    Args:
        lms2d_68: ``[2, 68]`` (x row, y row) or ``[68, 2]``.
    Returns:
        ``[2, 18]``: ``lms[:, TDASL_18_INDEX]`` with columns 7, 10, 16 replaced by
        ``mean(p37, p40)``, ``mean(p43, p46)``, ``mean(p62, p66)`` (0-based, as coded).
    """
    p = _pts_2xn("lms2d_68", lms2d_68)
    out = p[:, TDASL_18_INDEX]
    out[:, 7] = (p[:, 37] + p[:, 40]) / 2
    out[:, 10] = (p[:, 43] + p[:, 46]) / 2
    out[:, 16] = (p[:, 62] + p[:, 66]) / 2
    return out


def obtain_18pts_map(pts68, size: int = 120) -> np.ndarray:
    """2DASL's landmark channel (``benchmark_...1998.py:149-154,209-210``).

    Coordinates above 119 are set to 119 (no lower clip, as coded), the 18 points are taken
    with :func:`map_2d_18pts_2d`, and ``map[floor(y), floor(x)] = 1`` on a ``-1`` canvas.
    Negative indices follow numpy (``-1`` is the last row/column), as in the authors' code;
    below ``-size`` they raise IndexError.

    Args:
        pts68: ``[2, 68]`` or ``[68, 2]`` landmarks on the 120x120 crop.
    Returns:
        ``[120, 120]`` float64 map with values in ``{-1, 1}`` (not normalised).
    """
    pts = _pts_2xn("pts68", pts68)
    pts = pts.astype(np.float32)           # the authors' pts68 array is float32 (line 208)
    pts[pts > size - 1] = size - 1
    pts = map_2d_18pts_2d(pts)
    idx = np.floor(pts).astype(np.int32)
    if idx.min() < -size:
        raise IndexError(f"pts68: a landmark maps to index {int(idx.min())}, outside the {size}x{size} map")
    m = np.zeros((size, size)) - 1
    m[idx[1], idx[0]] = 1
    return m


def tdasl_input(crop_bgr, pts68) -> torch.Tensor:
    """2DASL's 4-channel network input (``benchmark_...1998.py:170-178,190-191,233-236``).

    Args:
        crop_bgr: ``[120, 120, 3]`` uint8 **BGR** crop (``cv2.imread`` of the 3DDFA crop).
        pts68: ``[2, 68]`` / ``[68, 2]`` landmarks on that crop (FAN detections).
    Returns:
        ``[4, 120, 120]`` float32: ``(bgr - 127.5) / 128`` then the :func:`obtain_18pts_map`.

    Example::

        crop = ddfa_crop(img_bgr, parse_roi_box_from_bbox(det_box))   # 3DDFA 120 crop
        x = tdasl_input(crop, fan68_on_crop)[None]                       # [1, 4, 120, 120]
    """
    img = as_uint8_image("crop_bgr", crop_bgr)
    if img.shape[:2] != (120, 120):
        raise ValueError(f"crop_bgr must be [120, 120, 3], got {list(img.shape)}")
    x = (torch.from_numpy(img.transpose(2, 0, 1).copy()).float() - 127.5) / 128
    m = torch.from_numpy(obtain_18pts_map(pts68).astype(np.float32))
    return torch.cat([x, m[None]], 0)


def crop_img(img, roi_box) -> np.ndarray:
    """``3DDFA:utils/inference.py:20-50``: crop ``[sx, sy, ex, ey]`` (rounded with Python's
    ``round``, half to even) with zero fill outside the image; uint8 output."""
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"img must be [H, W] or [H, W, 3], got {list(img.shape)}")
    if len(roi_box) != 4 or not np.all(np.isfinite(np.asarray(roi_box, dtype=np.float64))):
        raise ValueError(f"roi_box must be 4 finite numbers [sx, sy, ex, ey], got {roi_box}")
    h, w = img.shape[:2]
    sx, sy, ex, ey = [int(round(float(v))) for v in roi_box]
    dh, dw = ey - sy, ex - sx
    if dh <= 0 or dw <= 0:
        raise ValueError(f"roi_box must have ex > sx and ey > sy after rounding, got {[sx, sy, ex, ey]}")
    res = np.zeros((dh, dw) + img.shape[2:], dtype=np.uint8)
    # Clip the box to the image; the authors' code assumes it overlaps the image.
    dsx, sx = max(0, -sx), max(sx, 0)
    dsy, sy = max(0, -sy), max(sy, 0)
    dex, ex = (dw - (ex - w), w) if ex > w else (dw, ex)
    dey, ey = (dh - (ey - h), h) if ey > h else (dh, ey)
    if ex > sx and ey > sy:
        res[dsy:dey, dsx:dex] = img[sy:ey, sx:ex]
    return res


def parse_roi_box_from_landmark(pts) -> list:
    """``3DDFA:utils/inference.py:62-79``: square box of side ``diag(landmark box) `` around
    the landmark box centre. ``pts``: ``[2, N]`` (or ``[N, 2]``). Returns ``[sx, sy, ex, ey]``."""
    p = np.asarray(pts, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 2 and p.shape[0] != 2:
        p = p.T
    if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] < 1:
        raise ValueError(f"pts must be [2, N] or [N, 2], got {list(p.shape)}")
    bbox = [min(p[0, :]), min(p[1, :]), max(p[0, :]), max(p[1, :])]
    center = [(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2]
    radius = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / 2
    bbox = [center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius]
    llength = sqrt((bbox[2] - bbox[0]) ** 2 + (bbox[3] - bbox[1]) ** 2)
    cx, cy = (bbox[2] + bbox[0]) / 2, (bbox[3] + bbox[1]) / 2
    x0, y0 = cx - llength / 2, cy - llength / 2
    return [x0, y0, x0 + llength, y0 + llength]


def parse_roi_box_from_bbox(bbox) -> list:
    """``3DDFA:utils/inference.py:82-93``: detector box ``[l, t, r, b]`` -> square ROI of side
    ``int(1.58 (w + h) / 2)``, centre moved down by ``0.14 (w + h) / 2``."""
    left, top, right, bottom = [float(v) for v in bbox]
    old_size = (right - left + bottom - top) / 2
    center_x = right - (right - left) / 2.0
    center_y = bottom - (bottom - top) / 2.0 + old_size * 0.14
    size = int(old_size * 1.58)
    x0, y0 = center_x - size / 2, center_y - size / 2
    return [x0, y0, x0 + size, y0 + size]


def ddfa_crop(img, roi_box, std_size: int = 120) -> np.ndarray:
    """3DDFA's network crop (``3DDFA:main.py:95-98``): :func:`crop_img` then
    ``cv2.resize(..., (120, 120), INTER_LINEAR)``."""
    return cv2_resize(crop_img(img, roi_box), (std_size, std_size), "linear")


# ----------------------------------------------------------------------------- metrical tracker
def get_bbox(image_shape, lmks, bb_scale: float = 2.5) -> np.ndarray:
    """``MT:image.py:22-42``: square box around the landmarks, ``bb_scale`` times the half size.

    Landmarks are truncated to int32; centre ``int((max + min) / 2)``;
    ``size = int(bb_scale * 2 * max(cx - xmin, cy - ymin))``; box ``centre -+ size // 2``
    clamped to ``[0, w-1] x [0, h-1]``; a minimum bumped by one when the extent is odd.

    Args:
        image_shape: ``(h, w, ...)`` of the image.
        lmks: ``[N, 2]`` landmarks (x, y) in pixels.
    Returns:
        int64 ``[xb_min, xb_max, yb_min, yb_max]``.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    lm = as_points("lmks", lmks).astype(np.int32)
    x_min, x_max, y_min, y_max = lm[:, 0].min(), lm[:, 0].max(), lm[:, 1].min(), lm[:, 1].max()
    xc, yc = int((x_max + x_min) / 2.0), int((y_max + y_min) / 2.0)
    size = int(bb_scale * 2 * max(xc - x_min, yc - y_min))
    xb_min, xb_max = max(xc - size // 2, 0), min(xc + size // 2, w - 1)
    yb_min, yb_max = max(yc - size // 2, 0), min(yc + size // 2, h - 1)
    if (xb_max - xb_min) % 2 != 0:
        xb_min += 1
    if (yb_max - yb_min) % 2 != 0:
        yb_min += 1
    return np.array([xb_min, xb_max, yb_min, yb_max], dtype=np.int64)


def crop_image_bbox(image, bbox) -> np.ndarray:
    """``MT:image.py:45-46,73-79``: ``image[y_min:min(y_max, h-1), x_min:min(x_max, w-1)]``
    (the end is exclusive, as coded)."""
    xb_min, xb_max, yb_min, yb_max = [int(v) for v in bbox]
    return image[max(yb_min, 0):min(yb_max, image.shape[0] - 1), max(xb_min, 0):min(xb_max, image.shape[1] - 1), :]


def squarefiy(image, size: int = 512) -> np.ndarray:
    """``MT:image.py:49-57``: zero-pad to square (``int((max - side) / 2)`` each side, so an
    odd difference stays non-square) and ``cv2.resize`` INTER_CUBIC to ``size x size``."""
    h, w = image.shape[:2]
    if w != h:
        m = max(w, h)
        hp, vp = int((m - w) / 2), int((m - h) / 2)
        image = np.pad(image, [(vp, vp), (hp, hp), (0, 0)], mode="constant")
    return cv2_resize(image, (size, size), "cubic")


def tracker_crop(image, lmks, bb_scale: float = 2.5, size: int = 512, bbox=None):
    """The tracker's data preparation crop (``MT:datasets/generate_dataset.py:65-73``).

    Args:
        image: ``[H, W, 3]`` uint8 frame (any channel order).
        lmks: ``[68, 2]`` landmarks of the **first** frame (used when ``bbox`` is None).
        bbox: a box from an earlier frame (the authors reuse ``bbox.pt`` for every frame).
    Returns:
        ``(crop, bbox)``: ``[size, size, 3]`` uint8 and the ``[4]`` box.

    Example::

        first, box = tracker_crop(frames[0], fan68_first_frame)     # 512x512, bb_scale 2.5
        later = [tracker_crop(f, None, bbox=box)[0] for f in frames[1:]]
    """
    image = as_uint8_image("image", image)
    if bbox is None:
        bbox = get_bbox(image.shape, lmks, bb_scale=bb_scale)
    cropped = crop_image_bbox(image, bbox)
    if cropped.shape[0] < 1 or cropped.shape[1] < 1:
        raise ValueError(f"bbox {list(map(int, bbox))} gives an empty crop of an image of shape {list(image.shape)}")
    return squarefiy(cropped, size=size), np.asarray(bbox)
