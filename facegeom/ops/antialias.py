"""Analytic silhouette anti-aliasing with gradients to vertex positions:
nvdiffrast's ``antialias`` idea, on CPU (C++) and CUDA.

A rasterized image is piecewise constant in the vertex positions: moving a
silhouette vertex flips whole pixels, so the loss has no gradient w.r.t. where
the silhouette lies. :func:`antialias` replaces the hard step at silhouette and
occlusion edges by the coverage of each edge between two pixel centres, which
varies smoothly with the edge's projected end points; mask, area and
photometric losses then pull silhouettes.

What is computed, exactly (same conventions as :func:`facegeom.ops.rasterize`:
pixel ``(X, Y)`` has its centre at NDC ``((X + 0.5) / W * 2 - 1,
(Y + 0.5) / H * 2 - 1)``, row 0 at the bottom):

1. Every pair of neighbouring pixels, ``p0`` and ``p1`` one to its right or one
   row above, whose triangle ids (``rast[..., 3]``) differ is examined. The
   *front* triangle is the only one (the other pixel is background) or the one
   with the smaller ``z/w``; equal depths pick ``p1``'s, as nvdiffrast does.
2. The segment from the front triangle's pixel centre to the other centre is
   followed through the front surface: where it leaves a triangle (through
   the first edge it reaches) across an edge that is not a silhouette (see
   3.), it continues in the neighbouring triangle, up to 16 triangles, until
   it leaves through a silhouette edge. Edge functions are homogeneous,
   ``e(q) = (A_i x A_j) . (q_x, q_y, 1)`` over clip-space ``(x, y, w)``, so
   vertices near or behind the camera plane need no division by ``w``. The
   crossing is ``t = e(c_front) / (e(c_front) - e(c_other))`` in ``[0, 1]``
   from the front centre (crossings up to 1/16 of a pixel outside are clamped
   in, for rounding; farther ones, and segments that end inside the surface,
   blend nothing). nvdiffrast looks at the front pixel's own triangle only, so
   it misses silhouettes of meshes whose triangles are smaller than a pixel
   (a BFM face at 224 x 224); the walk finds them.
3. A *silhouette* edge has no neighbouring triangle (mesh boundary or an edge
   of three or more triangles), or the neighbour's far vertex lies on the same
   side of the edge as this triangle's own third vertex, so the neighbour
   faces the other way (tested in homogeneous space, ``det(A_i, A_j, A_k) *
   det(A_i, A_j, A_o) >= 0``). Edges between triangles of one smooth surface
   change nothing. Occlusion boundaries of a closed mesh are silhouettes of
   the front surface, so they blend too.
4. Each edge is handled by one pair direction: horizontal pairs take edges at
   least as steep as 45 degrees (in pixels), vertical pairs the flatter ones
   (nvdiffrast lets both directions take exact 45-degree edges).
5. Box-filter coverage along the pair: the front triangle covers ``[-1/2, t]``
   of the segment. If ``t < 1/2`` its own pixel is only partly covered:
   ``out[front] += (1/2 - t) * (color[other] - color[front])``; otherwise it
   spills into the other pixel: ``out[other] += (t - 1/2) * (color[front] -
   color[other])``. Contributions of all pairs add up; every other pixel is
   ``color`` unchanged.

Gradients: w.r.t. ``color`` (linear), and w.r.t. ``pos`` through ``t``, i.e.
to ``(x, y, w)`` of the two end points of each crossed silhouette edge (never
``z``; not through the discrete choices: ids, depth order, which edge). A
clamped crossing passes no gradient to ``pos``. ``rast`` gets no gradient.
These are exact derivatives of the output above (nvdiffrast approximates
them with a small epsilon).

Continuity: moving a vertex changes the output continuously, including when
pixels change triangle (the blend hands over from one pair to the next at
``t = 1`` / ``t = 0``), except where the crossed edge switches between a steep
and a flat one (a silhouette vertex passing a row or column of pixel
centres) or a neighbour turns edge-on; nvdiffrast has the same jumps.

``topology`` (``[F, 3]`` int32, from :func:`antialias_topology`: the
triangle across each edge) depends only on ``tri``; build it once and pass it
when ``tri`` does not change.
"""
from __future__ import annotations

from typing import Optional

import torch

from facegeom import _checks, _native
from facegeom.ops import reference
from facegeom.ops._autograd import forbid_double_backward, op_policy, refuse_forward_ad
from facegeom.ops.rasterize import _check_rast_ids

Tensor = torch.Tensor

# The compiled ops (a name that cannot be mistaken for the facegeom.ops package).
_C_ops = torch.ops.facegeom


def antialias_topology(tri: Tensor) -> Tensor:
    """The triangle across each edge of ``tri``: what :func:`antialias` needs to
    tell silhouette edges from edges inside a surface. Build it once per mesh.

    Args:
        tri: ``[F, 3]`` int32 (int64 accepted) vertex indices, any device.

    Returns:
        ``[F, 3]`` int32 on ``tri``'s device: entry ``[f, k]`` is the other
        triangle sharing edge ``k`` of triangle ``f`` (the edge joining
        ``tri[f, (k + 1) % 3]`` and ``tri[f, (k + 2) % 3]``), or -1 for a mesh
        boundary, an edge of three or more triangles, or a degenerate triangle
        (repeated vertex). Winding does not matter.

    Example:
        >>> antialias_topology(torch.tensor([[0, 1, 2], [2, 1, 3]], dtype=torch.int32))
        tensor([[ 1, -1, -1],
                [-1, -1,  0]], dtype=torch.int32)
    """
    _check_index_tensor("tri", tri, tri.device if isinstance(tri, torch.Tensor) else None)
    if _topology_kernel(tri.device):
        int32 = torch.iinfo(torch.int32)
        _checks.indices("tri", tri, int32.max + 1, lower=int32.min, what="vertex indices", hint="int32")
    return _antialias_topology(tri)


@op_policy("antialias")
def antialias(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor,
              topology: Optional[Tensor] = None) -> Tensor:
    """Anti-alias silhouette and occlusion edges analytically; differentiable w.r.t.
    ``color`` and ``pos`` (see the module docstring for exactly what is computed).

    Args:
        color: ``[B, H, W, C]`` float32/float64 image to anti-alias (differentiable),
            usually ``interpolate``'s output or a shading of it.
        rast: ``[B, H, W, 4]`` the ``rasterize`` output ``color`` was computed
            from (float32 or float64; only ``z/w`` and the ids are read; no gradient).
        pos: the clip-space vertices given to ``rasterize``: ``[B, V, 4]``
            (instanced mode) or ``[V, 4]`` shared by every image (range mode);
            ``color``'s dtype and device (differentiable through ``x, y, w``).
        tri: ``[F, 3]`` int32 (int64 accepted) vertex indices given to ``rasterize``.
        topology: optional ``[F, 3]`` int32 from :func:`antialias_topology` for
            this ``tri``; built on every call when omitted.

    Returns:
        ``[B, H, W, C]`` in ``color``'s dtype, contiguous. Pixels away from
        discontinuities equal ``color`` exactly.

    Raises ``IndexError`` naming ``rast`` when its id channel holds a value outside
    ``[0, F]`` (negative, NaN, Inf, or an id ``tri`` lacks). Non-finite ``color``
    or silhouette ``pos`` make the pixels blended from them non-finite (docs/ops.md).

    Example:
        >>> pos = torch.tensor([[[-0.9, -0.9, 0., 1.], [0.8, -0.7, 0., 1.], [-0.6, 0.85, 0., 1.]]])
        >>> tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
        >>> rast, _ = facegeom.ops.rasterize(pos, tri, (16, 16))      # doctest: +SKIP
        >>> mask = (rast[..., 3:] > 0).float()                          # doctest: +SKIP
        >>> soft = antialias(mask, rast, pos, tri)  # d soft.sum() / d pos != 0  # doctest: +SKIP
    """
    color, rast, pos, tri, topology = _antialias_args(color, rast, pos, tri, topology)
    return _antialias(color, rast, pos, tri, topology)


# --------------------------------------------------------------------------- #
# Checks (run once, by the public functions above)                            #
# --------------------------------------------------------------------------- #

def _check_index_tensor(name: str, t, device: torch.device, num_triangles: Optional[int] = None) -> None:
    _checks.integer(name, t, device)
    _checks.shape(name, t, [num_triangles, 3], "[F, 3]")
    if t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{name} must be int32 (or int64), got {t.dtype}")


def _antialias_args(color, rast, pos, tri, topology):
    """Checks :func:`antialias`'s arguments (one pass over tri, topology and the
    ids of rast); returns them in the op's layout: tri and topology int32, topology
    built when None."""
    _checks.floating("color", color)
    device = color.device
    _checks.shape("color", color, [None, None, None, None], "[B, H, W, C]")
    batch, height, width = color.shape[:3]
    if not isinstance(rast, torch.Tensor):
        raise TypeError(f"rast must be a torch.Tensor, got {type(rast).__name__}")
    if rast.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"rast must be float32 or float64, got {rast.dtype}")
    if rast.device != device:
        raise ValueError(f"rast must be on the device of color ({device}), got {rast.device}")
    _checks.shape("rast", rast, [batch, height, width, 4], "[B, H, W, 4] (B, H, W of color)")
    _checks.floating("pos", pos, color, "color")
    if pos.dim() == 3:
        if pos.shape[0] == 1 and batch != 1:
            pos = pos[0]  # one mesh for every image: shared, its gradient summed
        else:
            _checks.shape("pos", pos, [batch, None, 4], "[B, V, 4] (B of color) or [V, 4]")
    if pos.dim() != 3:
        _checks.shape("pos", pos, [None, 4], "[B, V, 4] or [V, 4]")
    num_vertices = pos.shape[-2]
    _check_index_tensor("tri", tri, device)
    num_triangles = tri.shape[0]
    if topology is not None:
        _check_index_tensor("topology", topology, device, num_triangles)
    _checks.indices("tri", tri, num_vertices, what="vertex indices", hint=f"pos has V = {num_vertices} vertices")
    if topology is not None:
        _checks.indices("topology", topology, num_triangles, lower=-1, what="values",
                        hint="-1 or a triangle index below F: build it with antialias_topology(tri)")
    _check_rast_ids(rast, num_triangles)
    if num_vertices > torch.iinfo(torch.int32).max:
        raise ValueError(f"pos has {num_vertices} vertices; int32 indices address at most 2**31 - 1")
    tri = tri.to(torch.int32)
    topology = _antialias_topology(tri) if topology is None else topology.to(torch.int32)
    return color, rast, pos, tri, topology


# --------------------------------------------------------------------------- #
# Unchecked implementations: for callers that validated already (the public   #
# functions above, facegeom.render). Inputs in the op's layout.               #
# --------------------------------------------------------------------------- #

def _topology_kernel(device: torch.device) -> bool:
    # CUDA builds the topology with a sort on the device (the reference); the CPU has a kernel.
    return device.type == "cpu" and _native.has_op("antialias_topology")


def _antialias_topology(tri: Tensor) -> Tensor:
    """tri [F, 3] int32/int64 (int32 range): no checks."""
    if _topology_kernel(tri.device):
        return torch.ops.facegeom.antialias_topology(tri.to(torch.int32))
    return reference.antialias_topology(tri)


def _antialias(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, topology: Tensor) -> Tensor:
    """color [B, H, W, C], rast [B, H, W, 4] naming triangles of tri, pos [B, V, 4] or
    [V, 4], tri and topology [F, 3] int32 (indices in range): no checks."""
    rast = rast.to(color.dtype)
    if _native.serves("antialias", color.device):
        refuse_forward_ad("antialias", color, pos)  # facegeom.render calls this directly
        return torch.ops.facegeom.antialias(color, rast, pos, tri, topology)
    return reference.antialias(color, rast, pos, tri, topology)


# --------------------------------------------------------------------------- #
# Op registration: fake kernels and autograd (only when _C has the ops)       #
# --------------------------------------------------------------------------- #

if _native.has_op("antialias"):

    @torch.library.register_fake("facegeom::antialias")
    def _(color, rast, pos, tri, topology):
        return torch.empty_like(color, memory_format=torch.contiguous_format)

    @torch.library.register_fake("facegeom::antialias_backward")
    def _(grad_out, color, rast, pos, tri, topology, output_mask):
        grad_color = torch.empty_like(color, memory_format=torch.contiguous_format)
        grad_pos = torch.empty_like(pos, memory_format=torch.contiguous_format)
        return (grad_color if output_mask[0] else color.new_empty(0),
                grad_pos if output_mask[1] else pos.new_empty(0))

    def _antialias_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _antialias_backward(ctx, grad_out):
        color, rast, pos, tri, topology = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[2]]
        grad_color, grad_pos = _C_ops.antialias_backward(grad_out, color, rast, pos, tri, topology, mask)
        return (grad_color if mask[0] else None, None, grad_pos if mask[1] else None, None, None)

    torch.library.register_autograd(
        "facegeom::antialias", _antialias_backward, setup_context=_antialias_setup
    )

    forbid_double_backward("antialias_backward")

    @torch.library.register_fake("facegeom::antialias_topology")
    def _(tri):
        return tri.new_empty(tri.shape[0], 3)
