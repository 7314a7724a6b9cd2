"""4. Point-to-surface distance by brute force over every point-triangle pair (API.md §4).

Shapes: B batch, P query points, V vertices, F faces.
"""
from __future__ import annotations

from typing import Tuple

import torch

from facegeom.ops.reference._common import Tensor, _cross, _dot

# Point-triangle pairs per chunk of the brute-force search (bounds its memory).
POINT_TO_SURFACE_CHUNK = 1 << 18


def _closest_on_triangles(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """Closest point of every point to every triangle, by candidates: the plane
    projection when it falls inside a non-degenerate triangle, else the best of
    the three edges (a zero-length edge is a point). p [P, 1, 3]; a, b, c [F, 3]
    -> dist2 [P, F], bary [P, F, 3]. Deliberately not the kernels' region method,
    so the two check each other."""
    n = _cross(b - a, c - a)  # [F, 3]
    nn = _dot(n, n)  # [F], twice the area squared
    # Signed sub-areas of the projection of p (n . ((b-p) x (c-p)) is unchanged by
    # moving p along n, so p itself can be used).
    wa = _dot(n, _cross(b - p, c - p))  # [P, F]
    wb = _dot(n, _cross(c - p, a - p))
    wc = _dot(n, _cross(a - p, b - p))
    inside = (nn > 0) & (wa >= 0) & (wb >= 0) & (wc >= 0)
    safe_nn = torch.where(nn > 0, nn, torch.ones_like(nn))  # no inf*0 in the gradient
    bary_in = torch.stack([wa, wb, wc], -1) / safe_nn[:, None]  # [P, F, 3]
    q_in = bary_in[..., :1] * a + bary_in[..., 1:2] * b + bary_in[..., 2:] * c
    inf = torch.full_like(wa, float("inf"))
    dist_in = torch.where(inside, _dot(p - q_in, p - q_in), inf)

    dists, barys = [dist_in], [bary_in]
    for x, y, slots in ((a, b, (0, 1)), (b, c, (1, 2)), (c, a, (2, 0))):
        edge = y - x  # [F, 3]
        length2 = _dot(edge, edge)
        safe_length2 = torch.where(length2 > 0, length2, torch.ones_like(length2))
        t = torch.where(length2 > 0, _dot(p - x, edge) / safe_length2, torch.zeros_like(wa))
        t = t.clamp(0, 1)  # [P, F]
        q = x + t[..., None] * edge
        dists.append(_dot(p - q, p - q))
        bary = torch.zeros_like(bary_in)
        bary[..., slots[0]] = 1 - t
        bary[..., slots[1]] = t
        barys.append(bary)
    dist = torch.stack(dists, -1)  # [P, F, 4]
    best = dist.argmin(-1, keepdim=True)  # [P, F, 1]
    bary = torch.gather(torch.stack(barys, -2), -2, best[..., None].expand(-1, -1, 1, 3))
    return dist.gather(-1, best)[..., 0], bary[..., 0, :]


def point_to_surface(points: Tensor, vertices: Tensor, faces: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Brute force over all points x all triangles (chunked): the specification
    of :func:`facegeom.ops.point_to_surface`.

    points [B, P, 3]; vertices [B, V, 3] or [1, V, 3] (shared); faces [F, 3] int64
    -> dist2 [B, P], face_index [B, P] int64, bary [B, P, 3], with
    closest = sum_i bary[..., i] * vertices[faces[face_index, i]]. Ties go to the
    lowest face index. dist2 is recomputed from the closest point, so autograd
    gives the envelope-theorem gradients.
    """
    batch, num_points = points.shape[:2]
    num_faces = faces.shape[0]
    dist2 = points.new_empty(batch, num_points)
    face_index = torch.empty(batch, num_points, dtype=torch.int64, device=points.device)
    bary = points.new_empty(batch, num_points, 3)
    if batch * num_points == 0:
        return dist2, face_index, bary
    if num_faces == 0:
        raise ValueError("faces is empty (F = 0): there is no surface to measure the points against")
    chunk = max(1, POINT_TO_SURFACE_CHUNK // num_faces)
    dists, indices, barys = [], [], []
    for b in range(batch):
        tri = vertices[b if vertices.shape[0] > 1 else 0][faces]  # [F, 3 corners, 3]
        a, bb, c = tri[:, 0], tri[:, 1], tri[:, 2]
        row_d, row_i, row_b = [], [], []
        for start in range(0, num_points, chunk):
            p = points[b, start:start + chunk, None, :]  # [Pc, 1, 3]
            d, w = _closest_on_triangles(p, a, bb, c)  # [Pc, F], [Pc, F, 3]
            best = d.argmin(-1)  # [Pc], first minimum: lowest face index
            w = w[torch.arange(len(best), device=best.device), best]  # [Pc, 3]
            closest = _dot(w[:, None, :], tri[best].transpose(1, 2))  # [Pc, 3]
            row_d.append(_dot(p[:, 0] - closest, p[:, 0] - closest))
            row_i.append(best)
            row_b.append(w)
        dists.append(torch.cat(row_d))
        indices.append(torch.cat(row_i))
        barys.append(torch.cat(row_b))
    return _non_finite_policy(points, vertices, faces, torch.stack(dists), torch.stack(indices),
                              torch.stack(barys))


def _non_finite_policy(points: Tensor, vertices: Tensor, faces: Tensor, dist2: Tensor, face_index: Tensor,
                       bary: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """docs/ops.md "Non-finite values": a face with a NaN/Inf corner leaves the mesh's
    surface undefined, so every distance to that mesh is NaN, as is the distance of a
    NaN/Inf point; a NaN distance (also from an overflow of finite input) has
    face_index -1 and NaN bary."""
    corners = vertices[:, faces.reshape(-1)]  # [B or 1, 3F, 3]
    bad_mesh = ~torch.isfinite(corners).flatten(1).all(1)  # [B or 1]
    bad = bad_mesh[:, None] | torch.isnan(dist2) | ~torch.isfinite(points).all(-1)  # [B, P]
    nan = torch.full_like(dist2, float("nan"))
    return (torch.where(bad, nan, dist2), torch.where(bad, -1, face_index),
            torch.where(bad[..., None], nan[..., None], bary))
