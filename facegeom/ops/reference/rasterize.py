"""2. Rasterization and interpolation with nvdiffrast's conventions (API.md §2).

Shapes: B images, H x W pixels, V vertices, F triangles, C attribute channels.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from facegeom.ops.reference._common import Tensor

# A pixel centre q = (qx, qy, 1) in NDC lies in triangle (p0, p1, p2), p = (x, y, w)
# in clip space, when its homogeneous edge functions e_i = det(p_j, p_k, q)
# ((i, j, k) cyclic) all share the sign of det(p0, p1, p2). Then the
# perspective-correct barycentrics are e_i / sum(e) and the point is in front of
# the camera (w > 0): triangles crossing w = 0 need no clipping. When all three
# w > 0 the same test runs on the projected vertices (2D edge functions, exactly
# zero at a vertex, so ties at shared vertices resolve exactly). The kernels
# (csrc/include/facegeom/rasterize.h) do the same float64 arithmetic in the same
# order, so triangle ids agree exactly.


def _lexicographic_less(a: Tensor, b: Tensor) -> Tensor:
    """a < b comparing (x, y, w) in order; a, b [..., 3]."""
    return (a[..., 0] < b[..., 0]) | (
        (a[..., 0] == b[..., 0])
        & ((a[..., 1] < b[..., 1]) | ((a[..., 1] == b[..., 1]) & (a[..., 2] < b[..., 2])))
    )


def _edge_functions(corners: Tensor, qx: Tensor, qy: Tensor):
    """Oriented edge values e [F, 3, H, W] (>= 0 inside), whether each edge owns
    pixel centres exactly on it [F, 3, 1, 1], and z/w [F, H, W] for triangles
    corners [F, 3, 4] at pixel centres qx [1, 1, W], qy [1, H, 1].

    Each edge is evaluated from its lexicographically smaller end point and negated
    if needed, so two triangles sharing an edge get exactly opposite values."""
    x, y, z, w = corners.unbind(-1)  # [F, 3]
    screen = (w > 0).all(1)  # [F]: all vertices in front: use the projected form
    px = torch.where(screen[:, None], x / w, x)
    py = torch.where(screen[:, None], y / w, y)
    p = torch.stack([px, py, w], -1)  # [F, 3, 3]
    flips, screen_e, coef_a, coef_b, coef_c = [], [], [], [], []
    for i in range(3):
        pj, pk = p[:, (i + 1) % 3], p[:, (i + 2) % 3]
        swap = _lexicographic_less(pk, pj)
        f = torch.where(swap[:, None], pk, pj)
        s = torch.where(swap[:, None], pj, pk)
        flip = 1.0 - 2.0 * swap.double()
        # Screen form E = dx (qy - fy) - dy (qx - fx); homogeneous form (a, b, c) = f x s.
        dx, dy = s[:, 0] - f[:, 0], s[:, 1] - f[:, 1]
        fx, fy = f[:, 0, None, None], f[:, 1, None, None]
        screen_e.append(dx[:, None, None] * (qy - fy) - dy[:, None, None] * (qx - fx))
        n = [flip * (f[:, 1] * s[:, 2] - f[:, 2] * s[:, 1]),
             flip * (f[:, 2] * s[:, 0] - f[:, 0] * s[:, 2]),
             flip * (f[:, 0] * s[:, 1] - f[:, 1] * s[:, 0])]
        flips.append(flip)
        coef_a.append(torch.where(screen, -flip * dy, n[0]))
        coef_b.append(torch.where(screen, flip * dx, n[1]))
        coef_c.append(n[2])
    det_screen = (p[:, 2, 0] - p[:, 1, 0]) * (p[:, 0, 1] - p[:, 1, 1]) - (p[:, 2, 1] - p[:, 1, 1]) * (
        p[:, 0, 0] - p[:, 1, 0])
    det_homogeneous = (p[:, 0, 0] * coef_a[0] + p[:, 0, 1] * coef_b[0]) + p[:, 0, 2] * coef_c[0]
    det = torch.where(screen, det_screen, det_homogeneous)
    orientation = torch.sign(det)  # both windings are drawn; 0 (or NaN): never drawn
    e, owns = [], []
    for i in range(3):
        a = (orientation * coef_a[i])[:, None, None]
        b = (orientation * coef_b[i])[:, None, None]
        c = (orientation * coef_c[i])[:, None, None]
        homogeneous_e = (a * qx + b * qy) + c
        e.append(torch.where(screen[:, None, None], (orientation * flips[i])[:, None, None] * screen_e[i],
                             homogeneous_e))
        # Tie rule: a centre on the edge goes to the side that q + (eps, eps^2) lies on.
        owns.append((a > 0) | ((a == 0) & (b > 0)))
    e0, e1, e2 = e
    total = (e0 + e1) + e2
    zn = z / w
    depth_screen = ((e0 * zn[:, 0, None, None] + e1 * zn[:, 1, None, None]) + e2 * zn[:, 2, None, None]) / total
    depth_homogeneous = ((e0 * z[:, 0, None, None] + e1 * z[:, 1, None, None]) + e2 * z[:, 2, None, None]) / (
        (e0 * w[:, 0, None, None] + e1 * w[:, 1, None, None]) + e2 * w[:, 2, None, None])
    depth = torch.where(screen[:, None, None], depth_screen, depth_homogeneous)
    # Never drawn: zero area, or any non-finite clip coordinate (even one that projects
    # to a finite point, such as w = inf): docs/ops.md "Non-finite values".
    valid = (det != 0) & ~torch.isnan(det) & torch.isfinite(corners).flatten(1).all(1)
    return torch.stack(e, 1), torch.stack(owns, 1), depth, total, valid


def _pixel_centres(resolution, device) -> Tuple[Tensor, Tensor]:
    height, width = resolution
    qx = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) / width * 2 - 1
    qy = (torch.arange(height, dtype=torch.float64, device=device) + 0.5) / height * 2 - 1
    return qx, qy


def _rasterize_image(pos: Tensor, tri: Tensor, first_id: int, resolution, behind: Optional[Tensor] = None) -> Tensor:
    """Triangle id (-1 = background) of each pixel [H, W] for vertices pos [V, 4]
    (float64) and triangles tri [F, 3] whose ids start at first_id.

    Depth peeling: with ``behind`` [H, W] (the ids of a previous layer, -1 =
    none), only fragments whose float32 depth is greater than that triangle's at
    the pixel are drawn (nvdiffrast's peel test, FineRaster.inl:349: ``depth <=
    peel`` is killed), and pixels without a previous surface stay empty."""
    height, width = resolution
    qx, qy = _pixel_centres(resolution, pos.device)
    qx, qy = qx[None, None, :], qy[None, :, None]
    best_depth = torch.full((height, width), float("inf"), dtype=torch.float32, device=pos.device)
    best_id = torch.full((height, width), -1, dtype=torch.int64, device=pos.device)
    chunk = max(1, (1 << 22) // max(1, height * width))
    peel = None
    if behind is not None:
        # The previous surface's depth at each pixel, by the same arithmetic as the depth test.
        peel = torch.full((height, width), float("inf"), dtype=torch.float32, device=pos.device)
        for start in range(0, tri.shape[0], chunk):
            part = tri[start:start + chunk].long()
            local = behind - (start + first_id)
            mine = (local >= 0) & (local < part.shape[0])
            if bool(mine.any()):
                depth = _edge_functions(pos[part], qx, qy)[2].float()  # [F, H, W]
                picked = depth.gather(0, local.clamp(0, part.shape[0] - 1)[None])[0]
                peel = torch.where(mine, picked, peel)
    for start in range(0, tri.shape[0], chunk):
        corners = pos[tri[start:start + chunk].long()]  # [F, 3, 4]
        e, owns, depth, total, valid = _edge_functions(corners, qx, qy)
        inside = ((e > 0) | ((e == 0) & owns)).all(1)  # [F, H, W]
        inside &= (total > 0) & valid[:, None, None]  # in front of the camera
        inside &= (depth >= -1) & (depth <= 1)  # OpenGL near and far planes
        if peel is not None:
            inside &= depth.float() > peel
        # The depth test compares z/w rounded to float32; equal depths go to the lower id.
        depth32 = torch.where(inside, depth.float(), torch.full_like(depth, float("inf")).float())
        chunk_depth, chunk_arg = depth32.min(0)  # first (lowest) id among equal minima
        chunk_id = torch.where(inside.any(0), chunk_arg + start + first_id, -1)
        better = (chunk_id >= 0) & (chunk_depth < best_depth)
        best_depth = torch.where(better, chunk_depth, best_depth)
        best_id = torch.where(better, chunk_id, best_id)
    return best_id


def _barycentrics(p: Tensor, z: Tensor, qx: Tensor, qy: Tensor):
    """Differentiable (u, v, z/w, du/dqx, du/dqy, dv/dqx, dv/dqy) of pixel centres
    (qx, qy) [N] in triangles p [N, 3, 3] ((x, y, w)) with clip z [N, 3]."""
    q = torch.stack([qx, qy, torch.ones_like(qx)], dim=-1)  # [N, 3]
    n = torch.stack([torch.linalg.cross(p[:, (i + 1) % 3], p[:, (i + 2) % 3]) for i in range(3)], 1)
    e = (n * q[:, None]).sum(-1)  # [N, 3]
    s = e.sum(-1)
    u, v = e[:, 0] / s, e[:, 1] / s
    depth = (e * z).sum(-1) / (e * p[..., 2]).sum(-1)
    sa, sb = n[..., 0].sum(-1), n[..., 1].sum(-1)
    du = ((n[:, 0, 0] - u * sa) / s, (n[:, 0, 1] - u * sb) / s)
    dv = ((n[:, 1, 0] - v * sa) / s, (n[:, 1, 1] - v * sb) / s)
    return u, v, depth, du, dv


def rasterize(pos: Tensor, tri: Tensor, resolution, ranges: Optional[Tensor] = None,
              grad_db: bool = False, peel: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
    """Brute force (every pixel against every triangle, float64) z-buffer rasterizer.

    pos [B, V, 4] clip space (or [V, 4], with ranges [N, 2] = (first triangle,
    count) per image), tri [F, 3] -> rast [B, H, W, 4] = (u, v, z/w, id + 1) in
    pos's dtype (zeros where nothing is drawn), rast_db [B, H, W, 4] =
    (du/dX, du/dY, dv/dX, dv/dY) per pixel when grad_db else None. Differentiable
    w.r.t. pos (by autograd) through u, v, z/w and rast_db.

    ``peel`` (a previous layer's rast [B, H, W, 4]) makes this a depth-peeling
    pass: the nearest surface strictly behind the previous layer's at each pixel
    (see :func:`_rasterize_image`).
    """
    height, width = int(resolution[0]), int(resolution[1])
    tri = tri.long()
    if ranges is None:
        batch_pos = pos if pos.dim() == 3 else pos[None]
        jobs = [(batch_pos[b], 0, tri.shape[0]) for b in range(batch_pos.shape[0])]
    else:
        jobs = [(pos, int(first), int(count)) for first, count in ranges.tolist()]
    out = pos.new_zeros(len(jobs), height, width, 4)
    out_db = pos.new_zeros(len(jobs), height, width, 4) if grad_db else None
    qx_all, qy_all = _pixel_centres((height, width), pos.device)
    for b, (image_pos, first, count) in enumerate(jobs):
        pos64 = image_pos.double()
        behind = None if peel is None else peel[b, ..., 3].detach().long() - 1
        with torch.no_grad():
            ids = _rasterize_image(pos64, tri[first:first + count], first, (height, width), behind)
        ys, xs = torch.nonzero(ids >= 0, as_tuple=True)
        if ys.numel() == 0:
            continue
        face = ids[ys, xs]
        corners = pos64[tri[face]]  # [N, 3, 4]
        u, v, depth, du, dv = _barycentrics(corners[..., [0, 1, 3]], corners[..., 2], qx_all[xs], qy_all[ys])
        values = torch.stack([u, v, depth, (face + 1).double()], -1).to(pos.dtype)
        out = out.index_put((torch.full_like(ys, b), ys, xs), values)
        if grad_db:
            # d/dX in pixels = d/dqx * dqx/dX, dqx/dX = 2 / W (2 / H for Y).
            db = torch.stack([du[0] * (2 / width), du[1] * (2 / height), dv[0] * (2 / width),
                              dv[1] * (2 / height)], -1).to(pos.dtype)
            out_db = out_db.index_put((torch.full_like(ys, b), ys, xs), db)
    return out, out_db


def interpolate(attr: Tensor, rast: Tensor, tri: Tensor, rast_db: Optional[Tensor] = None,
                diff_attrs=None) -> Tuple[Tensor, Optional[Tensor]]:
    """Barycentric interpolation of vertex attributes over a rasterized image.

    attr [V, C] or [B, V, C], rast [B, H, W, 4], tri [F, 3] -> out [B, H, W, C]
    = u * attr[t0] + v * attr[t1] + (1 - u - v) * attr[t2] (zeros on background),
    and out_da [B, H, W, 2 * len(diff_attrs)] = (dA/dX, dA/dY) per selected
    attribute (diff_attrs = "all" or a list of channel indices) from rast_db, or
    None. Differentiable w.r.t. attr, rast (u, v) and rast_db.
    """
    batch = rast.shape[0]
    ids = rast[..., 3].detach().long() - 1  # [B, H, W]
    covered = (ids >= 0)[..., None]
    if tri.shape[0] == 0:  # nothing can be covered: an all-zero image (tri[0] does not exist)
        tri = tri.new_zeros(1, 3)
        attr = torch.cat([attr, attr.new_zeros(*attr.shape[:-2], 1, attr.shape[-1])], -2)
    corner = tri.long()[ids.clamp(min=0)]  # [B, H, W, 3]
    attr_b = (attr[None] if attr.dim() == 2 else attr).expand(batch, -1, -1)
    batch_index = torch.arange(batch, device=attr.device)[:, None, None]
    a0, a1, a2 = (attr_b[batch_index, corner[..., k]] for k in range(3))  # [B, H, W, C]
    u, v = rast[..., 0:1], rast[..., 1:2]
    out = torch.where(covered, u * a0 + v * a1 + (1 - u - v) * a2, torch.zeros_like(a0))
    if diff_attrs is None:
        return out, None
    channels = list(range(attr.shape[-1])) if diff_attrs == "all" else list(diff_attrs)
    d0, d1 = (a0 - a2)[..., channels], (a1 - a2)[..., channels]
    du_dx, du_dy, dv_dx, dv_dy = (rast_db[..., k:k + 1] for k in range(4))
    da_dx = du_dx * d0 + dv_dx * d1
    da_dy = du_dy * d0 + dv_dy * d1
    out_da = torch.stack([da_dx, da_dy], -1).flatten(-2)  # (dA/dX, dA/dY) per attribute
    return out, torch.where(covered, out_da, torch.zeros_like(out_da))
