"""Rotations and camera conventions of the face-reconstruction papers.

Rotations (PIPELINES.md §1.2) act on column vectors, ``p' = R @ p``, and every function
takes any leading batch shape ``[...]``:

- axis-angle (Rodrigues; FLAME, RingNet, MICA): :func:`axis_angle_to_matrix` (smplx's
  ``batch_rodrigues`` exactly, via :func:`facegeom.ops.rodrigues`) and
  :func:`matrix_to_axis_angle`;
- 6D (the metrical tracker): the first two **rows** of ``R``, decoded by Gram-Schmidt, as
  PyTorch3D's ``rotation_6d_to_matrix`` / ``matrix_to_rotation_6d``
  (``P3D:pytorch3d/transforms/rotation_conversions.py:601-637``);
- Euler angles (Deep3DFaceRecon): ``R = Rz @ Ry @ Rx`` (``D3D:models/bfm.py:174-207``).

Pixel conventions. facegeom's pixels (:mod:`facegeom.cameras`) are OpenCV's: x right, y
down, **integer coordinates at pixel centres** (pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5]
x [j - 0.5, j + 0.5]``). Two of the papers' spaces put integers at pixel **edges**:

- DECA / RingNet normalised image coordinates ``n`` in ``[-1, 1]`` edge to edge:
  :func:`deca_to_pixels` / :func:`pixels_to_deca` (``u = (n + 1) W / 2 - 0.5``).
  **Trap**: DECA normalises detector landmarks as ``p / size * 2 - 1``
  (:func:`deca_normalize_landmarks`, no half pixel), which is ``pixels_to_deca(p - 0.5)``:
  a detector landmark at pixel centre ``p`` is compared with the projection of a point
  that :class:`facegeom.cameras.WeakPerspective` puts at ``p - 0.5``. Reproducing DECA's
  loss needs DECA's normalisation; comparing ``WeakPerspective.project`` with the same
  landmarks in pixels differs from it by half a pixel.
- PyTorch3D screen space ``x_s = W/2 - s x_ndc`` (``s = min(H, W) / 2``): PyTorch3D's
  rasterizer puts pixel ``i``'s centre at ``x_s = i + 0.5``, so a facegeom pixel is
  ``u = x_s - 0.5`` (:func:`ndc_to_pixels`). PyTorch3D's own OpenCV conversion
  (``pytorch3d/renderer/camera_conversions.py``) identifies OpenCV pixels with ``x_s``
  (no half pixel); ``half_pixel=False`` in :func:`opencv_to_pytorch3d` /
  :func:`pytorch3d_to_opencv` reproduces it.
- nvdiffrast clip space (:func:`opencv_projection_matrix`): NDC ``x = (u + 0.5) / W * 2 - 1``,
  ``y = 1 - (v + 0.5) / H * 2`` (raster row 0 at the bottom), as
  :meth:`facegeom.cameras.Camera.to_clip`.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

from facegeom.ops import _checks
from facegeom.ops.lbs import rodrigues

Tensor = torch.Tensor
ImageSize = Union[int, Sequence[int]]

__all__ = [
    "axis_angle_to_matrix",
    "deca_normalize_landmarks",
    "deca_to_pixels",
    "euler_to_matrix",
    "intrinsics_from_matrix",
    "intrinsics_matrix",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "matrix_to_rotation_6d",
    "ndc_to_pixels",
    "ndc_to_screen",
    "opencv_projection_matrix",
    "opencv_to_pytorch3d",
    "pixels_to_deca",
    "pixels_to_ndc",
    "pytorch3d_to_opencv",
    "rotation_6d_to_matrix",
    "screen_to_ndc",
    "weak_perspective_from_pixel_affine",
    "weak_perspective_to_pixel_affine",
]


def image_size_hw(image_size: ImageSize, name: str = "image_size") -> Tuple[int, int]:
    """``(H, W)`` from an int or a pair; ValueError naming ``name`` otherwise."""
    if isinstance(image_size, bool):
        raise ValueError(f"{name} must be a positive int or (H, W), got {image_size!r}")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        try:
            size = tuple(image_size)
        except TypeError:
            raise ValueError(f"{name} must be a positive int or (H, W), got {image_size!r}") from None
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or (H, W), got {image_size!r}")
    return size


def _last_dims(name: str, t: Tensor, dims: Sequence[int], layout: str) -> Tensor:
    _checks.floating(name, t)
    if t.dim() < len(dims) or tuple(t.shape[t.dim() - len(dims):]) != tuple(dims):
        raise ValueError(f"{name} must have shape {layout}, got {list(t.shape)}")
    return t


# ---------------------------------------------------------------------------------- rotations

def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues: axis-angle ``[..., 3]`` (axis times angle in radians) -> ``[..., 3, 3]``.

    smplx's ``batch_rodrigues`` semantics (:func:`facegeom.ops.rodrigues`, including its
    ``|axis_angle + 1e-8|`` angle, so zero gives the identity with finite gradients).
    """
    return rodrigues(axis_angle)


def _matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """``[..., 3, 3]`` -> unit quaternion ``[..., 4]`` = (w, x, y, z) with ``w >= 0``."""
    m = matrix
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 q_i^2 for i = w, x, y, z; the largest one (>= 1) gives a well-conditioned division.
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                           1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    two_abs = torch.sqrt(four_sq.clamp_min(1e-12))  # 2 |q_i|; clamp keeps gradients finite
    candidates = torch.stack([
        torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], -1),
    ], -2) / (2.0 * two_abs.clamp_min(0.1))[..., None]  # candidate i = 4 q_i q / (4 |q_i|)
    best = four_sq.argmax(-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4))[..., 0, :]
    return torch.where(quat[..., :1] < 0, -quat, quat)


def matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> axis-angle ``[..., 3]`` with angle in ``[0, pi]``.

    Inverse of :func:`axis_angle_to_matrix` (up to the 1e-8 of smplx's Rodrigues, and the
    axis sign at exactly pi). Through a unit quaternion picked on its largest component
    (stable for every angle); differentiable away from angle pi.
    """
    _last_dims("matrix", matrix, (3, 3), "[..., 3, 3]")
    quat = _matrix_to_quaternion(matrix)
    xyz = quat[..., 1:]
    sin_half = torch.linalg.vector_norm(xyz, dim=-1, keepdim=True)
    half = torch.atan2(sin_half, quat[..., :1])
    small = half.abs() < 1e-3
    safe = torch.where(small, torch.ones_like(sin_half), sin_half)
    factor = torch.where(small, 2.0 + half * half / 3.0, 2.0 * half / safe)  # 2 half / sin(half)
    return xyz * factor


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """6D ``[..., 6]`` -> ``[..., 3, 3]``: PyTorch3D's ``rotation_6d_to_matrix``.

    ``a1, a2 = d6[..., :3], d6[..., 3:]``; ``b1 = a1 / |a1|``; ``b2`` = ``a2`` minus its
    ``b1`` component, normalised; ``b3 = b1 x b2``; the ROWS of the result are
    ``b1, b2, b3`` (``P3D:pytorch3d/transforms/rotation_conversions.py:601-622``;
    Zhou et al. 2019 §B). The metrical tracker stores every rotation this way
    (PIPELINES.md §1.2).
    """
    _last_dims("d6", d6, (6,), "[..., 6]")
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-2)


def matrix_to_rotation_6d(matrix: Tensor) -> Tensor:
    """``[..., 3, 3]`` -> ``[..., 6]``: the first two rows, concatenated (PyTorch3D's
    ``matrix_to_rotation_6d``, ``rotation_conversions.py:625-637``)."""
    _last_dims("matrix", matrix, (3, 3), "[..., 3, 3]")
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def _check_convention(convention: str) -> None:
    if convention != "deep3d":
        raise ValueError(f"convention must be 'deep3d' (R = Rz @ Ry @ Rx), got {convention!r}")


def euler_to_matrix(angles: Tensor, convention: str = "deep3d") -> Tensor:
    """Euler angles ``[..., 3] = (x, y, z)`` in radians -> ``R = Rz(z) @ Ry(y) @ Rx(x)``.

    This is the rotation Deep3DFaceRecon applies, ``p' = R @ p``
    (``D3D:models/bfm.py:174-207``, ``compute_rotation``). Note its code **returns
    ``R^T``** (``rot.permute(0, 2, 1)``) because it multiplies row vectors,
    ``face_shape @ rot`` (``bfm.py:229-239``); this function returns ``R`` itself. To get
    the tensor Deep3D's code holds, use ``euler_to_matrix(angles).transpose(-1, -2)``.

    Args:
        angles: ``[..., 3]`` float (differentiable): pitch x, yaw y, roll z.
        convention: only ``"deep3d"``.
    """
    _check_convention(convention)
    _last_dims("angles", angles, (3,), "[..., 3] = (x, y, z)")
    cos, sin = torch.cos(angles), torch.sin(angles)
    cx, cy, cz = cos.unbind(-1)
    sx, sy, sz = sin.unbind(-1)
    # Rz @ Ry @ Rx multiplied out.
    rows = [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def matrix_to_euler(matrix: Tensor, convention: str = "deep3d") -> Tensor:
    """Inverse of :func:`euler_to_matrix`: ``[..., 3, 3]`` -> ``(x, y, z)`` with
    ``y`` in ``[-pi/2, pi/2]`` and ``x, z`` in ``(-pi, pi]``. At ``|y| = pi/2`` (gimbal
    lock) only ``x - z`` (or ``x + z``) is determined."""
    _check_convention(convention)
    _last_dims("matrix", matrix, (3, 3), "[..., 3, 3]")
    x = torch.atan2(matrix[..., 2, 1], matrix[..., 2, 2])
    y = torch.atan2(-matrix[..., 2, 0], torch.hypot(matrix[..., 0, 0], matrix[..., 1, 0]))
    z = torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0])
    return torch.stack([x, y, z], -1)


# ------------------------------------------------------------------ DECA weak perspective

def deca_to_pixels(normalized: Tensor, image_size: ImageSize) -> Tensor:
    """DECA image-space normalised coordinates -> facegeom pixels.

    ``normalized [..., 2]``: x right, y **down**, ``[-1, 1]`` from edge to edge (DECA's
    ``batch_orth_proj`` output with y negated, as DECA does before its landmark loss).
    Returns ``u = (n_x + 1) W / 2 - 0.5``, ``v = (n_y + 1) H / 2 - 0.5`` (pixel centres at
    integers), which is :meth:`facegeom.cameras.WeakPerspective.project`.
    """
    _last_dims("normalized", normalized, (2,), "[..., 2]")
    h, w = image_size_hw(image_size)
    scale = normalized.new_tensor([w / 2.0, h / 2.0])
    return (normalized + 1.0) * scale - 0.5


def pixels_to_deca(pixels: Tensor, image_size: ImageSize) -> Tensor:
    """Inverse of :func:`deca_to_pixels`: ``n = (p + 0.5) / size * 2 - 1`` (facegeom pixels,
    centres at integers). Not DECA's landmark normalisation: see
    :func:`deca_normalize_landmarks`."""
    _last_dims("pixels", pixels, (2,), "[..., 2]")
    h, w = image_size_hw(image_size)
    size = pixels.new_tensor([float(w), float(h)])
    return (pixels + 0.5) / size * 2.0 - 1.0


def deca_normalize_landmarks(landmarks: Tensor, image_size: ImageSize) -> Tensor:
    """DECA's normalisation of detector landmarks, ``p / size * 2 - 1`` with **no half
    pixel** (DECA ``datasets``: ``kpt[:, :2] = kpt[:, :2] / image_size * 2 - 1``).

    Equal to ``pixels_to_deca(landmarks - 0.5)``: for landmarks given at pixel centres, the
    result is half a pixel up-left of :func:`pixels_to_deca`. Use it to reproduce DECA's
    landmark loss exactly; ``landmarks [..., 2]`` (x, y down) in pixels.
    """
    _last_dims("landmarks", landmarks, (2,), "[..., 2]")
    h, w = image_size_hw(image_size)
    size = landmarks.new_tensor([float(w), float(h)])
    return landmarks / size * 2.0 - 1.0


def weak_perspective_to_pixel_affine(cam: Tensor, image_size: ImageSize) -> Tensor:
    """DECA / RingNet ``cam = (s, tx, ty)`` ``[..., 3]`` -> the pixel map ``A [..., 2, 3]``
    with ``(u, v) = A @ (x, y, 1)`` in facegeom pixels (centres at integers):
    ``u = s W/2 x + (s tx + 1) W/2 - 0.5``, ``v = -s H/2 y + (1 - s ty) H/2 - 0.5``
    (DECA ``batch_orth_proj``, y flipped, then :func:`deca_to_pixels`)."""
    _last_dims("cam", cam, (3,), "[..., 3] = (s, tx, ty)")
    h, w = image_size_hw(image_size)
    s, tx, ty = cam.unbind(-1)
    zero = torch.zeros_like(s)
    row_u = torch.stack([s * (w / 2.0), zero, (s * tx + 1.0) * (w / 2.0) - 0.5], -1)
    row_v = torch.stack([zero, -s * (h / 2.0), (1.0 - s * ty) * (h / 2.0) - 0.5], -1)
    return torch.stack([row_u, row_v], -2)


def weak_perspective_from_pixel_affine(affine: Tensor, image_size: ImageSize) -> Tensor:
    """Inverse of :func:`weak_perspective_to_pixel_affine`: ``A [..., 2, 3]`` -> ``cam
    [..., 3]``. Reads the scale from ``A[..., 0, 0]`` (pixels per model unit along x) and
    the translation from ``A[..., :, 2]``; ``A[..., 1, 1]`` must be ``-A[0, 0] H / W``."""
    _last_dims("affine", affine, (2, 3), "[..., 2, 3]")
    h, w = image_size_hw(image_size)
    s = affine[..., 0, 0] * (2.0 / w)
    tx = ((affine[..., 0, 2] + 0.5) * (2.0 / w) - 1.0) / s
    ty = (1.0 - (affine[..., 1, 2] + 0.5) * (2.0 / h)) / s
    return torch.stack([s, tx, ty], -1)


# ------------------------------------------------------------------------ OpenCV intrinsics

def intrinsics_matrix(focal: Tensor, principal_point: Tensor) -> Tensor:
    """OpenCV ``K [..., 3, 3] = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` from ``focal [..., 2]``
    and ``principal_point [..., 2]`` in pixels (centres at integers, y down)."""
    _last_dims("focal", focal, (2,), "[..., 2] = (fx, fy)")
    _last_dims("principal_point", principal_point, (2,), "[..., 2] = (cx, cy)")
    _checks.floating("principal_point", principal_point, focal, "focal")
    focal, principal_point = torch.broadcast_tensors(focal, principal_point)
    zero, one = torch.zeros_like(focal[..., 0]), torch.ones_like(focal[..., 0])
    rows = [[focal[..., 0], zero, principal_point[..., 0]], [zero, focal[..., 1], principal_point[..., 1]],
            [zero, zero, one]]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def intrinsics_from_matrix(K: Tensor, check_skew: bool = True) -> Tuple[Tensor, Tensor]:
    """``(focal [..., 2], principal_point [..., 2])`` from OpenCV ``K [..., 3, 3]``; a
    non-zero skew ``K[0, 1]`` raises ValueError (facegeom's pinhole does not model it)."""
    _last_dims("K", K, (3, 3), "[..., 3, 3]")
    if check_skew and not torch.compiler.is_compiling() and bool((K[..., 0, 1] != 0).any()):
        raise ValueError("K has a non-zero skew K[0, 1], which Pinhole does not model")
    return torch.stack([K[..., 0, 0], K[..., 1, 1]], -1), torch.stack([K[..., 0, 2], K[..., 1, 2]], -1)


# ---------------------------------------------------------------- PyTorch3D NDC cameras

def _ndc_scale(image_size: ImageSize) -> Tuple[int, int, float]:
    h, w = image_size_hw(image_size)
    return h, w, min(h, w) / 2.0


def ndc_to_screen(xy_ndc: Tensor, image_size: ImageSize) -> Tensor:
    """PyTorch3D NDC (+X left, +Y up; the shorter side spans ``[-1, 1]``) -> PyTorch3D
    screen space: ``x_s = W/2 - s x_ndc``, ``y_s = H/2 - s y_ndc``, ``s = min(H, W) / 2``
    (``P3D:pytorch3d/renderer/cameras.py:1763-1830``). Screen space has x right, y down and
    pixel ``i``'s centre at ``i + 0.5`` (integers at pixel edges)."""
    _last_dims("xy_ndc", xy_ndc, (2,), "[..., 2]")
    h, w, s = _ndc_scale(image_size)
    return xy_ndc.new_tensor([w / 2.0, h / 2.0]) - s * xy_ndc


def screen_to_ndc(xy_screen: Tensor, image_size: ImageSize) -> Tensor:
    """Inverse of :func:`ndc_to_screen`."""
    _last_dims("xy_screen", xy_screen, (2,), "[..., 2]")
    h, w, s = _ndc_scale(image_size)
    return (xy_screen.new_tensor([w / 2.0, h / 2.0]) - xy_screen) / s


def ndc_to_pixels(xy_ndc: Tensor, image_size: ImageSize) -> Tensor:
    """PyTorch3D NDC -> facegeom / OpenCV pixels (centres at integers): ``x_s - 0.5``, so a
    point lands on the pixel PyTorch3D's rasterizer draws it in."""
    return ndc_to_screen(xy_ndc, image_size) - 0.5


def pixels_to_ndc(pixels: Tensor, image_size: ImageSize) -> Tensor:
    """Inverse of :func:`ndc_to_pixels`."""
    _last_dims("pixels", pixels, (2,), "[..., 2]")
    return screen_to_ndc(pixels + 0.5, image_size)


_FLIP_XY = (-1.0, -1.0, 1.0)  # PyTorch3D view (+X left, +Y up) <-> OpenCV camera (+x right, +y down)


def pytorch3d_to_opencv(R: Tensor, T: Tensor, focal_length: Tensor, principal_point: Tensor,
                        image_size: ImageSize, half_pixel: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """PyTorch3D ``PerspectiveCameras`` in NDC (``in_ndc=True``) -> OpenCV ``(K, R, t)``.

    PyTorch3D: ``X_view = X_world @ R + T`` (row vectors), ``x_ndc = f X/Z + p_x``;
    OpenCV: ``X_cam = R_cv @ X + t_cv``, ``u = fx x/z + cx``. So ``R_cv = F R^T``,
    ``t_cv = F T`` with ``F = diag(-1, -1, 1)``, ``fx = s f_x``, ``cx = W/2 - s p_x - 0.5``
    (``s = min(H, W) / 2``) and the same for y.

    Args:
        R: ``[B, 3, 3]``; T: ``[B, 3]``; focal_length: ``[B, 1]`` or ``[B, 2]`` (NDC);
        principal_point: ``[B, 2]`` (NDC); image_size: ``(H, W)`` or int.
        half_pixel: True (default) gives OpenCV pixels with centres at integers, consistent
            with PyTorch3D's rasterizer and :mod:`facegeom.cameras`; False omits the 0.5, as
            PyTorch3D's ``opencv_from_cameras_projection`` does.

    Returns:
        ``K [B, 3, 3]``, ``R_cv [B, 3, 3]``, ``t_cv [B, 3]``; use
        ``facegeom.cameras.Pinhole.from_K(K, R_cv, t_cv, image_size)``.
    """
    _last_dims("R", R, (3, 3), "[..., 3, 3]")
    _last_dims("T", T, (3,), "[..., 3]")
    _checks.floating("focal_length", focal_length, R, "R")
    _last_dims("principal_point", principal_point, (2,), "[..., 2]")
    if focal_length.shape[-1] not in (1, 2):
        raise ValueError(f"focal_length must have shape [..., 1] or [..., 2], got {list(focal_length.shape)}")
    h, w, s = _ndc_scale(image_size)
    flip = R.new_tensor(_FLIP_XY)
    R_cv = flip[:, None] * R.transpose(-1, -2)
    t_cv = flip * T
    focal = (s * focal_length).expand(*focal_length.shape[:-1], 2)
    centre = principal_point.new_tensor([w / 2.0, h / 2.0]) - s * principal_point
    if half_pixel:
        centre = centre - 0.5
    return intrinsics_matrix(focal, centre), R_cv, t_cv


def opencv_to_pytorch3d(K: Tensor, R: Tensor, t: Tensor, image_size: ImageSize,
                        half_pixel: bool = True) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inverse of :func:`pytorch3d_to_opencv`: OpenCV ``K [B, 3, 3]``, ``R [B, 3, 3]``,
    ``t [B, 3]`` -> PyTorch3D NDC ``(R, T, focal_length [B, 2], principal_point [B, 2])``
    for ``PerspectiveCameras(..., in_ndc=True)``. ``half_pixel=False`` equals PyTorch3D's
    ``cameras_from_opencv_projection`` (``pytorch3d/renderer/camera_conversions.py``)."""
    _last_dims("R", R, (3, 3), "[..., 3, 3]")
    _last_dims("t", t, (3,), "[..., 3]")
    focal, centre = intrinsics_from_matrix(K)
    h, w, s = _ndc_scale(image_size)
    if half_pixel:
        centre = centre + 0.5
    flip = R.new_tensor(_FLIP_XY)
    R_p3d = (flip[:, None] * R).transpose(-1, -2)
    T_p3d = flip * t
    return R_p3d, T_p3d, focal / s, (centre.new_tensor([w / 2.0, h / 2.0]) - centre) / s


# -------------------------------------------------------------------- nvdiffrast clip space

def opencv_projection_matrix(K: Tensor, image_size: ImageSize, near: float = 0.01, far: float = 100.0) -> Tensor:
    """4 x 4 projection ``P [..., 4, 4]`` from OpenCV intrinsics to nvdiffrast clip space:
    ``clip = P @ (x, y, z, 1)`` for a point in OpenCV camera coordinates (z forward, y down).

    ``x_clip = (2 fx x + (2 cx + 1 - W) z) / W``, ``y_clip = (-2 fy y + (H - 2 cy - 1) z) / H``,
    ``z_clip = ((far + near) z - 2 far near) / (far - near)``, ``w = z``. After the divide,
    NDC ``x = (u + 0.5) / W * 2 - 1`` and ``y = 1 - (v + 0.5) / H * 2`` for the pixel
    ``(u, v)`` (centres at integers, y down): nvdiffrast's pixel centres, raster row 0 at
    NDC ``y = -1`` (the image's bottom row). Depth: ``near`` maps to -1 and ``far`` to +1.
    For an OpenGL view matrix (camera looking down -z, y up) use ``P @ diag(1, -1, -1, 1)``.
    """
    focal, centre = intrinsics_from_matrix(K)
    h, w = image_size_hw(image_size)
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    fx, fy = focal.unbind(-1)
    cx, cy = centre.unbind(-1)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [
        [2.0 * fx / w, zero, (2.0 * cx + 1.0 - w) / w, zero],
        [zero, -2.0 * fy / h, (h - 2.0 * cy - 1.0) / h, zero],
        [zero, zero, one * ((far + near) / (far - near)), one * (-2.0 * far * near / (far - near))],
        [zero, zero, one, zero],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)
