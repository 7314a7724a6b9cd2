"""point_to_surface benchmarks (pytest-benchmark): facegeom's BVH kernel vs the
installed peers on the same meshes and queries in one run — NVIDIA Warp's
``mesh_query_point_no_sign`` (CPU, and CUDA on a GPU), libigl's
``point_mesh_squared_distance``, Open3D's ``RaycastingScene``, trimesh's
``proximity.closest_point`` (on a subset: it is ~1000x slower) — plus BVH build
and refit times and the scaling with P and F.

    python -m pytest benchmarks/test_bench_point_to_surface.py -q \
        --benchmark-group-by=group --benchmark-columns=min,median,rounds

Meshes are procedural: ``head_mesh`` is a closed, bumpy, head-sized (metres)
surface with FLAME's face count (9976 faces, 4990 vertices), ``head_mesh(100_000)``
the same shape with 100k faces. Queries: surface samples plus Gaussian noise of
1 % of the bounding-box diagonal ("near"), or uniform in the bounding box
("uniform"). Swap in your own mesh and points to measure your data.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.testing import head_mesh, near_surface_queries, uniform_queries

try:
    import warp as wp
except ImportError:  # a benchmark peer, not a dependency
    wp = None
try:
    import igl
except ImportError:
    igl = None
try:
    import open3d
except ImportError:
    open3d = None
try:
    import rtree  # noqa: F401  (trimesh.proximity needs it)
    import trimesh
except ImportError:
    trimesh = None

NUM_QUERIES = 100_000
TRIMESH_QUERIES = 1_000


def queries(vertices, faces, kind: str, count: int = NUM_QUERIES, seed: int = 0):
    """``count`` query points: ``"near"`` the surface (1 % noise) or ``"uniform"`` in its box."""
    if kind == "uniform":
        return uniform_queries(vertices, count, seed)
    return near_surface_queries(vertices, faces, count, noise=0.01, seed=seed)


_MESHES = {}


def case(num_faces: int, kind: str, device: str = "cpu"):
    key = (num_faces, kind)
    if key not in _MESHES:
        vertices, faces = head_mesh(num_faces)
        _MESHES[key] = (vertices, faces, queries(vertices, faces, kind))
    vertices, faces, points = _MESHES[key]
    return vertices.to(device), faces.to(device), points.to(device)


# -- peers -------------------------------------------------------------------- #

if wp is not None:
    wp.config.quiet = True
    wp.init()

    @wp.kernel
    def _warp_closest(mesh: wp.uint64, points: wp.array(dtype=wp.vec3), max_dist: float,
                      dist2: wp.array(dtype=float), face: wp.array(dtype=int)):
        tid = wp.tid()
        hit = wp.mesh_query_point_no_sign(mesh, points[tid], max_dist)
        if hit.result:
            closest = wp.mesh_eval_position(mesh, hit.face, hit.u, hit.v)
            dist2[tid] = wp.length_sq(closest - points[tid])
            face[tid] = hit.face


def warp_runner(vertices, faces, points, device: str):
    """Warp mesh (its BVH is built here, outside the timed call) and a query closure."""
    wp_device = "cpu" if device == "cpu" else "cuda:0"
    mesh = wp.Mesh(points=wp.array(vertices.cpu().numpy(), dtype=wp.vec3, device=wp_device),
                   indices=wp.array(faces.cpu().numpy().astype(np.int32).ravel(), dtype=wp.int32,
                                    device=wp_device))
    pts = wp.array(points.cpu().numpy(), dtype=wp.vec3, device=wp_device)
    dist2 = wp.zeros(len(points), dtype=float, device=wp_device)
    face = wp.zeros(len(points), dtype=int, device=wp_device)

    def run():
        wp.launch(_warp_closest, dim=len(points), inputs=[mesh.id, pts, 1.0e6, dist2, face],
                  device=wp_device)
        wp.synchronize_device(wp_device)
        return dist2

    return run, mesh


def facegeom_runner(vertices, faces, points):
    def run():
        out = fo.point_to_surface(points, vertices, faces)
        if points.is_cuda:
            torch.cuda.synchronize()
        return out

    return run


# -- throughput: 100k queries ------------------------------------------------- #

SIZES = [9976, 100_000]
KINDS = ["near", "uniform"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_faces", SIZES)
@pytest.mark.parametrize("impl", ["facegeom", "warp", "libigl", "open3d", "trimesh"])
def test_point_to_surface_cpu(benchmark, impl, num_faces, kind):
    benchmark.group = f"point_to_surface CPU F={num_faces} {kind} ({NUM_QUERIES} queries)"
    vertices, faces, points = case(num_faces, kind)
    if impl == "facegeom":
        if not _native.AVAILABLE:
            pytest.skip("facegeom._C is not built")
        with torch.no_grad():
            benchmark(facegeom_runner(vertices, faces, points))
    elif impl == "warp":
        if wp is None:
            pytest.skip("warp-lang is not installed")
        run, _mesh = warp_runner(vertices, faces, points, "cpu")
        benchmark(run)
    elif impl == "libigl":
        if igl is None:
            pytest.skip("libigl is not installed")
        v, f, p = vertices.double().numpy(), faces.numpy(), points.double().numpy()
        benchmark(lambda: igl.point_mesh_squared_distance(p, v, f))
    elif impl == "open3d":
        if open3d is None:
            pytest.skip("open3d is not installed")
        scene = open3d.t.geometry.RaycastingScene()
        scene.add_triangles(open3d.core.Tensor(vertices.numpy()),
                            open3d.core.Tensor(faces.numpy().astype(np.uint32)))
        query = open3d.core.Tensor(points.numpy())
        benchmark(lambda: scene.compute_closest_points(query))
    else:
        if trimesh is None:
            pytest.skip("trimesh.proximity needs rtree, which is not installed")
        mesh = trimesh.Trimesh(vertices.double().numpy(), faces.numpy(), process=False)
        subset = points[:TRIMESH_QUERIES].double().numpy()
        benchmark.group += f" [trimesh: first {TRIMESH_QUERIES} queries; scale by {NUM_QUERIES // TRIMESH_QUERIES}]"
        benchmark.pedantic(lambda: trimesh.proximity.closest_point(mesh, subset), rounds=3,
                           iterations=1, setup=lambda: mesh._cache.clear())


# -- BVH build and refit ------------------------------------------------------ #

@pytest.mark.skipif(not _native.AVAILABLE, reason="facegeom._C is not built")
@pytest.mark.parametrize("num_faces", SIZES)
@pytest.mark.parametrize("stage", ["build", "refit B=1", "refit B=16"])
def test_bvh_build_and_refit(benchmark, stage, num_faces):
    benchmark.group = f"BVH build/refit F={num_faces}"
    vertices, faces, _ = case(num_faces, "near")
    ops = torch.ops.facegeom
    if stage == "build":
        benchmark(lambda: ops._bvh_build(vertices[None], faces))
        return
    nodes, order, levels = ops._bvh_build(vertices[None], faces)
    batch = 1 if stage == "refit B=1" else 16
    batched = vertices.expand(batch, -1, -1).contiguous()
    benchmark(lambda: ops._bvh_refit(batched, faces, nodes, order, levels))


# -- scaling with P and F (facegeom and Warp on the same data) ---------------- #

@pytest.mark.skipif(not _native.AVAILABLE, reason="facegeom._C is not built")
@pytest.mark.parametrize("num_points", [10_000, 100_000, 1_000_000])
def test_scaling_with_points(benchmark, num_points):
    benchmark.group = "point_to_surface scaling vs P (F = 9976, near)"
    vertices, faces = head_mesh(9976)
    points = queries(vertices, faces, "near", num_points)
    with torch.no_grad():
        benchmark.pedantic(facegeom_runner(vertices, faces, points), rounds=3, iterations=1)


@pytest.mark.skipif(not _native.AVAILABLE, reason="facegeom._C is not built")
@pytest.mark.parametrize("num_faces", [1_000, 10_000, 100_000, 1_000_000])
def test_scaling_with_faces(benchmark, num_faces):
    benchmark.group = "point_to_surface scaling vs F (P = 100k, near, query only)"
    vertices, faces = head_mesh(num_faces)
    points = queries(vertices, faces, "near")
    benchmark.extra_info["faces"] = len(faces)
    with torch.no_grad():
        benchmark.pedantic(facegeom_runner(vertices, faces, points), rounds=3, iterations=1)


# -- CUDA ---------------------------------------------------------------------- #

@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_faces", SIZES)
@pytest.mark.parametrize("impl", ["facegeom", "warp"])
def test_point_to_surface_cuda(benchmark, impl, num_faces, kind):
    benchmark.group = f"point_to_surface CUDA F={num_faces} {kind} ({NUM_QUERIES} queries)"
    vertices, faces, points = case(num_faces, kind, "cuda")
    if impl == "facegeom":
        with torch.no_grad():
            benchmark(facegeom_runner(vertices, faces, points))
    else:
        if wp is None:
            pytest.skip("warp-lang is not installed")
        run, _mesh = warp_runner(vertices, faces, points, "cuda")
        benchmark(run)
