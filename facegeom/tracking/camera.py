"""The tracker's camera: PyTorch3D ``PerspectiveCameras`` in NDC (PIPELINES.md §7.3).

Sources: ``MT:tracker.py:283-297`` (initialisation), ``MT:tracker.py:394-403,475-493`` (use);
PyTorch3D's conventions (``P3D`` = facebookresearch/pytorch3d at 9381c4016376345bb795b97c45a6c2de66db354a):
``pytorch3d/renderer/cameras.py`` (``look_at_view_transform``, ``look_at_rotation``,
``PerspectiveCameras`` with ``in_ndc=True``, ``transform_points_screen``) and
``pytorch3d/renderer/camera_conversions.py`` (``opencv_from_cameras_projection``).

- world -> view: ``X_view = X_world @ R + T`` (row vectors, ``R [B, 3, 3]``, ``T [B, 3]``);
- view -> NDC: ``x = f X / Z + p_x``, ``y = f Y / Z + p_y`` (+X left, +Y up; the shorter image side spans
  [-1, 1]); the NDC depth channel is the view ``Z`` (what PyTorch3D's ``MeshRasterizer.transform`` keeps);
- NDC -> screen: :func:`facegeom.transforms.ndc_to_screen` (``x_s = W/2 - min(H, W)/2 * x``).

The rotation is optimised as a 6D code (:func:`facegeom.transforms.rotation_6d_to_matrix`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import torch

from facegeom import _checks
from facegeom.transforms import pytorch3d_to_opencv, rotation_6d_to_matrix

Tensor = torch.Tensor
ImageSize = Union[int, Sequence[float]]


def look_at_view_transform(dist: float = 1.0, elev: float = 0.0, azim: float = 0.0, dtype=None,
                           device=None) -> Tuple[Tensor, Tensor]:
    """PyTorch3D's ``look_at_view_transform(dist, elev, azim)`` (degrees, ``at = 0``, ``up = +y``):
    the camera sits at ``dist * (cos(elev) sin(azim), sin(elev), cos(elev) cos(azim))`` and looks at the origin.

    ``z = normalize(at - C)``, ``x = normalize(up x z)``, ``y = normalize(z x x)``; ``R`` has ``x, y, z`` as
    **columns**; ``T = -R^T C``. The tracker's initialisation ``look_at_view_transform(dist=1.0)``
    (``MT:tracker.py:285``) gives ``R = diag(-1, 1, -1)``, ``T = (0, 0, 1)``.

    Returns:
        ``R [1, 3, 3]``, ``T [1, 3]``.
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    elev_r, azim_r = math.radians(elev), math.radians(azim)
    centre = torch.tensor([[dist * math.cos(elev_r) * math.sin(azim_r), dist * math.sin(elev_r),
                            dist * math.cos(elev_r) * math.cos(azim_r)]], dtype=dtype, device=device)
    up = torch.tensor([[0.0, 1.0, 0.0]], dtype=dtype, device=device)
    z_axis = torch.nn.functional.normalize(-centre, eps=1e-5, dim=-1)
    x_axis = torch.nn.functional.normalize(torch.linalg.cross(up, z_axis, dim=-1), eps=1e-5, dim=-1)
    y_axis = torch.nn.functional.normalize(torch.linalg.cross(z_axis, x_axis, dim=-1), eps=1e-5, dim=-1)
    is_close = (x_axis.abs() <= 5e-3).all(-1, keepdim=True)  # up parallel to the view direction, as PyTorch3D
    if bool(is_close.any()):
        replacement = torch.nn.functional.normalize(torch.linalg.cross(y_axis, z_axis, dim=-1), eps=1e-5, dim=-1)
        x_axis = torch.where(is_close, replacement, x_axis)
    R = torch.stack([x_axis, y_axis, z_axis], 1).transpose(1, 2)
    T = -torch.bmm(R.transpose(1, 2), centre[:, :, None])[:, :, 0]
    return R, T


@dataclass
class TrackerCamera:
    """PyTorch3D ``PerspectiveCameras(R=rotation_6d_to_matrix(R6), T=t, focal_length=focal,
    principal_point=principal_point)`` with ``in_ndc=True`` (``MT:tracker.py:475-481``).

    Attributes:
        R6: ``[B, 6]`` rotation code; t: ``[B, 3]``; focal: ``[B, 1]`` (NDC units);
        principal_point: ``[B, 2]`` (NDC). All may require grad.
    """

    R6: Tensor
    t: Tensor
    focal: Tensor
    principal_point: Tensor

    def __post_init__(self):
        _checks.floating("R6", self.R6)
        for name, size in (("R6", 6), ("t", 3), ("focal", 1), ("principal_point", 2)):
            value = getattr(self, name)
            _checks.floating(name, value, self.R6, "R6")
            _checks.shape(name, value, [None, size], f"[B, {size}]")

    @property
    def R(self) -> Tensor:
        """``[B, 3, 3]`` rotation matrix (``X_view = X_world @ R + T``), decoded once per camera."""
        if getattr(self, "_R", None) is None:
            self._R = rotation_6d_to_matrix(self.R6)
        return self._R

    def view(self, points: Tensor) -> Tensor:
        """World ``[B, N, 3]`` -> view ``[B, N, 3]``."""
        return points @ self.R + self.t[:, None]

    def ndc(self, points: Tensor) -> Tensor:
        """World ``[B, N, 3]`` -> ``[B, N, 3]``: NDC ``(x, y)`` and the view depth ``Z``."""
        view = self.view(points)
        depth = view[..., 2:3]
        xy = self.focal[:, None] * view[..., :2] / depth + self.principal_point[:, None]
        return torch.cat([xy, depth], -1)

    def screen(self, points: Tensor, image_size: ImageSize) -> Tensor:
        """World ``[B, N, 3]`` -> PyTorch3D screen ``[B, N, 2]`` for an ``(H, W)`` image (floats allowed,
        as the tracker passes the pyramid level's size): ``transform_points_screen(...)[..., :2]``."""
        height, width = _size(image_size)
        scale = min(height, width) / 2.0  # ndc_to_screen's formula, for the float sizes of pyramid levels
        xy = self.ndc(points)[..., :2]
        return xy.new_tensor([width / 2.0, height / 2.0]) - scale * xy

    def to_opencv(self, image_size: ImageSize) -> Tuple[Tensor, Tensor, Tensor]:
        """``(R [B, 3, 3], t [B, 3], K [B, 3, 3])`` as PyTorch3D's ``opencv_from_cameras_projection``
        (the tracker's ``opencv`` checkpoint entry, ``MT:tracker.py:184,202-206``): no half-pixel shift."""
        height, width = _size(image_size)
        K, R, t = pytorch3d_to_opencv(self.R, self.t, self.focal, self.principal_point, (int(height), int(width)),
                                      half_pixel=False)
        return R, t, K

    def detach(self) -> "TrackerCamera":
        return TrackerCamera(self.R6.detach(), self.t.detach(), self.focal.detach(), self.principal_point.detach())


def _size(image_size: ImageSize) -> Tuple[float, float]:
    if isinstance(image_size, (int, float)):
        image_size = (image_size, image_size)
    height, width = (float(s) for s in image_size)
    if not (height > 0 and width > 0):
        raise ValueError(f"image_size must be positive (H, W), got {image_size!r}")
    return height, width
