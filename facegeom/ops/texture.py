"""Texture sampling with mipmaps: nvdiffrast's ``texture`` and
``texture_construct_mip`` with the same layouts and semantics, on CPU
(multi-threaded C++) and CUDA.

Sources: NVlabs/nvdiffrast nvdiffrast/torch/ops.py:345 (``texture``: argument
rules, 'auto' filter), csrc/common/texture_kernel.cu (the sampling arithmetic) and
csrc/common/texture.cpp:69 (which mip levels exist). The per-pixel math is
csrc/include/facegeom/texture.h; its executable specification is
:mod:`facegeom.ops.reference.texture`.

Conventions (identical to nvdiffrast):

* ``uv = (u, v)`` in texture space: ``(0, 0)`` is the corner of texel ``tex[:, 0, 0]``
  and ``(1, 1)`` the far corner of ``tex[:, H - 1, W - 1]``; texel ``(i, j)`` (row,
  column) has its centre at ``((j + 0.5) / W, (i + 0.5) / H)``.
* Filters: ``nearest``, ``linear`` (bilinear on the base level),
  ``linear-mipmap-nearest`` (bilinear on the nearest mip level),
  ``linear-mipmap-linear`` (trilinear); ``auto`` is ``linear`` without ``uv_da``
  and ``mip_level_bias``, else ``linear-mipmap-linear``.
* Boundaries: ``wrap`` (fractional part of uv), ``clamp`` (to the edge texels'
  centres), ``zero`` (zeros outside), ``cube`` (``tex [N, 6, H, H, C]`` faces +x, -x,
  +y, -y, +z, -z; ``uv`` a direction ``[B, h, w, 3]``; filtering crosses face edges,
  the missing texel at a face corner is the mean of the other three; a zero
  direction samples zeros).
* Mip level: ``0.5 * log2`` of the footprint's major axis squared, in base-level
  texels, from ``uv_da`` (the screen-space derivatives: ``(du/dX, du/dY, dv/dX,
  dv/dY)`` or, for cube maps, ``(dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY)``), plus
  ``mip_level_bias``, clamped to ``[0, levels]``. Mip level ``l`` halves each side
  still > 1 (2x2 box filter; 1x2 once a side is 1): a side > 1 that is odd
  cannot be halved (``max_mip_level`` limits the levels).
* Gradients: to ``tex`` (and the mip levels), to ``uv`` (not in ``nearest``), to
  ``uv_da`` and ``mip_level_bias`` in ``linear-mipmap-linear`` (through the level
  fraction; nvdiffrast's closed form for the footprint, finite where it is
  isotropic). The level does not depend on a 2D ``uv`` (it does on a cube
  direction).

Where facegeom differs: float64 is accepted (nvdiffrast takes float32 only); a mip
stack is a list of level tensors (:func:`texture_construct_mip` returns one, built
differentiably from ``tex``), not an opaque object - ``facegeom.compat.nvdiffrast``
keeps nvdiffrast's object; cube-face reciprocals are rounded to nearest (nvdiffrast
rounds toward zero: last-bit differences).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from facegeom import _checks, _native
from facegeom.ops import reference
from facegeom.ops._autograd import forbid_double_backward, op_policy
from facegeom.ops.reference.texture import (
    BOUNDARY_MODES,
    FILTER_MODES,
    TEXTURE_MAX_MIP_LEVEL,
    mip_level_sizes,
)

Tensor = torch.Tensor

_C_ops = torch.ops.facegeom
#: The largest texture side (nvdiffrast's limit: 2**TEXTURE_MAX_MIP_LEVEL).
MAX_TEXTURE_SIDE = 1 << TEXTURE_MAX_MIP_LEVEL


@op_policy("texture")
def texture(
    tex: Tensor,
    uv: Tensor,
    uv_da: Optional[Tensor] = None,
    mip_level_bias: Optional[Tensor] = None,
    mip: Optional[Sequence[Tensor]] = None,
    filter_mode: str = "auto",
    boundary_mode: str = "wrap",
    max_mip_level: Optional[int] = None,
) -> Tensor:
    """Sample a texture at per-pixel coordinates: nvdiffrast's ``texture``.

    Args:
        tex: ``[N, H, W, C]`` (or ``[N, 6, H, H, C]`` with ``boundary_mode='cube'``)
            float32/float64 texture; ``N`` is 1 (shared) or ``B``; differentiable.
        uv: ``[B, h, w, 2]`` texture coordinates (``[B, h, w, 3]`` directions for
            cube maps), ``tex``'s dtype and device; differentiable (not in
            ``nearest``).
        uv_da: ``[B, h, w, 4]`` (cube: ``[B, h, w, 6]``) screen-space derivatives of
            ``uv``, e.g. ``interpolate(..., diff_attrs='all')``'s second output;
            selects the mip level; differentiable (``linear-mipmap-linear``).
        mip_level_bias: ``[B, h, w]`` added to the level (the level itself without
            ``uv_da``); differentiable (``linear-mipmap-linear``).
        mip: mip levels ``1, 2, ...`` as a list of tensors shaped like ``tex`` with
            sides ``max(side >> l, 1)``, e.g. from :func:`texture_construct_mip`;
            gradients go to these tensors (and through them to whatever they were
            computed from). Default: built from ``tex`` here when the filter needs it.
        filter_mode: ``'auto'``, ``'nearest'``, ``'linear'``,
            ``'linear-mipmap-nearest'`` or ``'linear-mipmap-linear'``; the mipmap
            filters need ``uv_da`` or ``mip_level_bias``.
        boundary_mode: ``'wrap'``, ``'clamp'``, ``'zero'`` or ``'cube'``.
        max_mip_level: use at most this many levels above the base (``0``: the
            mipmap filters become ``'linear'``); default all.

    Returns:
        ``[B, h, w, C]`` samples in ``tex``'s dtype.

    Example:
        >>> tex = torch.rand(1, 64, 64, 3)
        >>> uv = torch.rand(1, 32, 32, 2)
        >>> texture(tex, uv, filter_mode="linear").shape
        torch.Size([1, 32, 32, 3])
    """
    filter_mode, mip = _check_texture_args(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode,
                                           max_mip_level)
    if "mipmap" not in filter_mode:
        uv_da = mip_level_bias = None
        mip = []
    elif mip is None:
        mip = _texture_construct_mip(tex, max_mip_level, boundary_mode == "cube")
    return _texture(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode)


@op_policy("texture_construct_mip")
def texture_construct_mip(tex: Tensor, max_mip_level: Optional[int] = None, cube_mode: bool = False) -> List[Tensor]:
    """The mip levels of ``tex`` for :func:`texture`'s ``mip``: nvdiffrast's
    ``texture_construct_mip``, as a list of tensors.

    Args:
        tex: ``[N, H, W, C]`` (``[N, 6, H, H, C]`` with ``cube_mode``) float32/float64.
        max_mip_level: build at most this many levels; default down to 1 x 1.
        cube_mode: ``tex`` is a cube map.

    Returns:
        Levels ``1, 2, ...``: level ``l`` is ``tex``'s shape with sides ``max(side >> l,
        1)``, the 2x2 box filter of level ``l - 1`` (1x2 once a side is 1);
        differentiable w.r.t. ``tex``. Build it once (under ``torch.no_grad()``) for
        a texture that does not change.

    Raises:
        ValueError: a side > 1 of some level is odd (it cannot be halved).

    Example:
        >>> levels = texture_construct_mip(torch.rand(1, 8, 4, 3))
        >>> len(levels), levels[0].shape
        (3, torch.Size([1, 4, 2, 3]))
    """
    if cube_mode is not True and cube_mode is not False:
        raise TypeError(f"cube_mode must be True or False, got {cube_mode!r}")
    _check_tex(tex, cube_mode)
    _check_max_mip_level(max_mip_level)
    mip_level_sizes(tex.shape[-3], tex.shape[-2], max_mip_level)  # raises on odd sides
    return _texture_construct_mip(tex, max_mip_level, cube_mode)


# --------------------------------------------------------------------------- #
# Checks                                                                      #
# --------------------------------------------------------------------------- #

def _check_tex(tex, cube: bool) -> None:
    _checks.floating("tex", tex)
    if cube:
        _checks.shape("tex", tex, [None, 6, None, None, None], "[N, 6, H, H, C] (boundary_mode 'cube')")
        if tex.shape[2] != tex.shape[3]:
            raise ValueError(f"tex must have square faces [N, 6, H, H, C] for cube maps, got {list(tex.shape)}")
    else:
        _checks.shape("tex", tex, [None, None, None, None], "[N, H, W, C]")
    if 0 in tex.shape:
        raise ValueError(f"tex must not be empty, got shape {list(tex.shape)}")
    if max(tex.shape[-3], tex.shape[-2]) > MAX_TEXTURE_SIDE:
        raise ValueError(f"tex sides must be at most {MAX_TEXTURE_SIDE}, got {list(tex.shape)}")


def _check_max_mip_level(max_mip_level) -> None:
    if max_mip_level is None:
        return
    if isinstance(max_mip_level, bool) or not isinstance(max_mip_level, int) or max_mip_level < 0:
        raise ValueError(f"max_mip_level must be None or an int >= 0, got {max_mip_level!r}")


def _check_texture_args(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode, max_mip_level):
    """Validates texture's arguments; returns the resolved filter mode and ``mip``
    (a list, truncated to ``max_mip_level``, or None)."""
    _checks.choice("filter_mode", filter_mode, ("auto",) + FILTER_MODES)
    _checks.choice("boundary_mode", boundary_mode, BOUNDARY_MODES)
    _check_max_mip_level(max_mip_level)
    cube = boundary_mode == "cube"
    _check_tex(tex, cube)
    _checks.floating("uv", uv, tex, "tex")
    n_uv = 3 if cube else 2
    _checks.shape("uv", uv, [None, None, None, n_uv], f"[B, h, w, {n_uv}]")
    batch, height, width = uv.shape[:3]
    if tex.shape[0] not in (1, batch):
        raise ValueError(f"tex holds N = {tex.shape[0]} textures but uv has B = {batch} images; N must be 1 or B")
    if uv_da is not None:
        _checks.floating("uv_da", uv_da, tex, "tex")
        n_da = 6 if cube else 4
        _checks.shape("uv_da", uv_da, [batch, height, width, n_da], f"[B, h, w, {n_da}] (uv's B, h, w)")
    if mip_level_bias is not None:
        _checks.floating("mip_level_bias", mip_level_bias, tex, "tex")
        _checks.shape("mip_level_bias", mip_level_bias, [batch, height, width], "[B, h, w] (uv's B, h, w)")
    if filter_mode == "auto":
        filter_mode = "linear" if uv_da is None and mip_level_bias is None else "linear-mipmap-linear"
    if max_mip_level == 0 and "mipmap" in filter_mode:
        filter_mode = "linear"  # as nvdiffrast: no levels, nothing to pick
    if "mipmap" in filter_mode and uv_da is None and mip_level_bias is None:
        raise ValueError(f"filter_mode {filter_mode!r} needs uv_da and/or mip_level_bias to choose the mip level")
    if mip is not None and "mipmap" in filter_mode:
        if isinstance(mip, torch.Tensor) or not isinstance(mip, (list, tuple)):
            raise TypeError(f"mip must be a list of level tensors (from texture_construct_mip), got {type(mip).__name__}")
        mip = list(mip)
        if max_mip_level is not None:
            mip = mip[:max_mip_level]
        if len(mip) > TEXTURE_MAX_MIP_LEVEL:
            raise ValueError(f"mip holds {len(mip)} levels; at most {TEXTURE_MAX_MIP_LEVEL}")
        for i, level in enumerate(mip, 1):
            _checks.floating(f"mip[{i - 1}]", level, tex, "tex")
            expected = list(tex.shape)
            expected[-3], expected[-2] = max(tex.shape[-3] >> i, 1), max(tex.shape[-2] >> i, 1)
            if list(level.shape) != expected:
                raise ValueError(f"mip[{i - 1}] (level {i}) must have shape {expected} for tex {list(tex.shape)}, "
                                 f"got {list(level.shape)}")
    return filter_mode, mip


# --------------------------------------------------------------------------- #
# Unchecked implementations                                                   #
# --------------------------------------------------------------------------- #

def _texture(tex: Tensor, uv: Tensor, uv_da: Optional[Tensor], mip_level_bias: Optional[Tensor],
             mip: List[Tensor], filter_mode: str, boundary_mode: str) -> Tensor:
    """Validated inputs, a resolved filter mode and the mip list (empty without a
    mipmap filter): no checks."""
    if _native.serves("texture", tex.device):
        return _C_ops.texture(tex, uv, uv_da, mip_level_bias, list(mip), FILTER_MODES.index(filter_mode),
                              BOUNDARY_MODES.index(boundary_mode))
    return reference.texture(tex, uv, uv_da, mip_level_bias, list(mip), filter_mode, boundary_mode)


def _texture_construct_mip(tex: Tensor, max_mip_level: Optional[int], cube_mode: bool) -> List[Tensor]:
    if _native.serves("texture", tex.device, "texture_construct_mip"):
        return list(_C_ops.texture_construct_mip(tex, -1 if max_mip_level is None else max_mip_level, cube_mode))
    return reference.texture_construct_mip(tex, max_mip_level, cube_mode)


# --------------------------------------------------------------------------- #
# Op registration: fake kernels and autograd                                  #
# --------------------------------------------------------------------------- #

if _native.has_op("texture"):

    @torch.library.register_fake("facegeom::texture")
    def _(tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode):
        return tex.new_empty(*uv.shape[:3], tex.shape[-1])

    @torch.library.register_fake("facegeom::texture_backward")
    def _(grad_out, tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode):
        mipmapped = filter_mode >= FILTER_MODES.index("linear-mipmap-nearest")
        return (torch.empty_like(tex), torch.empty_like(uv),
                torch.empty_like(uv_da) if uv_da is not None and mipmapped else tex.new_empty(0),
                torch.empty_like(mip_level_bias) if mip_level_bias is not None and mipmapped else tex.new_empty(0),
                [torch.empty_like(level) for level in mip] if mipmapped else [])

    @torch.library.register_fake("facegeom::texture_construct_mip")
    def _(tex, max_mip_level, cube_mode):
        sizes = mip_level_sizes(tex.shape[-3], tex.shape[-2], None if max_mip_level < 0 else max_mip_level)
        return [tex.new_empty(*tex.shape[:-3], h, w, tex.shape[-1]) for h, w in sizes]

    @torch.library.register_fake("facegeom::texture_construct_mip_backward")
    def _(grad_mip, tex, cube_mode):
        return torch.empty_like(tex)

    def _texture_setup(ctx, inputs, output):
        tex, uv, uv_da, mip_level_bias, mip, filter_mode, boundary_mode = inputs
        ctx.modes = (filter_mode, boundary_mode)
        ctx.has = (uv_da is not None, mip_level_bias is not None)
        ctx.num_levels = len(mip)
        ctx.save_for_backward(tex, uv, uv_da, mip_level_bias, *mip)

    def _texture_backward(ctx, grad_out):
        tex, uv, uv_da, mip_level_bias, *mip = ctx.saved_tensors
        grad_tex, grad_uv, grad_uv_da, grad_bias, grad_mip = _C_ops.texture_backward(
            grad_out.contiguous(), tex, uv, uv_da, mip_level_bias, mip, *ctx.modes
        )
        has_da, has_bias = ctx.has
        grad_uv_da = grad_uv_da if has_da and grad_uv_da.numel() else (torch.zeros_like(uv_da) if has_da else None)
        grad_bias = grad_bias if has_bias and grad_bias.numel() else (
            torch.zeros_like(mip_level_bias) if has_bias else None)
        grad_mip = list(grad_mip) if len(grad_mip) == ctx.num_levels else [torch.zeros_like(m) for m in mip]
        return grad_tex, grad_uv, grad_uv_da, grad_bias, grad_mip, None, None

    torch.library.register_autograd("facegeom::texture", _texture_backward, setup_context=_texture_setup)

    def _construct_mip_setup(ctx, inputs, output):
        tex, _max_mip_level, cube_mode = inputs
        ctx.cube_mode = cube_mode
        ctx.save_for_backward(tex)

    def _construct_mip_backward(ctx, grad_mip):
        (tex,) = ctx.saved_tensors
        grads = [torch.zeros(0) if g is None else g for g in grad_mip]
        if any(g.numel() == 0 for g in grads):
            sizes = mip_level_sizes(tex.shape[-3], tex.shape[-2], len(grads))
            grads = [tex.new_zeros(*tex.shape[:-3], h, w, tex.shape[-1]) if g.numel() == 0 else g
                     for g, (h, w) in zip(grads, sizes)]
        return _C_ops.texture_construct_mip_backward(grads, tex, ctx.cube_mode), None, None

    torch.library.register_autograd(
        "facegeom::texture_construct_mip", _construct_mip_backward, setup_context=_construct_mip_setup
    )

    forbid_double_backward("texture_backward", "texture_construct_mip_backward")
