"""Pure-PyTorch references of the facegeom ops: the executable specification.

Every function has the same signature and results as its kernel in
``facegeom.ops``; the tests compare the two, and the ops fall back to these
when the compiled extension is unavailable. Written for clarity, not speed:
the blendshape/skinning family follows smplx's ``lbs.py`` step by step
(including its Python loop over the kinematic chain and its per-vertex 4x4
matrices), which makes it the baseline the benchmarks measure against.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# smplx's batch_rodrigues adds this to every component before the norm, so the
# zero rotation has a finite gradient.
RODRIGUES_EPSILON = 1e-8


# --------------------------------------------------------------------------- #
# 1. Blendshapes and skinning                                                 #
# --------------------------------------------------------------------------- #


def blendshapes(coeffs: Tensor, basis: Tensor, base: Optional[Tensor] = None) -> Tensor:
    """out[b] = base + sum_k coeffs[b, k] * basis[k].

    coeffs [B, K], basis [K, V, 3], base [V, 3] or [B, V, 3] or None -> [B, V, 3].
    """
    out = torch.einsum("bk,kvc->bvc", coeffs, basis)  # [B, V, 3]
    return out if base is None else out + base


def rodrigues(axis_angle: Tensor) -> Tensor:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3] (smplx batch_rodrigues)."""
    rot_vecs = axis_angle.reshape(-1, 3)  # [N, 3]
    angle = torch.norm(rot_vecs + RODRIGUES_EPSILON, dim=1, keepdim=True)  # [N, 1]
    rot_dir = rot_vecs / angle  # [N, 3]
    cos = torch.cos(angle).unsqueeze(1)  # [N, 1, 1]
    sin = torch.sin(angle).unsqueeze(1)
    rx, ry, rz = torch.split(rot_dir, 1, dim=1)  # [N, 1] each
    zeros = torch.zeros_like(rx)
    K = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    ident = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).unsqueeze(0)
    rot_mat = ident + sin * K + (1 - cos) * torch.bmm(K, K)  # [N, 3, 3]
    return rot_mat.reshape(*axis_angle.shape[:-1], 3, 3)


def rigid_transform(rot_mats: Tensor, joints: Tensor, parents: Tensor) -> Tuple[Tensor, Tensor]:
    """Kinematic chain (smplx batch_rigid_transform).

    rot_mats [B, J, 3, 3] local rotations, joints [B, J, 3] rest-pose joints,
    parents [J] (parents[0] = -1, parents[j] < j) ->
    posed_joints [B, J, 3], rel_transforms [B, J, 4, 4] (global transform with the
    rest-pose joint location removed: the matrices that skinning blends).
    """
    joints = joints.unsqueeze(-1)  # [B, J, 3, 1]
    rel_joints = joints.clone()
    rel_joints[:, 1:] -= joints[:, parents[1:]]
    transforms_mat = torch.cat(
        [F.pad(rot_mats, [0, 0, 0, 1]), F.pad(rel_joints, [0, 0, 0, 1], value=1)], dim=-1
    )  # [B, J, 4, 4]
    chain = [transforms_mat[:, 0]]
    for i in range(1, parents.shape[0]):
        chain.append(torch.matmul(chain[int(parents[i])], transforms_mat[:, i]))
    transforms = torch.stack(chain, dim=1)  # [B, J, 4, 4]
    posed_joints = transforms[:, :, :3, 3]
    joints_homogen = F.pad(joints, [0, 0, 0, 1])  # [B, J, 4, 1]
    rel_transforms = transforms - F.pad(torch.matmul(transforms, joints_homogen), [3, 0])
    return posed_joints, rel_transforms


def skin(vertices: Tensor, transforms: Tensor, weights: Tensor) -> Tensor:
    """Linear blend skinning: out[b, v] = sum_j weights[v, j] * transforms[b, j] @ [x; 1].

    vertices [B, V, 3], transforms [B, J, 4, 4], weights [V, J] or [B, V, J] -> [B, V, 3].
    Unbatched inputs (no B) broadcast like torch.matmul.
    """
    num_joints = transforms.shape[-3]
    T = torch.matmul(weights, transforms.reshape(*transforms.shape[:-3], num_joints, 16))
    T = T.reshape(*T.shape[:-1], 4, 4)  # [B, V, 4, 4]
    homogen = F.pad(vertices, [0, 1], value=1.0).unsqueeze(-1)  # [B, V, 4, 1]
    return torch.matmul(T, homogen)[..., :3, 0]


def lbs(
    betas: Tensor,
    pose: Tensor,
    v_template: Tensor,
    shapedirs: Tensor,
    posedirs: Tensor,
    J_regressor: Tensor,
    parents: Tensor,
    lbs_weights: Tensor,
    pose2rot: bool = True,
) -> Tuple[Tensor, Tensor]:
    """smplx.lbs.lbs: shape + pose blendshapes, joint regression, kinematic chain, skinning.

    betas [B, K]; pose [B, J*3] axis-angle (pose2rot) or [B, J, 3, 3] rotations;
    v_template [V, 3] or [B, V, 3]; shapedirs [V, 3, K]; posedirs [(J-1)*9, V*3];
    J_regressor [J, V]; parents [J]; lbs_weights [V, J] ->
    vertices [B, V, 3], posed joints [B, J, 3].
    """
    batch_size = max(betas.shape[0], pose.shape[0])
    dtype, device = betas.dtype, betas.device
    # 1. Shape (identity + expression) blendshapes
    v_shaped = v_template + torch.einsum("bl,mkl->bmk", betas, shapedirs)  # [B, V, 3]
    # 2. Rest-pose joints
    J = torch.einsum("bik,ji->bjk", v_shaped, J_regressor)  # [B, J, 3]
    # 3. Pose-corrective blendshapes
    ident = torch.eye(3, dtype=dtype, device=device)
    if pose2rot:
        rot_mats = rodrigues(pose.reshape(-1, 3)).view(batch_size, -1, 3, 3)  # [B, J, 3, 3]
    else:
        rot_mats = pose.reshape(batch_size, -1, 3, 3)
    pose_feature = (rot_mats[:, 1:] - ident).reshape(batch_size, -1)  # [B, (J-1)*9]
    v_posed = v_shaped + torch.matmul(pose_feature, posedirs).view(batch_size, -1, 3)
    # 4. Kinematic chain
    J_transformed, A = rigid_transform(rot_mats, J.expand(batch_size, -1, -1), parents)
    # 5. Skinning
    verts = skin(v_posed, A, lbs_weights)
    return verts, J_transformed


# --------------------------------------------------------------------------- #
# 3. Shading                                                                  #
# --------------------------------------------------------------------------- #

SH_CONVENTIONS = ("deep3d", "deca", "irradiance")


def _safe_normalize(x: Tensor) -> Tensor:
    """x / |x| along the last dim; zero (with zero gradient) where |x|^2 is zero."""
    len2 = (x * x).sum(-1, keepdim=True)
    nonzero = len2 > 0
    inv_len = torch.where(nonzero, torch.rsqrt(torch.where(nonzero, len2, torch.ones_like(len2))), 0.0)
    return x * inv_len


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals.

    vertices [B, V, 3] or [V, 3], faces [F, 3] integer -> [B, V, 3] or [V, 3].
    Each face adds (p1 - p0) x (p2 - p0) (twice its area times its unit normal)
    to its three vertices; the sums are normalised, zero where they vanish.
    """
    faces = faces.long()
    p0 = vertices[..., faces[:, 0], :]  # [B, F, 3]
    p1 = vertices[..., faces[:, 1], :]
    p2 = vertices[..., faces[:, 2], :]
    face_normals = torch.cross(p1 - p0, p2 - p0, dim=-1)  # [B, F, 3]
    sums = torch.zeros_like(vertices)
    for corner in range(3):
        sums = sums.index_add(-2, faces[:, corner], face_normals)  # [B, V, 3]
    # Divide out the largest component first so that tiny or huge meshes do not
    # under/overflow the squared length; below the smallest normal number -> zero.
    largest = sums.abs().amax(-1, keepdim=True)  # [B, V, 1]
    usable = largest >= torch.finfo(sums.dtype).tiny
    unit = _safe_normalize(sums / torch.where(usable, largest, torch.ones_like(largest)))
    return torch.where(usable, unit, 0.0)


def sh_basis(normals: Tensor, convention: str = "deep3d") -> Tensor:
    """Order-2 SH basis of unit normals [..., 3] -> [..., 9] in one of SH_CONVENTIONS."""
    x, y, z = normals.unbind(-1)
    one = torch.ones_like(x)
    pi = math.pi
    if convention == "deep3d":  # Deep3DFaceRecon: SH.a, SH.c and compute_color's Y
        a = [pi, 2 * pi / math.sqrt(3.0), 2 * pi / math.sqrt(8.0)]
        c = [1 / math.sqrt(4 * pi), math.sqrt(3.0) / math.sqrt(4 * pi), 3 * math.sqrt(5.0) / math.sqrt(12 * pi)]
        b1, b2 = a[1] * c[1], a[2] * c[2]
        terms = [a[0] * c[0] * one, -b1 * y, b1 * z, -b1 * x, b2 * x * y, -b2 * y * z,
                 0.5 * b2 / math.sqrt(3.0) * (3 * z * z - 1), -b2 * x * z, 0.5 * b2 * (x * x - y * y)]
    elif convention == "deca":  # DECA add_SHlight: monomials times constant_factor
        factors = [1 / math.sqrt(4 * pi)] + [(2 * pi / 3) * math.sqrt(3 / (4 * pi))] * 3 \
            + [(pi / 4) * 3 * math.sqrt(5 / (12 * pi))] * 3 \
            + [(pi / 4) * 1.5 * math.sqrt(5 / (12 * pi)), (pi / 4) * 0.5 * math.sqrt(5 / (4 * pi))]
        monomials = [one, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1]
        terms = [f * m for f, m in zip(factors, monomials)]
    elif convention == "irradiance":  # Ramamoorthi-Hanrahan, Kaolin's constants
        b0, b1, b2 = pi, 2 * pi / 3, pi / 4
        terms = [0.282095 * b0 * one, -0.488603 * b1 * y, 0.488603 * b1 * z, -0.488603 * b1 * x,
                 1.092548 * b2 * x * y, -1.092548 * b2 * y * z, 0.315392 * b2 * (3 * z * z - 1),
                 -1.092548 * b2 * x * z, 0.546274 * b2 * (x * x - y * y)]
    else:
        raise ValueError(f"convention must be one of {SH_CONVENTIONS}, got {convention!r}")
    return torch.stack(terms, dim=-1)  # [..., 9]


def sh_shading(normals: Tensor, albedo: Tensor, sh_coeffs: Tensor, convention: str = "deep3d") -> Tensor:
    """albedo * (sh_basis(normals) @ sh_coeffs), per colour channel.

    sh_coeffs [B, 9, 3]: normals and albedo [B, ..., 3] (batches of 1 broadcast);
    sh_coeffs [9, 3]: normals and albedo any [..., 3].
    """
    basis = sh_basis(normals, convention)  # [B, ..., 9]
    if sh_coeffs.dim() == 2:
        return albedo * (basis @ sh_coeffs)
    flat = basis.reshape(basis.shape[0], -1, 9)  # [B, M, 9]
    radiance = torch.matmul(flat, sh_coeffs)  # [B, M, 3]
    return albedo * radiance.reshape(radiance.shape[0], *basis.shape[1:-1], 3)


def blinn_phong(normals: Tensor, points: Tensor, light_pos: Tensor, camera_pos: Tensor,
                specular_albedo: Tensor, shininess) -> Tensor:
    """Blinn-Phong specular: specular_albedo * max(n . h, 0) ** shininess.

    normals, points [B, ..., 3] (or [N, 3]); light_pos, camera_pos [B, 3] or [3];
    specular_albedo [B, ..., 3] or [B, ..., 1]; shininess float or Tensor [B].
    h = normalize(normalize(camera - p) + normalize(light - p)); a zero vector
    normalises to zero, and the lobe is 0 (zero gradient) where n . h <= 0.
    """
    middle = [1] * (points.dim() - 2)
    if light_pos.dim() == 2:
        light_pos = light_pos.view(light_pos.shape[0], *middle, 3)
    if camera_pos.dim() == 2:
        camera_pos = camera_pos.view(camera_pos.shape[0], *middle, 3)
    if isinstance(shininess, Tensor) and shininess.dim() == 1:
        shininess = shininess.view(shininess.shape[0], *middle, 1)
    to_light = _safe_normalize(light_pos - points)
    to_camera = _safe_normalize(camera_pos - points)
    half = _safe_normalize(to_light + to_camera)
    cos = (normals * half).sum(-1, keepdim=True)  # [B, ..., 1]
    lit = cos > 0
    lobe = torch.where(lit, torch.where(lit, cos, torch.ones_like(cos)) ** shininess, 0.0)
    return specular_albedo * lobe.expand(*lobe.shape[:-1], 3)  # [B, ..., 3] also for 1-channel albedo
# 2. Rasterization (nvdiffrast conventions)                                   #
# --------------------------------------------------------------------------- #
# A pixel centre q = (qx, qy, 1) in NDC lies in triangle (p0, p1, p2), p = (x, y, w)
# in clip space, when its homogeneous edge functions e_i = det(p_j, p_k, q)
# ((i, j, k) cyclic) all share the sign of det(p0, p1, p2). Then the
# perspective-correct barycentrics are e_i / sum(e) and the point is in front of
# the camera (w > 0): triangles crossing w = 0 need no clipping. When all three
# w > 0 the same test runs on the projected vertices (2D edge functions, exactly
# zero at a vertex, so ties at shared vertices resolve exactly). The kernels
# (csrc/include/facegeom/raster.h) do the same float64 arithmetic in the same
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
    valid = (det != 0) & ~torch.isnan(det)
    return torch.stack(e, 1), torch.stack(owns, 1), depth, total, valid


def _pixel_centres(resolution, device) -> Tuple[Tensor, Tensor]:
    height, width = resolution
    qx = (torch.arange(width, dtype=torch.float64, device=device) + 0.5) / width * 2 - 1
    qy = (torch.arange(height, dtype=torch.float64, device=device) + 0.5) / height * 2 - 1
    return qx, qy


def _rasterize_image(pos: Tensor, tri: Tensor, first_id: int, resolution) -> Tensor:
    """Triangle id (-1 = background) of each pixel [H, W] for vertices pos [V, 4]
    (float64) and triangles tri [F, 3] whose ids start at first_id."""
    height, width = resolution
    qx, qy = _pixel_centres(resolution, pos.device)
    qx, qy = qx[None, None, :], qy[None, :, None]
    best_depth = torch.full((height, width), float("inf"), dtype=torch.float32, device=pos.device)
    best_id = torch.full((height, width), -1, dtype=torch.int64, device=pos.device)
    chunk = max(1, (1 << 22) // max(1, height * width))
    for start in range(0, tri.shape[0], chunk):
        corners = pos[tri[start:start + chunk].long()]  # [F, 3, 4]
        e, owns, depth, total, valid = _edge_functions(corners, qx, qy)
        inside = ((e > 0) | ((e == 0) & owns)).all(1)  # [F, H, W]
        inside &= (total > 0) & valid[:, None, None]  # in front of the camera
        inside &= (depth >= -1) & (depth <= 1)  # OpenGL near and far planes
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
              grad_db: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Brute force (every pixel against every triangle, float64) z-buffer rasterizer.

    pos [B, V, 4] clip space (or [V, 4], with ranges [N, 2] = (first triangle,
    count) per image), tri [F, 3] -> rast [B, H, W, 4] = (u, v, z/w, id + 1) in
    pos's dtype (zeros where nothing is drawn), rast_db [B, H, W, 4] =
    (du/dX, du/dY, dv/dX, dv/dY) per pixel when grad_db else None. Differentiable
    w.r.t. pos (by autograd) through u, v, z/w and rast_db.
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
        with torch.no_grad():
            ids = _rasterize_image(pos64, tri[first:first + count], first, (height, width))
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
# 4. Point-to-surface distance                                                #
# --------------------------------------------------------------------------- #

# Point-triangle pairs per chunk of the brute-force search (bounds its memory).
POINT_TO_SURFACE_CHUNK = 1 << 18


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _closest_on_triangles(p: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """Closest point of every point to every triangle, by candidates: the plane
    projection when it falls inside a non-degenerate triangle, else the best of
    the three edges (a zero-length edge is a point). p [P, 1, 3]; a, b, c [F, 3]
    -> dist2 [P, F], bary [P, F, 3]. Deliberately not the kernels' region method,
    so the two check each other."""
    n = torch.linalg.cross(b - a, c - a)  # [F, 3]
    nn = _dot(n, n)  # [F], twice the area squared
    # Signed sub-areas of the projection of p (n . ((b-p) x (c-p)) is unchanged by
    # moving p along n, so p itself can be used).
    wa = _dot(n, torch.linalg.cross(b - p, c - p))  # [P, F]
    wb = _dot(n, torch.linalg.cross(c - p, a - p))
    wc = _dot(n, torch.linalg.cross(a - p, b - p))
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
    return torch.stack(dists), torch.stack(indices), torch.stack(barys)


# --------------------------------------------------------------------------- #
# 2b. Antialiasing (the nvdiffrast antialias idea)                            #
# --------------------------------------------------------------------------- #
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


def _cross(a: Tensor, b: Tensor) -> Tensor:
    """a x b over the last dim (3), written out as the kernels do."""
    return torch.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                        a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                        a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], -1)


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
    delta0 = torch.where(modified_first, weight * (color1 - color0), torch.zeros_like(color0))
    delta1 = torch.where(modified_first, torch.zeros_like(color1), weight * (color0 - color1))
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
