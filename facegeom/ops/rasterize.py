"""Differentiable z-buffer rasterization and attribute interpolation, with
nvdiffrast's layouts and conventions (``nvdiffrast.torch.rasterize`` /
``interpolate``), on CPU (binned C++ kernel) and CUDA.

Conventions (identical to nvdiffrast):

* ``pos`` is in clip space ``(x, y, z, w)``; pixel ``(X, Y)`` has its centre at
  NDC ``((X + 0.5) / W * 2 - 1, (Y + 0.5) / H * 2 - 1)``; image row 0 is the
  *bottom* row (y up).
* ``rast[..., 0:2] = (u, v)`` are perspective-correct barycentrics: vertex 0 of a
  triangle has ``(1, 0)``, vertex 1 ``(0, 1)``, vertex 2 ``(0, 0)``;
  ``rast[..., 2] = z / w``; ``rast[..., 3] = triangle_id + 1`` (as a float);
  background pixels are all zeros.
* The depth test keeps the smallest ``z / w``; points with ``z / w`` outside
  ``[-1, 1]`` are not drawn (OpenGL's near and far planes). Both windings are
  drawn (no culling).

Decisions where nvdiffrast is silent or differs:

* Coverage is decided in float64. Triangles with a vertex at or behind ``w = 0``
  use homogeneous edge functions, so they are drawn exactly where their surface
  lies in front of the camera (``w > 0``) and clipped at the near plane
  (``z / w >= -1``) - no clipping step, no garbage; the others use 2D edge
  functions on the projected vertices. A pixel centre exactly on an edge or a
  vertex belongs to the triangle that the sample point moved by
  ``(+eps, +eps^2)`` would fall in, and shared edges are evaluated identically
  by both triangles, so a watertight mesh covers each interior pixel exactly
  once. Triangles with zero projected area (degenerate or seen exactly
  edge-on) and non-finite coordinates are not drawn.
* The depth test compares ``z / w`` rounded to float32; equal depths go to the
  lower triangle id. CPU and CUDA run the same arithmetic, so ids agree exactly.
* float64 ``pos`` gives a float64 ``rast`` (nvdiffrast accepts float32 only; the
  ids are the same either way). float32 ids are exact up to 2**24 triangles,
  which is the limit for float32 input.
* ``z / w`` carries a gradient to ``pos`` (nvdiffrast gives none).
"""
from __future__ import annotations

import operator
from typing import Optional, Sequence, Tuple, Union

import torch

from facegeom import _checks, _native
from facegeom.ops import reference
from facegeom.ops._autograd import forbid_double_backward, op_policy, refuse_forward_ad

Tensor = torch.Tensor

# float32 holds every integer up to 2**24 exactly: the largest id + 1 in rast.
MAX_TRIANGLES_FLOAT32 = (1 << 24) - 1
# Per-side limit (as nvdiffrast's); keeps every pixel index comfortably in int64.
MAX_RESOLUTION = 16384

# The compiled ops (a name that cannot be mistaken for the facegeom.ops package).
_C_ops = torch.ops.facegeom


@op_policy("rasterize")
def rasterize(
    pos: Tensor,
    tri: Tensor,
    resolution: Sequence[int],
    ranges: Optional[Tensor] = None,
    grad_db: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Rasterize triangles with a depth test: nvdiffrast's ``rasterize``.

    Args:
        pos: clip-space vertices ``(x, y, z, w)``, float32 or float64, differentiable.
            Instanced mode: ``[B, V, 4]`` (every image draws all of ``tri``; a
            ``[V, 4]`` without ``ranges`` is one image). Range mode: ``[V, 4]``
            with ``ranges``.
        tri: ``[F, 3]`` int32 (int64 accepted) vertex indices, on ``pos``'s device.
        resolution: ``(H, W)`` ints in ``[1, 16384]``.
        ranges: range mode only: ``[N, 2]`` int32 CPU tensor of ``(first, count)``;
            image ``n`` draws triangles ``first .. first + count - 1`` (ids stay
            global, so ``interpolate`` takes the same ``tri``).
        grad_db: also return the screen-space derivatives of the barycentrics.

    Returns:
        ``rast [B, H, W, 4] = (u, v, z/w, triangle_id + 1)`` in ``pos``'s dtype,
        all zeros where nothing is drawn, and ``rast_db [B, H, W, 4] =
        (du/dX, du/dY, dv/dX, dv/dY)`` per pixel (X, Y in pixels) when
        ``grad_db`` else ``None``. ``u, v, z/w`` and ``rast_db`` are
        differentiable w.r.t. ``pos``; the id channel is not.

    See the module docstring for pixel centres, y-up rows, the tie rule and the
    near/far behaviour. Non-finite input (docs/ops.md, the one exception to "NaN in,
    NaN out"): a triangle with a NaN/Inf vertex is not drawn, as in nvdiffrast.
    ``grad_db`` must be a bool (``TypeError``).

    Example:
        >>> pos = torch.tensor([[[-1., -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1]]])
        >>> rast, _ = rasterize(pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (4, 4))
        >>> rast[0, 0, 0]  # bottom-left pixel centre (-0.75, -0.75)
        tensor([0.7500, 0.1250, 0.0000, 1.0000])
    """
    pos, tri, height, width, ranges, grad_db = _check_raster_inputs(pos, tri, resolution, ranges, grad_db)
    return _rasterize(pos, tri, height, width, ranges, grad_db)


@op_policy("interpolate")
def interpolate(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    rast_db: Optional[Tensor] = None,
    diff_attrs: Union[None, str, Sequence[int]] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Interpolate vertex attributes over a rasterized image: nvdiffrast's ``interpolate``.

    ``out = u * attr[t0] + v * attr[t1] + (1 - u - v) * attr[t2]`` for the
    triangle ``(t0, t1, t2)`` named by ``rast``'s id channel; zeros on background.

    Args:
        attr: ``[V, C]`` (shared by all images, also for range mode) or
            ``[B, V, C]`` (``[1, V, C]`` broadcasts); float32/float64 with
            ``rast``'s dtype; differentiable.
        rast: ``[B, H, W, 4]`` output of :func:`rasterize`; differentiable
            through ``(u, v)`` (and so to ``pos``).
        tri: ``[F, 3]`` int32 triangles, as given to :func:`rasterize`.
        rast_db: ``[B, H, W, 4]`` from ``rasterize(..., grad_db=True)``; needed
            with ``diff_attrs``; differentiable.
        diff_attrs: ``None``, ``"all"`` or a list of attribute (channel) indices
            whose screen-space derivatives to return.

    Returns:
        ``out [B, H, W, C]`` and ``out_da [B, H, W, 2 * len(diff_attrs)]`` =
        ``(dA/dX, dA/dY)`` per selected attribute in pixel units (``None``
        without ``diff_attrs``).

    Raises ``IndexError`` naming ``rast`` when its id channel holds a value outside
    ``[0, F]`` (negative, NaN, Inf, or an id ``tri`` lacks), ``TypeError`` when
    ``diff_attrs`` holds non-integers. Non-finite ``attr`` or ``(u, v)`` make the
    pixels of the triangles using them non-finite (docs/ops.md).

    Example:
        >>> rast, rast_db = rasterize(pos, tri, (256, 256), grad_db=True)   # doctest: +SKIP
        >>> uv, uv_da = interpolate(uvs, rast, tri, rast_db, diff_attrs="all")  # doctest: +SKIP
    """
    _checks.floating("rast", rast)
    _checks.floating("attr", attr, rast, "rast")
    _checks.shape("rast", rast, [None, None, None, 4], "[B, H, W, 4]")
    batch = rast.shape[0]
    if attr.dim() == 3 and attr.shape[0] == 1:
        attr = attr[0]  # a batch of one broadcasts, as in nvdiffrast
    if attr.dim() == 3:
        _checks.shape("attr", attr, [batch, None, None], "[B, V, C] (B of rast)")
    else:
        _checks.shape("attr", attr, [None, None], "[V, C] or [B, V, C]")
    tri = _check_tri(tri, attr.shape[-2], rast.device)
    channels = _diff_attr_list(diff_attrs, attr.shape[-1])
    if channels:
        if rast_db is None:
            raise ValueError("diff_attrs needs rast_db (from rasterize(..., grad_db=True))")
        _checks.floating("rast_db", rast_db, rast, "rast")
        _checks.shape("rast_db", rast_db, list(rast.shape), "[B, H, W, 4] (rast's shape)")
    else:
        rast_db = None
    _check_rast_ids(rast, tri.shape[0])
    return _interpolate(attr, rast, tri, rast_db, channels)


@op_policy("rasterize_next_layer")
def rasterize_next_layer(
    pos: Tensor,
    tri: Tensor,
    resolution: Sequence[int],
    previous: Tensor,
    ranges: Optional[Tensor] = None,
    grad_db: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Depth peeling: the surface behind ``previous`` at each pixel, as
    nvdiffrast's ``DepthPeeler.rasterize_next_layer``.

    Draws what :func:`rasterize` draws, except that at each pixel only fragments
    whose depth (``z/w`` rounded to float32, the depth test's key) is greater than
    the depth of the triangle that ``previous`` shows there survive (nvdiffrast's
    peel test, ``depth <= peel`` is discarded, NVlabs/nvdiffrast
    csrc/common/cudaraster/impl/FineRaster.inl:349); a pixel that ``previous``
    leaves empty stays empty. Call it with the previous call's output to peel
    layer after layer.

    It is a pass of the compiled rasterizer with that extra test per fragment
    (the depth key of the previous surface is its stored ``z/w`` rounded to
    float32, exactly the key its depth test used); gradients are
    :func:`rasterize`'s. The reference (:func:`facegeom.ops.reference.rasterize`
    with ``peel``) computes the same ids.

    Args:
        pos, tri, resolution, ranges, grad_db: as :func:`rasterize`.
        previous: ``[B, H, W, 4]`` rast of the previous layer (from
            :func:`rasterize` or this function) for the same inputs, in ``pos``'s
            dtype and on its device.

    Returns:
        ``(rast, rast_db)`` as :func:`rasterize`; differentiable w.r.t. ``pos``.

    Example:
        >>> first, _ = rasterize(pos, tri, (64, 64))                       # doctest: +SKIP
        >>> second, _ = rasterize_next_layer(pos, tri, (64, 64), first)    # doctest: +SKIP
    """
    pos, tri, height, width, ranges, grad_db = _check_raster_inputs(pos, tri, resolution, ranges, grad_db)
    batch = pos.shape[0] if ranges is None else ranges.shape[0]
    _checks.floating("previous", previous, pos, "pos")
    _checks.shape("previous", previous, [batch, height, width, 4], "[B, H, W, 4] (a rast of the same size)")
    _check_rast_ids(previous, tri.shape[0], "previous")
    return _rasterize_next_layer(pos, tri, height, width, ranges, grad_db, previous)


# --------------------------------------------------------------------------- #
# Checks (run once, by the public functions above)                            #
# --------------------------------------------------------------------------- #

def _check_resolution(resolution) -> Tuple[int, int]:
    if isinstance(resolution, torch.Tensor):
        resolution = resolution.tolist()
    if not isinstance(resolution, (tuple, list)) or len(resolution) != 2:
        raise ValueError(f"resolution must be a (height, width) pair of ints, got {resolution!r}")
    for value in resolution:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"resolution must hold ints, got {resolution!r}")
        if not 0 < value <= MAX_RESOLUTION:
            raise ValueError(f"resolution must be in [1, {MAX_RESOLUTION}] per side, got {resolution!r}")
    return int(resolution[0]), int(resolution[1])


def _check_tri(tri, num_vertices: int, device: torch.device) -> Tensor:
    _checks.integer("tri", tri, device)
    _checks.shape("tri", tri, [None, 3], "[F, 3]")
    if tri.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"tri must be int32 (or int64), got {tri.dtype}")
    _checks.indices("tri", tri, num_vertices, what="vertex indices", hint=f"pos has V = {num_vertices} vertices")
    return tri.to(torch.int32)


def _check_raster_inputs(pos, tri, resolution, ranges, grad_db):
    """The checks :func:`rasterize` and :func:`rasterize_next_layer` share; returns
    ``(pos [B, V, 4] or [V, 4], tri int32, height, width, ranges int32 or None, grad_db)``."""
    _checks.floating("pos", pos)
    height, width = _check_resolution(resolution)
    grad_db = _check_grad_db(grad_db)
    if ranges is None:
        if pos.dim() == 2:
            pos = pos.unsqueeze(0)
        _checks.shape("pos", pos, [None, None, 4], "[B, V, 4] (instanced mode)")
    else:
        _checks.shape("pos", pos, [None, 4], "[V, 4] (range mode)")
        _checks.integer("ranges", ranges, torch.device("cpu"))
        _checks.shape("ranges", ranges, [None, 2], "[N, 2]")
    num_vertices = pos.shape[-2]
    tri = _check_tri(tri, num_vertices, pos.device)
    num_triangles = tri.shape[0]
    if pos.dtype == torch.float32 and num_triangles > MAX_TRIANGLES_FLOAT32:
        raise ValueError(
            f"tri has {num_triangles} triangles; float32 rast stores ids exactly only up to "
            f"{MAX_TRIANGLES_FLOAT32}: pass float64 pos (float64 rast holds every id exactly)"
        )
    if ranges is not None:
        if ranges.numel() and not torch.compiler.is_compiling():
            first, count = ranges[:, 0].long(), ranges[:, 1].long()  # checked before narrowing
            if bool((first < 0).any() | (count < 0).any() | (first + count > num_triangles).any()):
                raise IndexError(
                    f"ranges must hold (first, count) with first, count >= 0 and first + count <= F "
                    f"= {num_triangles}, got {ranges.tolist()}"
                )
        ranges = ranges.to(torch.int32)
    return pos, tri, height, width, ranges, grad_db


def _check_rast_ids(rast: Tensor, num_triangles: int, name: str = "rast") -> None:
    """Check that rast's id channel holds ``triangle_id + 1`` in ``[0, F]`` (0 = background):
    one ``aminmax`` pass (a host sync on CUDA), which also catches NaN and +-inf; raises
    IndexError naming ``rast`` (or ``name``). Skipped while ``torch.compile`` traces. (Non-integer ids
    are not looked for: the kernels read them as NaN pixels, never out of bounds.)"""
    if rast.numel() and not torch.compiler.is_compiling():
        low, high = (float(v) for v in torch.aminmax(rast[..., 3].detach()))
        if not (0 <= low and high <= num_triangles):  # False for NaN too
            raise IndexError(
                f"{name}[..., 3] holds triangle id + 1 values in [{low:g}, {high:g}]; they must lie in "
                f"[0, F = {num_triangles}] (0 is background): pass the {name} and tri of one rasterize call"
            )


def _check_grad_db(grad_db) -> bool:
    if not isinstance(grad_db, bool):
        raise TypeError(f"grad_db must be a bool, got {type(grad_db).__name__} {grad_db!r}")
    return grad_db


def _diff_attr_list(diff_attrs, num_channels: int):
    if diff_attrs is None:
        return []
    if isinstance(diff_attrs, str) and diff_attrs == "all":
        return list(range(num_channels))
    if isinstance(diff_attrs, (str, bytes)) or not hasattr(diff_attrs, "__iter__"):
        raise TypeError(f"diff_attrs must be None, 'all' or a list of attribute indices, got {diff_attrs!r}")
    channels = []
    for c in diff_attrs:
        if isinstance(c, bool) or (isinstance(c, torch.Tensor) and c.dtype == torch.bool):
            raise TypeError(f"diff_attrs must hold int attribute indices, got {c!r}")
        try:
            channels.append(operator.index(c))
        except TypeError:
            raise TypeError(f"diff_attrs must hold int attribute indices (or be 'all'), got {c!r}") from None
    for c in channels:
        if not 0 <= c < num_channels:
            raise IndexError(f"diff_attrs index {c} is out of range for attr with C = {num_channels} channels")
    return channels


# --------------------------------------------------------------------------- #
# Unchecked implementations: for callers that validated already (the public   #
# functions above, facegeom.render). Inputs in the op's layout.               #
# --------------------------------------------------------------------------- #

def _rasterize(pos: Tensor, tri: Tensor, height: int, width: int, ranges: Optional[Tensor] = None,
               grad_db: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """pos [B, V, 4] (or [V, 4] with ranges [N, 2] int32 on the CPU), tri [F, 3] int32
    with indices in [0, V): no checks."""
    if _native.serves("rasterize", pos.device):
        refuse_forward_ad("rasterize", pos)  # facegeom.render calls this directly
        rast, rast_db = torch.ops.facegeom.rasterize(pos, tri, height, width, ranges, grad_db)
        return rast, (rast_db if grad_db else None)
    return reference.rasterize(pos, tri, (height, width), ranges, grad_db)


def _rasterize_next_layer(pos: Tensor, tri: Tensor, height: int, width: int, ranges: Optional[Tensor],
                          grad_db: bool, previous: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """rasterize_next_layer on validated inputs (as _rasterize, plus previous [B, H, W, 4])."""
    if _native.serves("rasterize_next_layer", pos.device):
        rast, rast_db = torch.ops.facegeom.rasterize_next_layer(pos, tri, height, width, ranges, grad_db, previous)
        return rast, (rast_db if grad_db else None)
    return reference.rasterize(pos, tri, (height, width), ranges, grad_db, peel=previous)


def _interpolate(attr: Tensor, rast: Tensor, tri: Tensor, rast_db: Optional[Tensor] = None,
                 channels: Sequence[int] = ()) -> Tuple[Tensor, Optional[Tensor]]:
    """attr [V, C] or [B, V, C], rast [B, H, W, 4] naming triangles of tri [F, 3]
    int32, channels a list of attribute indices (rast_db given when non-empty): no checks."""
    channels = list(channels)
    if _native.serves("interpolate", rast.device):
        refuse_forward_ad("interpolate", attr, rast, rast_db)  # facegeom.render calls this directly
        out, out_da = torch.ops.facegeom.interpolate(attr, rast, tri, rast_db, channels)
        return out, (out_da if channels else None)
    return reference.interpolate(attr, rast, tri, rast_db, channels if channels else None)


# --------------------------------------------------------------------------- #
# Op registration: fake kernels and autograd (only when _C has the ops)       #
# --------------------------------------------------------------------------- #

def _empty_to_none(t: Tensor) -> Optional[Tensor]:
    return None if t.numel() == 0 else t


if _native.has_op("rasterize"):

    # -- rasterize ---------------------------------------------------------- #
    @torch.library.register_fake("facegeom::rasterize")
    def _(pos, tri, height, width, ranges, grad_db):
        batch = pos.shape[0] if ranges is None else ranges.shape[0]
        rast = pos.new_empty(batch, height, width, 4)
        return rast, (pos.new_empty(batch, height, width, 4) if grad_db else pos.new_empty(0))

    @torch.library.register_fake("facegeom::rasterize_backward")
    def _(grad_rast, grad_db, pos, tri, rast, ranges):
        return torch.empty_like(pos)

    def _rasterize_setup(ctx, inputs, output):
        pos, tri, _height, _width, ranges, _grad_db = inputs
        ctx.save_for_backward(pos, tri, output[0], ranges)

    def _rasterize_backward(ctx, grad_rast, grad_db):
        pos, tri, rast, ranges = ctx.saved_tensors
        if grad_rast is None:
            grad_rast = torch.zeros_like(rast)
        if grad_db is not None and grad_db.numel() == 0:
            grad_db = None
        grad_pos = _C_ops.rasterize_backward(grad_rast, grad_db, pos, tri, rast, ranges)
        return grad_pos, None, None, None, None, None

    torch.library.register_autograd(
        "facegeom::rasterize", _rasterize_backward, setup_context=_rasterize_setup
    )

    # -- interpolate -------------------------------------------------------- #
    @torch.library.register_fake("facegeom::interpolate")
    def _(attr, rast, tri, rast_db, diff_attrs):
        batch, height, width = rast.shape[:3]
        out = attr.new_empty(batch, height, width, attr.shape[-1])
        num_da = 2 * len(diff_attrs)
        return out, (attr.new_empty(batch, height, width, num_da) if num_da else attr.new_empty(0))

    @torch.library.register_fake("facegeom::interpolate_backward")
    def _(grad_out, grad_da, attr, rast, tri, rast_db, diff_attrs):
        grad_db = torch.empty_like(rast_db) if rast_db is not None and len(diff_attrs) else rast.new_empty(0)
        return torch.empty_like(attr), torch.empty_like(rast), grad_db

    def _interpolate_setup(ctx, inputs, output):
        attr, rast, tri, rast_db, diff_attrs = inputs
        ctx.diff_attrs = diff_attrs
        ctx.save_for_backward(attr, rast, tri, rast_db)

    def _interpolate_backward(ctx, grad_out, grad_da):
        attr, rast, tri, rast_db = ctx.saved_tensors
        if grad_out is None:
            grad_out = rast.new_zeros(*rast.shape[:3], attr.shape[-1])
        if grad_da is not None and grad_da.numel() == 0:
            grad_da = None
        grad_attr, grad_rast, grad_db = _C_ops.interpolate_backward(
            grad_out, grad_da, attr, rast, tri, rast_db, ctx.diff_attrs
        )
        return grad_attr, grad_rast, None, _empty_to_none(grad_db), None

    torch.library.register_autograd(
        "facegeom::interpolate", _interpolate_backward, setup_context=_interpolate_setup
    )

    forbid_double_backward("rasterize_backward", "interpolate_backward")


if _native.has_op("rasterize_next_layer"):

    # -- rasterize_next_layer: rasterize's outputs and gradients ------------ #
    @torch.library.register_fake("facegeom::rasterize_next_layer")
    def _(pos, tri, height, width, ranges, grad_db, previous):
        batch = pos.shape[0] if ranges is None else ranges.shape[0]
        rast = pos.new_empty(batch, height, width, 4)
        return rast, (pos.new_empty(batch, height, width, 4) if grad_db else pos.new_empty(0))

    def _next_layer_setup(ctx, inputs, output):
        pos, tri, _height, _width, ranges, _grad_db, _previous = inputs
        ctx.save_for_backward(pos, tri, output[0], ranges)

    def _next_layer_backward(ctx, grad_rast, grad_db):
        return _rasterize_backward(ctx, grad_rast, grad_db) + (None,)

    torch.library.register_autograd(
        "facegeom::rasterize_next_layer", _next_layer_backward, setup_context=_next_layer_setup
    )
