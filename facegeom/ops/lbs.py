"""Blendshapes and linear blend skinning (the FLAME / SMPL forward pass).

Public functions: :func:`blendshapes`, :func:`rodrigues`, :func:`rigid_transform`,
:func:`skin` and :func:`lbs`, a drop-in for ``smplx.lbs.lbs``. Each validates its
arguments, then calls the ``torch.ops.facegeom`` custom op (C++ on CPU, CUDA on
GPU), which has a fake kernel (``torch.compile``) and an autograd formula whose
backward is itself a kernel.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from facegeom import _checks, _native
from facegeom.ops import reference
from facegeom.ops._autograd import forbid_double_backward, op_policy

Tensor = torch.Tensor

# The compiled ops (a name that cannot be mistaken for the facegeom.ops package).
_C_ops = torch.ops.facegeom


@op_policy("blendshapes")
def blendshapes(coeffs: Tensor, basis: Tensor, base: Optional[Tensor] = None) -> Tensor:
    """Linear blendshapes: ``out[b] = base + sum_k coeffs[b, k] * basis[k]``.

    Args:
        coeffs: ``[B, K]`` or ``[K]`` coefficients (differentiable).
        basis: ``[K, V, 3]`` coefficient-major basis (differentiable). smplx's
            ``shapedirs`` is ``[V, 3, K]``: pass ``shapedirs.permute(2, 0, 1)``.
        base: ``[V, 3]``, ``[B, V, 3]`` or ``None`` (differentiable).

    Returns:
        ``[B, V, 3]`` (``[V, 3]`` when ``coeffs`` is ``[K]``), float32/float64,
        on the inputs' device. ``V = 0`` gives ``[B, 0, 3]``.

    Non-finite input (docs/ops.md): a NaN/Inf entry makes the output entries it
    enters non-finite (IEEE: a 0 coefficient times Inf is NaN), kernel and reference alike.

    Example:
        >>> shape = blendshapes(torch.randn(2, 10), torch.randn(10, 500, 3), torch.randn(500, 3))
        >>> shape.shape
        torch.Size([2, 500, 3])
    """
    _checks.floating("coeffs", coeffs)
    _checks.floating("basis", basis, coeffs, "coeffs")
    unbatched = coeffs.dim() == 1
    if unbatched:
        coeffs = coeffs.unsqueeze(0)
    _checks.shape("coeffs", coeffs, [None, None], "[B, K] or [K]")
    num_coeffs = coeffs.shape[1]
    _checks.shape("basis", basis, [num_coeffs, None, 3], "[K, V, 3]")
    if base is not None:
        _checks.floating("base", base, coeffs, "coeffs")
        num_vertices = basis.shape[1]
        if base.dim() == 3:
            _checks.shape("base", base, [None, num_vertices, 3], "[B, V, 3]")
            batch = _checks.batch_size({"coeffs": coeffs.shape[0], "base": base.shape[0]})
            coeffs = coeffs.expand(batch, -1)
            base = base.expand(batch, -1, -1)
        else:
            _checks.shape("base", base, [num_vertices, 3], "[V, 3]")
    if _native.serves("blendshapes", coeffs.device):
        out = torch.ops.facegeom.blendshapes(coeffs, basis, base)
    else:
        out = reference.blendshapes(coeffs, basis, base)
    return out[0] if unbatched else out


@op_policy("rodrigues")
def rodrigues(axis_angle: Tensor) -> Tensor:
    """Axis-angle vectors to rotation matrices, exactly as ``smplx.lbs.batch_rodrigues``.

    smplx's epsilon behaviour is kept: ``angle = |axis_angle + 1e-8|`` (1e-8 added to
    every component), so the zero vector gives the identity with a finite gradient.
    Finite input never gives NaN: where smplx's angle is 0 (``axis_angle = -1e-8``
    per component) the true angle ``|axis_angle|`` is used, and an overflowing sum
    of squares is scaled (``facegeom.ops.reference.rodrigues_angle``); everywhere
    else the result is smplx's. NaN/Inf input gives a NaN matrix.

    Args:
        axis_angle: ``[..., 3]`` float32/float64 (differentiable).

    Returns:
        ``[..., 3, 3]`` rotation matrices.

    Example:
        >>> rodrigues(torch.tensor([0.0, 0.0, 3.14159265 / 2]))[0, 1]  # Rz(90) maps x to y
        tensor(1.)
    """
    _checks.floating("axis_angle", axis_angle)
    if axis_angle.dim() == 0 or axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle must have shape [..., 3], got {list(axis_angle.shape)}")
    flat = axis_angle.reshape(-1, 3)
    if _native.serves("rodrigues", flat.device):
        rot = torch.ops.facegeom.rodrigues(flat)
    else:
        rot = reference.rodrigues(flat)
    return rot.reshape(*axis_angle.shape[:-1], 3, 3)


@op_policy("rigid_transform")
def rigid_transform(rot_mats: Tensor, joints: Tensor, parents: Tensor) -> Tuple[Tensor, Tensor]:
    """Kinematic chain, as ``smplx.lbs.batch_rigid_transform`` (without its Python loop).

    Args:
        rot_mats: ``[B, J, 3, 3]`` local joint rotations (differentiable).
        joints: ``[B, J, 3]`` rest-pose joint locations (differentiable).
        parents: ``[J]`` integer, ``parents[0] = -1`` and ``0 <= parents[j] < j``.

    A batch of 1 in ``rot_mats`` or ``joints`` broadcasts against the other's batch
    (its gradient is summed over the broadcast). Non-finite input (docs/ops.md): a
    NaN/Inf rotation or location makes that joint's and its descendants' results
    non-finite.

    Returns:
        ``posed_joints [B, J, 3]`` and ``rel_transforms [B, J, 4, 4]``: each joint's
        global transform with its rest location removed (smplx's ``A``, the
        matrices :func:`skin` blends). The bottom row of ``rel_transforms`` is the
        constant ``(0, 0, 0, 1)``, also for non-finite input.
    """
    _checks.floating("rot_mats", rot_mats)
    _checks.floating("joints", joints, rot_mats, "rot_mats")
    _checks.shape("rot_mats", rot_mats, [None, None, 3, 3], "[B, J, 3, 3]")
    num_joints = rot_mats.shape[1]
    _checks.shape("joints", joints, [None, num_joints, 3], "[B, J, 3]")
    batch = _checks.batch_size({"rot_mats": rot_mats.shape[0], "joints": joints.shape[0]})
    rot_mats, joints = rot_mats.expand(batch, -1, -1, -1), joints.expand(batch, -1, -1)
    parents = _check_parents(parents, num_joints, rot_mats.device)
    if _native.serves("rigid_transform", rot_mats.device):
        return torch.ops.facegeom.rigid_transform(rot_mats, joints, parents)
    return reference.rigid_transform(rot_mats, joints, parents)


@op_policy("skin")
def skin(vertices: Tensor, transforms: Tensor, weights: Tensor) -> Tensor:
    """Linear blend skinning without per-vertex 4x4 matrices in memory.

    ``out[b, v] = sum_j weights[v, j] * (transforms[b, j] @ [vertices[b, v]; 1])[:3]``

    Args:
        vertices: ``[B, V, 3]`` or ``[V, 3]`` (differentiable).
        transforms: ``[B, J, 4, 4]`` or ``[J, 4, 4]`` relative joint transforms, as
            smplx's ``A`` (differentiable; the constant bottom row gets no gradient).
        weights: ``[V, J]`` shared or ``[B, V, J]`` per-batch skinning weights
            (differentiable).

    A batch of 1 broadcasts against the others. Unbatched inputs give ``[V, 3]``.
    Non-finite input (docs/ops.md): a NaN/Inf vertex, weight or transform entry makes
    the vertices it enters non-finite (a zero weight times Inf is NaN).

    Returns:
        ``[B, V, 3]`` skinned vertices.
    """
    _checks.floating("vertices", vertices)
    device = vertices.device
    _checks.floating("transforms", transforms, vertices, "vertices")
    _checks.floating("weights", weights, vertices, "vertices")
    unbatched = vertices.dim() == 2 and transforms.dim() == 3 and weights.dim() == 2
    if vertices.dim() == 2:
        vertices = vertices.unsqueeze(0)
    if transforms.dim() == 3:
        transforms = transforms.unsqueeze(0)
    _checks.shape("vertices", vertices, [None, None, 3], "[B, V, 3] or [V, 3]")
    _checks.shape("transforms", transforms, [None, None, 4, 4], "[B, J, 4, 4] or [J, 4, 4]")
    num_vertices, num_joints = vertices.shape[1], transforms.shape[1]
    expected_weights = "[V, J]"
    if weights.dim() == 3:
        _checks.shape("weights", weights, [None, num_vertices, num_joints], expected_weights)
    else:
        _checks.shape("weights", weights, [num_vertices, num_joints], expected_weights)
    batches = {"vertices": vertices.shape[0], "transforms": transforms.shape[0]}
    if weights.dim() == 3:
        batches["weights"] = weights.shape[0]
    batch = _checks.batch_size(batches)
    vertices = vertices.expand(batch, -1, -1)
    transforms = transforms.expand(batch, -1, -1, -1)
    if weights.dim() == 3:
        weights = weights.expand(batch, -1, -1)
    if _native.serves("skin", device):
        out = torch.ops.facegeom.skin(vertices, transforms, weights)
    else:
        out = reference.skin(vertices, transforms, weights)
    return out[0] if unbatched else out


@op_policy("lbs")
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
    """Linear blend skinning model forward: a drop-in for ``smplx.lbs.lbs``.

    Same arguments, layouts and results as smplx (to 1e-5 in float32, 1e-10 in
    float64; where smplx's rodrigues turns a finite pose into NaN, :func:`rodrigues`'s
    finite answer is used), computed by fused kernels: one pass over the shape, expression and
    pose-corrective bases that also regresses the joints, the kinematic chain in
    one kernel, and skinning without per-vertex 4x4 matrices.

    Args:
        betas: ``[B, K]`` shape (and, for FLAME, expression) coefficients (differentiable).
        pose: ``[B, J*3]`` axis-angle when ``pose2rot`` else ``[B, J, 3, 3]``
            rotation matrices (differentiable).
        v_template: ``[V, 3]`` or ``[B, V, 3]`` template mesh (differentiable).
        shapedirs: ``[V, 3, K]`` blendshape basis (differentiable).
        posedirs: ``[(J-1)*9, V*3]`` pose-corrective basis (differentiable).
        J_regressor: ``[J, V]`` dense joint regressor (differentiable).
        parents: ``[J]`` integer kinematic tree, ``parents[0] = -1``, ``parents[j] < j``.
        lbs_weights: ``[V, J]`` or ``[B, V, J]`` skinning weights (differentiable).
        pose2rot: whether ``pose`` is axis-angle (True) or rotation matrices.

    Returns:
        ``vertices [B, V, 3]`` and posed ``joints [B, J, 3]``.

    Example:
        >>> head = facegeom.models.synthetic_head()            # doctest: +SKIP
        >>> verts, joints = lbs(betas, pose, head.v_template, head.shapedirs, head.posedirs,
        ...                     head.J_regressor, head.parents, head.lbs_weights)  # doctest: +SKIP
    """
    args = _lbs_args(betas, pose, v_template, shapedirs, posedirs, J_regressor, parents, lbs_weights, pose2rot)
    return _lbs(*args, pose2rot)


# --------------------------------------------------------------------------- #
# Checks (run once, by the public functions above)                            #
# --------------------------------------------------------------------------- #

def _check_parents(parents: Tensor, num_joints: int, device: torch.device) -> Tensor:
    _checks.integer("parents", parents, device)
    _checks.shape("parents", parents, [num_joints], "[J]")
    if num_joints == 0:
        raise ValueError("parents must describe at least one joint (J = 0)")
    if not torch.compiler.is_compiling():
        values = parents.tolist()
        if values[0] != -1:
            raise ValueError(f"parents[0] must be -1 (the root joint), got {values[0]}")
        for j, p in enumerate(values[1:], start=1):
            if not 0 <= p < j:
                raise ValueError(
                    f"parents must be topologically ordered (0 <= parents[j] < j); parents[{j}] = {p}"
                )
    return parents.long()


def _lbs_args(betas, pose, v_template, shapedirs, posedirs, J_regressor, parents, lbs_weights, pose2rot):
    """Checks :func:`lbs`'s arguments; returns them with betas expanded to the common
    batch B and parents as int64 (pose, v_template and lbs_weights keep a batch of 1)."""
    _checks.floating("betas", betas)
    device = betas.device
    for name, t in (("pose", pose), ("v_template", v_template), ("shapedirs", shapedirs),
                    ("posedirs", posedirs), ("J_regressor", J_regressor), ("lbs_weights", lbs_weights)):
        _checks.floating(name, t, betas, "betas")
    _checks.shape("betas", betas, [None, None], "[B, K]")
    num_betas = betas.shape[1]
    _checks.shape("shapedirs", shapedirs, [None, 3, num_betas], "[V, 3, K]")
    num_vertices = shapedirs.shape[0]
    _checks.shape("J_regressor", J_regressor, [None, num_vertices], "[J, V]")
    num_joints = J_regressor.shape[0]
    _checks.shape("posedirs", posedirs, [9 * (num_joints - 1), 3 * num_vertices], "[(J-1)*9, V*3]")
    if pose2rot:
        _checks.shape("pose", pose, [None, 3 * num_joints], "[B, J*3]")
    elif pose.dim() == 2:
        _checks.shape("pose", pose, [None, 9 * num_joints], "[B, J*9]")
    else:
        _checks.shape("pose", pose, [None, num_joints, 3, 3], "[B, J, 3, 3]")
    if v_template.dim() == 3:
        _checks.shape("v_template", v_template, [None, num_vertices, 3], "[B, V, 3]")
    else:
        _checks.shape("v_template", v_template, [num_vertices, 3], "[V, 3]")
    if lbs_weights.dim() == 3:
        _checks.shape("lbs_weights", lbs_weights, [None, num_vertices, num_joints], "[B, V, J]")
    else:
        _checks.shape("lbs_weights", lbs_weights, [num_vertices, num_joints], "[V, J]")
    batches = {"betas": betas.shape[0], "pose": pose.shape[0]}
    if v_template.dim() == 3:
        batches["v_template"] = v_template.shape[0]
    if lbs_weights.dim() == 3:
        batches["lbs_weights"] = lbs_weights.shape[0]
    batch = _checks.batch_size(batches)
    parents = _check_parents(parents, num_joints, device)
    return betas.expand(batch, -1), pose, v_template, shapedirs, posedirs, J_regressor, parents, lbs_weights


# --------------------------------------------------------------------------- #
# Unchecked implementations: for callers that validated already               #
# --------------------------------------------------------------------------- #

def _lbs(betas: Tensor, pose: Tensor, v_template: Tensor, shapedirs: Tensor, posedirs: Tensor,
         J_regressor: Tensor, parents: Tensor, lbs_weights: Tensor, pose2rot: bool = True) -> Tuple[Tensor, Tensor]:
    """smplx layouts, betas [B, K], pose [B or 1, ...], v_template [V, 3] or [B or 1, V, 3],
    lbs_weights [V, J] or [B or 1, V, J], parents int64 and valid: no checks."""
    batch, num_joints = betas.shape[0], J_regressor.shape[0]
    if not _native.serves("lbs", betas.device, kernel="lbs_shape_pose_blend"):
        return reference.lbs(betas, pose.expand(batch, *pose.shape[1:]), v_template, shapedirs, posedirs,
                             J_regressor, parents, lbs_weights, pose2rot)
    # 1. Rotation matrices of the pose: [B, J, 3, 3]
    if pose2rot:
        rot_mats = _C_ops.rodrigues(pose.reshape(-1, 3)).view(pose.shape[0], num_joints, 3, 3)
    else:
        rot_mats = pose.reshape(pose.shape[0], num_joints, 3, 3)
    rot_mats = rot_mats.expand(batch, -1, -1, -1)
    if v_template.dim() == 3:
        v_template = v_template.expand(batch, -1, -1)
    # 2. Shape and pose blendshapes, and the joints regressed from the shaped mesh:
    #    v_shaped, v_posed [B, V, 3], joints [B, J, 3]
    v_shaped, v_posed, joints = _C_ops.lbs_shape_pose_blend(betas, rot_mats, v_template, shapedirs, posedirs,
                                                        J_regressor)
    # 3. Kinematic chain: posed joints [B, J, 3], relative transforms [B, J, 4, 4]
    posed_joints, rel_transforms = _C_ops.rigid_transform(rot_mats, joints, parents)
    # 4. Skinning: [B, V, 3]
    if lbs_weights.dim() == 3:
        lbs_weights = lbs_weights.expand(batch, -1, -1)
    vertices = _C_ops.skin(v_posed, rel_transforms, lbs_weights)
    return vertices, posed_joints


# --------------------------------------------------------------------------- #
# Op registration: fake kernels and autograd (only when _C has the ops)       #
# --------------------------------------------------------------------------- #


def _grad_or_none(t: Tensor, wanted: bool) -> Optional[Tensor]:
    return t if wanted else None


def _zeros_if_none(grad: Optional[Tensor], like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


if _native.has_op("skin"):

    # -- rodrigues ---------------------------------------------------------- #
    @torch.library.register_fake("facegeom::rodrigues")
    def _(axis_angle):
        return axis_angle.new_empty(axis_angle.shape[0], 3, 3)

    @torch.library.register_fake("facegeom::rodrigues_backward")
    def _(grad_rot, axis_angle):
        return torch.empty_like(axis_angle)

    def _rodrigues_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def _rodrigues_backward(ctx, grad_rot):
        (axis_angle,) = ctx.saved_tensors
        return _C_ops.rodrigues_backward(grad_rot, axis_angle)

    torch.library.register_autograd(
        "facegeom::rodrigues", _rodrigues_backward, setup_context=_rodrigues_setup
    )

    # -- rigid_transform ---------------------------------------------------- #
    @torch.library.register_fake("facegeom::rigid_transform")
    def _(rot_mats, joints, parents):
        batch, num_joints = rot_mats.shape[:2]
        return rot_mats.new_empty(batch, num_joints, 3), rot_mats.new_empty(batch, num_joints, 4, 4)

    @torch.library.register_fake("facegeom::rigid_transform_backward")
    def _(grad_posed, grad_rel, rot_mats, joints, parents):
        return torch.empty_like(rot_mats), torch.empty_like(joints)

    def _rigid_setup(ctx, inputs, output):
        rot_mats, joints, parents = inputs
        ctx.save_for_backward(rot_mats, joints, parents)

    def _rigid_backward(ctx, grad_posed, grad_rel):
        rot_mats, joints, parents = ctx.saved_tensors
        grad_posed = _zeros_if_none(grad_posed, joints)
        grad_rel = _zeros_if_none(grad_rel, rot_mats.new_empty(*rot_mats.shape[:2], 4, 4))
        grad_rot, grad_joints = _C_ops.rigid_transform_backward(
            grad_posed, grad_rel, rot_mats, joints, parents
        )
        return grad_rot, grad_joints, None

    torch.library.register_autograd(
        "facegeom::rigid_transform", _rigid_backward, setup_context=_rigid_setup
    )

    # -- skin --------------------------------------------------------------- #
    @torch.library.register_fake("facegeom::skin")
    def _(vertices, transforms, weights):
        return torch.empty_like(vertices)

    @torch.library.register_fake("facegeom::skin_backward")
    def _(grad_out, vertices, transforms, weights, output_mask):
        return tuple(
            torch.empty_like(t) if wanted else t.new_empty(0)
            for t, wanted in zip((vertices, transforms, weights), output_mask)
        )

    def _skin_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _skin_backward(ctx, grad_out):
        vertices, transforms, weights = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:3])
        grads = _C_ops.skin_backward(grad_out, vertices, transforms, weights, mask)
        return tuple(_grad_or_none(g, wanted) for g, wanted in zip(grads, mask))

    torch.library.register_autograd("facegeom::skin", _skin_backward, setup_context=_skin_setup)

    # -- lbs_shape_pose_blend --------------------------------------------------- #
    @torch.library.register_fake("facegeom::lbs_shape_pose_blend")
    def _(betas, rot_mats, v_template, shapedirs, posedirs, J_regressor):
        batch, num_vertices, num_joints = betas.shape[0], shapedirs.shape[0], J_regressor.shape[0]
        v_shaped = betas.new_empty(batch, num_vertices, 3)
        return v_shaped, torch.empty_like(v_shaped), betas.new_empty(batch, num_joints, 3)

    @torch.library.register_fake("facegeom::lbs_shape_pose_blend_backward")
    def _(grad_v_shaped, grad_v_posed, grad_joints, betas, rot_mats, v_template, shapedirs,
          posedirs, J_regressor, v_shaped, output_mask):
        inputs = (betas, rot_mats, v_template, shapedirs, posedirs, J_regressor)
        return tuple(
            torch.empty_like(t) if wanted else t.new_empty(0) for t, wanted in zip(inputs, output_mask)
        )

    def _blend_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs, output[0])

    def _blend_backward(ctx, grad_v_shaped, grad_v_posed, grad_joints):
        *inputs, v_shaped = ctx.saved_tensors
        mask = list(ctx.needs_input_grad[:6])
        grads = _C_ops.lbs_shape_pose_blend_backward(
            grad_v_shaped,
            _zeros_if_none(grad_v_posed, v_shaped),
            _zeros_if_none(grad_joints, v_shaped.new_empty(v_shaped.shape[0], inputs[5].shape[0], 3)),
            *inputs,
            v_shaped,
            mask,
        )
        return tuple(_grad_or_none(g, wanted) for g, wanted in zip(grads, mask))

    torch.library.register_autograd(
        "facegeom::lbs_shape_pose_blend", _blend_backward, setup_context=_blend_setup
    )

    # -- blendshapes (an ATen composition: its backward is two GEMMs) ------- #
    @torch.library.register_fake("facegeom::blendshapes")
    def _(coeffs, basis, base=None):
        return coeffs.new_empty(coeffs.shape[0], basis.shape[1], 3)

    def _blendshapes_setup(ctx, inputs, output):
        coeffs, basis, base = inputs
        ctx.base_batched = base is not None and base.dim() == 3
        ctx.save_for_backward(coeffs, basis)

    def _blendshapes_backward(ctx, grad):
        coeffs, basis = ctx.saved_tensors
        flat_grad = grad.reshape(grad.shape[0], 3 * basis.shape[1])  # [B, V*3] (explicit: V may be 0)
        flat_basis = basis.reshape(basis.shape[0], 3 * basis.shape[1])  # [K, V*3]
        grad_coeffs = flat_grad @ flat_basis.t() if ctx.needs_input_grad[0] else None
        grad_basis = (coeffs.t() @ flat_grad).view_as(basis) if ctx.needs_input_grad[1] else None
        if len(ctx.needs_input_grad) == 2:  # called without base
            return grad_coeffs, grad_basis
        grad_base = None
        if ctx.needs_input_grad[2]:
            grad_base = grad if ctx.base_batched else grad.sum(0)
        return grad_coeffs, grad_basis, grad_base

    torch.library.register_autograd(
        "facegeom::blendshapes", _blendshapes_backward, setup_context=_blendshapes_setup
    )

    forbid_double_backward("rodrigues_backward", "rigid_transform_backward", "skin_backward",
                           "lbs_shape_pose_blend_backward")
