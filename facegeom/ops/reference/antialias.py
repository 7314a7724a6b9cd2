"""2b. Analytic silhouette antialiasing, the nvdiffrast ``antialias`` idea (API.md §2).

Shapes: B images, H x W pixels, C channels, V vertices, F triangles.
"""
from __future__ import annotations

from typing import Optional

import torch

from facegeom.ops.reference._common import Tensor, _cross, _dot

# For every pair of neighbouring pixels (right or up) whose triangle ids differ:
# take the front triangle (the only one, or the smaller z/w; a tie picks the
# second pixel's), find the edge through which the segment from its pixel
# centre to the other centre leaves it, and if that edge is a silhouette, blend
# the two colours by the box-filter coverage of the crossing. Edge functions are
# homogeneous: L = A_i x A_j over clip-space (x, y, w), e(q) = L . (qx, qy, 1),
# so no division by w. The kernels evaluate the same formulas in the same order.

AA_CROSSING_SLACK = 1.0 / 16.0  # crossings this far (pixels) outside the segment are clamped in
AA_MAX_WALK = 16  # triangles a pair's segment may cross before its silhouette edge


def antialias_topology(tri: Tensor) -> Tensor:
    """For each triangle edge, the other triangle sharing it.

    tri [F, 3] -> topology [F, 3] int32: topology[f, k] is the one other
    triangle that shares edge k of triangle f (edge k joins tri[f, (k+1)%3] and
    tri[f, (k+2)%3]), or -1 when the edge is a mesh boundary, is shared by
    three or more triangles (non-manifold), or f is degenerate (repeated vertex
    index). Winding does not matter. Static shapes (one sort), so it traces
    under torch.compile and runs on any device.
    """
    num_edges = 3 * tri.shape[0]
    if num_edges == 0:
        return torch.empty(0, 3, dtype=torch.int32, device=tri.device)
    t = tri.long()
    first, second = t[:, [1, 2, 0]], t[:, [2, 0, 1]]  # [F, 3] endpoints of edge k
    key = (torch.minimum(first, second) << 32) | torch.maximum(first, second)
    degenerate = (t[:, 0] == t[:, 1]) | (t[:, 1] == t[:, 2]) | (t[:, 2] == t[:, 0])
    # A degenerate triangle's edges get unique negative keys: they pair with nothing.
    unique = -1 - torch.arange(num_edges, device=tri.device).view(-1, 3)
    key = torch.where(degenerate[:, None], unique, key).reshape(-1)
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    same = sorted_key[1:] == sorted_key[:-1]  # [3F - 1]: i and i + 1 share an edge
    no = same.new_zeros(1)
    # A manifold pair starts at i when i, i+1 match and neither neighbour does.
    starts = same & ~torch.cat([no, same[:-1]]) & ~torch.cat([same[1:], no])  # [3F - 1]
    starts_here = torch.cat([starts, no])  # [3F]: pair (i, i + 1)
    ends_here = torch.cat([no, starts])  # [3F]: pair (i - 1, i)
    position = torch.arange(num_edges, device=tri.device)
    mate_sorted = torch.where(starts_here, position + 1, torch.where(ends_here, position - 1, -1))
    mate_face = torch.where(mate_sorted >= 0, order[mate_sorted.clamp(min=0)] // 3, -1)
    topology = torch.empty_like(mate_face).scatter_(0, order, mate_face)
    return topology.view(-1, 3).to(torch.int32)


def _pick(stacked: Tensor, index: Tensor) -> Tensor:
    """stacked [..., 3, D], index [...] -> stacked[..., index, :]."""
    return stacked.gather(-2, index[..., None, None].expand(*index.shape, 1, stacked.shape[-1]))[..., 0, :]


def _antialias_pairs(color0, color1, rast0, rast1, c0, c1, batch_index, horizontal, xyw, tri,
                     topology, height, width):
    """Blends of N candidate pairs (pixel 0, pixel 1) of one direction.

    color0/1 [N, C], rast0/1 [N, 4], c0/c1 [N, 2] NDC centres, batch_index [N];
    xyw [B, V, 3] clip-space (x, y, w). Returns the additions to pixel 0 and to
    pixel 1 ([N, C] each).
    """
    num_triangles, num_vertices = tri.shape[0], xyw.shape[1]
    tri, topology = tri.long(), topology.long()
    id0, id1 = rast0[..., 3], rast1[..., 3]
    valid0 = (id0 >= 1) & (id0 <= num_triangles)
    valid1 = (id1 >= 1) & (id1 <= num_triangles)
    front_first = ~valid1 | (valid0 & (rast0[..., 2] < rast1[..., 2]))
    pending = (id0 != id1) & (valid0 | valid1)
    face = torch.where(front_first, id0, id1).detach().long() - 1
    face = torch.where(pending, face, torch.zeros_like(face))  # [N]
    one = torch.ones_like(c0[..., :1])
    h0, h1 = torch.cat([c0, one], -1), torch.cat([c1, one], -1)  # [N, 3]
    hf = torch.where(front_first[..., None], h0, h1)  # front pixel's centre
    hs = torch.where(front_first[..., None], h1, h0)

    # Walk from the front triangle along the segment, across edges of the same
    # surface, to the first silhouette edge. `live` lists the pairs still walking.
    found = torch.zeros_like(pending)
    t_found = torch.zeros_like(id0)
    line_found = torch.zeros_like(hf)
    live = torch.nonzero(pending, as_tuple=True)[0]
    for _ in range(AA_MAX_WALK):
        f, bi = face[live], batch_index[live]
        corners = tri[f]  # [n, 3]
        ok = ((corners >= 0) & (corners < num_vertices)).all(-1)
        corners = corners.clamp(0, num_vertices - 1)
        a = torch.stack([xyw[bi, corners[..., k]] for k in range(3)], -2)  # [n, 3 corners, 3]
        orientation = _dot(a[..., 0, :], _cross(a[..., 1, :], a[..., 2, :]))  # det(A0, A1, A2)
        ok = ok & (orientation != 0)
        sign = torch.where(orientation > 0, 1.0, -1.0).to(xyw.dtype)[..., None]
        lines = torch.stack([_cross(a[..., (k + 1) % 3, :], a[..., (k + 2) % 3, :]) for k in range(3)], -2)
        ef = _dot(lines, hf[live][..., None, :])  # [n, 3]
        es = _dot(lines, hs[live][..., None, :])
        decreasing = sign * es < sign * ef
        crossing = ef / torch.where(decreasing, ef - es, torch.ones_like(ef))
        inf = torch.full_like(crossing, float("inf"))
        edge = torch.where(decreasing, crossing, inf).detach().argmin(-1)  # [n]
        t = crossing.gather(-1, edge[..., None])[..., 0]
        ok = ok & decreasing.any(-1) & (t <= 1 + AA_CROSSING_SLACK)
        # Silhouette: no manifold neighbour, or its far vertex on this triangle's side.
        i, j = (edge + 1) % 3, (edge + 2) % 3
        vi, vj = corners.gather(-1, i[..., None])[..., 0], corners.gather(-1, j[..., None])[..., 0]
        neighbour = topology[f].gather(-1, edge[..., None])[..., 0]
        has_neighbour = (neighbour >= 0) & (neighbour < num_triangles)
        far = tri[neighbour.clamp(0, num_triangles - 1)]  # [n, 3]
        opposite = torch.full_like(vi, -1)
        for m in range(3):
            w = far[..., m]
            usable = has_neighbour & (w != vi) & (w != vj) & (w >= 0) & (w < num_vertices)
            opposite = torch.where(usable, w, opposite)
        ao = xyw[bi, opposite.clamp(0, num_vertices - 1)]
        folds_back = orientation * _dot(_pick(a, i), _cross(_pick(a, j), ao)) >= 0
        silhouette = (opposite < 0) | folds_back
        stop, walk_on = ok & silhouette, ok & ~silhouette
        found = found.index_put((live[stop],), torch.ones_like(live[stop], dtype=torch.bool))
        t_found = t_found.index_put((live[stop],), t[stop])
        line_found = line_found.index_put((live[stop],), _pick(lines, edge)[stop])
        face = face.index_put((live[walk_on],), neighbour[walk_on])
        live = live[walk_on]

    # Horizontal pairs take edges at least as steep as 45 degrees in pixels, vertical the rest.
    across_x, across_y = line_found[..., 0].abs() * height, line_found[..., 1].abs() * width
    active = found & (t_found >= -AA_CROSSING_SLACK)
    active = active & (across_x >= across_y if horizontal else across_y > across_x)

    # Box-filter coverage of the crossing.
    t = t_found.clamp(0, 1)
    front_modified = t < 0.5
    weight = torch.where(front_modified, 0.5 - t, t - 0.5)
    weight = torch.where(active, weight, torch.zeros_like(weight))[..., None]
    modified_first = (front_modified == front_first)[..., None]
    # Inactive pairs add nothing, not 0 * colour (a NaN colour must not leak: docs/ops.md).
    active = active[..., None]
    delta0 = torch.where(modified_first & active, weight * (color1 - color0), torch.zeros_like(color0))
    delta1 = torch.where(~modified_first & active, weight * (color0 - color1), torch.zeros_like(color1))
    return delta0, delta1


def antialias(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor,
              topology: Optional[Tensor] = None) -> Tensor:
    """Analytic silhouette anti-aliasing (as facegeom.ops.antialias).

    color [B, H, W, C], rast [B, H, W, 4], pos [B, V, 4] or [V, 4] clip space,
    tri [F, 3], topology [F, 3] from antialias_topology(tri) (built when None)
    -> [B, H, W, C]. Differentiable (by autograd) w.r.t. color and pos.
    """
    if topology is None:
        topology = antialias_topology(tri)
    batch, height, width, _ = color.shape
    if tri.shape[0] == 0 or pos.shape[-2] == 0:
        return color.clone()
    rast = rast.to(color.dtype)
    xyw = (pos if pos.dim() == 3 else pos[None]).expand(batch, -1, -1)[..., [0, 1, 3]]  # [B, V, 3]
    xs = (2 * torch.arange(width, device=color.device, dtype=color.dtype) + 1) / width - 1
    ys = (2 * torch.arange(height, device=color.device, dtype=color.dtype) + 1) / height - 1
    centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # [H, W, 2] (x, y)
    out = color.clone()
    # Pairs (x, y)-(x + 1, y), then (x, y)-(x, y + 1) (the row above). Only pairs
    # whose ids differ can blend: they are gathered into flat lists first.
    for horizontal in (True, False):
        step = (0, 1) if horizontal else (1, 0)
        first = (slice(None), slice(0, height - step[0]), slice(0, width - step[1]))
        second = (slice(None), slice(step[0], height), slice(step[1], width))
        r0, r1 = rast[first], rast[second]
        b, y, x = torch.nonzero(r0[..., 3] != r1[..., 3], as_tuple=True)
        y1, x1 = y + step[0], x + step[1]
        d0, d1 = _antialias_pairs(color[b, y, x], color[b, y1, x1], rast[b, y, x], rast[b, y1, x1],
                                  centres[y, x], centres[y1, x1], b, horizontal, xyw, tri, topology,
                                  height, width)
        out = out.index_put((b, y, x), d0, accumulate=True)
        out = out.index_put((b, y1, x1), d1, accumulate=True)
    return out
