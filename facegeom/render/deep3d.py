"""Deep3DFaceRecon's renderer, reproduced exactly as a mode (not "fixed").

:class:`Deep3DRenderer` is the authors' ``MeshRenderer``
(``D3D:util/nvdiffrast.py:15-95``, sicxu/Deep3DFaceRecon_pytorch at
9167c7136aebef0c54d3ac74f4b0396222a491c1; PIPELINES.md §2.4 "Renderer") built on
:func:`facegeom.ops.rasterize` and :func:`facegeom.ops.interpolate`:

- clip space ``[x, -y, z, 1] @ P^T`` with ``P = ndc_projection(x=tan(fov/2)·near,
  near, far) @ diag(1, -1, -1, 1)`` (``fov = 2·atan(center / focal)``, computed in
  degrees and back as the authors do, the matrix rounded to float32 as theirs is),
  i.e. ``x_clip = k·x``, ``y_clip = -k·y``, ``z_clip = ((far+near)·z - 2·far·near)
  / (far - near)``, ``w = z`` with ``k ≈ focal / center``; the input vertices are in
  Deep3D's camera frame (``z`` = distance in front of the camera, y up);
- near 5 / far 15, resolution ``2·center`` = 224;
- **no antialiasing** ("antialiasing step is missing in current version", line 2);
- outputs ``mask = (triangle_id > 0)``, ``depth = interp(z)·mask`` (the camera
  distance, perspective-correct, not NDC depth), ``image = interp(feat)·mask``,
  background 0, all ``[B, C, H, W]`` with row 0 = the top of the face (the
  rasterizer's row 0 is NDC y = -1, which the ``-y`` maps to the top).

Pixel convention (reproduced, not fixed): Deep3D projects landmarks with
``u = focal·x/z + center``, ``v = focal·y/z + center`` (y up, PIPELINES.md §2.4
step 4) while the rasterizer samples pixel centres at ``(i + 0.5)``: pixel column
``j`` shows ``u = j + 0.5`` and pixel row ``i`` shows ``v = 2·center - 0.5 - i``, so
the image sits 0.5 px off its own landmark projection (image row of a landmark is
``2·center - 1 - v``, ``D3D:models/facerecon_model.py:223``). Kept, to match the
released model.

Depth differs from the authors' for batches > 1 [AUTHORS' BUG, not reproduced]:
their ``dr.interpolate(vertex.reshape([-1, 4])[..., 2].unsqueeze(1), rast, tri)``
passes a ``[B·N, 1]`` attribute, which nvdiffrast broadcasts over the batch, so
every image's depth uses the *first* mesh's z. Here each image uses its own mesh;
for ``B = 1`` the two are identical. (Depth is not used by any Deep3D loss.)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from facegeom import ops
from facegeom import _checks

Tensor = torch.Tensor

__all__ = ["Deep3DRenderer", "Deep3DRendering", "deep3d_clip_matrix"]


class Deep3DRendering(NamedTuple):
    """What :meth:`Deep3DRenderer.forward` returns (the authors' ``(mask, depth, image)``).

    Attributes:
        mask: ``[B, 1, H, W]`` 1 where a triangle is drawn, else 0 (not differentiable).
        depth: ``[B, 1, H, W]`` camera distance ``z`` of the visible surface, 0 on background.
        image: ``[B, C, H, W]`` interpolated ``feat``, 0 on background; ``None`` without ``feat``.
    """

    mask: Tensor
    depth: Tensor
    image: Optional[Tensor]


def deep3d_clip_matrix(focal: float = 1015.0, center: float = 112.0, near: float = 5.0,
                       far: float = 15.0) -> Tensor:
    """The authors' ``MeshRenderer.ndc_proj`` ``[4, 4]`` float32: ``ndc_projection(x, near, far)
    @ diag(1, -1, -1, 1)`` with ``x = tan(deg2rad(fov / 2))·near`` and ``fov = 2·atan(center /
    focal)·180/π`` (``D3D:util/nvdiffrast.py:15-32``, ``models/facerecon_model.py:99-102``).
    Clip-space positions are ``[x, -y, z, 1] @ M.T``."""
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    if not (focal > 0 and center > 0):
        raise ValueError(f"focal and center must be positive, got focal={focal}, center={center}")
    fov = 2 * np.arctan(center / focal) * 180 / np.pi
    x = np.tan(np.deg2rad(fov * 0.5)) * near
    n, f = near, far
    projection = np.array([[n / x, 0, 0, 0],
                           [0, n / -x, 0, 0],
                           [0, 0, -(f + n) / (f - n), -(2 * f * n) / (f - n)],
                           [0, 0, -1, 0]]).astype(np.float32)
    return torch.tensor(projection).matmul(torch.diag(torch.tensor([1.0, -1, -1, 1])))


class Deep3DRenderer(nn.Module):
    """Deep3DFaceRecon's ``MeshRenderer`` (see the module docstring for every convention).

    Args:
        focal, center: the camera (Deep3D: 1015, 112); the resolution is ``int(2·center)``
            unless ``image_size`` is given (the authors always use ``2·center``).
        near, far: clip range on the camera distance (Deep3D: 5, 15).
        image_size: square resolution override.

    Example:
        >>> renderer = Deep3DRenderer()
        >>> v = torch.tensor([[[-1.0, -1, 10], [1, -1, 10], [0, 1, 10]]])   # camera frame
        >>> mask, depth, image = renderer(v, torch.tensor([[0, 1, 2]]), feat=torch.ones(1, 3, 3))
        >>> mask.shape, round(float(depth.max()), 4)          # camera distance
        (torch.Size([1, 1, 224, 224]), 10.0)
    """

    def __init__(self, focal: float = 1015.0, center: float = 112.0, near: float = 5.0, far: float = 15.0,
                 image_size: Optional[int] = None):
        super().__init__()
        self.register_buffer("ndc_proj", deep3d_clip_matrix(focal, center, near, far), persistent=False)
        size = int(2 * center) if image_size is None else image_size
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.rasterize_size = size

    def clip(self, vertex: Tensor) -> Tensor:
        """``[B, N, 3]`` camera-frame vertices -> ``[B, N, 4]`` clip space, as the authors
        (``D3D:util/nvdiffrast.py:53-58``): append 1, negate y, ``@ ndc_proj.T``."""
        homogeneous = torch.cat([vertex[..., :1], -vertex[..., 1:2], vertex[..., 2:3],
                                 torch.ones_like(vertex[..., :1])], -1)
        return homogeneous @ self.ndc_proj.to(vertex).t()

    def forward(self, vertex: Tensor, tri: Tensor, feat: Optional[Tensor] = None) -> Deep3DRendering:
        """Render ``vertex`` ``[B, N, 3]`` (Deep3D camera frame, differentiable) with
        triangles ``tri`` ``[M, 3]`` (0-based, any integer dtype, shared by the batch)
        and optional per-vertex features ``feat`` ``[B, N, C]`` (differentiable).

        Returns:
            :class:`Deep3DRendering` ``(mask, depth, image)``, each ``[B, *, H, W]``.
        """
        _checks.floating("vertex", vertex)
        _checks.shape("vertex", vertex, [None, None, 3], "[B, N, 3]")
        _checks.integer("tri", tri, vertex.device)
        _checks.shape("tri", tri, [None, 3], "[M, 3]")
        if feat is not None:
            _checks.floating("feat", feat, vertex, "vertex")
            _checks.shape("feat", feat, [vertex.shape[0], vertex.shape[1], None], "[B, N, C]")
        tri = tri.to(torch.int32).contiguous()
        pos = self.clip(vertex).contiguous()
        size = self.rasterize_size
        rast, _ = ops.rasterize(pos, tri, (size, size))
        mask = (rast[..., 3] > 0).to(vertex.dtype).unsqueeze(1)  # [B, 1, H, W]
        depth, _ = ops.interpolate(vertex[..., 2:3].contiguous(), rast, tri)
        depth = mask * depth.permute(0, 3, 1, 2)
        image = None
        if feat is not None:
            image, _ = ops.interpolate(feat.contiguous(), rast, tri)
            image = mask * image.permute(0, 3, 1, 2)
        return Deep3DRendering(mask, depth, image)
