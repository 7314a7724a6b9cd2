"""nvdiffrast.torch's API on facegeom's kernels: swap one import,
``import facegeom.compat.nvdiffrast as dr`` for ``import nvdiffrast.torch as dr``,
and code that rasterizes, interpolates and anti-aliases runs unchanged, on CPU
or CUDA tensors.

Same call signatures, return tuples, layouts and conventions as nvdiffrast
(pixel centres at ``(x + 0.5) / W * 2 - 1``, row 0 at the bottom, ``rast =
(u, v, z/w, triangle_id + 1)``). What differs:

* Ops run on the device of their input tensors: CPU or CUDA. The contexts hold
  only their settings; their ``device`` argument is recorded but not used.
* float64 inputs are accepted (nvdiffrast takes float32 only); results follow
  the input dtype.
* ``rast[..., 2] = z/w`` also carries a gradient to ``pos`` (nvdiffrast's does
  not); ``antialias``'s ``pos`` gradients are exact rather than approximated,
  and each silhouette edge is handled by one pixel-pair direction only (see
  :mod:`facegeom.ops.antialias`).
* ``antialias_construct_topology_hash`` returns a :class:`TopologyHashWrapper`
  holding facegeom's per-edge neighbour table instead of a hash table.
* ``texture``, depth peeling and log levels are not provided.

Example (nvdiffrast's own idiom)::

    import facegeom.compat.nvdiffrast as dr
    glctx = dr.RasterizeCudaContext()
    rast, _ = dr.rasterize(glctx, pos_clip, tri, resolution=[256, 256])
    color, _ = dr.interpolate(vtx_col[None, ...], rast, tri)
    color = dr.antialias(color, rast, pos_clip, tri)
"""
from __future__ import annotations

import torch

from facegeom.ops import antialias as _antialias_op
from facegeom.ops import antialias_topology as _antialias_topology
from facegeom.ops import interpolate as _interpolate_op
from facegeom.ops import rasterize as _rasterize_op

__all__ = [
    "RasterizeCudaContext",
    "RasterizeGLContext",
    "TopologyHashWrapper",
    "antialias",
    "antialias_construct_topology_hash",
    "interpolate",
    "rasterize",
]


class RasterizeCudaContext:
    """nvdiffrast's CUDA rasterizer context. Holds nothing but settings here:
    ``rasterize`` runs on the device of ``pos`` (CPU or CUDA)."""

    def __init__(self, device=None):
        self.device = device
        self.output_db = True  # nvdiffrast's CUDA rasterizer always outputs rast_db
        self.active_depth_peeler = None


class RasterizeGLContext:
    """nvdiffrast's OpenGL rasterizer context, with the same arguments and
    checks. No OpenGL is involved: ``rasterize`` runs on ``pos``'s device.

    Args:
        output_db: whether ``rasterize`` outputs the image-space derivatives of
            the barycentrics (else its second output is ``[B, H, W, 0]``).
        mode: ``'automatic'`` or ``'manual'`` (then ``set_context`` /
            ``release_context`` are allowed, and do nothing).
        device: recorded, not used.
    """

    def __init__(self, output_db=True, mode="automatic", device=None):
        if output_db is not True and output_db is not False:
            raise TypeError(f"output_db must be True or False, got {output_db!r}")
        if mode not in ("automatic", "manual"):
            raise ValueError(f"mode must be 'automatic' or 'manual', got {mode!r}")
        self.output_db = output_db
        self.mode = mode
        self.device = device
        self.active_depth_peeler = None

    def set_context(self):
        if self.mode != "manual":
            raise RuntimeError("set_context() needs a context created with mode='manual'")

    def release_context(self):
        if self.mode != "manual":
            raise RuntimeError("release_context() needs a context created with mode='manual'")


def rasterize(glctx, pos, tri, resolution, ranges=None, grad_db=True):
    """Rasterize triangles (nvdiffrast's ``rasterize``).

    Args:
        glctx: a :class:`RasterizeCudaContext` or :class:`RasterizeGLContext`.
        pos: clip-space vertices, ``[B, V, 4]`` (instanced mode) or ``[V, 4]``
            (range mode), float32 (or float64); differentiable.
        tri: ``[F, 3]`` int32 vertex indices.
        resolution: ``(height, width)``.
        ranges: range mode: ``[B, 2]`` int32 CPU tensor of ``(first, count)``
            into ``tri`` per image; ignored in instanced mode.
        grad_db: propagate gradients of ``rast_db`` into ``pos``; ignored when
            the context does not output derivatives.

    Returns:
        ``(rast, rast_db)``: ``rast [B, H, W, 4] = (u, v, z/w, triangle_id + 1)``
        (zeros on background) and ``rast_db [B, H, W, 4] = (du/dX, du/dY,
        dv/dX, dv/dY)``, or an empty ``[B, H, W, 0]`` tensor when the context
        has ``output_db=False``.
    """
    if not isinstance(glctx, (RasterizeCudaContext, RasterizeGLContext)):
        raise TypeError(
            f"glctx must be a RasterizeCudaContext or RasterizeGLContext, got {type(glctx).__name__}"
        )
    if grad_db is not True and grad_db is not False:
        raise TypeError(f"grad_db must be True or False, got {grad_db!r}")
    if ranges is not None and isinstance(pos, torch.Tensor) and pos.dim() == 3:
        ranges = None  # nvdiffrast ignores ranges in instanced mode
    resolution = tuple(resolution)
    if glctx.output_db:
        rast, rast_db = _rasterize_op(pos, tri, resolution, ranges, grad_db=True)
        return rast, (rast_db if grad_db else rast_db.detach())
    rast, _ = _rasterize_op(pos, tri, resolution, ranges, grad_db=False)
    return rast, rast.new_empty(*rast.shape[:3], 0)


def interpolate(attr, rast, tri, rast_db=None, diff_attrs=None):
    """Interpolate vertex attributes (nvdiffrast's ``interpolate``).

    Args:
        attr: ``[V, C]`` (range mode) or ``[B, V, C]`` (instanced; ``B`` may be 1
            to broadcast) vertex attributes; differentiable.
        rast: ``rast`` from :func:`rasterize`; differentiable (u, v).
        tri: ``[F, 3]`` int32 vertex indices.
        rast_db: ``rast_db`` from :func:`rasterize`, needed with ``diff_attrs``.
        diff_attrs: attribute indices (or ``'all'``) whose image-space
            derivatives to output.

    Returns:
        ``(out, out_da)``: ``out [B, H, W, C]`` and ``out_da [B, H, W,
        2 * len(diff_attrs)]`` holding ``(dA/dX, dA/dY)`` per selected
        attribute, or an empty ``[B, H, W, 0]`` tensor without ``diff_attrs``.
    """
    if diff_attrs is not None and len(diff_attrs) == 0:
        diff_attrs = None
    if diff_attrs is not None and rast_db is None:
        raise ValueError("interpolate: diff_attrs needs rast_db (the second output of rasterize)")
    if rast_db is not None and rast_db.shape[-1] == 0:
        rast_db = None
    out, out_da = _interpolate_op(attr, rast, tri, rast_db=rast_db, diff_attrs=diff_attrs)
    if out_da is None:
        out_da = out.new_empty(*out.shape[:3], 0)
    return out, out_da


class TopologyHashWrapper:
    """What :func:`antialias_construct_topology_hash` returns: the neighbour
    table of one triangle tensor (``topology [F, 3]`` int32, see
    :func:`facegeom.ops.antialias_topology`), reusable while ``tri`` is unchanged."""

    def __init__(self, tri):
        if not isinstance(tri, torch.Tensor):
            raise TypeError(f"tri must be a torch.Tensor, got {type(tri).__name__}")
        self.topology = _antialias_topology(tri)
        self.num_triangles = tri.shape[0]


def antialias_construct_topology_hash(tri):
    """Build the topology of ``tri`` once for repeated :func:`antialias` calls.

    Args:
        tri: ``[F, 3]`` int32 vertex indices (any device).

    Returns:
        A :class:`TopologyHashWrapper` to pass as ``topology_hash``.
    """
    return TopologyHashWrapper(tri)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def antialias(color, rast, pos, tri, topology_hash=None, pos_gradient_boost=1.0):
    """Analytic anti-aliasing of silhouette edges (nvdiffrast's ``antialias``).

    Args:
        color: ``[B, H, W, C]`` image to anti-alias; differentiable.
        rast: ``rast`` from :func:`rasterize`.
        pos: the clip-space vertices given to :func:`rasterize`; differentiable.
        tri: the triangles given to :func:`rasterize`.
        topology_hash: optional :func:`antialias_construct_topology_hash` result
            for ``tri``; built on every call when omitted.
        pos_gradient_boost: multiplier of the gradients that reach ``pos``.

    Returns:
        The anti-aliased image, shaped like ``color``.
    """
    topology = None
    if topology_hash is not None:
        if not isinstance(topology_hash, TopologyHashWrapper):
            raise TypeError(
                "topology_hash must come from antialias_construct_topology_hash, got "
                f"{type(topology_hash).__name__}"
            )
        if topology_hash.num_triangles != tri.shape[0]:
            raise ValueError(
                f"topology_hash was built for {topology_hash.num_triangles} triangles, tri has {tri.shape[0]}"
            )
        topology = topology_hash.topology.to(tri.device)
    if pos_gradient_boost != 1.0 and isinstance(pos, torch.Tensor) and pos.requires_grad:
        pos = _ScaleGradient.apply(pos, float(pos_gradient_boost))
    return _antialias_op(color, rast, pos, tri, topology)
