"""Shading: vertex normals, SH lighting in three conventions, Blinn-Phong.
Kernels vs the reference and vs formulas written out here, known values,
gradients, custom-op registration, torch.compile, degenerate and bad input."""
import math
import warnings

import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.ops import reference
from tests.conftest import cuda, requires_native

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=2e-5, rtol=2e-5)}
CONVENTIONS = ["deep3d", "deca", "irradiance"]
ops = torch.ops.facegeom if _native.AVAILABLE else None
PI = math.pi


def unit_normals(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(*shape, 3, generator=g, dtype=dtype)
    return n / n.norm(dim=-1, keepdim=True)


def sphere_mesh(dtype=torch.float64, subdivisions=2, batch=2, seed=0):
    """A randomly perturbed icosphere (V = 162, F = 320 at 2 subdivisions), batched."""
    trimesh = pytest.importorskip("trimesh")
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(sphere.vertices, dtype=dtype)
    vertices = base * (1 + 0.2 * torch.rand(batch, base.shape[0], 1, generator=g, dtype=dtype))
    return vertices, torch.tensor(sphere.faces, dtype=torch.int64)


def random_scene(batch=2, num_points=50, dtype=torch.float64, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    normals = unit_normals(batch, num_points, dtype=dtype, seed=seed)
    points = torch.randn(batch, num_points, 3, generator=g, dtype=dtype) * 0.3
    light = torch.randn(batch, 3, generator=g, dtype=dtype) + torch.tensor([0, 0, 3.0], dtype=dtype)
    camera = torch.randn(batch, 3, generator=g, dtype=dtype) + torch.tensor([0, 0, 4.0], dtype=dtype)
    albedo = torch.rand(batch, num_points, channels, generator=g, dtype=dtype)
    shininess = torch.rand(batch, generator=g, dtype=dtype) * 20 + 1
    return normals, points, light, camera, albedo, shininess


# --------------------------------------------------------------------------- #
# SH conventions against their formulas, written out independently here       #
# --------------------------------------------------------------------------- #

def deep3d_formula(n):
    # Deep3DFaceRecon_pytorch models/bfm.py: SH.a, SH.c and the Y of compute_color.
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    a0, a1, a2 = PI, 2 * PI / math.sqrt(3.0), 2 * PI / math.sqrt(8.0)
    c0, c1, c2 = 1 / math.sqrt(4 * PI), math.sqrt(3.0) / math.sqrt(4 * PI), 3 * math.sqrt(5.0) / math.sqrt(12 * PI)
    return torch.stack([
        a0 * c0 * torch.ones_like(x),
        -a1 * c1 * y,
        a1 * c1 * z,
        -a1 * c1 * x,
        a2 * c2 * x * y,
        -a2 * c2 * y * z,
        0.5 * a2 * c2 / math.sqrt(3.0) * (3 * z ** 2 - 1),
        -a2 * c2 * x * z,
        0.5 * a2 * c2 * (x ** 2 - y ** 2),
    ], dim=-1)


def deca_formula(n):
    # DECA decalib/utils/renderer.py add_SHlight: sh = [...] * constant_factor.
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    constant_factor = [
        1 / math.sqrt(4 * PI),
        ((2 * PI) / 3) * math.sqrt(3 / (4 * PI)),
        ((2 * PI) / 3) * math.sqrt(3 / (4 * PI)),
        ((2 * PI) / 3) * math.sqrt(3 / (4 * PI)),
        (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
        (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
        (PI / 4) * 3 * math.sqrt(5 / (12 * PI)),
        (PI / 4) * (3 / 2) * math.sqrt(5 / (12 * PI)),
        (PI / 4) * (1 / 2) * math.sqrt(5 / (4 * PI)),
    ]
    sh = torch.stack([x * 0 + 1, x, y, z, x * y, x * z, y * z, x ** 2 - y ** 2, 3 * z ** 2 - 1], dim=-1)
    return sh * torch.tensor(constant_factor, dtype=n.dtype)


def irradiance_formula(n):
    # Ramamoorthi & Hanrahan: real SH (Kaolin's constants) times A0 = pi, A1 = 2pi/3, A2 = pi/4.
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return torch.stack([
        PI * 0.282095 * torch.ones_like(x),
        2 * PI / 3 * -0.488603 * y,
        2 * PI / 3 * 0.488603 * z,
        2 * PI / 3 * -0.488603 * x,
        PI / 4 * 1.092548 * x * y,
        PI / 4 * -1.092548 * y * z,
        PI / 4 * 0.315392 * (3 * z * z - 1),
        PI / 4 * -1.092548 * x * z,
        PI / 4 * 0.546274 * (x * x - y * y),
    ], dim=-1)


FORMULAS = {"deep3d": deep3d_formula, "deca": deca_formula, "irradiance": irradiance_formula}

# +z normal: closed forms of the formulas above.
PLUS_Z = {
    "deep3d": [math.sqrt(PI) / 2, 0, math.sqrt(PI), 0, 0, 0, 1.5 * math.sqrt(5 * PI / 18), 0, 0],
    "deca": [0.5 / math.sqrt(PI), 0, 0, math.sqrt(PI / 3), 0, 0, 0, 0, math.sqrt(5 * PI) / 8],
    "irradiance": [0.282095 * PI, 0, 0.488603 * 2 * PI / 3, 0, 0, 0, 0.315392 * PI / 2, 0, 0],
}


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_sh_basis_matches_formula_float64(convention):
    normals = unit_normals(7, 300)
    want = FORMULAS[convention](normals)
    torch.testing.assert_close(fo.sh_basis(normals, convention), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(reference.sh_basis(normals, convention), want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sh_basis_known_values(convention, dtype):
    plus_z = torch.tensor([0.0, 0.0, 1.0], dtype=dtype)
    want = torch.tensor(PLUS_Z[convention], dtype=dtype)
    torch.testing.assert_close(fo.sh_basis(plus_z, convention), want, **TOL[dtype])
    # -z flips the odd (band 1) terms only
    odd = torch.tensor([1, -1, -1, -1, 1, 1, 1, 1, 1], dtype=dtype)
    torch.testing.assert_close(fo.sh_basis(-plus_z, convention), want * odd, **TOL[dtype])


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_sh_shading_matches_formula_float64(convention):
    normals = unit_normals(3, 40, 5)  # per-pixel style [B, H, W, 3]
    g = torch.Generator().manual_seed(4)
    albedo = torch.rand(3, 40, 5, 3, generator=g, dtype=torch.float64)
    coeffs = torch.randn(3, 9, 3, generator=g, dtype=torch.float64)
    Y = FORMULAS[convention](normals)  # [B, H, W, 9]
    want = albedo * torch.einsum("bhwk,bkc->bhwc", Y, coeffs)
    torch.testing.assert_close(fo.sh_shading(normals, albedo, coeffs, convention), want, atol=1e-12, rtol=0)


def deep3d_compute_color(face_texture, face_norm, gamma):
    """Deep3DFaceRecon_pytorch's ParametricFaceModel.compute_color, step by step:
    gamma [B, 27] -> (B, 3, 9) + init_lit (0.8 on each channel's first
    coefficient) -> (B, 9, 3); Y [B, N, 9]; one matmul per colour channel."""
    batch = gamma.shape[0]
    a = [PI, 2 * PI / math.sqrt(3.0), 2 * PI / math.sqrt(8.0)]
    c = [1 / math.sqrt(4 * PI), math.sqrt(3.0) / math.sqrt(4 * PI), 3 * math.sqrt(5.0) / math.sqrt(12 * PI)]
    init_lit = torch.tensor([0.8, 0, 0, 0, 0, 0, 0, 0, 0], dtype=gamma.dtype).reshape(1, 1, -1)
    gamma = gamma.reshape(batch, 3, 9) + init_lit
    gamma = gamma.permute(0, 2, 1)  # [B, 9, 3]
    nx, ny, nz = face_norm[..., :1], face_norm[..., 1:2], face_norm[..., 2:]
    Y = torch.cat([
        a[0] * c[0] * torch.ones_like(nx),
        -a[1] * c[1] * ny,
        a[1] * c[1] * nz,
        -a[1] * c[1] * nx,
        a[2] * c[2] * nx * ny,
        -a[2] * c[2] * ny * nz,
        0.5 * a[2] * c[2] / math.sqrt(3.0) * (3 * nz ** 2 - 1),
        -a[2] * c[2] * nx * nz,
        0.5 * a[2] * c[2] * (nx ** 2 - ny ** 2),
    ], dim=-1)
    r = Y @ gamma[..., :1]
    g = Y @ gamma[..., 1:2]
    b = Y @ gamma[..., 2:]
    return torch.cat([r, g, b], dim=-1) * face_texture


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deep3d_face_color_fixture(dtype):
    vertices, faces = sphere_mesh(dtype, batch=2)
    g = torch.Generator().manual_seed(7)
    gamma = (torch.randn(2, 27, generator=g, dtype=dtype) * 0.2)
    texture = torch.rand(2, vertices.shape[1], 3, generator=g, dtype=dtype)
    normals = fo.vertex_normals(vertices, faces)
    want = deep3d_compute_color(texture, normals, gamma)
    coeffs = gamma.reshape(2, 3, 9).transpose(1, 2).clone()
    coeffs[:, 0, :] += 0.8
    got = fo.sh_shading(normals, texture, coeffs, "deep3d")
    torch.testing.assert_close(got, want, **TOL[dtype])


# --------------------------------------------------------------------------- #
# Vertex normals                                                              #
# --------------------------------------------------------------------------- #

def test_vertex_normals_known_values():
    # Octahedron: by symmetry the normal at +-e_i is +-e_i.
    verts = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                          [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    torch.testing.assert_close(fo.vertex_normals(verts, faces), verts, atol=1e-14, rtol=0)
    # Area weighting: vertex 0 is shared by a triangle of area 2 in z = 0 (normal +z)
    # and one of area 0.5 in x = 0 (normal +x): normal ∝ (0.5, 0, 2).
    verts = torch.tensor([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 1, 0], [0, 0, 1.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 3, 4]])
    want = torch.tensor([0.5, 0, 2.0], dtype=torch.float64) / math.sqrt(4.25)
    torch.testing.assert_close(fo.vertex_normals(verts, faces)[0], want, atol=1e-14, rtol=0)


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_vertex_normals_match_reference_with_gradients(dtype, index_dtype):
    vertices, faces = sphere_mesh(dtype, batch=3)
    faces = faces.to(index_dtype)
    vertices.requires_grad_(True)
    weights = torch.randn(vertices.shape, dtype=dtype)
    got = fo.vertex_normals(vertices, faces)
    want = reference.vertex_normals(vertices, faces)
    torch.testing.assert_close(got, want, **TOL[dtype])
    (g_got,) = torch.autograd.grad((got * weights).sum(), vertices)
    (g_want,) = torch.autograd.grad((want * weights).sum(), vertices)
    torch.testing.assert_close(g_got, g_want, **TOL[dtype])
    assert fo.vertex_normals(vertices[0], faces).shape == vertices.shape[1:]


@requires_native
def test_vertex_normals_gradcheck():
    vertices, faces = sphere_mesh(batch=2, subdivisions=0)  # V = 12, F = 20
    vertices.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: fo.vertex_normals(v, faces), (vertices,))


def test_vertex_normals_degenerate_cases_are_nan_free():
    verts = torch.tensor([
        [0, 0, 0], [1, 0, 0], [0, 1, 0],   # a proper triangle
        [2, 2, 2], [3, 3, 3], [4, 4, 4],   # collinear: zero area
        [5, 5, 5],                         # isolated
        [0, 0, 1], [1, 0, 1], [0, 1, 1],   # a triangle and its reverse: normals cancel
    ], dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [7, 8, 9], [7, 9, 8], [0, 0, 0]])
    for fn in (fo.vertex_normals, reference.vertex_normals):
        normals = fn(verts, faces)
        assert torch.isfinite(normals).all()
        torch.testing.assert_close(normals[:3], torch.tensor([[0, 0, 1.0]] * 3, dtype=torch.float64))
        assert (normals[3:] == 0).all()  # zero-area, isolated and cancelling give exactly zero
        (grad,) = torch.autograd.grad(normals.sum(), verts)
        assert torch.isfinite(grad).all()
        assert (grad[3:] == 0).all()


@requires_native
def test_results_deterministic_across_thread_counts():
    vertices, faces = sphere_mesh(torch.float32, subdivisions=4, batch=2)  # V = 2562, F = 5120
    _, _, light, camera, albedo, shininess = random_scene(2, vertices.shape[1], torch.float32)
    coeffs = torch.randn(2, 9, 3)
    leaves = [t.requires_grad_(True) for t in (vertices, light, albedo, shininess, coeffs)]
    weights = torch.randn(vertices.shape)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            normals = fo.vertex_normals(vertices, faces)
            out = (fo.sh_shading(normals, albedo, coeffs, "deca")
                   + fo.blinn_phong(normals, vertices, light, camera, albedo, shininess))
            grads = torch.autograd.grad((out * weights).sum(), leaves)
            results.append((out,) + grads)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@requires_native
def test_non_contiguous_inputs_and_other_index_dtypes():
    vertices, faces = sphere_mesh(batch=2, subdivisions=1)
    strided = vertices.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not strided.is_contiguous()
    want = reference.vertex_normals(vertices, faces)
    torch.testing.assert_close(fo.vertex_normals(strided, faces.t().contiguous().t()), want)
    torch.testing.assert_close(fo.vertex_normals(vertices, faces.to(torch.int16)), want)
    normals = unit_normals(2, 40, 2)[:, :, 0]  # every other row: non-contiguous
    g = torch.Generator().manual_seed(8)
    albedo = torch.rand(2, 40, 6, generator=g, dtype=torch.float64)[..., ::2]
    coeffs = torch.randn(2, 3, 9, generator=g, dtype=torch.float64).transpose(1, 2)
    torch.testing.assert_close(fo.sh_shading(normals, albedo, coeffs, "deca"),
                               reference.sh_shading(normals, albedo, coeffs, "deca"))
    scene = list(random_scene(2, 40))
    scene[1] = scene[1].transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(fo.blinn_phong(*scene), reference.blinn_phong(*scene))


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("scale", [1e-30, 1e-15, 1e15])
def test_vertex_normals_tiny_and_huge_coordinates_float32(scale, impl):
    # Squared lengths of the sums would under/overflow float32 at 1e-15 and 1e15;
    # at 1e-30 the cross products themselves underflow (documented: zero normal,
    # zero gradient).
    fn = fo.vertex_normals if impl == "kernel" else reference.vertex_normals
    vertices, faces = sphere_mesh(torch.float32, batch=1, subdivisions=1)
    scaled = (vertices * scale).requires_grad_(True)
    normals = fn(scaled, faces)
    (grad,) = torch.autograd.grad(normals.sum(), scaled)
    assert torch.isfinite(normals).all() and torch.isfinite(grad).all()
    if scale < 1e-20:
        assert (normals == 0).all() and (grad == 0).all()
    else:
        torch.testing.assert_close(normals, fo.vertex_normals(vertices, faces), atol=1e-5, rtol=0)
        (unit_grad,) = torch.autograd.grad(fn(vertices.requires_grad_(True), faces).sum(), vertices)
        torch.testing.assert_close(grad * scale, unit_grad, atol=1e-4, rtol=1e-4)


def test_vertex_normals_empty_inputs():
    vertices, faces = torch.zeros(0, 5, 3), torch.tensor([[0, 1, 2]])
    assert fo.vertex_normals(vertices, faces).shape == (0, 5, 3)
    out = fo.vertex_normals(torch.randn(2, 5, 3), torch.zeros(0, 3, dtype=torch.int64))
    assert out.shape == (2, 5, 3) and (out == 0).all()


# --------------------------------------------------------------------------- #
# SH and Blinn-Phong: kernel vs reference, gradients                          #
# --------------------------------------------------------------------------- #

def assert_grads_match(fn, ref_fn, inputs, dtype):
    inputs = [t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
              for t in inputs]
    got, want = fn(*inputs), ref_fn(*inputs)
    torch.testing.assert_close(got, want, **TOL[dtype])
    weights = torch.randn(got.shape, dtype=dtype)
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    for a, b in zip(torch.autograd.grad((got * weights).sum(), leaves),
                    torch.autograd.grad((want * weights).sum(), leaves)):
        # gradients of shared inputs (coefficients, light, shininess) sum thousands
        # of terms: the tolerance scales with their size
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, atol=TOL[dtype]["atol"] * scale, rtol=TOL[dtype]["rtol"])


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_sh_matches_reference_with_gradients(dtype, convention):
    normals = unit_normals(3, 2500, dtype=dtype)  # > one 1024-point reduction chunk
    g = torch.Generator().manual_seed(1)
    albedo = torch.rand(3, 2500, 3, generator=g, dtype=dtype)
    coeffs = torch.randn(3, 9, 3, generator=g, dtype=dtype)
    assert_grads_match(lambda n: fo.sh_basis(n, convention), lambda n: reference.sh_basis(n, convention),
                       [normals], dtype)
    assert_grads_match(lambda n, a, c: fo.sh_shading(n, a, c, convention),
                       lambda n, a, c: reference.sh_shading(n, a, c, convention),
                       [normals, albedo, coeffs], dtype)


@requires_native
def test_sh_shading_broadcasting():
    normals = unit_normals(4, 30)
    albedo = torch.rand(1, 30, 3, dtype=torch.float64)
    coeffs = torch.randn(4, 9, 3, dtype=torch.float64)
    want = reference.sh_shading(normals, albedo.expand(4, -1, -1), coeffs)
    torch.testing.assert_close(fo.sh_shading(normals, albedo, coeffs), want, **TOL[torch.float64])
    torch.testing.assert_close(fo.sh_shading(normals[:1], albedo, coeffs),
                               reference.sh_shading(normals[:1].expand(4, -1, -1), albedo, coeffs))
    shared = fo.sh_shading(normals[0], albedo[0], coeffs[0])  # [9, 3]: any leading shape
    assert shared.shape == (30, 3)
    torch.testing.assert_close(shared, want[0], **TOL[torch.float64])


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels", [3, 1])
def test_blinn_phong_matches_reference_with_gradients(dtype, channels):
    scene = random_scene(3, 2500, dtype, channels)
    assert_grads_match(fo.blinn_phong, reference.blinn_phong, list(scene), dtype)


@requires_native
def test_blinn_phong_shapes_and_broadcasting():
    normals, points, light, camera, albedo, shininess = random_scene(2, 20)
    want = reference.blinn_phong(normals, points, light, camera, albedo, shininess)
    # unbatched light/camera, float shininess, per-pixel layout, unbatched points
    torch.testing.assert_close(fo.blinn_phong(normals, points, light[0], camera[0], albedo, 7.5),
                               reference.blinn_phong(normals, points, light[0], camera[0], albedo, 7.5))
    pix = fo.blinn_phong(normals.view(2, 4, 5, 3), points.view(2, 4, 5, 3), light, camera,
                         albedo.view(2, 4, 5, 3), shininess)
    torch.testing.assert_close(pix.view(2, 20, 3), want)
    one = fo.blinn_phong(normals[0], points[0], light[0], camera[0], albedo[0], shininess[0])
    torch.testing.assert_close(one, want[0])
    # unbatched points with a batch of lights broadcast to a batched result
    two = fo.blinn_phong(normals[0], points[0], light, camera[0], albedo[0], shininess[0])
    assert two.shape == (2, 20, 3)
    torch.testing.assert_close(two[1], reference.blinn_phong(normals[0], points[0], light[1], camera[0],
                                                             albedo[0], shininess[0]))
    # a batch of 1 broadcasts
    got = fo.blinn_phong(normals[:1], points[:1], light, camera, albedo[:1], shininess)
    torch.testing.assert_close(got, reference.blinn_phong(normals[:1].expand(2, -1, -1), points[:1].expand(2, -1, -1),
                                                          light, camera, albedo[:1].expand(2, -1, -1), shininess))


@requires_native
def test_sh_and_blinn_phong_gradcheck():
    normals = unit_normals(2, 6).requires_grad_(True)
    albedo = torch.rand(2, 6, 3, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    for convention in CONVENTIONS:
        assert torch.autograd.gradcheck(lambda n: fo.sh_basis(n, convention), (normals,))
        assert torch.autograd.gradcheck(lambda n, a, c: fo.sh_shading(n, a, c, convention),
                                        (normals, albedo, coeffs))
    for channels in (3, 1):
        scene = [t.requires_grad_(True) for t in random_scene(2, 6, channels=channels, seed=3)]
        assert torch.autograd.gradcheck(fo.blinn_phong, scene)


# --------------------------------------------------------------------------- #
# Blinn-Phong: known values and degenerate geometry                           #
# --------------------------------------------------------------------------- #

def test_blinn_phong_known_values():
    n = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    p = torch.zeros(1, 1, 3, dtype=torch.float64)
    camera = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    light = torch.tensor([2.0, 0.0, 2.0], dtype=torch.float64)  # 45 degrees off: h at 22.5 degrees
    albedo = torch.tensor([[[1.0, 0.5, 0.25]]], dtype=torch.float64)
    out = fo.blinn_phong(n, p, light, camera, albedo, 10.0)
    torch.testing.assert_close(out, albedo * math.cos(PI / 8) ** 10, atol=1e-14, rtol=0)


@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_blinn_phong_degenerate_cases_are_nan_free(impl):
    fn = fo.blinn_phong if impl == "kernel" else reference.blinn_phong
    f64 = dict(dtype=torch.float64)
    normals = torch.tensor([[0, 0, 1.0], [0, 0, -1.0], [0, 0, 1.0], [0, 0, 1.0], [0, 0, 1.0], [1.0, 0, 0]], **f64)
    points = torch.tensor([[0, 0, 0.0], [0, 0, 0.0], [0, 0, 4.0], [0, 0, 2.0], [0, 0, 3.0], [0, 0, 0.0]], **f64)
    # 0: lit; 1: n.h < 0; 2: on the camera; 3: on the light; 4: light and view cancel (h = 0);
    # 5: n . h = 0 exactly (grazing)
    light, camera = torch.tensor([0, 0, 2.0], **f64), torch.tensor([0, 0, 4.0], **f64)
    inputs = [t.unsqueeze(0).requires_grad_(True) if t.dim() == 2 else t.requires_grad_(True)
              for t in (normals, points, light, camera)]
    albedo = torch.ones(1, 6, 1, **f64, requires_grad=True)
    shininess = torch.tensor([5.0], **f64, requires_grad=True)
    out = fn(*inputs, albedo, shininess)
    assert torch.isfinite(out).all()
    lobe = out[0, :, 0].detach()
    assert lobe[0] == 1 and lobe[1] == 0 and lobe[4] == 0 and lobe[5] == 0
    # on the camera only the light direction remains (h = l = +z); likewise on the light
    assert lobe[2] == 0 and lobe[3] == 1  # camera at p: h = normalize(l) = -z; light at p: h = +z
    grads = torch.autograd.grad(out.sum(), inputs + [albedo, shininess])
    for grad in grads:
        assert torch.isfinite(grad).all()
    # the shininess gradient (lobe * log(n . h)) of unlit points is 0, not NaN
    assert grads[-1].item() == 0.0  # the only lit points have n . h = 1 exactly
    # shininess 0 gives 1 where lit and 0 where n . h <= 0
    zero = fn(*[t.detach() for t in inputs], albedo.detach(), torch.tensor([0.0], **f64))
    assert zero[0, :, 0].tolist() == [1, 0, 0, 1, 0, 0]


# --------------------------------------------------------------------------- #
# Custom-op registration, torch.compile                                       #
# --------------------------------------------------------------------------- #

def _opcheck_cases():
    if not _native.AVAILABLE:
        return []
    f64 = dict(dtype=torch.float64)
    rg = lambda *s: torch.randn(*s, **f64).requires_grad_(True)
    rn = lambda *s: torch.randn(*s, **f64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [1, 3, 2], [0, 3, 1]])
    scene = random_scene(2, 7, seed=5)
    scene1 = random_scene(2, 7, channels=1, seed=6)
    cases = [
        ("vertex_normals", ops.vertex_normals, (rg(2, 4, 3), faces)),
        ("vertex_normals_int32", ops.vertex_normals, (rg(2, 4, 3), faces.int())),
        ("vertex_normals_backward", ops.vertex_normals_backward,
         (rn(2, 4, 3), rn(2, 4, 3), faces) + ops.vertex_normals(rn(2, 4, 3), faces)),
        ("blinn_phong", ops.blinn_phong, tuple(t.clone().requires_grad_(True) for t in scene)),
        ("blinn_phong_1ch", ops.blinn_phong, tuple(t.clone().requires_grad_(True) for t in scene1)),
        ("blinn_phong_backward", ops.blinn_phong_backward, (rn(2, 7, 3),) + scene + ([True] * 6,)),
        ("blinn_phong_backward_partial", ops.blinn_phong_backward,
         (rn(2, 7, 3),) + scene1 + ([False, True, False, True, False, True],)),
    ]
    for convention in CONVENTIONS:
        cases += [
            (f"sh_basis_{convention}", ops.sh_basis, (rg(5, 3), convention)),
            (f"sh_basis_backward_{convention}", ops.sh_basis_backward, (rn(5, 9), rn(5, 3), convention)),
            (f"sh_shading_{convention}", ops.sh_shading, (rg(2, 5, 3), rg(2, 5, 3), rg(2, 9, 3), convention)),
            (f"sh_shading_backward_{convention}", ops.sh_shading_backward,
             (rn(2, 5, 3), rn(2, 5, 3), rn(2, 5, 3), rn(2, 9, 3), convention, [True, False, True])),
        ]
    return cases


@requires_native
@pytest.mark.parametrize("name,op,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


@requires_native
def test_torch_compile_fullgraph_shading_pipeline():
    vertices, faces = sphere_mesh(torch.float32, batch=2)
    g = torch.Generator().manual_seed(2)
    albedo = torch.rand(vertices.shape, generator=g)
    coeffs = torch.randn(2, 9, 3, generator=g) * 0.3
    light, camera = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 4.0])

    def shade(vertices, coeffs, shininess):
        normals = fo.vertex_normals(vertices, faces)
        diffuse = fo.sh_shading(normals, albedo, coeffs, "deca")
        specular = fo.blinn_phong(normals, vertices, light, camera, albedo[..., :1], shininess)
        return diffuse + specular + fo.sh_basis(normals, "irradiance")[..., :3]

    compiled = torch.compile(shade, fullgraph=True, backend="aot_eager")
    shininess = torch.tensor([8.0, 12.0])
    vertices.requires_grad_(True)
    got = compiled(vertices, coeffs, shininess)
    want = shade(vertices, coeffs, shininess)
    torch.testing.assert_close(got, want)
    (g1,) = torch.autograd.grad(got.sum(), vertices)
    (g2,) = torch.autograd.grad(want.sum(), vertices)
    torch.testing.assert_close(g1, g2)


@requires_native
def test_double_backward_raises_clearly():
    normals = unit_normals(1, 4).requires_grad_(True)
    (grad,) = torch.autograd.grad(fo.sh_basis(normals).square().sum(), normals, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad.sum().backward()


# --------------------------------------------------------------------------- #
# Bad input, fallback, CUDA                                                   #
# --------------------------------------------------------------------------- #

def test_bad_input_names_the_argument():
    v, f = torch.randn(2, 4, 3), torch.tensor([[0, 1, 2]])
    with pytest.raises(IndexError, match="faces"):
        fo.vertex_normals(v, torch.tensor([[0, 1, 4]]))
    with pytest.raises(IndexError, match="faces"):
        fo.vertex_normals(v, torch.tensor([[0, -1, 2]]))
    with pytest.raises(TypeError, match="faces"):
        fo.vertex_normals(v, f.float())
    with pytest.raises(ValueError, match="faces"):
        fo.vertex_normals(v, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="vertices"):
        fo.vertex_normals(torch.randn(2, 4, 2), f)
    with pytest.raises(TypeError, match="vertices"):
        fo.vertex_normals(v.long(), f)
    n = unit_normals(2, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match="convention"):
        fo.sh_basis(n, "pytorch3d")
    with pytest.raises(ValueError, match="normals"):
        fo.sh_basis(torch.randn(5, 4))
    with pytest.raises(ValueError, match="sh_coeffs"):
        fo.sh_shading(n, n, torch.randn(2, 3, 9))
    with pytest.raises(ValueError, match="albedo"):
        fo.sh_shading(n, n[:, :4], torch.randn(2, 9, 3))
    with pytest.raises(TypeError, match="albedo"):
        fo.sh_shading(n, n.double(), torch.randn(2, 9, 3))
    with pytest.raises(ValueError, match="batch sizes"):
        fo.sh_shading(n, n, torch.randn(3, 9, 3))
    scene = list(random_scene(2, 5, torch.float32))
    for index, name, bad in [(2, "light_pos", torch.randn(2, 4)), (3, "camera_pos", torch.randn(2, 2, 3)),
                             (4, "specular_albedo", torch.rand(2, 5, 2)), (1, "points", torch.randn(2, 6, 3)),
                             (5, "shininess", torch.rand(2, 2))]:
        args = list(scene)
        args[index] = bad
        with pytest.raises(ValueError, match=name):
            fo.blinn_phong(*args)
    with pytest.raises(TypeError, match="shininess"):
        fo.blinn_phong(*scene[:5], "shiny")
    with pytest.raises(ValueError, match="light_pos.*meta"):
        fo.blinn_phong(scene[0], scene[1], scene[2].to("meta"), *scene[3:])


@requires_native
def test_direct_op_calls_are_checked_in_cpp():
    v = torch.randn(1, 4, 3)
    with pytest.raises(IndexError, match="faces"):
        ops.vertex_normals(v, torch.tensor([[0, 1, 9]]))
    with pytest.raises(IndexError, match="faces"):
        ops.vertex_normals_backward(v, v, torch.tensor([[0, 1, 9]]), v, v[..., 0])
    with pytest.raises(TypeError, match="faces"):
        ops.vertex_normals(v, torch.tensor([[0, 1, 2]], dtype=torch.int16))
    with pytest.raises(ValueError, match="convention"):
        ops.sh_basis(torch.randn(3, 3), "nope")
    with pytest.raises(ValueError, match="sh_coeffs"):
        ops.sh_shading(torch.randn(2, 3, 3), torch.randn(2, 3, 3), torch.randn(1, 9, 3), "deca")
    with pytest.raises(ValueError, match="specular_albedo"):
        ops.blinn_phong(*[torch.randn(2, 3, 3)] * 2, torch.randn(2, 3), torch.randn(2, 3),
                        torch.randn(2, 3, 2), torch.randn(2))


def test_empty_batches_and_points():
    n = torch.zeros(0, 5, 3)
    assert fo.sh_shading(n, n, torch.zeros(0, 9, 3)).shape == (0, 5, 3)
    assert fo.sh_basis(torch.zeros(0, 3)).shape == (0, 9)
    scene = random_scene(2, 0, torch.float32)
    assert fo.blinn_phong(*scene).shape == (2, 0, 3)


def test_fallback_to_reference_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "AVAILABLE", False)
    monkeypatch.setattr(_native, "IMPORT_ERROR", "simulated")
    monkeypatch.setattr(_native, "_warned", set())
    normals = unit_normals(2, 10)
    coeffs = torch.randn(2, 9, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="reference"):
        out = fo.sh_shading(normals, normals, coeffs, "deca")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fo.sh_shading(normals, normals, coeffs, "deca")
    torch.testing.assert_close(out, reference.sh_shading(normals, normals, coeffs, "deca"))


@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_cpu(dtype):
    vertices, faces = sphere_mesh(dtype, subdivisions=3, batch=2)
    scene = random_scene(2, vertices.shape[1], dtype, seed=9)
    coeffs = torch.randn(2, 9, 3, dtype=dtype)

    def run(device):
        v = vertices.to(device).requires_grad_(True)
        rest = [t.to(device).requires_grad_(True) for t in (scene[2], scene[3], scene[4], scene[5], coeffs)]
        light, camera, albedo, shininess, sh = rest
        normals = fo.vertex_normals(v, faces.to(device))
        out = (fo.sh_shading(normals, albedo, sh, "deep3d") + fo.blinn_phong(normals, v, light, camera, albedo, shininess)
               + fo.sh_basis(normals, "deca")[..., 3:6])
        grads = torch.autograd.grad((out * out).sum(), [v] + rest)
        return [out.detach().cpu()] + [g.cpu() for g in grads]

    for a, b in zip(run("cpu"), run("cuda")):
        torch.testing.assert_close(b, a, **TOL[dtype])
