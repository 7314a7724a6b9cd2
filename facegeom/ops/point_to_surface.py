"""Point-to-surface distance: exact closest points on a triangle mesh, with gradients.

Public functions: :func:`point_to_surface` (squared distance, closest face and its
barycentric coordinates), :func:`closest_points`, :func:`mesh_to_mesh_distance`
(one-sided, over the first mesh's vertices, as the NoW / Stirling protocols
measure) and :func:`point_to_plane_distance` (the point-to-plane residual of ICP).

The kernel builds a bounding volume hierarchy (binned SAH, in C++) over the
faces of the first mesh of the batch and refits its boxes to every other batch
element, then answers each query by a nearest-point traversal that prunes by the
best distance found so far, so the cost grows ~P log F. On CUDA the topology is
built on the CPU (faces and the first mesh are copied to the host, a
synchronisation), the refit and the queries run on the GPU, one thread per
query. Without the compiled kernels the same results come from the brute-force
``facegeom.ops.reference.point_to_surface``.
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
# False when _C is missing or is a stale build without this op: the reference serves then.
KERNEL_AVAILABLE = _native.has_op("point_to_surface")


@op_policy("point_to_surface")
def point_to_surface(points: Tensor, vertices: Tensor, faces: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Exact unsigned squared distance from points to a triangle mesh's surface.

    The surface is the triangle soup ``vertices[faces]``; degenerate (zero-area)
    triangles count as the segments or points they are, never skipped. No absolute
    epsilon is used anywhere, so a mesh in metres and the same mesh in millimetres
    give the same answers up to scale.

    Args:
        points: ``[B, P, 3]`` or ``[P, 3]`` float32/float64 queries (differentiable).
        vertices: ``[B, V, 3]`` or ``[V, 3]`` (differentiable), same dtype and
            device as ``points``. A batch of 1 (or an unbatched mesh) is shared by
            all point sets; points with a batch of 1 are shared by all meshes.
            Batched meshes share ``faces``: the BVH topology is built once and
            refitted per mesh.
        faces: ``[F, 3]`` integer vertex indices (any integer dtype), on the same
            device. ``F = 0`` is an error unless ``P = 0``.

    Returns:
        ``dist2 [B, P]`` (differentiable), ``face_index [B, P]`` int64 and
        ``bary [B, P, 3]`` (not differentiable), such that the closest point is
        ``sum_i bary[..., i] * vertices[faces[face_index, i]]`` (bary >= 0, summing
        to 1). Unbatched inputs give ``[P]``, ``[P]``, ``[P, 3]``. When several
        faces are equally close (a point on a shared edge or vertex) any of them may
        be returned; the distance and closest point are the same.

    Gradients (envelope theorem, by a kernel): ``d dist2 / d points = 2 (p - c)``
    and ``d dist2 / d vertices[faces[f, i]] = -2 (p - c) bary_i``, c the closest
    point. Non-finite input (docs/ops.md): a NaN/Inf point gets ``dist2 = NaN``,
    ``face_index = -1`` and NaN ``bary``; a NaN/Inf vertex used by a face makes
    every distance to its mesh NaN (the surface is undefined); so does an overflow
    (float32 coordinates beyond ~1e19).

    Example:
        >>> vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> faces = torch.tensor([[0, 1, 2]])
        >>> dist2, face, bary = point_to_surface(torch.tensor([[0.2, 0.2, 0.5]]), vertices, faces)
        >>> dist2, face, bary
        (tensor([0.2500]), tensor([0]), tensor([[0.6000, 0.2000, 0.2000]]))
    """
    points, vertices, faces, unbatched = _prepare(points, vertices, faces)
    dist2, face_index, bary = _point_to_surface(points, vertices, faces)
    if unbatched:
        return dist2[0], face_index[0], bary[0]
    return dist2, face_index, bary


@op_policy("closest_points", forward_mode=True)
def closest_points(points: Tensor, vertices: Tensor, faces: Tensor) -> Tuple[Tensor, Tensor]:
    """Closest points on the surface and their faces.

    Args: as :func:`point_to_surface`.

    Returns:
        ``closest [B, P, 3]`` and ``face_index [B, P]`` int64 (unbatched: ``[P, 3]``,
        ``[P]``). ``closest = sum_i bary_i * vertices[faces[face_index, i]]`` is
        differentiable w.r.t. ``vertices`` with the barycentric coordinates held
        fixed (the point moves with its face), not w.r.t. ``points``: for a loss on
        the distance use :func:`point_to_surface`, whose gradient is exact.

    Example:
        >>> vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> closest_points(torch.tensor([[2.0, -1, 3]]), vertices, torch.tensor([[0, 1, 2]]))[0]
        tensor([[1., 0., 0.]])
    """
    points, vertices, faces, unbatched = _prepare(points, vertices, faces)
    _, face_index, bary = _point_to_surface(points, vertices, faces)
    corners = _gather_corners(vertices, faces, face_index)  # [B, P, 3, 3]
    closest = (bary.detach()[..., None] * corners).sum(-2)
    if unbatched:
        return closest[0], face_index[0]
    return closest, face_index


@op_policy("mesh_to_mesh_distance")
def mesh_to_mesh_distance(
    a_vertices: Tensor, a_faces: Optional[Tensor], b_vertices: Tensor, b_faces: Tensor
) -> Tensor:
    """One-sided distance from mesh ``a`` to the surface of mesh ``b``, per vertex of ``a``.

    This is the NoW / Stirling scan-to-mesh measure with ``a`` the scan and ``b``
    the reconstruction: every vertex of ``a`` (a point cloud suffices, so
    ``a_faces`` may be None) is measured against the triangles of ``b``.

    Args:
        a_vertices: ``[B, Va, 3]`` or ``[Va, 3]`` (differentiable).
        a_faces: ``[Fa, 3]`` integer or None; only validated (indices in range):
            vertices not used by any face are measured too.
        b_vertices: ``[B, Vb, 3]`` or ``[Vb, 3]`` (differentiable).
        b_faces: ``[Fb, 3]`` integer.

    Returns:
        ``[B, Va]`` (``[Va]`` unbatched) unsigned Euclidean distances, the square
        root of :func:`point_to_surface`'s ``dist2``. Its gradient is infinite
        where a distance is exactly 0; differentiate ``dist2`` for a loss.

    Example:
        >>> square = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
        >>> mesh_to_mesh_distance(square + torch.tensor([0, 0, 0.1]), None, square,
        ...                       torch.tensor([[0, 1, 2], [0, 2, 3]]))
        tensor([0.1000, 0.1000, 0.1000, 0.1000])
    """
    if a_faces is not None:
        _checks.floating("a_vertices", a_vertices)
        _checks.integer("a_faces", a_faces, a_vertices.device)
        _checks.shape("a_faces", a_faces, [None, 3], "[F, 3]")
        _checks.indices("a_faces", a_faces, a_vertices.shape[-2], what="vertex indices",
                        hint=f"a_vertices has V = {a_vertices.shape[-2]}")
    points, vertices, faces, unbatched = _prepare(
        a_vertices, b_vertices, b_faces, ("a_vertices", "b_vertices", "b_faces")
    )
    dist = _point_to_surface(points, vertices, faces)[0].sqrt()
    return dist[0] if unbatched else dist


@op_policy("point_to_plane_distance", forward_mode=True)
def point_to_plane_distance(points: Tensor, vertices: Tensor, faces: Tensor) -> Tuple[Tensor, Tensor]:
    """Signed point-to-plane distance to the closest face: the residual of
    point-to-plane ICP (as in MICC-style evaluation).

    For each point p, with c its closest point on the surface and n the unit
    normal of the face that c lies on (right-handed: ``(v1 - v0) x (v2 - v0)``),
    returns ``dot(p - c, n)``. Differentiable w.r.t. ``points`` and ``vertices``
    with the correspondence (face and barycentrics) held fixed, as ICP linearises
    it. A zero-area closest face has no normal: its residual is 0.

    Args: as :func:`point_to_surface`.

    Returns:
        ``distance [B, P]`` (signed, positive on the normal's side) and
        ``face_index [B, P]`` int64 (unbatched: ``[P]``, ``[P]``).

    Example:
        >>> vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> point_to_plane_distance(torch.tensor([[0.2, 0.2, -0.5]]), vertices,
        ...                         torch.tensor([[0, 1, 2]]))[0]
        tensor([-0.5000])
    """
    points, vertices, faces, unbatched = _prepare(points, vertices, faces)
    _, face_index, bary = _point_to_surface(points, vertices, faces)
    corners = _gather_corners(vertices, faces, face_index)  # [B, P, 3, 3]
    closest = (bary.detach()[..., None] * corners).sum(-2)
    normal = torch.linalg.cross(corners[..., 1, :] - corners[..., 0, :],
                                corners[..., 2, :] - corners[..., 0, :])  # [B, P, 3]
    length = normal.norm(dim=-1, keepdim=True)
    # where() on a safe denominator: a zero normal gives 0, not NaN, and no NaN gradient.
    unit = torch.where(length > 0, normal / torch.where(length > 0, length, 1.0), 0.0)
    distance = ((points - closest) * unit).sum(-1)
    if unbatched:
        return distance[0], face_index[0]
    return distance, face_index


# --------------------------------------------------------------------------- #
# Checks (run once, by the public functions above)                            #
# --------------------------------------------------------------------------- #

def _prepare(points: Tensor, vertices: Tensor, faces: Tensor, names=("points", "vertices", "faces")):
    """Validates and brings the inputs to the op's layout: points [B, P, 3],
    vertices [B, V, 3] or [1, V, 3] (shared by the batch), faces [F, 3] int64.
    Returns them and whether the call was unbatched."""
    p_name, v_name, f_name = names
    _checks.floating(p_name, points)
    _checks.floating(v_name, vertices, points, p_name)
    _checks.integer(f_name, faces, points.device)
    unbatched = points.dim() == 2 and vertices.dim() == 2
    if points.dim() == 2:
        points = points.unsqueeze(0)
    if vertices.dim() == 2:
        vertices = vertices.unsqueeze(0)
    _checks.shape(p_name, points, [None, None, 3], "[B, P, 3] or [P, 3]")
    _checks.shape(v_name, vertices, [None, None, 3], "[B, V, 3] or [V, 3]")
    _checks.shape(f_name, faces, [None, 3], "[F, 3]")
    batch = _checks.batch_size({p_name: points.shape[0], v_name: vertices.shape[0]})
    points = points.expand(batch, -1, -1)
    if vertices.shape[0] != 1:
        vertices = vertices.expand(batch, -1, -1)
    num_vertices, num_faces = vertices.shape[1], faces.shape[0]
    if num_faces == 0 and points.shape[0] * points.shape[1] > 0:
        raise ValueError(
            f"{f_name} is empty (F = 0) but {p_name} has {points.shape[1]} points: "
            "there is no surface to measure them against"
        )
    if num_faces >= 2**30:
        raise ValueError(f"{f_name} has {num_faces} faces; at most 2**30 are supported")
    _checks.indices(f_name, faces, num_vertices, what="vertex indices", hint=f"{v_name} has V = {num_vertices}")
    return points, vertices, faces.long(), unbatched


# --------------------------------------------------------------------------- #
# Unchecked implementations: for callers that validated already               #
# --------------------------------------------------------------------------- #

def _point_to_surface(points: Tensor, vertices: Tensor, faces: Tensor):
    if _native.serves("point_to_surface", points.device):
        return torch.ops.facegeom.point_to_surface(points, vertices, faces)
    return reference.point_to_surface(points, vertices, faces)


def _gather_corners(vertices: Tensor, faces: Tensor, face_index: Tensor) -> Tensor:
    """vertices [B or 1, V, 3], face_index [B, P] -> corners [B, P, 3, 3]."""
    batch = face_index.shape[0]
    corner_ids = faces[face_index.clamp(min=0)]  # [B, P, 3]; -1 only for NaN input
    flat = vertices.expand(batch, -1, -1)
    return torch.gather(
        flat[:, None].expand(-1, corner_ids.shape[1], -1, -1), 2,
        corner_ids[..., None].expand(-1, -1, -1, 3),
    )


# --------------------------------------------------------------------------- #
# Op registration: fake kernels and autograd (only when _C has the op)        #
# --------------------------------------------------------------------------- #

if KERNEL_AVAILABLE:

    @torch.library.register_fake("facegeom::point_to_surface")
    def _(points, vertices, faces):
        batch, num_points = points.shape[:2]
        return (
            points.new_empty(batch, num_points),
            points.new_empty(batch, num_points, dtype=torch.int64),
            points.new_empty(batch, num_points, 3),
        )

    @torch.library.register_fake("facegeom::point_to_surface_backward")
    def _(grad_dist2, points, vertices, faces, face_index, bary):
        return torch.empty_like(points), torch.empty_like(vertices)

    def _point_to_surface_setup(ctx, inputs, output):
        points, vertices, faces = inputs
        _, face_index, bary = output
        ctx.mark_non_differentiable(face_index, bary)
        ctx.save_for_backward(points, vertices, faces, face_index, bary)

    def _point_to_surface_backward(ctx, grad_dist2, grad_face_index, grad_bary):
        points, vertices, faces, face_index, bary = ctx.saved_tensors
        if grad_dist2 is None:
            grad_dist2 = points.new_zeros(points.shape[:2])
        grad_points, grad_vertices = _C_ops.point_to_surface_backward(
            grad_dist2, points, vertices, faces, face_index, bary
        )
        return (
            grad_points if ctx.needs_input_grad[0] else None,
            grad_vertices if ctx.needs_input_grad[1] else None,
            None,
        )

    torch.library.register_autograd(
        "facegeom::point_to_surface", _point_to_surface_backward, setup_context=_point_to_surface_setup
    )

    forbid_double_backward("point_to_surface_backward")
