"""Point-to-surface distance: BVH kernel vs the brute-force reference (float64 and
float32), adversarial triangles, scale independence, trimesh, gradients,
custom-op registration, torch.compile, helpers, bad input and fallback."""
import importlib
import math
import warnings

import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.ops import reference
from tests.conftest import cuda

point_to_surface_module = importlib.import_module("facegeom.ops.point_to_surface")
requires_kernel = pytest.mark.skipif(not point_to_surface_module.KERNEL_AVAILABLE,
                                     reason="facegeom._C lacks point_to_surface")
ops = torch.ops.facegeom if point_to_surface_module.KERNEL_AVAILABLE else None


def random_soup(num_vertices, num_faces, batch=1, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    vertices = torch.randn(batch, num_vertices, 3, generator=g, dtype=dtype) * scale
    faces = torch.randint(0, num_vertices, (num_faces, 3), generator=g)
    return vertices, faces


def random_points(batch, num_points, dtype=torch.float64, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_points, 3, generator=g, dtype=dtype) * 1.5 * scale


def sphere(subdivisions=3, radius=1.0, dtype=torch.float64):
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.creation.icosphere(subdivisions, radius)
    return torch.tensor(mesh.vertices, dtype=dtype), torch.tensor(mesh.faces)


def closest_from(vertices, faces, face_index, bary):
    """sum_i bary_i * vertices[faces[face_index, i]] for vertices [B or 1, V, 3]."""
    vertices = vertices.expand(face_index.shape[0], -1, -1)
    corners = torch.stack([vertices[b][faces[face_index[b]]] for b in range(face_index.shape[0])])
    return (bary[..., None] * corners).sum(-2)


def check_consistent(points, vertices, faces, dist2, face_index, bary, atol):
    """The returned face and barycentrics describe a point on the surface at the returned distance."""
    assert (face_index >= 0).all() and (face_index < faces.shape[0]).all()
    assert (bary >= -atol).all()
    torch.testing.assert_close(bary.sum(-1), torch.ones_like(dist2), atol=atol, rtol=0)
    closest = closest_from(vertices, faces, face_index, bary)
    torch.testing.assert_close(((points - closest) ** 2).sum(-1), dist2, atol=atol, rtol=atol)


def assert_matches_reference(points, vertices, faces, atol, rtol):
    """Distances against the float64 brute force, and the returned face and
    barycentrics give a point on the surface at that distance. (Closest points
    are not compared one to one: symmetric meshes have exact ties between
    different points, e.g. below a vertex of an icosphere.)"""
    dist2, face_index, bary = fo.point_to_surface(points, vertices, faces)
    p64, v64 = points.double(), vertices.double()
    if v64.dim() == 2:
        v64 = v64[None]
    ref_dist2, _, _ = reference.point_to_surface(p64, v64, faces)
    torch.testing.assert_close(dist2.double(), ref_dist2, atol=atol, rtol=rtol)
    assert (face_index >= 0).all() and (face_index < faces.shape[0]).all()
    assert (bary >= 0).all() and (bary <= 1).all()
    torch.testing.assert_close(bary.sum(-1).double(), torch.ones_like(ref_dist2),
                               atol=10 * torch.finfo(bary.dtype).eps, rtol=0)
    closest = closest_from(v64, faces, face_index, bary.double())
    torch.testing.assert_close(((p64 - closest) ** 2).sum(-1), ref_dist2,
                               atol=max(atol, 1e-300), rtol=max(rtol, 100 * torch.finfo(points.dtype).eps))
    return dist2, face_index, bary


# --------------------------------------------------------------------------- #
# The reference itself (it is the specification the kernel is tested against) #
# --------------------------------------------------------------------------- #

def test_reference_is_a_lower_bound_of_dense_surface_samples():
    vertices, faces = random_soup(12, 10)
    points = random_points(1, 40)
    dist2, face_index, bary = reference.point_to_surface(points, vertices, faces)
    check_consistent(points, vertices, faces, dist2, face_index, bary, atol=1e-12)
    g = torch.Generator().manual_seed(3)
    u = torch.rand(4000, 2, generator=g, dtype=torch.float64)
    u[u.sum(1) > 1] = 1 - u[u.sum(1) > 1]
    w = torch.stack([1 - u.sum(1), u[:, 0], u[:, 1]], 1)
    samples = (w[None, :, :, None] * vertices[0][faces][:, None]).sum(2).reshape(-1, 3)
    sampled = torch.cdist(points[0], samples).min(1).values ** 2
    assert (dist2[0] <= sampled + 1e-12).all()  # never worse than any surface sample
    assert (sampled.sqrt() - dist2[0].sqrt()).max() < 0.1  # and the samples approach it


def test_reference_one_triangle_known_values():
    vertices = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    points = torch.tensor([[[0.2, 0.2, 0.5], [-1, -1, 0], [2, 0, 1], [0.5, 0.5, 0], [0.5, -1, 0]]],
                          dtype=torch.float64)
    dist2, _, bary = reference.point_to_surface(points, vertices, faces)
    torch.testing.assert_close(dist2, torch.tensor([[0.25, 2, 2, 0, 1]], dtype=torch.float64))
    torch.testing.assert_close(bary[0, 0], torch.tensor([0.6, 0.2, 0.2], dtype=torch.float64))
    torch.testing.assert_close(bary[0, 2], torch.tensor([0.0, 1, 0], dtype=torch.float64))


# --------------------------------------------------------------------------- #
# Kernel vs reference                                                         #
# --------------------------------------------------------------------------- #

@requires_kernel
@pytest.mark.parametrize("batched_vertices", [False, True])
@pytest.mark.parametrize("num_faces", [1, 7, 300])
def test_random_soups_float64(num_faces, batched_vertices):
    vertices, faces = random_soup(max(3, num_faces // 2), num_faces, batch=3 if batched_vertices else 1)
    points = random_points(3, 400)
    dist2, face_index, bary = assert_matches_reference(points, vertices, faces, atol=1e-12, rtol=1e-12)
    check_consistent(points, vertices, faces, dist2, face_index, bary, atol=1e-12)


@requires_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("num_faces", [2, 3, 4, 5, 6, 9, 17, 65])
def test_small_trees_every_wide_node_shape(num_faces, dtype):
    """The CPU queries run on a 4-wide tree collapsed from the binary one: a
    root that is a leaf, nodes with one to four children, leaves of one to four
    triangles as lanes, empty lanes. Every such shape must give the brute force."""
    for seed in range(3):
        vertices, faces = random_soup(num_faces + 2, num_faces, batch=2, seed=seed)
        points = random_points(2, 200, seed=seed + 10)
        # Points near the surface too, where many boxes overlap the search sphere.
        tri = vertices[:, faces[torch.arange(200) % num_faces]]
        points = torch.cat([points, tri.mean(2) + 0.01 * torch.randn(2, 200, 3, dtype=torch.float64)], 1)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert_matches_reference(points.to(dtype), vertices.to(dtype), faces, atol=tol, rtol=tol)


@requires_kernel
def test_real_mesh_near_and_far_float64_and_float32():
    vertices, faces = sphere(3, radius=0.1)
    g = torch.Generator().manual_seed(5)
    near = vertices[torch.randint(0, len(vertices), (300,), generator=g)] * (
        1 + 0.05 * torch.randn(300, 1, generator=g, dtype=torch.float64))
    uniform = (torch.rand(300, 3, generator=g, dtype=torch.float64) - 0.5) * 0.3
    points = torch.cat([near, uniform])[None]
    assert_matches_reference(points, vertices, faces, atol=1e-14, rtol=1e-12)
    # float32 in, compared with the float64 brute force: distances good to float32
    # rounding of coordinates of size 0.1 (|d - d_ref| <~ 1e-7 * 0.1 * d).
    dist2, _, _ = fo.point_to_surface(points.float(), vertices.float(), faces)
    ref_dist2, _, _ = reference.point_to_surface(points, vertices[None], faces)
    torch.testing.assert_close(dist2.double().sqrt(), ref_dist2.sqrt(), atol=2e-7, rtol=1e-5)


@requires_kernel
def test_metres_and_millimetres_give_the_same_answer_up_to_scale():
    """No absolute epsilon: scaling everything by s scales dist2 by s^2 and keeps
    the faces and barycentrics (including for tiny and sliver triangles)."""
    vertices, faces = random_soup(40, 80, dtype=torch.float64, seed=7)
    vertices[0, :5] = vertices[0, 5:10] + 1e-9 * vertices[0, 10:15]  # slivers and near-duplicates
    points = random_points(1, 300, seed=8)
    base = fo.point_to_surface(points, vertices, faces)
    base_closest = closest_from(vertices, faces, base[1], base[2])
    for scale in (1e-3, 1e3, 1e-9, 2.0 ** 40):
        dist2, face_index, bary = fo.point_to_surface(points * scale, vertices * scale, faces)
        torch.testing.assert_close(dist2 / scale**2, base[0], atol=0, rtol=1e-10)
        # faces may differ on ties (a shared closest vertex), the closest point may not
        closest = closest_from(vertices * scale, faces, face_index, bary) / scale
        torch.testing.assert_close(closest, base_closest, atol=1e-9, rtol=0)
    # powers of two scale exactly: identical bits
    dist2, face_index, bary = fo.point_to_surface(points * 1024, vertices * 1024, faces)
    assert torch.equal(face_index, base[1]) and torch.equal(bary, base[2])
    assert torch.equal(dist2, base[0] * 1024**2)


@requires_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_points_exactly_on_vertices_edges_and_faces(dtype):
    vertices, faces = sphere(2, radius=0.1, dtype=dtype)
    tri = vertices[faces]  # [F, 3, 3]
    g = torch.Generator().manual_seed(2)
    w = torch.rand(len(faces), 3, generator=g, dtype=dtype)
    on_faces = ((w / w.sum(1, keepdim=True))[:, :, None] * tri).sum(1)
    t = torch.rand(len(faces), 1, generator=g, dtype=dtype)
    on_edges = tri[:, 0] + t * (tri[:, 1] - tri[:, 0])
    points = torch.cat([vertices, on_edges, on_faces])[None]
    dist2, face_index, bary = fo.point_to_surface(points, vertices, faces)
    eps = torch.finfo(dtype).eps
    assert dist2.max() <= (10 * eps * 0.1) ** 2
    closest = closest_from(vertices[None], faces, face_index, bary)
    torch.testing.assert_close(closest, points, atol=20 * eps * 0.1, rtol=0)


@requires_kernel
def test_far_points():
    vertices, faces = sphere(2)
    direction = torch.nn.functional.normalize(random_points(1, 200, seed=4), dim=-1)
    for distance in (1e3, 1e8):
        points = direction * distance
        dist2, _, _ = assert_matches_reference(points, vertices[None], faces, atol=0, rtol=1e-12)
        assert ((dist2.sqrt() - (distance - 1)).abs() < 1e-3 * distance).all()


@requires_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_degenerate_triangles_are_segments_or_points(dtype):
    vertices = torch.tensor([
        [0.0, 0, 0], [1, 0, 0], [2, 0, 0],  # collinear: the segment [0, 2] on x
        [0, 3, 0], [0, 3, 0], [0, 5, 0],  # two coincident corners: the segment y in [3, 5]
        [4, 4, 4], [4, 4, 4], [4, 4, 4],  # a point
        [0, 0, 7], [1, 1e-7, 7], [2, 0, 7],  # a sliver
        [5, 0, 0], [7, 0, 0], [6, 0, 0],  # collinear, middle corner last
    ], dtype=dtype)
    faces = torch.arange(15).view(5, 3)
    g = torch.Generator().manual_seed(11)
    points = (torch.rand(1, 3000, 3, generator=g, dtype=torch.float64) * torch.tensor([9.0, 7, 9]) - 1).to(dtype)
    atol = 1e-12 if dtype == torch.float64 else 1e-4
    dist2, face_index, bary = assert_matches_reference(points, vertices, faces, atol=atol, rtol=atol)
    check_consistent(points.double(), vertices.double()[None], faces, dist2.double(), face_index,
                     bary.double(), atol=atol * 10)
    # Each degenerate triangle alone: the analytic distance to its segment / point.
    for face, (lo, hi) in ((0, (0, 2)), (4, (5, 7))):
        d, _, _ = fo.point_to_surface(points, vertices, faces[face:face + 1])
        x = points[..., 0].clamp(lo, hi)
        want = (points[..., 0] - x) ** 2 + points[..., 1] ** 2 + points[..., 2] ** 2
        torch.testing.assert_close(d, want, atol=atol * 10, rtol=atol)
    d, _, _ = fo.point_to_surface(points, vertices, faces[2:3])
    torch.testing.assert_close(d, ((points - 4) ** 2).sum(-1), atol=atol * 10, rtol=atol)


@requires_kernel
def test_one_triangle_meshes_and_empty_inputs():
    vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2]])
    dist2, face_index, bary = fo.point_to_surface(torch.tensor([[0.2, 0.2, 0.5], [2, 0, 0]]), vertices, faces)
    torch.testing.assert_close(dist2, torch.tensor([0.25, 1.0]))
    assert face_index.tolist() == [0, 0]
    torch.testing.assert_close(bary, torch.tensor([[0.6, 0.2, 0.2], [0, 1, 0]]))
    # P = 0 and B = 0 are fine, even with F = 0
    for points in (torch.zeros(0, 3), torch.zeros(2, 0, 3), torch.zeros(0, 5, 3)):
        for f in (faces, faces[:0]):
            d, i, w = fo.point_to_surface(points, vertices, f)
            assert d.shape == points.shape[:-1] and i.shape == points.shape[:-1] and w.shape == points.shape
    with pytest.raises(ValueError, match="F = 0"):
        fo.point_to_surface(torch.zeros(4, 3), vertices, faces[:0])


@requires_kernel
def test_many_coincident_and_exponentially_spaced_faces():
    """Inputs that defeat SAH binning: all centroids equal, or spread over
    120 orders of magnitude (the build falls back to median splits)."""
    g = torch.Generator().manual_seed(9)
    same = torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64).expand(1, 2000, 3, 3).reshape(1, 6000, 3)
    faces = torch.arange(6000).view(2000, 3)
    points = random_points(1, 200, seed=10)
    assert_matches_reference(points, same, faces, atol=1e-12, rtol=1e-12)
    scales = torch.logspace(-60, 60, 600, dtype=torch.float64)  # n.n ~ L^4 stays finite
    tri = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    vertices = (tri[None] * scales[:, None, None] + scales[:, None, None]).reshape(1, -1, 3)
    faces = torch.arange(1800).view(600, 3)
    points = torch.cat([vertices[:, ::5] * 1.01, random_points(1, 100, seed=12)], 1)
    assert_matches_reference(points, vertices, faces, atol=0, rtol=1e-12)


@requires_kernel
def test_matches_trimesh_on_a_real_scale_mesh():
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("rtree", reason="trimesh.proximity needs rtree")
    from facegeom.testing import head_mesh, near_surface_queries, uniform_queries

    vertices, faces = head_mesh(9976, dtype=torch.float64)  # metres, FLAME's face count
    points = torch.cat([near_surface_queries(vertices, faces, 200), uniform_queries(vertices, 100)])
    mesh = trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False)
    closest, distance, _ = trimesh.proximity.closest_point(mesh, points.numpy())
    theirs = torch.from_numpy(distance)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-6)):  # metres; the head is 0.2 m
        dist2, face_index, bary = fo.point_to_surface(points.to(dtype), vertices.to(dtype), faces)
        ours = dist2.double().sqrt()
        # Never farther than trimesh's answer, and the same on the vast majority.
        assert (ours <= theirs + tol).all()
        agree = (ours - theirs).abs() <= tol
        assert agree.float().mean() > 0.9
        # Where trimesh's answer is farther (its candidate search missed the
        # closest face), the float64 brute force confirms ours.
        ref_dist2, _, _ = reference.point_to_surface(points[~agree][None], vertices[None], faces)
        torch.testing.assert_close(ours[~agree], ref_dist2[0].sqrt(), atol=tol, rtol=0)
        if dtype == torch.float64:  # (float32 rounding can pick another of two near-tied faces)
            ours_closest = closest_from(vertices[None], faces, face_index[None], bary[None])[0]
            apart = (ours_closest - torch.from_numpy(closest)).norm(dim=-1) > tol * 10
            # The closest points agree except at near-ties: a second face, other than ours, lies
            # within tol of the best distance (trimesh then may report a point on it; its
            # distance is no smaller than ours, checked above). The brute force confirms each tie.
            for i in (agree & apart).nonzero().flatten().tolist():
                others = torch.ones(len(faces), dtype=torch.bool)
                others[face_index[i]] = False
                second, _, _ = reference.point_to_surface(points[i][None, None], vertices[None], faces[others])
                assert second[0, 0].sqrt() - ours[i] <= tol, f"point {i}: closest points differ without a tie"
            assert (agree & apart).float().mean() < 0.01


@requires_kernel
def test_cached_topology_stays_exact_when_the_vertices_change():
    """Topologies are cached by the faces; a later call with the same faces and
    very different vertices (the cached tree is then poor, and rebuilt) or
    slightly moved ones (refit only) still gives the brute-force answer."""
    vertices, faces = sphere(2)
    points = random_points(1, 300, seed=60)
    assert_matches_reference(points, vertices[None], faces, atol=1e-12, rtol=1e-12)
    g = torch.Generator().manual_seed(61)
    shuffled = vertices[torch.randperm(len(vertices), generator=g)]  # same faces, scrambled surface
    assert_matches_reference(points, shuffled[None], faces, atol=1e-12, rtol=1e-12)
    moved = vertices + 0.01 * torch.randn(vertices.shape, generator=g, dtype=torch.float64)
    assert_matches_reference(points, moved[None], faces, atol=1e-12, rtol=1e-12)
    assert_matches_reference(points, torch.zeros_like(vertices)[None], faces, atol=1e-12, rtol=1e-12)
    assert_matches_reference(points, vertices[None], faces, atol=1e-12, rtol=1e-12)


@requires_kernel
def test_nan_points_give_nan_and_no_face():
    vertices, faces = sphere(1)
    points = torch.tensor([[[0.0, 0, 2], [float("nan"), 0, 0]]], dtype=torch.float64)
    dist2, face_index, _ = fo.point_to_surface(points, vertices, faces)
    assert torch.isfinite(dist2[0, 0]) and torch.isnan(dist2[0, 1])
    assert face_index[0, 0] >= 0 and face_index[0, 1] == -1


@requires_kernel
def test_results_do_not_depend_on_thread_count_or_layout():
    vertices, faces = random_soup(300, 600, batch=2, seed=13)
    points = random_points(2, 3000, seed=14).requires_grad_()
    verts = vertices.clone().requires_grad_()
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            dist2, face_index, bary = fo.point_to_surface(points, verts, faces)
            grads = torch.autograd.grad((dist2 * torch.linspace(0, 1, 3000)).sum(), (points, verts))
            outs.append((dist2, face_index, bary) + grads)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    # non-contiguous inputs and int32 faces give the same answer
    strided = points.detach().transpose(0, 1).contiguous().transpose(0, 1)
    again = fo.point_to_surface(strided, vertices.transpose(1, 2).contiguous().transpose(1, 2),
                                faces.int())
    for a, b in zip(again, outs[0][:3]):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- #
# Gradients, registration, compile                                            #
# --------------------------------------------------------------------------- #

def generic_case(batch=2, shared=False):
    """Small inputs away from ties and region boundaries (so dist2 is smooth there)."""
    vertices, faces = random_soup(6, 4, batch=1 if shared else batch, seed=21)
    points = random_points(batch, 5, seed=22)
    return points.requires_grad_(), vertices.requires_grad_(), faces


@requires_kernel
@pytest.mark.parametrize("shared", [False, True])
def test_gradcheck(shared):
    points, vertices, faces = generic_case(shared=shared)
    assert torch.autograd.gradcheck(lambda p, v: fo.point_to_surface(p, v, faces)[0], (points, vertices))


@requires_kernel
@pytest.mark.parametrize("shared", [False, True])
def test_gradients_match_reference_autograd(shared):
    vertices, faces = random_soup(50, 80, batch=1 if shared else 3, seed=23)
    points = random_points(3, 200, seed=24)
    weights = torch.rand(3, 200, dtype=torch.float64)
    grads = []
    for fn in (fo.point_to_surface, reference.point_to_surface):
        p, v = points.clone().requires_grad_(), vertices.clone().requires_grad_()
        (fn(p, v, faces)[0] * weights).sum().backward()
        grads.append((p.grad, v.grad))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)


@requires_kernel
def test_opcheck():
    points, vertices, faces = generic_case()
    torch.library.opcheck(ops.point_to_surface, (points, vertices, faces))
    torch.library.opcheck(ops.point_to_surface, (points, vertices[:1], faces))
    dist2, face_index, bary = ops.point_to_surface(points, vertices, faces)
    grad = torch.rand_like(dist2)
    torch.library.opcheck(ops.point_to_surface_backward,
                          (grad, points.detach(), vertices.detach(), faces, face_index, bary))


@requires_kernel
def test_double_backward_raises_clearly():
    points, vertices, faces = generic_case()
    dist2 = fo.point_to_surface(points, vertices, faces)[0]
    (grad_p,) = torch.autograd.grad(dist2.sum(), points, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad_p.sum().backward()


@requires_kernel
def test_face_index_and_bary_are_not_differentiable():
    points, vertices, faces = generic_case()
    _, face_index, bary = fo.point_to_surface(points, vertices, faces)
    assert not face_index.requires_grad and not bary.requires_grad


@requires_kernel
def test_torch_compile_fullgraph():
    points, vertices, faces = generic_case()

    def loss(p, v):
        dist2, _, _ = fo.point_to_surface(p, v, faces)
        return dist2.mean()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(points, vertices), loss(points, vertices))
    got = torch.autograd.grad(compiled(points, vertices), (points, vertices))
    want = torch.autograd.grad(loss(points, vertices), (points, vertices))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


# --------------------------------------------------------------------------- #
# Helpers                                                                     #
# --------------------------------------------------------------------------- #

def test_closest_points_mesh_to_mesh_and_point_to_plane():
    vertices, faces = sphere(2)
    points = random_points(1, 100, seed=30)[0]
    dist2, face_index, bary = fo.point_to_surface(points, vertices, faces)
    closest, index = fo.closest_points(points, vertices, faces)
    assert closest.shape == (100, 3) and torch.equal(index, face_index)
    torch.testing.assert_close(((points - closest) ** 2).sum(-1), dist2)
    # closest points are on the surface: measuring them again gives ~0
    assert fo.point_to_surface(closest, vertices, faces)[0].max() < 1e-28
    # mesh_to_mesh_distance: one-sided, over a's vertices
    shifted = vertices * 1.1
    dist = fo.mesh_to_mesh_distance(shifted, faces, vertices, faces)
    torch.testing.assert_close(dist, fo.point_to_surface(shifted, vertices, faces)[0].sqrt())
    assert fo.mesh_to_mesh_distance(shifted[None], None, vertices, faces).shape == (1, len(vertices))
    # point-to-plane: |signed| <= point-to-surface, equal where the foot is inside a face
    signed, index = fo.point_to_plane_distance(points, vertices, faces)
    assert (signed.abs() <= dist2.sqrt() + 1e-12).all()
    inside = (bary > 1e-6).all(-1)
    torch.testing.assert_close(signed.abs()[inside], dist2.sqrt()[inside])
    outward = (points * closest).sum(-1) > (closest * closest).sum(-1)  # icosphere faces point out
    assert torch.equal((signed > 0)[inside], outward[inside])


def test_helpers_gradients_flow():
    vertices, faces = sphere(1)
    vertices.requires_grad_()
    points = random_points(1, 20, seed=31)[0].requires_grad_()
    closest, _ = fo.closest_points(points, vertices, faces)
    signed, _ = fo.point_to_plane_distance(points, vertices, faces)
    (closest.sum() + signed.sum()).backward()
    assert vertices.grad.abs().sum() > 0 and points.grad.abs().sum() > 0
    # zero-area closest face: residual 0, finite gradient
    flat = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]], requires_grad=True)
    signed, _ = fo.point_to_plane_distance(torch.tensor([[1.0, 1, 0]]), flat, torch.tensor([[0, 1, 2]]))
    signed.sum().backward()
    assert signed.item() == 0 and torch.isfinite(flat.grad).all()


# --------------------------------------------------------------------------- #
# Bad input, fallback                                                         #
# --------------------------------------------------------------------------- #

def test_bad_input_names_the_argument():
    vertices, faces = sphere(1)
    points = torch.zeros(2, 5, 3, dtype=torch.float64)
    with pytest.raises(IndexError, match="faces"):
        fo.point_to_surface(points, vertices, faces.clamp(max=len(vertices)) + 1)
    with pytest.raises(IndexError, match="faces"):
        fo.point_to_surface(points, vertices, faces - 1)
    with pytest.raises(TypeError, match="faces"):
        fo.point_to_surface(points, vertices, faces.double())
    with pytest.raises(ValueError, match="faces"):
        fo.point_to_surface(points, vertices, faces[:, :2])
    with pytest.raises(ValueError, match="points"):
        fo.point_to_surface(torch.zeros(2, 5, 2, dtype=torch.float64), vertices, faces)
    with pytest.raises(ValueError, match="vertices"):
        fo.point_to_surface(points, vertices[None, None], faces)
    with pytest.raises(TypeError, match="vertices"):
        fo.point_to_surface(points, vertices.float(), faces)
    with pytest.raises(TypeError, match="points"):
        fo.point_to_surface(points.long(), vertices, faces)
    with pytest.raises(TypeError, match="points"):
        fo.point_to_surface(points.numpy(), vertices, faces)
    with pytest.raises(ValueError, match="batch sizes"):
        fo.point_to_surface(points, vertices.expand(3, -1, -1), faces)
    with pytest.raises(ValueError, match="vertices.*meta"):
        fo.point_to_surface(points, vertices.to("meta"), faces)
    with pytest.raises(IndexError, match="a_faces"):
        fo.mesh_to_mesh_distance(vertices, faces + 1000, vertices, faces)
    with pytest.raises(IndexError, match="b_faces"):
        fo.mesh_to_mesh_distance(vertices, faces, vertices, faces + 1000)


@requires_kernel
def test_direct_op_calls_are_checked_in_cpp():
    vertices, faces = sphere(1)
    points = torch.zeros(1, 5, 3, dtype=torch.float64)
    with pytest.raises(IndexError, match="faces"):
        ops.point_to_surface(points, vertices[None], faces + 1000)
    with pytest.raises(TypeError, match="faces"):
        ops.point_to_surface(points, vertices[None], faces.int())
    with pytest.raises(ValueError, match="F = 0"):
        ops.point_to_surface(points, vertices[None], faces[:0])
    with pytest.raises(ValueError, match="vertices"):
        ops.point_to_surface(points, vertices, faces)
    dist2, face_index, bary = ops.point_to_surface(points, vertices[None], faces)
    with pytest.raises(IndexError, match="face_index"):
        ops.point_to_surface_backward(dist2, points, vertices[None], faces, face_index + 10**6, bary)


def test_fallback_to_reference_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "AVAILABLE", False)
    monkeypatch.setattr(_native, "IMPORT_ERROR", "simulated")
    monkeypatch.setattr(_native, "_warned", set())
    vertices, faces = sphere(1)
    points = random_points(1, 30, seed=40)
    with pytest.warns(RuntimeWarning, match="reference"):
        dist2, _, _ = fo.point_to_surface(points, vertices, faces)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fo.point_to_surface(points, vertices, faces)  # the warning is given once
    torch.testing.assert_close(dist2, reference.point_to_surface(points, vertices[None], faces)[0])


# --------------------------------------------------------------------------- #
# CUDA vs CPU                                                                 #
# --------------------------------------------------------------------------- #

@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_matches_cpu(dtype, shared):
    vertices, faces = random_soup(500, 1000, batch=1 if shared else 3, dtype=dtype, seed=50)
    points = random_points(3, 5000, dtype=dtype, seed=51)
    cpu = fo.point_to_surface(points, vertices, faces)
    gpu = fo.point_to_surface(points.cuda(), vertices.cuda(), faces.cuda())
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=atol, rtol=atol)
    closest_cpu = closest_from(vertices, faces, cpu[1], cpu[2])
    closest_gpu = closest_from(vertices, faces, gpu[1].cpu(), gpu[2].cpu())
    torch.testing.assert_close(closest_gpu, closest_cpu, atol=math.sqrt(atol), rtol=0)
    grads = []
    for device in ("cpu", "cuda"):
        p = points.to(device).requires_grad_()
        v = vertices.to(device).requires_grad_()
        fo.point_to_surface(p, v, faces.to(device))[0].sum().backward()
        grads.append((p.grad.cpu(), v.grad.cpu()))
    for g, c in zip(grads[1], grads[0]):
        torch.testing.assert_close(g, c, atol=atol * 100, rtol=atol * 100)


@cuda
@pytest.mark.cuda
def test_cuda_opcheck_and_edge_cases():
    points, vertices, faces = generic_case()
    args = (points.detach().cuda().requires_grad_(), vertices.detach().cuda().requires_grad_(), faces.cuda())
    torch.library.opcheck(ops.point_to_surface, args)
    empty = fo.point_to_surface(torch.zeros(0, 3, device="cuda"), torch.zeros(3, 3, device="cuda"),
                                torch.zeros(0, 3, dtype=torch.int64, device="cuda"))
    assert empty[0].shape == (0,)
    nan = fo.point_to_surface(torch.full((1, 3), float("nan"), device="cuda"),
                              torch.eye(3, device="cuda"), torch.tensor([[0, 1, 2]], device="cuda"))
    assert torch.isnan(nan[0]).all() and (nan[1] == -1).all()
