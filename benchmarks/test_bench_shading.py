"""Shading benchmarks (pytest-benchmark): vertex normals -> SH diffuse ("deep3d")
+ Blinn-Phong specular on a BFM-front-sized mesh (35709 vertices, 70789 faces),
kernels vs the pure-PyTorch reference, in one run on the same data. Per-op
groups show where the time goes.

    python -m pytest benchmarks/test_bench_shading.py -q --benchmark-columns=min,median,rounds

Pass your own ``vertices``/``faces`` to ``shading_case`` to measure your mesh.
(No installed peer implements these ops: PyTorch3D and Kaolin are not
dependencies.)
"""
import pytest
import torch

import facegeom.ops as fo
from facegeom.ops import reference

BFM_FRONT_VERTICES, BFM_FRONT_FACES = 35709, 70789


def bfm_sized_mesh(num_vertices=BFM_FRONT_VERTICES, num_faces=BFM_FRONT_FACES, dtype=torch.float32):
    """A curved grid sheet with exactly the BFM front model's vertex and face
    counts and a similar row-by-row vertex order (timings depend on sizes and
    memory order, not on the face's geometry)."""
    cols = 189
    rows = -(-num_vertices // cols)
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    u, v = c.flatten().to(dtype) / cols - 0.5, r.flatten().to(dtype) / rows - 0.5
    vertices = torch.stack([u, v, 0.5 * torch.cos(2 * u) * torch.cos(2 * v)], -1)[:num_vertices]
    quad = (r[:-1, :-1] * cols + c[:-1, :-1]).flatten()
    faces = torch.cat([torch.stack([quad, quad + 1, quad + cols], -1),
                       torch.stack([quad + 1, quad + cols + 1, quad + cols], -1)])
    faces = faces[(faces < num_vertices).all(1)]
    extra = num_faces - faces.shape[0]  # a few more faces to reach the exact count
    if extra > 0:
        faces = torch.cat([faces, faces[:extra].flip(1).roll(1, dims=1)])
    return vertices, faces[:num_faces].contiguous()


def shading_case(batch, requires_grad=False, vertices=None, faces=None, dtype=torch.float32, seed=0):
    if vertices is None:
        vertices, faces = bfm_sized_mesh(dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    num_vertices = vertices.shape[-2]
    rg = lambda t: t.requires_grad_(requires_grad)
    return dict(
        vertices=rg(vertices.expand(batch, -1, -1) + 0.01 * torch.randn(batch, num_vertices, 3, generator=g, dtype=dtype)),
        faces=faces,
        albedo=rg(torch.rand(batch, num_vertices, 3, generator=g, dtype=dtype)),
        sh_coeffs=rg(torch.randn(batch, 9, 3, generator=g, dtype=dtype) * 0.2),
        light_pos=rg(torch.randn(batch, 3, generator=g, dtype=dtype) + torch.tensor([0.0, 0.0, 3.0], dtype=dtype)),
        camera_pos=torch.tensor([0.0, 0.0, 10.0], dtype=dtype).expand(batch, 3).contiguous(),
        specular_albedo=rg(torch.rand(batch, num_vertices, 1, generator=g, dtype=dtype) * 0.3),
        shininess=rg(torch.full((batch,), 20.0, dtype=dtype)),
    )


def shade(ops, case):
    """Per-vertex colour: SH diffuse + Blinn-Phong specular (Deng et al. 2022, eqs. 4-5)."""
    normals = ops.vertex_normals(case["vertices"], case["faces"])
    diffuse = ops.sh_shading(normals, case["albedo"], case["sh_coeffs"], "deep3d")
    specular = ops.blinn_phong(normals, case["vertices"], case["light_pos"], case["camera_pos"],
                               case["specular_albedo"], case["shininess"])
    return diffuse + specular


IMPLEMENTATIONS = {"facegeom": fo, "reference": reference}
OPS = {
    "vertex_normals": lambda ops, c, n: ops.vertex_normals(c["vertices"], c["faces"]),
    "sh_shading": lambda ops, c, n: ops.sh_shading(n, c["albedo"], c["sh_coeffs"], "deep3d"),
    "blinn_phong": lambda ops, c, n: ops.blinn_phong(n, c["vertices"], c["light_pos"], c["camera_pos"],
                                                     c["specular_albedo"], c["shininess"]),
}


def _run(benchmark, fn, case, mode):
    if mode == "forward":
        with torch.no_grad():
            benchmark(fn)
    else:
        leaves = [t for t in case.values() if isinstance(t, torch.Tensor) and t.requires_grad]
        # the per-op cases carry leaves that a given op does not use
        benchmark(lambda: torch.autograd.grad(fn().sum(), leaves, allow_unused=True))


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("batch", [1, 16])
def test_shading_pipeline(benchmark, impl, mode, batch):
    benchmark.group = f"shading B={batch} {mode}"
    case = shading_case(batch, requires_grad=mode != "forward")
    _run(benchmark, lambda: shade(IMPLEMENTATIONS[impl], case), case, mode)


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_shading_op_b16(benchmark, impl, op, mode):
    benchmark.group = f"{op} B=16 {mode}"
    case = shading_case(16, requires_grad=mode != "forward")
    normals = fo.vertex_normals(case["vertices"].detach(), case["faces"]).requires_grad_(mode != "forward")
    if mode != "forward":
        case["normals"] = normals
    _run(benchmark, lambda: OPS[op](IMPLEMENTATIONS[impl], case, normals), case, mode)
