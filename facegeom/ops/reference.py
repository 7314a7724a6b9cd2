"""Pure-PyTorch references of the facegeom ops: the executable specification.

Every function has the same signature and results as its kernel in
``facegeom.ops``; the tests compare the two, and the ops fall back to these
when the compiled extension is unavailable. Written for clarity, not speed:
the blendshape/skinning family follows smplx's ``lbs.py`` step by step
(including its Python loop over the kinematic chain and its per-vertex 4x4
matrices), which makes it the baseline the benchmarks measure against.
"""
from __future__ import annotations

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
# 4. Point-to-surface distance                                                #
# --------------------------------------------------------------------------- #

# Point-triangle pairs per chunk of the brute-force search (bounds its memory).
POINT_TO_SURFACE_CHUNK = 1 << 18


def _dot(x: Tensor, y: Tensor) -> Tensor:
    return (x * y).sum(-1)


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
