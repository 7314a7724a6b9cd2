"""nvdiffrast.torch's API on facegeom's kernels: swap one import,
``import facegeom.compat.nvdiffrast as dr`` for ``import nvdiffrast.torch as dr``,
and code that rasterizes, interpolates, anti-aliases, samples textures and peels
depth layers runs unchanged, on CPU or CUDA tensors.

All eleven public names of nvdiffrast.torch (NVlabs/nvdiffrast
nvdiffrast/torch/ops.py): ``RasterizeCudaContext``, ``RasterizeGLContext``,
``DepthPeeler``, ``rasterize``, ``interpolate``, ``texture``,
``texture_construct_mip``, ``antialias``, ``antialias_construct_topology_hash``,
``get_log_level``, ``set_log_level``. Same call signatures, return tuples, layouts
and conventions (pixel centres at ``(x + 0.5) / W * 2 - 1``, row 0 at the bottom,
``rast = (u, v, z/w, triangle_id + 1)``, texture coordinates and cube-map faces as
nvdiffrast's). What differs (docs/migration/nvdiffrast.md):

* Ops run on the device of their input tensors, CPU or CUDA. A context created
  with a ``device`` checks it: ``rasterize`` raises when ``pos`` is elsewhere; a
  context without one accepts any device.
* ``RasterizeGLContext`` behaves as in nvdiffrast's current release: a deprecated
  alias of ``RasterizeCudaContext`` (``isinstance`` of it, a DeprecationWarning),
  ``output_db`` and ``mode`` ignored (``rast_db`` is always output),
  ``set_context`` / ``release_context`` do nothing.
* float64 inputs (and int64 ``tri``) are accepted (nvdiffrast takes float32 and
  int32 only); results follow the input dtype.
* ``rast[..., 2] = z/w`` also carries a gradient to ``pos`` (nvdiffrast's does
  not); ``antialias`` is facegeom's algorithm (exact ``pos`` gradients, each
  silhouette edge handled by one pixel-pair direction, see
  :mod:`facegeom.ops.antialias`).
* ``antialias_construct_topology_hash`` returns a :class:`TopologyHashWrapper`
  holding facegeom's per-edge neighbour table instead of a hash table;
  ``texture_construct_mip`` a :class:`TextureMipWrapper` holding the level tensors.
* ``DepthPeeler`` peels with :func:`facegeom.ops.rasterize_next_layer` (a pass of
  the compiled rasterizer; depths compared as float32).
* Log levels are stored and returned; facegeom's ops print nothing at any level.

Example (nvdiffrast's own idiom)::

    import facegeom.compat.nvdiffrast as dr
    glctx = dr.RasterizeCudaContext()
    rast, rast_db = dr.rasterize(glctx, pos_clip, tri, resolution=[256, 256])
    texc, texd = dr.interpolate(uv[None, ...], rast, uv_idx, rast_db=rast_db, diff_attrs='all')
    color = dr.texture(tex[None, ...], texc, texd, filter_mode='linear-mipmap-linear')
    color = dr.antialias(color, rast, pos_clip, tri)
"""
from __future__ import annotations

import warnings
from numbers import Integral

import torch

from facegeom.ops import antialias as _antialias_op
from facegeom.ops import antialias_topology as _antialias_topology
from facegeom.ops import interpolate as _interpolate_op
from facegeom.ops import rasterize as _rasterize_op
from facegeom.ops import rasterize_next_layer as _rasterize_next_layer_op
from facegeom.ops import texture as _texture_op
from facegeom.ops import texture_construct_mip as _texture_construct_mip_op

__all__ = [
    "DepthPeeler",
    "RasterizeCudaContext",
    "RasterizeGLContext",
    "TextureMipWrapper",
    "TopologyHashWrapper",
    "antialias",
    "antialias_construct_topology_hash",
    "get_log_level",
    "interpolate",
    "rasterize",
    "set_log_level",
    "texture",
    "texture_construct_mip",
]

# --------------------------------------------------------------------------- #
# Log level                                                                   #
# --------------------------------------------------------------------------- #

_log_level = 1  # nvdiffrast's default: warnings and above


def get_log_level():
    """The current log level (nvdiffrast's ``get_log_level``): 0 info, 1 warning,
    2 error, 3 fatal; 1 until :func:`set_log_level` changes it."""
    return _log_level


def set_log_level(level):
    """Set the log level (nvdiffrast's ``set_log_level``). facegeom's ops print
    nothing at any level; the value is kept for code that reads it back.

    Args:
        level: an int (0 info, 1 warning, 2 error, 3 fatal).
    """
    global _log_level
    if isinstance(level, bool) or not isinstance(level, Integral):
        raise TypeError(f"level must be an int, got {level!r}")
    _log_level = int(level)


# --------------------------------------------------------------------------- #
# Contexts                                                                    #
# --------------------------------------------------------------------------- #

def _context_device(device):
    """A torch.device from nvdiffrast's device argument (torch.device, str or int:
    a CUDA index), or None."""
    if device is None:
        return None
    if isinstance(device, bool):
        raise TypeError(f"device must be a torch.device, a string or an int, got {device!r}")
    if isinstance(device, Integral):
        return torch.device("cuda", int(device))
    if isinstance(device, (str, torch.device)):
        device = torch.device(device)
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            device = torch.device("cuda", torch.cuda.current_device())
        return device
    raise TypeError(f"device must be a torch.device, a string or an int, got {type(device).__name__}")


class RasterizeCudaContext:
    """nvdiffrast's rasterizer context. Holds settings only: ops run on the device
    of their tensors.

    Args:
        device: if given (``torch.device``, ``'cuda:1'``, ``'cpu'`` or a CUDA
            index), :func:`rasterize` requires ``pos`` on that device; default: any.
    """

    def __init__(self, device=None):
        self.device = _context_device(device)
        self.output_db = True  # nvdiffrast's rasterizer always outputs rast_db
        self.active_depth_peeler = None

    def _check_device(self, tensor, name):
        if self.device is None or not isinstance(tensor, torch.Tensor):
            return
        if tensor.device.type != self.device.type or (
                self.device.index is not None and tensor.device.index != self.device.index):
            raise ValueError(f"{name} is on {tensor.device} but the context was created for {self.device}; "
                             "move the tensors or create the context with that device")


class RasterizeGLContext(RasterizeCudaContext):
    """nvdiffrast's OpenGL context as its current release has it: deprecated, a
    :class:`RasterizeCudaContext` underneath. ``output_db`` and ``mode`` are
    ignored; :meth:`set_context` and :meth:`release_context` do nothing."""

    def __init__(self, output_db=True, mode="automatic", device=None):
        warnings.warn("RasterizeGLContext has been deprecated and uses RasterizeCudaContext internally",
                      DeprecationWarning, stacklevel=2)
        super().__init__(device=device)

    def set_context(self):
        pass

    def release_context(self):
        pass


# --------------------------------------------------------------------------- #
# Rasterize and depth peeling                                                 #
# --------------------------------------------------------------------------- #

def _resolution(resolution):
    """(height, width) Python ints from a tuple/list/array/tensor of integers."""
    if isinstance(resolution, torch.Tensor):
        resolution = resolution.tolist()
    try:
        values = list(resolution)
    except TypeError:
        raise TypeError(f"resolution must be a (height, width) pair of ints, got {resolution!r}") from None
    out = []
    for value in values:
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"resolution must hold ints, got {resolution!r}")
        out.append(int(value))
    return tuple(out)


class _ZeroGradient(torch.autograd.Function):
    """Identity forward; passes a zero gradient (nvdiffrast's ``grad_db=False``:
    ``rast_db`` stays in the graph, but nothing flows from it to ``pos``)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.zeros_like(grad)


def _check_context(glctx):
    if not isinstance(glctx, RasterizeCudaContext):
        raise TypeError(
            f"glctx must be a RasterizeCudaContext or RasterizeGLContext, got {type(glctx).__name__}"
        )


def _rasterize(glctx, pos, tri, resolution, ranges, grad_db, previous=None):
    if grad_db is not True and grad_db is not False:
        raise TypeError(f"grad_db must be True or False, got {grad_db!r}")
    glctx._check_device(pos, "pos")
    glctx._check_device(tri, "tri")
    if ranges is not None and isinstance(pos, torch.Tensor) and pos.dim() == 3:
        ranges = None  # nvdiffrast ignores ranges in instanced mode
    resolution = _resolution(resolution)
    if previous is None:
        rast, rast_db = _rasterize_op(pos, tri, resolution, ranges, grad_db=True)
    else:
        rast, rast_db = _rasterize_next_layer_op(pos, tri, resolution, previous, ranges, grad_db=True)
    return rast, (rast_db if grad_db else _ZeroGradient.apply(rast_db))


def rasterize(glctx, pos, tri, resolution, ranges=None, grad_db=True):
    """Rasterize triangles (nvdiffrast's ``rasterize``).

    Args:
        glctx: a :class:`RasterizeCudaContext` (or :class:`RasterizeGLContext`).
        pos: clip-space vertices, ``[B, V, 4]`` (instanced mode) or ``[V, 4]``
            (range mode), float32 (or float64); differentiable.
        tri: ``[F, 3]`` int32 vertex indices.
        resolution: ``(height, width)`` ints (Python, numpy or tensor integers).
        ranges: range mode: ``[B, 2]`` int32 CPU tensor of ``(first, count)``
            into ``tri`` per image; ignored in instanced mode.
        grad_db: propagate gradients of ``rast_db`` into ``pos``; when False,
            ``rast_db`` passes a zero gradient.

    Returns:
        ``(rast, rast_db)``: ``rast [B, H, W, 4] = (u, v, z/w, triangle_id + 1)``
        (zeros on background) and ``rast_db [B, H, W, 4] = (du/dX, du/dY,
        dv/dX, dv/dY)``.

    Raises:
        RuntimeError: a :class:`DepthPeeler` is active on ``glctx``.
    """
    _check_context(glctx)
    if glctx.active_depth_peeler is not None:
        raise RuntimeError("Cannot call rasterize() during depth peeling operation, use rasterize_next_layer() instead")
    return _rasterize(glctx, pos, tri, resolution, ranges, grad_db)


class DepthPeeler:
    """Rasterize depth layers one after the other (nvdiffrast's ``DepthPeeler``),
    as a context manager::

        with dr.DepthPeeler(glctx, pos, tri, resolution) as peeler:
            for _ in range(num_layers):
                rast, rast_db = peeler.rasterize_next_layer()

    Arguments as :func:`rasterize`. The first layer is :func:`rasterize`'s; each
    later one holds, per pixel, the nearest surface behind the previous layer's
    (fragments at or in front of its depth are discarded, as nvdiffrast's peel
    test), computed by :func:`facegeom.ops.rasterize_next_layer`.
    """

    def __init__(self, glctx, pos, tri, resolution, ranges=None, grad_db=True):
        _check_context(glctx)
        if grad_db is not True and grad_db is not False:
            raise TypeError(f"grad_db must be True or False, got {grad_db!r}")
        if not isinstance(pos, torch.Tensor) or not isinstance(tri, torch.Tensor):
            raise TypeError("pos and tri must be torch.Tensors")
        self.raster_ctx = glctx
        self.pos = pos
        self.tri = tri
        self.resolution = _resolution(resolution)
        self.ranges = ranges
        self.grad_db = grad_db
        self.peeling_idx = None
        self._previous = None

    def __enter__(self):
        if self.raster_ctx is None:
            raise RuntimeError("Cannot re-enter a terminated depth peeling operation")
        if self.raster_ctx.active_depth_peeler is not None:
            raise RuntimeError("Cannot have multiple depth peelers active simultaneously in a rasterization context")
        self.raster_ctx.active_depth_peeler = self
        self.peeling_idx = 0
        return self

    def __exit__(self, *args):
        self.raster_ctx.active_depth_peeler = None
        self.raster_ctx = None  # drop the references to the inputs, as nvdiffrast
        self.pos = self.tri = self.resolution = self.ranges = self.grad_db = None
        self.peeling_idx = None
        self._previous = None
        return None

    def rasterize_next_layer(self):
        """The next depth layer: ``(rast, rast_db)`` as :func:`rasterize`."""
        if self.raster_ctx is None or self.raster_ctx.active_depth_peeler is not self:
            raise RuntimeError("rasterize_next_layer() needs an active DepthPeeler (use it in a `with` block)")
        rast, rast_db = _rasterize(self.raster_ctx, self.pos, self.tri, self.resolution, self.ranges,
                                   self.grad_db, previous=self._previous)
        self._previous = rast.detach()
        self.peeling_idx += 1
        return rast, rast_db


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


# --------------------------------------------------------------------------- #
# Texture                                                                     #
# --------------------------------------------------------------------------- #

class TextureMipWrapper:
    """What :func:`texture_construct_mip` returns: the mip levels of one texture
    (``levels``, a list of tensors), reusable while the texture is unchanged. As
    nvdiffrast's opaque mip object, gradients that reach the levels in
    :func:`texture` go to that call's ``tex``."""

    def __init__(self, levels, texture_shape, cube_mode, max_mip_level):
        self.levels = [level.detach() for level in levels]
        self.texture_shape = tuple(texture_shape)
        self.cube_mode = cube_mode
        self.max_mip_level = max_mip_level


def texture_construct_mip(tex, max_mip_level=None, cube_mode=False):
    """Build the mip levels of a texture that stays constant (nvdiffrast's
    ``texture_construct_mip``).

    Args:
        tex: ``[N, H, W, C]`` (``[N, 6, H, H, C]`` with ``cube_mode``) texture.
        max_mip_level: build at most this many levels (default: down to 1 x 1).
        cube_mode: ``tex`` is a cube map.

    Returns:
        A :class:`TextureMipWrapper` for :func:`texture`'s ``mip``.
    """
    with torch.no_grad():
        levels = _texture_construct_mip_op(tex, max_mip_level, cube_mode)
    return TextureMipWrapper(levels, tex.shape, cube_mode, max_mip_level)


def texture(tex, uv, uv_da=None, mip_level_bias=None, mip=None, filter_mode="auto", boundary_mode="wrap",
            max_mip_level=None):
    """Sample a texture (nvdiffrast's ``texture``); see :func:`facegeom.ops.texture`
    for every argument's shape and the conventions.

    Args:
        tex: ``[N, H, W, C]`` or, with ``boundary_mode='cube'``, ``[N, 6, H, H, C]``.
        uv: ``[B, h, w, 2]`` (cube: ``[B, h, w, 3]``) texture coordinates.
        uv_da: ``[B, h, w, 4]`` (cube: ``[B, h, w, 6]``) screen-space derivatives of uv.
        mip_level_bias: ``[B, h, w]`` mip level bias.
        mip: a :class:`TextureMipWrapper` from :func:`texture_construct_mip`
            (gradients reaching it go to ``tex``) or a list of level tensors (a
            custom stack: the tensors get their own gradients).
        filter_mode: ``'auto'``, ``'nearest'``, ``'linear'``,
            ``'linear-mipmap-nearest'`` or ``'linear-mipmap-linear'``.
        boundary_mode: ``'wrap'``, ``'clamp'``, ``'zero'`` or ``'cube'``.
        max_mip_level: the most mip levels to build and use.

    Returns:
        ``[B, h, w, C]`` samples.
    """
    if isinstance(mip, TextureMipWrapper):
        if tuple(tex.shape) != mip.texture_shape or (boundary_mode == "cube") != mip.cube_mode:
            raise ValueError(f"mip was built for a texture of shape {list(mip.texture_shape)} (cube_mode="
                             f"{mip.cube_mode}); tex has shape {list(tex.shape)} and boundary_mode {boundary_mode!r}")
        levels = mip.levels
        if torch.is_grad_enabled() and tex.requires_grad:
            # Values from the wrapper, gradients through a fresh build into tex (nvdiffrast's
            # mip gradients always reach the base texture).
            rebuilt = _texture_construct_mip_op(tex, len(levels), mip.cube_mode)
            levels = [level + (fresh - fresh.detach()) for level, fresh in zip(levels, rebuilt)]
        mip = levels
        max_mip_level = 0 if max_mip_level == 0 else None
    elif mip is not None:
        if not isinstance(mip, list) or not all(isinstance(level, torch.Tensor) for level in mip):
            raise TypeError(f"mip must be a TextureMipWrapper (from texture_construct_mip) or a list of tensors, "
                            f"got {type(mip).__name__}")
        max_mip_level = 0 if max_mip_level == 0 else None
    return _texture_op(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level)
