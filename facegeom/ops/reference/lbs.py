"""1. Blendshapes and skinning: smplx's ``lbs.py`` step by step (API.md §1), including
its Python loop over the kinematic chain and its per-vertex 4x4 matrices: the
baseline the benchmarks measure against.

Shapes: B batch, V vertices, K coefficients, J joints.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from facegeom.ops.reference._common import Tensor

# smplx's batch_rodrigues adds this to every component before the norm, so the
# zero rotation has a finite gradient.
RODRIGUES_EPSILON = 1e-8


def blendshapes(coeffs: Tensor, basis: Tensor, base: Optional[Tensor] = None) -> Tensor:
    """out[b] = base + sum_k coeffs[b, k] * basis[k].

    coeffs [B, K], basis [K, V, 3], base [V, 3] or [B, V, 3] or None -> [B, V, 3].
    """
    out = torch.einsum("bk,kvc->bvc", coeffs, basis)  # [B, V, 3]
    return out if base is None else out + base


def rodrigues_angle(rot_vecs: Tensor) -> Tuple[Tensor, Tensor]:
    """smplx's angle ``|r + 1e-8|`` of axis-angle vectors [N, 3] and the vector ``u`` it is
    the norm of (``d angle / d r = u / angle``) -> angle [N, 1], u [N, 3].

    Identical to smplx wherever smplx's angle is positive and finite. Two finite inputs
    smplx turns into NaN are answered instead: ``r = -1e-8`` per component (smplx's
    angle is 0) uses the unshifted ``u = r`` (the true rotation angle ``|r|``), and a
    sum of squares that overflows (``|r| > ~1e154`` in float64, ``~1e19`` in float32)
    is computed scaled by the largest component. NaN/Inf input stays NaN.
    """
    u = rot_vecs + RODRIGUES_EPSILON  # [N, 3], smplx's shift
    angle = torch.norm(u, dim=1, keepdim=True)  # [N, 1]
    zero = angle == 0  # r == -eps exactly: rotate by the true angle |r| instead
    u = torch.where(zero, rot_vecs, u)
    overflow = torch.isinf(angle) & torch.isfinite(rot_vecs).all(1, keepdim=True)
    fixed = zero | overflow
    largest = u.abs().amax(1, keepdim=True)  # [N, 1], > 0 on the fixed rows
    safe = torch.where(fixed, largest, torch.ones_like(largest))
    scaled = safe * torch.norm(u / safe, dim=1, keepdim=True)
    return torch.where(fixed, scaled, angle), u


def rodrigues(axis_angle: Tensor) -> Tensor:
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3] (smplx batch_rodrigues,
    with :func:`rodrigues_angle`'s answers for the two finite inputs it gives NaN on)."""
    rot_vecs = axis_angle.reshape(-1, 3)  # [N, 3]
    angle, _ = rodrigues_angle(rot_vecs)  # [N, 1]
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

    rot_mats [B, J, 3, 3] local rotations, joints [B, J, 3] rest-pose joints (a batch
    of 1 in either broadcasts), parents [J] (parents[0] = -1, parents[j] < j) ->
    posed_joints [B, J, 3], rel_transforms [B, J, 4, 4] (global transform with the
    rest-pose joint location removed: the matrices that skinning blends).

    smplx chains 4x4 homogeneous matrices; here the [3, 4] affine parts are chained
    and the bottom row is the constant (0, 0, 0, 1). The values are the same, but a
    non-finite input cannot leak into the constant row through 0 * inf (docs/ops.md,
    "Non-finite values").
    """
    batch = max(rot_mats.shape[0], joints.shape[0])
    rot_mats = rot_mats.expand(batch, -1, -1, -1)
    joints = joints.expand(batch, -1, -1).unsqueeze(-1)  # [B, J, 3, 1]
    rel_joints = joints.clone()
    rel_joints[:, 1:] -= joints[:, parents[1:]]
    local = torch.cat([rot_mats, rel_joints], dim=-1)  # [B, J, 3, 4]
    chain = [local[:, 0]]
    for i in range(1, parents.shape[0]):
        parent = chain[int(parents[i])]  # [B, 3, 4]: world = parent o local
        rot = torch.matmul(parent[..., :3], local[:, i, :, :3])
        trans = torch.matmul(parent[..., :3], local[:, i, :, 3:]) + parent[..., 3:]
        chain.append(torch.cat([rot, trans], dim=-1))
    world = torch.stack(chain, dim=1)  # [B, J, 3, 4]
    posed_joints = world[..., 3]
    rel = torch.cat([world[..., :3], world[..., 3:] - torch.matmul(world[..., :3], joints)], dim=-1)
    bottom = rel.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*rel.shape[:2], 1, 4)
    return posed_joints, torch.cat([rel, bottom], dim=-2)


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
