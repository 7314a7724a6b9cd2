"""Cameras of the reconstruction papers: weak perspective (RingNet, DECA), scaled
orthographic (3DDFA, 2DASL) and pinhole (Deep3DFaceRecon, MICA's tracker).

Every camera has

- ``project(points) -> [B, N, 2]`` **image pixels**: x to the right, y down (the
  convention of landmark detectors and of the papers' landmark files), and
  integer coordinates at pixel centres: pixel ``(column i, row j)`` of an image
  stored top row first covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``;
- ``to_clip(points, image_size=None) -> [B, N, 4]`` clip-space positions for
  :func:`facegeom.ops.rasterize`, consistent with ``project``: a point that
  projects to pixel ``(u, v)`` lands in the raster at column ``round(u)`` and
  **raster row** ``H - 1 - round(v)`` (the rasterizer's row 0 is the bottom row,
  as nvdiffrast's), i.e. ``torch.flip(rast, dims=[1])`` is the image top row
  first. In numbers, NDC x = ``(u + 0.5) / W * 2 - 1`` and NDC y =
  ``1 - (v + 0.5) / H * 2``; clip ``w`` is 1 for the orthographic cameras and the
  camera-space depth for the pinhole. Nearer points get smaller ``z / w``.

Parameters may be batched (``[B, ...]``) or not; a batch of 1 broadcasts against
the points' batch. Everything is differentiable with respect to both the points
and the camera parameters (plain PyTorch).

Example:
    >>> vertices = torch.zeros(1, 5023, 3)             # e.g. FLAME's output
    >>> cam = WeakPerspective(torch.tensor([[8.0, 0.0, 0.02]]), image_size=224)
    >>> cam.project(vertices).shape                    # pixels, y down
    torch.Size([1, 5023, 2])
    >>> cam.to_clip(vertices).shape                    # pos for facegeom.ops.rasterize
    torch.Size([1, 5023, 4])
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from facegeom import transforms
from facegeom.ops import _checks

Tensor = torch.Tensor
ImageSize = Union[int, Sequence[int]]

__all__ = ["Camera", "WeakPerspective", "ScaledOrthographic", "Pinhole"]


_image_size = transforms.image_size_hw


def _batched_points(points: Tensor, like: Tensor) -> Tensor:
    _checks.floating("points", points, like, "the camera parameters")
    if points.dim() == 2:
        points = points.unsqueeze(0)
    _checks.shape("points", points, [None, None, 3], "[B, N, 3] or [N, 3]")
    return points


def _broadcast(param: Tensor, points: Tensor) -> Tensor:
    """Points expanded to the common batch of the camera and the points."""
    batch = _checks.batch_size({"camera parameters": param.shape[0], "points": points.shape[0]})
    return points.expand(batch, -1, -1)


class Camera:
    """Base class: subclasses define :meth:`pixels_and_depth`."""

    image_size: Tuple[int, int]  # (H, W)

    def pixels_and_depth(self, points: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``(pixels [B, N, 2], z_ndc [B, N], w [B, N])``."""
        raise NotImplementedError

    def _check_render_size(self, image_size: Optional[ImageSize]) -> None:
        if image_size is None:
            return
        height, width = self.image_size
        h, w = _image_size(image_size)
        if h * width != w * height:
            raise ValueError(f"image_size {(h, w)} must have the camera's aspect ratio "
                             f"({height} x {width}); rendering at another ratio would stretch the image")

    def project(self, points: Tensor) -> Tensor:
        """Image pixels ``[B, N, 2]`` (x right, y down, integers at pixel centres)
        of points ``[B, N, 3]`` or ``[N, 3]`` given in the model's frame."""
        return self.pixels_and_depth(points)[0]

    def to_clip(self, points: Tensor, image_size: Optional[ImageSize] = None) -> Tensor:
        """Clip-space ``pos [B, N, 4]`` for :func:`facegeom.ops.rasterize`.

        Args:
            points: ``[B, N, 3]`` or ``[N, 3]`` (differentiable).
            image_size: resolution ``(H, W)`` (or an int) you will rasterize at;
                defaults to the camera's. NDC does not depend on it, so a smaller
                size renders the same view at lower resolution (a coarse-to-fine
                pyramid); its aspect ratio must equal the camera's.

        Returns:
            ``[B, N, 4]`` with ``x / w = (u + 0.5) / W * 2 - 1`` and
            ``y / w = 1 - (v + 0.5) / H * 2`` for the projected pixel ``(u, v)``.
        """
        self._check_render_size(image_size)
        height, width = self.image_size
        pixels, z_ndc, w = self.pixels_and_depth(points)
        x_ndc = (pixels[..., 0] + 0.5) * (2.0 / width) - 1.0
        y_ndc = 1.0 - (pixels[..., 1] + 0.5) * (2.0 / height)
        return torch.stack([x_ndc * w, y_ndc * w, z_ndc * w, w], -1)


class WeakPerspective(Camera):
    """RingNet / DECA weak perspective: ``cam = (s, tx, ty)``.

    DECA's ``batch_orth_proj`` gives normalised coordinates ``n = s * (xy + t)``
    in [-1, 1] across the image, y up; DECA negates y and maps to pixels as
    ``(n + 1) * size / 2`` (pixel edges at integers). :meth:`project` returns the
    same point in this module's pixel-centre convention, i.e. DECA's value minus
    0.5: ``u = (n_x + 1) * W / 2 - 0.5``, ``v = (1 - n_y) * H / 2 - 0.5``.
    :meth:`normalized` returns DECA's ``batch_orth_proj`` output exactly.

    Args:
        cam: ``[B, 3]`` or ``[3]``: scale, tx, ty (differentiable).
        image_size: image ``(H, W)`` or int (DECA: 224).
        depth_range: ``z_ndc = -s * z / depth_range``; the default 10 keeps any
            point inside the image frame well inside the depth range.
    """

    def __init__(self, cam: Tensor, image_size: ImageSize = 224, depth_range: float = 10.0):
        _checks.floating("cam", cam)
        self.cam = cam.unsqueeze(0) if cam.dim() == 1 else cam
        _checks.shape("cam", self.cam, [None, 3], "[B, 3] = (scale, tx, ty)")
        self.image_size = _image_size(image_size)
        if not depth_range > 0:
            raise ValueError(f"depth_range must be positive, got {depth_range}")
        self.depth_range = float(depth_range)

    def normalized(self, points: Tensor) -> Tensor:
        """DECA's ``batch_orth_proj``: ``[s * (x + tx), s * (y + ty), s * z]``, ``[B, N, 3]``."""
        points = _batched_points(points, self.cam)
        points = _broadcast(self.cam, points)
        scale = self.cam[:, None, :1]
        shifted = torch.cat([points[..., :2] + self.cam[:, None, 1:], points[..., 2:]], -1)
        return scale * shifted

    def pixels_and_depth(self, points):
        n = self.normalized(points)
        # DECA negates y before comparing with image landmarks (y down).
        pixels = transforms.deca_to_pixels(torch.stack([n[..., 0], -n[..., 1]], -1), self.image_size)
        return pixels, -n[..., 2] / self.depth_range, torch.ones_like(n[..., 2])


class ScaledOrthographic(Camera):
    """3DDFA / 2DASL scaled orthographic camera ``P = [sR | t]`` (3 x 4).

    ``p = sR @ X + t`` in the (y up) space of the 120 x 120 crop; the image pixel
    is 3DDFA's (``similar_transform``): ``u = p_x - 1``, ``v = H - p_y``.
    Depth: ``z_ndc = -(p_z - t_z) / depth_range`` (``t_z`` is ignored, as 3DDFA's
    WPDC gives it zero weight: it does not change the image).

    Args:
        P: ``[B, 3, 4]`` or ``[3, 4]`` (differentiable); build it from 3DDFA's
            parameter vector with :meth:`from_params`.
        image_size: crop size (3DDFA / 2DASL: 120).
        depth_range: in pixels; default ``2 * max(H, W)``.
    """

    def __init__(self, P: Tensor, image_size: ImageSize = 120, depth_range: Optional[float] = None):
        _checks.floating("P", P)
        self.P = P.unsqueeze(0) if P.dim() == 2 else P
        _checks.shape("P", self.P, [None, 3, 4], "[B, 3, 4] = [sR | t]")
        self.image_size = _image_size(image_size)
        self.depth_range = float(depth_range) if depth_range is not None else 2.0 * max(self.image_size)
        if not self.depth_range > 0:
            raise ValueError(f"depth_range must be positive, got {depth_range}")

    @classmethod
    def from_params(cls, params: Tensor, mean: Optional[Tensor] = None, std: Optional[Tensor] = None,
                    image_size: ImageSize = 120) -> "ScaledOrthographic":
        """From 3DDFA's parameter vector (``[B, 62]``, or just its first 12 entries):
        ``param = params * std + mean`` (when given, 3DDFA's ``param_whitening``
        statistics, each ``[62]`` or ``[12]``), then ``P = param[:12].reshape(3, 4)``
        (row-major, as 3DDFA's ``_parse_param``)."""
        _checks.floating("params", params)
        if params.dim() == 1:
            params = params.unsqueeze(0)
        if params.dim() != 2 or params.shape[1] < 12:
            raise ValueError(f"params must have shape [B, K >= 12], got {list(params.shape)}")
        pose = params[:, :12]
        if std is not None:
            pose = pose * std[:12]
        if mean is not None:
            pose = pose + mean[:12]
        return cls(pose.reshape(-1, 3, 4), image_size)

    def pixels_and_depth(self, points):
        points = _batched_points(points, self.P)
        points = _broadcast(self.P, points)
        rotated = points @ self.P[:, :, :3].transpose(1, 2)  # [B, N, 3]
        height, _ = self.image_size
        u = rotated[..., 0] + self.P[:, None, 0, 3] - 1.0
        v = height - (rotated[..., 1] + self.P[:, None, 1, 3])
        return torch.stack([u, v], -1), -rotated[..., 2] / self.depth_range, torch.ones_like(u)


class Pinhole(Camera):
    """Pinhole camera with OpenCV conventions.

    ``X_cam = R @ X + t`` (the camera looks along +z_cam, y_cam points down),
    ``u = fx * x_cam / z_cam + cx``, ``v = fy * y_cam / z_cam + cy`` in this
    module's pixel convention (y down, integers at pixel centres). Clip space uses
    ``w = z_cam`` and ``z_ndc = ((far + near) - 2 far near / z_cam) / (far - near)``,
    so points nearer than ``near`` or beyond ``far`` are not drawn.

    :meth:`deep3d` gives Deep3DFaceRecon's camera (focal 1015, centre 112, camera
    at z = 10 looking down -z, 224 x 224, image y flipped: its ``H - 1 - y``
    makes ``cy = 111`` here); :meth:`from_K` takes any 3 x 3 intrinsics matrix,
    e.g. the one MICA's tracker estimates.

    Args:
        focal: ``[B, 2]``, ``[2]`` or a float: ``(fx, fy)`` in pixels (differentiable).
        principal_point: ``[B, 2]`` or ``[2]``: ``(cx, cy)`` in pixels.
        R: ``[B, 3, 3]`` or ``[3, 3]`` world-to-camera rotation; identity if None.
        t: ``[B, 3]`` or ``[3]`` world-to-camera translation; zero if None.
        image_size: ``(H, W)`` or int.
        near, far: depth range drawn by the rasterizer (camera units).
    """

    def __init__(self, focal, principal_point, R: Optional[Tensor] = None, t: Optional[Tensor] = None,
                 image_size: ImageSize = 224, near: float = 0.01, far: float = 100.0):
        if not isinstance(principal_point, torch.Tensor):
            raise TypeError(f"principal_point must be a torch.Tensor, got {type(principal_point).__name__}")
        _checks.floating("principal_point", principal_point)
        like = principal_point
        if not isinstance(focal, torch.Tensor):
            focal = like.new_tensor([float(focal), float(focal)])
        _checks.floating("focal", focal, like, "principal_point")
        self.focal = focal.unsqueeze(0) if focal.dim() == 1 else focal
        self.principal_point = like.unsqueeze(0) if like.dim() == 1 else like
        _checks.shape("focal", self.focal, [None, 2], "[B, 2] = (fx, fy)")
        _checks.shape("principal_point", self.principal_point, [None, 2], "[B, 2] = (cx, cy)")
        if R is None:
            R = torch.eye(3, dtype=like.dtype, device=like.device)
        _checks.floating("R", R, like, "principal_point")
        self.R = R.unsqueeze(0) if R.dim() == 2 else R
        _checks.shape("R", self.R, [None, 3, 3], "[B, 3, 3]")
        if t is None:
            t = like.new_zeros(3)
        _checks.floating("t", t, like, "principal_point")
        self.t = t.unsqueeze(0) if t.dim() == 1 else t
        _checks.shape("t", self.t, [None, 3], "[B, 3]")
        _checks.batch_size({"focal": self.focal.shape[0], "principal_point": self.principal_point.shape[0],
                            "R": self.R.shape[0], "t": self.t.shape[0]})
        self.image_size = _image_size(image_size)
        if not 0 < near < far:
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
        self.near, self.far = float(near), float(far)

    @classmethod
    def from_K(cls, K: Tensor, R: Optional[Tensor] = None, t: Optional[Tensor] = None,
               image_size: ImageSize = 224, near: float = 0.01, far: float = 100.0) -> "Pinhole":
        """From an OpenCV intrinsics matrix ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``
        (``[B, 3, 3]`` or ``[3, 3]``; the skew must be zero)."""
        _checks.floating("K", K)
        K = K.unsqueeze(0) if K.dim() == 2 else K
        _checks.shape("K", K, [None, 3, 3], "[B, 3, 3]")
        focal, centre = transforms.intrinsics_from_matrix(K)
        return cls(focal, centre, R, t, image_size, near, far)

    from_opencv = from_K

    @classmethod
    def from_pytorch3d(cls, R: Tensor, T: Tensor, focal_length: Tensor, principal_point: Tensor,
                       image_size: ImageSize, near: float = 0.01, far: float = 100.0) -> "Pinhole":
        """From PyTorch3D ``PerspectiveCameras`` in NDC (the metrical tracker's camera,
        PIPELINES.md §7.3): ``R [B, 3, 3]``, ``T [B, 3]`` (``X_view = X_world @ R + T``),
        ``focal_length [B, 1|2]`` and ``principal_point [B, 2]`` in NDC. Points project to
        PyTorch3D's screen position minus 0.5 (:func:`facegeom.transforms.pytorch3d_to_opencv`)."""
        K, R_cv, t_cv = transforms.pytorch3d_to_opencv(R, T, focal_length, principal_point, image_size)
        return cls.from_K(K, R_cv, t_cv, image_size, near, far)

    @property
    def K(self) -> Tensor:
        """OpenCV intrinsics ``[B, 3, 3]`` (pixel centres at integers, y down)."""
        return transforms.intrinsics_matrix(self.focal, self.principal_point)

    def to_opencv(self) -> Tuple[Tensor, Tensor, Tensor]:
        """``(K [B, 3, 3], R [B, 3, 3], t [B, 3])`` in OpenCV's conventions (``cv2.projectPoints``
        with these and zero distortion gives :meth:`project`)."""
        return self.K, self.R, self.t

    def to_pytorch3d(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(R, T, focal_length [B, 2], principal_point [B, 2])`` for PyTorch3D
        ``PerspectiveCameras(in_ndc=True)`` (:func:`facegeom.transforms.opencv_to_pytorch3d`)."""
        return transforms.opencv_to_pytorch3d(self.K, self.R, self.t, self.image_size)

    @classmethod
    def deep3d(cls, batch: int = 1, dtype: Optional[torch.dtype] = None, device=None,
               focal: float = 1015.0, center: float = 112.0, camera_distance: float = 10.0,
               image_size: int = 224, near: float = 5.0, far: float = 15.0) -> "Pinhole":
        """Deep3DFaceRecon's camera: ``u = f x / (d - z) + center`` and, after its
        image flip, ``v = (H - 1) - (f y / (d - z) + center)`` (d = 10). ``dtype``
        defaults to ``torch.get_default_dtype()``."""
        dtype = torch.get_default_dtype() if dtype is None else dtype
        R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=dtype, device=device)).expand(batch, 3, 3)
        t = torch.tensor([0.0, 0.0, camera_distance], dtype=dtype, device=device).expand(batch, 3)
        focal_t = torch.full((batch, 2), focal, dtype=dtype, device=device)
        centre = torch.tensor([center, image_size - 1 - center], dtype=dtype, device=device).expand(batch, 2)
        return cls(focal_t, centre, R, t, image_size, near, far)

    def camera_points(self, points: Tensor) -> Tensor:
        """``R @ X + t``: ``[B, N, 3]`` in the camera frame."""
        points = _batched_points(points, self.principal_point)
        points = _broadcast(self.R, points)
        return points @ self.R.transpose(1, 2) + self.t[:, None, :]

    def pixels_and_depth(self, points):
        cam = self.camera_points(points)
        depth = cam[..., 2]
        pixels = cam[..., :2] / depth.unsqueeze(-1) * self.focal[:, None, :] + self.principal_point[:, None, :]
        near, far = self.near, self.far
        z_ndc = ((far + near) - 2.0 * far * near / depth) / (far - near)
        return pixels, z_ndc, depth

    def to_clip(self, points: Tensor, image_size: Optional[ImageSize] = None) -> Tensor:
        # Same result as Camera.to_clip, written linearly in the camera-frame
        # point so that points at or behind the camera plane give finite values
        # (the rasterizer clips them) instead of dividing by zero.
        self._check_render_size(image_size)
        cam = self.camera_points(points)
        P = transforms.opencv_projection_matrix(self.K, self.image_size, self.near, self.far)  # [B, 4, 4]
        # clip = P @ (x, y, z, 1): linear in the camera-frame point, finite at z = 0.
        return cam @ P[:, :, :3].transpose(1, 2) + P[:, None, :, 3]
