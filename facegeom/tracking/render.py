"""The tracker's differentiable renderer (PIPELINES.md §7.6): ``MT:renderer.py:143-198`` and
``MT:tracker_rasterizer.py:21-61`` on facegeom's rasterizer.

A rasterizer plus a shader, as PyTorch3D's ``MeshRenderer`` (STYLE.md):

1. **Rasterisation** (:meth:`TrackerRenderer.rasterize`) of the PyTorch3D NDC positions
   (:meth:`facegeom.tracking.camera.TrackerCamera.ndc`) with :func:`facegeom.ops.rasterize`, one image per
   batch element (range mode). PyTorch3D's ``cull_backfaces=True`` is reproduced by **dropping the
   back-facing triangles before rasterising**: a triangle is back-facing when PyTorch3D's
   ``EdgeFunctionForward(v0, v1, v2) < 0`` on its NDC ``(x, y)`` (``P3D:pytorch3d/csrc/rasterize_meshes/
   rasterize_meshes.cu``, ``const bool back_face = face_area < 0.0``); the op itself keeps its no-culling
   contract. PyTorch3D NDC (+X left, +Y up, pixel ``i``'s centre at ``x_s = i + 0.5``) maps to the op's
   clip space by ``x_clip = -x * 2s/W``, ``y_clip = -y * 2s/H`` (``s = min(H, W)/2``), ``w = Z``, so that the
   op's row 0 is the image's top row and every pixel centre is PyTorch3D's; barycentrics are
   perspective-correct in both (``perspective_correct=True``, ``faces_per_pixel=1``, ``blur_radius=0``).
2. **Cache**: the rasterisation (triangle ids, barycentrics) is kept, detached, until
   :meth:`TrackerRenderer.reset`; the tracker resets every ``raster_update = 8`` iterations
   (``MT:tracker.py:472-473``). Attributes are re-interpolated every call with the cached barycentrics, so
   gradients reach the geometry only through the interpolated NDC positions (``MT:tracker_rasterizer.py:39-61``).
3. **Shading** (DECA SH, ``MT:renderer.py:114-126``): ``image = albedo * (Y(n) . sh) * alpha`` with ``n`` the
   interpolated (not re-normalised) area-weighted vertex normals of the FLAME-frame mesh, detached
   (:func:`facegeom.ops.vertex_normals`, PyTorch3D's ``verts_normals_packed``); albedo from a UV texture by
   ``grid_sample(texture, uv, align_corners=False)`` with the template's UVs (``uv * 2 - 1``, ``v`` negated,
   ``MT:renderer.py:80-82,177``) or interpolated per-vertex albedo. No gamma, no clamping, no antialiasing.
4. **Mask**: the interpolated per-vertex render mask (FLAME ``face`` + eyeballs, ``MT:masking.py:81-91``) > 0.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from facegeom import _checks, ops
from facegeom.tracking.camera import TrackerCamera

Tensor = torch.Tensor


class TrackerRendering(NamedTuple):
    """What :meth:`TrackerRenderer.forward` returns (image rows top first, PyTorch3D's pixel layout).

    Attributes:
        image: ``[B, 3, H, W]`` ``albedo * shading * alpha`` (``ops['images']`` of ``MT:renderer.py:184``).
        alpha: ``[B, 1, H, W]`` 1 where a (front-facing) triangle is drawn.
        mask: ``[B, 1, H, W]`` the photometric mask (``mask_images_rendering``), detached.
        position: ``[B, H, W, 2]`` interpolated NDC ``(x, y)`` (``position_images``), differentiable.
        depth: ``[B, 1, H, W]`` interpolated view-space ``Z`` (0 on the background), detached.
    """

    image: Tensor
    alpha: Tensor
    mask: Tensor
    position: Tensor
    depth: Tensor


class PixelSamples(NamedTuple):
    """What :meth:`TrackerRenderer.render_pixels` returns: the ``P`` pixels of the photometric mask of all
    ``B`` images (the only pixels where ``mask * (image - sampled)`` can be non-zero, ``MT:util.py:152-158``).

    Attributes:
        colour: ``[P, 3]`` rendered ``albedo * shading`` (differentiable w.r.t. albedo and SH).
        position: ``[P, 2]`` interpolated NDC ``(x, y)`` (differentiable w.r.t. the vertices and the camera).
        batch: ``[P]`` int64 image of each pixel; counts: ``[B]`` int64 pixels per image.
    """

    colour: Tensor
    position: Tensor
    batch: Tensor
    counts: Tensor


class _Pixels(NamedTuple):
    batch: Tensor  # [P] int64
    weights: Tensor  # [P, B*V] sparse CSR: row p holds the barycentrics of pixel p at its triangle's vertices
    weights_t: Tensor  # its transpose [B*V, P] (CSR), for the gradient
    uv: Optional[Tensor]  # [P, 2] interpolated texture coordinates (grid_sample layout)
    counts: Tensor  # [B] int64


def _barycentric_matrix(tri: Tensor, bary: Tensor, columns: int) -> Tuple[Tensor, Tensor]:
    """``W [P, columns]`` (CSR) with ``W[p, tri[p, k]] = bary[p, k]``, and ``W^T``: ``W @ attributes`` is the
    barycentric interpolation ``Σ_k bary[p, k] attributes[tri[p, k]]``. Built directly in CSR (rows sorted by
    construction, columns sorted within each row)."""
    count = tri.shape[0]
    tri, order = torch.sort(tri, dim=1)
    bary = torch.gather(bary, 1, order)
    device = tri.device
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are plain
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(torch.arange(0, 3 * count + 1, 3, device=device), tri.reshape(-1),
                                         bary.reshape(-1), (count, columns), check_invariants=False)
        flat = tri.reshape(-1)
        by_column = torch.argsort(flat, stable=True)  # pixels stay in order within each column
        crow = torch.zeros(columns + 1, dtype=torch.int64, device=device)
        crow[1:] = torch.cumsum(torch.bincount(flat, minlength=columns), 0)
        pixel = torch.arange(count, device=device).repeat_interleave(3)
        transposed = torch.sparse_csr_tensor(crow, pixel[by_column], bary.reshape(-1)[by_column], (columns, count),
                                             check_invariants=False)
    return matrix, transposed


class _Interpolate(torch.autograd.Function):
    """``W @ attributes`` with the gradient ``W^T @ grad`` (both sparse CSR products)."""

    @staticmethod
    def forward(ctx, attributes, weights, weights_t):
        ctx.weights_t = weights_t
        return weights @ attributes

    @staticmethod
    def backward(ctx, grad):
        return ctx.weights_t @ grad.contiguous(), None, None


class _Raster(NamedTuple):
    rast: Tensor  # [B, H, W, 4], detached
    tri: Tensor  # [F_kept, 3] int32, offsets b * V
    uv_tri: Optional[Tensor]  # [F_kept, 3] int32 into the UV vertices
    size: Tuple[int, int]
    pixels: Optional[_Pixels] = None  # the masked pixels, gathered on first use


def back_facing(ndc_xy: Tensor, faces: Tensor) -> Tensor:
    """``[B, F]`` bool: PyTorch3D's back faces, ``EdgeFunctionForward(v0, v1, v2) < 0`` with
    ``EdgeFunctionForward(p, a, b) = (p.x - a.x)(b.y - a.y) - (p.y - a.y)(b.x - a.x)`` on NDC ``(x, y)``."""
    v0, v1, v2 = (ndc_xy[:, faces[:, k]] for k in range(3))
    area = (v0[..., 0] - v1[..., 0]) * (v2[..., 1] - v1[..., 1]) - (v0[..., 1] - v1[..., 1]) * (v2[..., 0] - v1[..., 0])
    return area < 0


class TrackerRenderer(nn.Module):
    """The tracker's renderer over a fixed topology.

    Args:
        faces: ``[F, 3]`` vertex indices.
        render_mask: ``[V]`` bool (photometric region); all vertices when None.
        uv_coords: optional ``[T, 2]`` texture coordinates in [0, 1] (``vt`` of the head template .obj);
        uv_faces: ``[F, 3]`` indices into ``uv_coords`` (needed with ``uv_coords``).
        near, far: the view-depth range drawn (PyTorch3D draws everything in front of the camera; the
            op needs a finite range: 1 mm to 1 km by default).
    """

    def __init__(self, faces: Tensor, render_mask: Optional[Tensor] = None, uv_coords=None, uv_faces=None,
                 near: float = 1e-3, far: float = 1e3):
        super().__init__()
        faces = torch.as_tensor(faces).long()
        _checks.shape("faces", faces, [None, 3], "[F, 3]")
        self.register_buffer("faces", faces)
        num_vertices = int(faces.max()) + 1 if faces.numel() else 0
        mask = torch.ones(num_vertices, dtype=torch.bool) if render_mask is None else torch.as_tensor(render_mask)
        self.register_buffer("render_mask", mask.bool())
        self.register_buffer("uv", None)
        self.register_buffer("uv_faces", None)
        if (uv_coords is None) != (uv_faces is None):
            raise ValueError("uv_coords and uv_faces must be given together")
        if uv_coords is not None:
            uv = torch.as_tensor(np.asarray(uv_coords), dtype=torch.float32)
            _checks.shape("uv_coords", uv, [None, 2], "[T, 2]")
            uv_faces = torch.as_tensor(np.asarray(uv_faces)).long()
            _checks.shape("uv_faces", uv_faces, [faces.shape[0], 3], "[F, 3] (one UV triangle per face)")
            _checks.indices("uv_faces", uv_faces, uv.shape[0], what="UV vertex indices")
            grid = uv * 2 - 1  # MT:renderer.py:80-82
            grid[:, 1] = -grid[:, 1]
            self.uv, self.uv_faces = grid, uv_faces
        if not 0 < near < far:
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
        self.near, self.far = float(near), float(far)
        self._raster: Optional[_Raster] = None

    def reset(self) -> None:
        """Forget the cached rasterisation (``TrackerRasterizer.reset``)."""
        self._raster = None

    def clip(self, ndc: Tensor, size: Tuple[int, int]) -> Tensor:
        """PyTorch3D NDC + view depth ``[B, V, 3]`` -> the op's clip space ``[B, V, 4]`` (module docstring)."""
        height, width = size
        scale = min(height, width)  # 2 s
        depth = ndc[..., 2:3]
        near, far = self.near, self.far
        x = -ndc[..., 0:1] * (scale / width) * depth
        y = -ndc[..., 1:2] * (scale / height) * depth
        z = ((far + near) * depth - 2.0 * far * near) / (far - near)
        return torch.cat([x, y, z, depth], -1)

    def rasterize(self, ndc: Tensor, size: Tuple[int, int], faces: Optional[Tensor] = None) -> _Raster:
        """Cull back faces and rasterise ``ndc [B, V, 3]`` at ``size = (H, W)``; returns the cache entry.
        ``faces`` (default: the renderer's) replaces the triangles (then no UVs)."""
        batch, num_vertices = ndc.shape[:2]
        ndc = ndc.detach()
        own = faces is None
        faces = self.faces if own else faces.long()
        keep = ~back_facing(ndc[..., :2], faces)  # [B, F]
        face_ids = [torch.nonzero(keep[b]).squeeze(1) for b in range(batch)]
        tri = torch.cat([faces[ids] + b * num_vertices for b, ids in enumerate(face_ids)]).int()
        counts = torch.tensor([len(ids) for ids in face_ids], dtype=torch.int64)
        ranges = torch.stack([torch.cumsum(counts, 0) - counts, counts], 1).int()
        pos = self.clip(ndc, size).reshape(batch * num_vertices, 4)
        rast, _ = ops.rasterize(pos.contiguous(), tri, size, ranges=ranges)
        uv_tri = None
        if self.uv is not None and own:
            uv_tri = torch.cat([self.uv_faces[ids] for ids in face_ids]).int()
        return _Raster(rast.detach(), tri, uv_tri, (int(size[0]), int(size[1])))

    def _cached(self, ndc: Tensor, size: Tuple[int, int]) -> _Raster:
        if self._raster is None or self._raster.size != size or self._raster.rast.shape[0] != ndc.shape[0]:
            self._raster = self.rasterize(ndc, size)
        return self._raster

    def _check(self, vertices: Tensor, albedo: Tensor, sh: Tensor) -> bool:
        """Validates the inputs; returns whether ``albedo`` is per vertex (else a UV texture)."""
        _checks.floating("vertices", vertices)
        _checks.shape("vertices", vertices, [None, self.render_mask.shape[0], 3], "[B, V, 3]")
        _checks.floating("sh", sh, vertices, "vertices")
        _checks.shape("sh", sh, [None, 9, 3], "[B, 9, 3]")
        _checks.floating("albedo", albedo, vertices, "vertices")
        if albedo.dim() == 3:
            _checks.shape("albedo", albedo, [None, vertices.shape[1], 3], "[B, V, 3]")
            return True
        if self.uv is None:
            raise ValueError("a UV texture albedo [B, 3, Ht, Wt] needs the renderer's uv_coords")
        _checks.shape("albedo", albedo, [None, 3, None, None], "[B, 3, Ht, Wt]")
        return False

    def _mask_pixels(self, raster: _Raster, num_vertices: int) -> _Pixels:
        """The covered pixels whose interpolated render mask is > 0 (``mask_images_rendering``), with their
        triangles' vertices and barycentrics ``(u, v, 1 - u - v)`` (the op's vertex order)."""
        if raster.pixels is not None:
            return raster.pixels
        rast = raster.rast
        batch = rast.shape[0]
        flat = rast.reshape(-1, 4)
        covered = torch.nonzero(flat[:, 3] > 0).squeeze(1)
        ids = flat[covered, 3].long() - 1
        u, v = flat[covered, 0], flat[covered, 1]
        bary = torch.stack([u, v, 1.0 - u - v], 1)
        tri = raster.tri[ids].long()
        mask_values = self.render_mask.to(bary.dtype)[tri % num_vertices]
        keep = (bary * mask_values).sum(1) > 0
        covered, ids, bary, tri = covered[keep], ids[keep], bary[keep], tri[keep]
        image = covered // (rast.shape[1] * rast.shape[2])
        weights, weights_t = _barycentric_matrix(tri, bary, batch * num_vertices)
        uv = None
        if raster.uv_tri is not None:  # constant attributes: interpolated once per rasterisation
            uv_weights, _ = _barycentric_matrix(raster.uv_tri[ids].long(), bary, self.uv.shape[0])
            uv = uv_weights @ self.uv.to(bary)
        pixels = _Pixels(image, weights, weights_t, uv, torch.bincount(image, minlength=batch))
        self._raster = raster._replace(pixels=pixels)
        return pixels

    def render_pixels(self, vertices: Tensor, camera: TrackerCamera, albedo: Tensor, sh: Tensor,
                      size: Sequence[int]) -> PixelSamples:
        """The photometric pixels only: what :meth:`forward` gives inside its ``mask``, at the cost of the
        masked pixels (same rasterisation and cache, same interpolation, same DECA SH). Arguments as
        :meth:`forward`."""
        per_vertex_albedo = self._check(vertices, albedo, sh)
        size = (int(size[0]), int(size[1]))
        batch, num_vertices = vertices.shape[:2]
        ndc = camera.ndc(vertices)
        pixels = self._mask_pixels(self._cached(ndc, size), num_vertices)

        def interpolate(attributes):  # [B, V, C] -> [P, C]
            flat = attributes.reshape(batch * num_vertices, -1)
            if flat.requires_grad and torch.is_grad_enabled():
                return _Interpolate.apply(flat, pixels.weights, pixels.weights_t)
            return pixels.weights @ flat.contiguous()

        # The gradient reaches the geometry only through the positions, the light only through the shading and
        # the texture only through the albedo: interpolate the detached attributes without autograd.
        position = interpolate(ndc[..., :2])
        albedo_grad = albedo.requires_grad and torch.is_grad_enabled()
        with torch.no_grad():
            constant = [ops.vertex_normals(vertices.detach(), self.faces)]
            if per_vertex_albedo and not albedo_grad:
                constant.append(albedo.expand(batch, -1, -1))
            constant = interpolate(torch.cat(constant, -1))
            basis = ops.sh_basis(constant[:, 0:3], "deca")  # [P, 9] (normals not re-normalised, MT:renderer.py:166)
        if per_vertex_albedo:
            albedo_p = interpolate(albedo.expand(batch, -1, -1)) if albedo_grad else constant[:, 3:6]
        else:
            texture = albedo.expand(batch, -1, -1, -1)
            parts = [nn.functional.grid_sample(texture[b:b + 1], part[None, None].to(texture),
                                               align_corners=False)[0, :, 0].T
                     for b, part in enumerate(torch.split(pixels.uv, pixels.counts.tolist()))]
            albedo_p = torch.cat(parts) if batch > 1 else parts[0]
        sh = sh.expand(batch, -1, -1)
        if batch == 1:
            shading = basis @ sh[0]
        else:  # pixels are ordered by image
            shading = torch.cat([part @ sh[b] for b, part in enumerate(torch.split(basis, pixels.counts.tolist()))])
        return PixelSamples(albedo_p * shading, position, pixels.batch, pixels.counts)

    def forward(self, vertices: Tensor, camera: TrackerCamera, albedo: Tensor, sh: Tensor,
                size: Sequence[int]) -> TrackerRendering:
        """Render (``MT:renderer.py:143-198``).

        Args:
            vertices: ``[B, V, 3]`` FLAME-frame vertices (differentiable).
            camera: the :class:`~facegeom.tracking.camera.TrackerCamera` (batch B or 1).
            albedo: ``[B or 1, V, 3]`` per-vertex albedo, or ``[B or 1, 3, Ht, Wt]`` a UV texture (needs
                ``uv_coords``); differentiable.
            sh: ``[B or 1, 9, 3]`` DECA SH coefficients (differentiable).
            size: ``(H, W)`` of the image to render; a cached rasterisation of another size is replaced.

        Returns:
            :class:`TrackerRendering`.
        """
        per_vertex_albedo = self._check(vertices, albedo, sh)
        size = (int(size[0]), int(size[1]))
        batch, num_vertices = vertices.shape[:2]
        ndc = camera.ndc(vertices)  # [B, V, 3]: NDC x, y with gradient; view depth
        raster = self._cached(ndc, size)

        # Per-vertex attributes, interpolated in one call: NDC xy, normals, mask, depth (+ albedo).
        normals = ops.vertex_normals(vertices.detach(), self.faces)
        mask = self.render_mask.to(vertices.dtype)[None, :, None].expand(batch, -1, 1)
        attributes = [ndc[..., :2], normals, mask, ndc[..., 2:3].detach()]
        if per_vertex_albedo:
            attributes.append(albedo.expand(batch, -1, -1))
        values, _ = ops.interpolate(torch.cat(attributes, -1).reshape(batch * num_vertices, -1), raster.rast,
                                    raster.tri)
        position, normal_img, mask_img, depth = values[..., 0:2], values[..., 2:5], values[..., 5:6], values[..., 6:7]
        alpha = (raster.rast[..., 3:4] > 0).to(vertices.dtype)
        if per_vertex_albedo:
            albedo_img = values[..., 7:10]
        else:
            uv_img, _ = ops.interpolate(self.uv.to(vertices), raster.rast, raster.uv_tri)
            albedo_img = nn.functional.grid_sample(albedo.expand(batch, -1, -1, -1), uv_img, align_corners=False)
            albedo_img = albedo_img.permute(0, 2, 3, 1)
        image = ops.sh_shading(normal_img, albedo_img, sh.expand(batch, -1, -1), "deca") * alpha

        def channels_first(t):
            return t.permute(0, 3, 1, 2)

        return TrackerRendering(channels_first(image), channels_first(alpha), channels_first((mask_img > 0).to(
            vertices.dtype)), position, channels_first(depth))

    def render_depth(self, vertices: Tensor, camera: TrackerCamera, size: Sequence[int],
                     faces: Optional[Tensor] = None, depth_mask: Optional[Tensor] = None) -> Tensor:
        """The view-space depth map of ``render_depth`` (``MT:renderer.py:128-141``): a fresh rasterisation
        (culled as above) of ``faces`` (default: the renderer's; the authors pass FLAME's extra faces first,
        :attr:`facegeom.tracking.model.TrackerFLAME.depth_faces`), the interpolated view ``Z`` (metres) where
        the interpolated ``depth_mask`` (``[V]`` bool, default all; ``Masking.get_mask_depth``) is > 0, else 0.
        The cache used by :meth:`forward` is left alone.

        Args:
            vertices: ``[B, V, 3]`` FLAME-frame vertices; camera: :class:`TrackerCamera`; size: ``(H, W)``.

        Returns:
            ``[B, 1, H, W]`` depth, detached.
        """
        _checks.floating("vertices", vertices)
        _checks.shape("vertices", vertices, [None, self.render_mask.shape[0], 3], "[B, V, 3]")
        batch, num_vertices = vertices.shape[:2]
        if faces is not None:
            faces = torch.as_tensor(faces).long().to(vertices.device)
            _checks.shape("faces", faces, [None, 3], "[F, 3]")
            _checks.indices("faces", faces, num_vertices, what="vertex indices")
        mask = torch.ones(num_vertices, dtype=torch.bool) if depth_mask is None else torch.as_tensor(depth_mask)
        _checks.shape("depth_mask", mask, [num_vertices], "[V]")
        size = (int(size[0]), int(size[1]))
        with torch.no_grad():
            ndc = camera.ndc(vertices)
            raster = self.rasterize(ndc, size, faces)
            mask = mask.to(device=vertices.device, dtype=vertices.dtype)[None, :, None].expand(batch, -1, 1)
            attributes = torch.cat([ndc[..., 2:3], mask], -1).reshape(batch * num_vertices, 2)
            values, _ = ops.interpolate(attributes, raster.rast, raster.tri)
            depth = values[..., 0:1] * (values[..., 1:2] > 0).to(values.dtype)
        return depth.permute(0, 3, 1, 2)
