"""antialias: kernel vs the pure-PyTorch reference, the topology builder,
silhouette-move finite differences, gradients, custom-op registration,
torch.compile, bad input and the CUDA back end."""
import math
import warnings

import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.ops import reference
from tests.conftest import cuda, requires_native

ops = torch.ops.facegeom if _native.AVAILABLE else None
TOL = {torch.float64: dict(atol=1e-12, rtol=0), torch.float32: dict(atol=2e-5, rtol=0)}


# --------------------------------------------------------------------------- #
# Scenes                                                                      #
# --------------------------------------------------------------------------- #

def uv_sphere(rings=6, segments=8, dtype=torch.float64):
    """A closed, consistently wound sphere: vertices [V, 3], faces [F, 3] int32."""
    verts = [[0.0, 0.0, 1.0]]
    for r in range(1, rings):
        theta = math.pi * r / rings
        for s in range(segments):
            phi = 2 * math.pi * s / segments
            verts.append([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])
    verts.append([0.0, 0.0, -1.0])
    ring = lambda r, s: 1 + (r - 1) * segments + s % segments
    faces = []
    for s in range(segments):
        faces.append([0, ring(1, s), ring(1, s + 1)])
        for r in range(1, rings - 1):
            a, b, c, d = ring(r, s), ring(r + 1, s), ring(r + 1, s + 1), ring(r, s + 1)
            faces += [[a, b, c], [a, c, d]]
        faces.append([len(verts) - 1, ring(rings - 1, s + 1), ring(rings - 1, s)])
    return torch.tensor(verts, dtype=dtype), torch.tensor(faces, dtype=torch.int32)


def perspective(points, fov_degrees=50.0, near=0.5, far=20.0):
    """OpenGL projection of camera-space points [..., 3] (camera looks down -z) -> clip [..., 4]."""
    f = 1.0 / math.tan(math.radians(fov_degrees) / 2)
    x, y, z = points.unbind(-1)
    return torch.stack([f * x, f * y, (far + near) / (near - far) * z + 2 * far * near / (near - far), -z], -1)


def random_rotation(generator, dtype):
    q = torch.randn(4, generator=generator, dtype=dtype)
    q = q / q.norm()
    w, x, y, z = q
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
    ])


def scene(batch=2, seed=0, dtype=torch.float64):
    """A sphere in front of a background quad, seen by `batch` random cameras,
    plus (fixed in camera space) a triangle with one vertex behind the camera
    (w < 0) and a sliver: pos [B, V, 4], tri [F, 3] int32."""
    g = torch.Generator().manual_seed(seed)
    sphere, faces = uv_sphere(dtype=dtype)
    quad = torch.tensor([[-3.0, -3, -1.5], [3, -3, -1.5], [3, 3, -1.5], [-3, 3, -1.5]], dtype=dtype)
    verts = torch.cat([sphere, quad])
    n = sphere.shape[0]
    # camera space (looking down -z): z = +1 is behind the camera
    behind = torch.tensor([[0.3, -0.2, -2.5], [0.8, 0.4, -2.0], [0.4, 0.1, 1.0]], dtype=dtype)
    sliver = torch.tensor([[-0.9, -0.5, -2.2], [0.2, 0.6, -2.3], [-0.34, 0.075, -2.25]], dtype=dtype)
    faces = torch.cat([faces, torch.tensor([[n, n + 1, n + 2], [n, n + 2, n + 3], [n + 4, n + 5, n + 6],
                                            [n + 7, n + 8, n + 9]], dtype=torch.int32)])
    pos = []
    for _ in range(batch):
        rot = random_rotation(g, dtype)
        moved = verts @ rot.T * 0.9 + torch.randn(3, generator=g, dtype=dtype) * 0.15
        moved = moved + torch.tensor([0.0, 0.0, -4.0], dtype=dtype)
        pos.append(perspective(torch.cat([moved, behind, sliver]), fov_degrees=40.0, near=0.5))
    return torch.stack(pos), faces


def shaded(rast, batch_pos, tri, channels=3, seed=1):
    """A colour image from rast: random per-vertex colours interpolated (background 0)."""
    g = torch.Generator().manual_seed(seed)
    attr = torch.rand(batch_pos.shape[-2], channels, generator=g, dtype=batch_pos.dtype)
    out, _ = reference.interpolate(attr, rast, tri)
    return out


def rasterized_scene(batch=2, resolution=(40, 48), seed=0, dtype=torch.float64, channels=3):
    pos, tri = scene(batch, seed, dtype)
    with torch.no_grad():
        rast, _ = reference.rasterize(pos.double(), tri, resolution)
    rast = rast.to(dtype)
    return shaded(rast, pos, tri, channels), rast, pos, tri


# --------------------------------------------------------------------------- #
# Topology                                                                    #
# --------------------------------------------------------------------------- #

def test_topology_of_small_meshes():
    # two triangles sharing edge (1, 2), wound consistently
    topo = fo.antialias_topology(torch.tensor([[0, 1, 2], [2, 1, 3]], dtype=torch.int32))
    assert topo.dtype == torch.int32
    assert topo.tolist() == [[1, -1, -1], [-1, -1, 0]]
    # inconsistent winding shares the edge just the same
    topo = fo.antialias_topology(torch.tensor([[0, 1, 2], [1, 2, 3]]))
    assert topo.tolist() == [[1, -1, -1], [-1, -1, 0]]
    # an edge of three triangles is non-manifold: no neighbour for any of them
    topo = fo.antialias_topology(torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))
    assert topo.tolist() == [[-1] * 3] * 3
    # a degenerate triangle pairs with nothing and does not spoil its neighbours' edges
    topo = fo.antialias_topology(torch.tensor([[0, 1, 2], [2, 1, 3], [1, 2, 2]]))
    assert topo.tolist() == [[1, -1, -1], [-1, -1, 0], [-1, -1, -1]]
    assert fo.antialias_topology(torch.zeros(0, 3, dtype=torch.int32)).shape == (0, 3)


def test_topology_of_a_closed_mesh_is_complete_and_symmetric():
    _, faces = uv_sphere(rings=7, segments=9)
    topo = fo.antialias_topology(faces)
    assert (topo >= 0).all()
    f = faces.tolist()
    for t in range(len(f)):
        for k in range(3):
            edge = {f[t][(k + 1) % 3], f[t][(k + 2) % 3]}
            holders = [s for s in range(len(f)) if s != t and edge <= set(f[s])]
            assert holders == [int(topo[t, k])]


@requires_native
def test_topology_kernel_matches_reference_on_messy_meshes():
    g = torch.Generator().manual_seed(7)
    _, sphere = uv_sphere(rings=9, segments=11)
    messy = torch.cat([
        sphere,
        torch.randint(0, 30, (400, 3), generator=g, dtype=torch.int32),  # many non-manifold edges
        sphere[:5],  # duplicated faces: their edges become non-manifold
        torch.tensor([[3, 3, 4], [5, 6, 5]], dtype=torch.int32),  # degenerate
    ])
    for tri in (sphere, messy, messy.long()):
        got = fo.antialias_topology(tri)
        assert got.dtype == torch.int32
        assert torch.equal(got, reference.antialias_topology(tri))
    assert (fo.antialias_topology(messy) == -1).any() and (fo.antialias_topology(messy) >= 0).any()


# --------------------------------------------------------------------------- #
# Kernel vs reference                                                         #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_reference(dtype):
    color, rast, pos, tri = rasterized_scene(batch=3, dtype=dtype)
    out = fo.antialias(color, rast, pos, tri)
    want = reference.antialias(color, rast, pos, tri)
    assert out.shape == color.shape and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out, want, **TOL[dtype])
    # the triangle crossing w = 0 and the sliver are on screen, with silhouettes
    num_triangles = tri.shape[0]
    assert (pos[..., 3] < 0).any()
    for face in (num_triangles - 2, num_triangles - 1):
        drawn = rast[..., 3] == face + 1
        assert drawn.any()
        assert (out[drawn] != color[drawn]).any()
    changed = (out != color).any(-1)
    assert changed.sum() > 50  # the scene has plenty of silhouette and occlusion edges


@requires_native
def test_gradients_match_reference():
    color, rast, pos, tri = rasterized_scene(batch=2)
    grad_out = torch.randn_like(color)
    grads = []
    for fn in (fo.antialias, reference.antialias):
        c, p = color.clone().requires_grad_(True), pos.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(fn(c, rast, p, tri), (c, p), grad_out))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    assert grads[0][1].abs().sum() > 0
    assert (grads[0][1][..., 2] == 0).all()  # z/w plays no part in the coverage


@requires_native
def test_shared_pos_and_batch_of_one_broadcast():
    color, rast, pos, tri = rasterized_scene(batch=1)
    color3, rast3 = color.expand(3, -1, -1, -1).contiguous(), rast.expand(3, -1, -1, -1).contiguous()
    want = reference.antialias(color3, rast3, pos.expand(3, -1, -1), tri)
    for shared in (pos[0], pos):  # [V, 4] and [1, V, 4]
        p = shared.clone().requires_grad_(True)
        out = fo.antialias(color3, rast3, p, tri)
        torch.testing.assert_close(out, want, **TOL[torch.float64])
        (grad,) = torch.autograd.grad(out.sum(), p)
        assert grad.shape == shared.shape
    # the shared pos gradient is the sum over the images
    p1 = pos.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(fo.antialias(color, rast, p1, tri).sum(), p1)
    torch.testing.assert_close(grad, 3 * g1, atol=1e-10, rtol=0)


@requires_native
def test_non_contiguous_inputs_and_float32_rast():
    color, rast, pos, tri = rasterized_scene(batch=2)
    want = reference.antialias(color, rast, pos, tri)
    color_nc = color.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)
    pos_nc = pos.transpose(0, 1).contiguous().transpose(0, 1)
    tri_nc = tri.t().contiguous().t()
    assert not color_nc.is_contiguous() and not pos_nc.is_contiguous() and not tri_nc.is_contiguous()
    torch.testing.assert_close(fo.antialias(color_nc, rast, pos_nc, tri_nc.long()), want, **TOL[torch.float64])
    # a float32 rast (what rasterize gives for float32 pos) works with float64 colours
    out = fo.antialias(color, rast.float(), pos, tri)
    torch.testing.assert_close(out, reference.antialias(color, rast.float(), pos, tri), **TOL[torch.float64])


@requires_native
def test_precomputed_topology_gives_the_same_result():
    color, rast, pos, tri = rasterized_scene(batch=1)
    topo = fo.antialias_topology(tri)
    assert torch.equal(fo.antialias(color, rast, pos, tri, topo), fo.antialias(color, rast, pos, tri))


@requires_native
def test_results_do_not_depend_on_thread_count():
    # large enough that the CPU kernels split rows across threads
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(160, 128), dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            c, p = color.clone().requires_grad_(True), pos.clone().requires_grad_(True)
            out = fo.antialias(c, rast, p, tri)
            results.append((out, *torch.autograd.grad(out.square().sum(), (c, p))))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- #
# Behaviour                                                                   #
# --------------------------------------------------------------------------- #

def plane_grid(n=6, extent=1.6, z=0.3, dtype=torch.float64):
    """A flat n x n grid of quads (2n^2 triangles, alternating diagonals) covering
    [-extent, extent]^2 in NDC: pos [V, 4] (w = 1), tri [F, 3]."""
    xs = torch.linspace(-extent, extent, n + 1, dtype=dtype)
    gy, gx = torch.meshgrid(xs, xs, indexing="ij")
    pos = torch.stack([gx, gy, torch.full_like(gx, z), torch.ones_like(gx)], -1).reshape(-1, 4)
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j + 1, (i + 1) * (n + 1) + j
            faces += [[a, b, c], [a, c, d]] if (i + j) % 2 else [[a, b, d], [b, c, d]]
    return pos, torch.tensor(faces, dtype=torch.int32)


@requires_native
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_no_change_across_interior_edges_of_a_surface(impl):
    fn = fo.antialias if impl == "kernel" else reference.antialias
    pos, tri = plane_grid()
    # perspective-tilt the plane: still one surface covering the whole image
    pos = pos.clone()
    pos[:, 3] = 1 + 0.3 * pos[:, 0]
    rast, _ = reference.rasterize(pos, tri, (24, 20))
    assert (rast[..., 3] > 0).all() and len(rast[..., 3].unique()) > 10
    color = shaded(rast, pos[None], tri)
    out = fn(color, rast, pos, tri)
    assert torch.equal(out, color)


@requires_native
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_sub_pixel_triangles_blend_like_one_big_triangle(impl):
    # The same rotated square as 2 triangles and as 2 * 24^2 triangles of a
    # third of a pixel: the walk across the small triangles' shared edges must
    # reach the same silhouette crossings.
    fn = fo.antialias if impl == "kernel" else reference.antialias
    results = []
    for n in (1, 24):
        pos, tri = plane_grid(n=n, extent=0.55)
        c, s = math.cos(0.3), math.sin(0.3)
        pos = pos.clone()
        pos[:, 0], pos[:, 1] = c * pos[:, 0] - s * pos[:, 1] + 0.013, s * pos[:, 0] + c * pos[:, 1] - 0.021
        rast, _ = reference.rasterize(pos, tri, (16, 16))
        mask = (rast[..., 3:] > 0).double()
        results.append((mask, fn(mask, rast, pos, tri)))
    (mask_coarse, coarse), (mask_fine, fine) = results
    assert torch.equal(mask_coarse, mask_fine)
    assert (coarse != mask_coarse).sum() > 20
    torch.testing.assert_close(fine, coarse, atol=1e-9, rtol=0)


@requires_native
def test_only_pixels_next_to_discontinuities_change():
    color, rast, pos, tri = rasterized_scene(batch=2)
    out = fo.antialias(color, rast, pos, tri)
    ids = rast[..., 3]
    differs = torch.zeros_like(ids, dtype=torch.bool)
    differs[:, :, :-1] |= ids[:, :, :-1] != ids[:, :, 1:]
    differs[:, :, 1:] |= ids[:, :, :-1] != ids[:, :, 1:]
    differs[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    differs[:, 1:] |= ids[:, :-1] != ids[:, 1:]
    assert torch.equal(out[~differs], color[~differs])
    assert (out[differs] != color[differs]).any(-1).sum() > 50


@requires_native
@pytest.mark.parametrize("edge", [3.8, 3.6, 4.2, 3.2, 2.95, 5.01])
def test_vertical_edge_over_background_blends_by_box_coverage(edge):
    # A quad covering NDC x < e over the background; its right edge lies at
    # `edge` pixels. Columns whose centre is left of it are covered; the last
    # one, L, has its centre t = edge - (L + 1/2) pixels from the edge.
    width = 8
    e = edge / width * 2 - 1
    pos = torch.tensor([[-3.0, -3.0, 0.0, 1.0], [e, -3.0, 0.0, 1.0], [e, 3.0, 0.0, 1.0],
                        [-3.0, 3.0, 0.0, 1.0]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)
    rast, _ = reference.rasterize(pos, tri, (4, width))
    mask = (rast[..., 3:] > 0).double()
    out = fo.antialias(mask, rast, pos, tri)[0, :, :, 0]
    last = math.floor(edge - 0.5)
    t = edge - (last + 0.5)
    want = torch.zeros(width, dtype=torch.float64)
    want[:last] = 1
    want[last], want[last + 1] = (0.5 + t, 0.0) if t < 0.5 else (1.0, t - 0.5)
    torch.testing.assert_close(out, want.expand(4, -1), atol=1e-12, rtol=0)


def _silhouette_loss(shift, weights, resolution, fn=fo.antialias):
    """Sum of weights * anti-aliased coverage mask of a triangle whose vertex 1 is
    moved by `shift` (NDC x); re-rasterized at every shift, like a real fit."""
    pos = torch.tensor([[[-0.71, -0.62, 0.2, 1.0], [0.5, -0.33, 0.2, 1.0], [-0.1, 0.75, 0.2, 1.3]]],
                       dtype=torch.float64)
    moved = torch.zeros_like(pos)
    moved[0, 1, 0] = 1.0  # vertex 1, x
    pos = pos + shift * moved
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    with torch.no_grad():
        rast, _ = reference.rasterize(pos, tri, resolution)
    mask = (rast[..., 3:] > 0).double()
    return (fn(mask, rast, pos, tri) * weights).sum(), (mask * weights).sum()


@requires_native
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_silhouette_move_matches_finite_differences(impl):
    fn = fo.antialias if impl == "kernel" else reference.antialias
    resolution = (20, 20)
    weights = torch.rand(1, *resolution, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    for shift0 in (torch.rand(5, generator=g, dtype=torch.float64) * 0.2 - 0.1).tolist():
        shift = torch.tensor(shift0, dtype=torch.float64, requires_grad=True)
        loss, _ = _silhouette_loss(shift, weights, resolution, fn)
        (analytic,) = torch.autograd.grad(loss, shift)
        eps = 1e-6
        plus, _ = _silhouette_loss(torch.tensor(shift0 + eps, dtype=torch.float64), weights, resolution, fn)
        minus, _ = _silhouette_loss(torch.tensor(shift0 - eps, dtype=torch.float64), weights, resolution, fn)
        numeric = (plus - minus) / (2 * eps)
        assert abs(float(analytic)) > 1e-2
        assert abs(float(analytic) - float(numeric)) < 1e-6 * max(1.0, abs(float(numeric)))


@requires_native
def test_silhouette_move_is_continuous_where_the_hard_mask_jumps():
    resolution = (16, 16)
    weights = torch.rand(1, *resolution, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    shifts = torch.linspace(-0.15, 0.15, 241, dtype=torch.float64)  # 2.4 pixels in steps of 0.01 px
    soft, hard = zip(*(_silhouette_loss(s, weights, resolution) for s in shifts))
    soft, hard = torch.stack(soft), torch.stack(hard)
    step = float(shifts[1] - shifts[0])
    # the hard mask flips whole pixels; the anti-aliased one moves by at most
    # (edge length in pixels) * (per-pixel weight) * (shift in pixels)
    assert (hard.diff().abs() > 0.05).sum() >= 3
    edge_pixels, pixel = 20.0, 2.0 / resolution[0]
    assert soft.diff().abs().max() < edge_pixels * step / pixel
    assert soft.diff().abs().max() < hard.diff().abs().max() / 3


# --------------------------------------------------------------------------- #
# Gradcheck, custom-op registration, torch.compile                            #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("shared_pos", [False, True])
def test_gradcheck(shared_pos):
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(10, 12), seed=2, channels=2)
    topo = fo.antialias_topology(tri)
    p = pos[0] if shared_pos else pos
    if shared_pos:
        rast = rast[:1].expand(2, -1, -1, -1).contiguous()
    inputs = (color.clone().requires_grad_(True), p.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda c, q: fo.antialias(c, rast, q, tri, topo), inputs, fast_mode=True)
    assert torch.autograd.gradcheck(lambda q: fo.antialias(color, rast, q, tri, topo), inputs[1:])


def _opcheck_cases():
    if not _native.AVAILABLE:
        return []
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(8, 10), channels=2)
    topo = fo.antialias_topology(tri)
    rg = lambda t: t.clone().requires_grad_(True)
    return [
        ("antialias", ops.antialias, (rg(color), rast, rg(pos), tri, topo)),
        ("antialias_shared_pos", ops.antialias, (rg(color), rast, rg(pos[0]), tri, topo)),
        ("antialias_float32", ops.antialias, (rg(color.float()), rast.float(), rg(pos.float()), tri, topo)),
        ("antialias_backward", ops.antialias_backward,
         (torch.randn_like(color), color, rast, pos, tri, topo, [True, True])),
        ("antialias_backward_color_only", ops.antialias_backward,
         (torch.randn_like(color), color, rast, pos, tri, topo, [True, False])),
        ("antialias_topology", ops.antialias_topology, (tri,)),
    ]


@requires_native
@pytest.mark.parametrize("name,op,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


@requires_native
def test_double_backward_raises_clearly():
    color, rast, pos, tri = rasterized_scene(batch=1, resolution=(8, 8))
    p = pos.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fo.antialias(color, rast, p, tri).square().sum(), p, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad.sum().backward()


@requires_native
def test_torch_compile_fullgraph():
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(12, 12), dtype=torch.float32)

    def forward(color, pos):
        return fo.antialias(color * 2, rast, pos, tri).mean((1, 2))  # topology built inside

    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    c, p = color.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    out = compiled(c, p)
    torch.testing.assert_close(out, forward(color, pos))
    grads = torch.autograd.grad(out.sum(), (c, p))
    c2, p2 = color.clone().requires_grad_(True), pos.clone().requires_grad_(True)
    want = torch.autograd.grad(forward(c2, p2).sum(), (c2, p2))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- #
# Bad input, edge cases, fallback                                             #
# --------------------------------------------------------------------------- #

def test_bad_input_names_the_argument():
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(6, 6))
    with pytest.raises(ValueError, match="color"):
        fo.antialias(color[0], rast, pos, tri)
    with pytest.raises(TypeError, match="color"):
        fo.antialias(color.long(), rast, pos, tri)
    with pytest.raises(ValueError, match="rast"):
        fo.antialias(color, rast[:, :, :5], pos, tri)
    with pytest.raises(TypeError, match="rast"):
        fo.antialias(color, rast.int(), pos, tri)
    with pytest.raises(TypeError, match="pos"):
        fo.antialias(color, rast, pos.float(), tri)
    with pytest.raises(ValueError, match="pos"):
        fo.antialias(color, rast, pos[..., :3], tri)
    with pytest.raises(ValueError, match="pos"):
        fo.antialias(color, rast, torch.cat([pos, pos]), tri)
    with pytest.raises(TypeError, match="tri"):
        fo.antialias(color, rast, pos, tri.float())
    with pytest.raises(ValueError, match="tri"):
        fo.antialias(color, rast, pos, tri[:, :2])
    with pytest.raises(IndexError, match="tri"):
        fo.antialias(color, rast, pos, torch.where(tri == 0, pos.shape[1], tri))
    with pytest.raises(IndexError, match="tri"):
        fo.antialias(color, rast, pos, tri - 1)
    with pytest.raises(IndexError, match="rast"):
        fo.antialias(color, rast, pos, tri[:3])  # rast refers to triangles tri no longer has
    with pytest.raises(ValueError, match="topology"):
        fo.antialias(color, rast, pos, tri, fo.antialias_topology(tri)[:-1])
    with pytest.raises(IndexError, match="topology"):
        fo.antialias(color, rast, pos, tri, fo.antialias_topology(tri) + tri.shape[0])
    with pytest.raises(ValueError, match="rast.*meta"):
        fo.antialias(color, rast.to("meta"), pos, tri)


@requires_native
def test_direct_op_calls_are_checked_in_cpp():
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(6, 6))
    topo = fo.antialias_topology(tri)
    with pytest.raises(ValueError, match="rast"):
        ops.antialias(color, rast[:1], pos, tri, topo)
    with pytest.raises(TypeError, match="tri"):
        ops.antialias(color, rast, pos, tri.long(), topo)
    with pytest.raises(ValueError, match="topology"):
        ops.antialias(color, rast, pos, tri, topo[:-1])
    with pytest.raises(TypeError, match="pos"):
        ops.antialias(color, rast, pos.float(), tri, topo)
    # corrupt indices are skipped by the kernel, never read out of bounds
    bad_tri = torch.full_like(tri, 1 << 30)
    bad_topo = torch.full_like(topo, 1 << 30)
    assert torch.equal(ops.antialias(color, rast, pos, bad_tri, topo), color)
    torch.testing.assert_close(ops.antialias(color, rast * torch.tensor([1, 1, 1, 1e6], dtype=rast.dtype),
                                             pos, tri, topo), color)
    assert torch.isfinite(ops.antialias(color, rast, pos, tri, bad_topo)).all()


@requires_native
def test_empty_and_degenerate_inputs():
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(6, 7))
    assert fo.antialias(color[:0], rast[:0], pos[:0], tri).shape == (0, 6, 7, 3)
    assert fo.antialias(color[..., :0], rast, pos, tri).shape == (2, 6, 7, 0)
    # a single row / column: only the pairs that exist
    for sl in (slice(0, 1), slice(None)):
        c, r = color[:, sl, :1].contiguous(), rast[:, sl, :1].contiguous()
        torch.testing.assert_close(fo.antialias(c, r, pos, tri), reference.antialias(c, r, pos, tri))
    # no triangles: nothing to blend
    empty_rast = torch.zeros_like(rast)
    assert torch.equal(fo.antialias(color, empty_rast, pos, tri[:0]), color)
    assert torch.equal(reference.antialias(color, empty_rast, pos, tri[:0]), color)
    # a NaN vertex disables the pairs of its triangles instead of spreading NaN
    nan_pos = pos.clone()
    drawn_face = int(rast[0, ..., 3].max()) - 1
    nan_pos[:, int(tri[drawn_face, 0]), 0] = float("nan")
    out = fo.antialias(color, rast, nan_pos, tri)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference.antialias(color, rast, nan_pos, tri), **TOL[torch.float64])
    # NaN colours stay local to their pixel's blends
    nan_color = color.clone()
    nan_color[0, 0, 0, 0] = float("nan")
    out = fo.antialias(nan_color, rast, pos, tri)
    assert torch.isfinite(out[1]).all()


def test_fallback_to_reference_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "AVAILABLE", False)
    monkeypatch.setattr(_native, "IMPORT_ERROR", "simulated")
    monkeypatch.setattr(_native, "_warned", set())
    color, rast, pos, tri = rasterized_scene(batch=1, resolution=(8, 8))
    with pytest.warns(RuntimeWarning, match="reference"):
        out = fo.antialias(color, rast, pos, tri)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fo.antialias(color, rast, pos, tri)
    torch.testing.assert_close(out, reference.antialias(color, rast, pos, tri))


# --------------------------------------------------------------------------- #
# CUDA                                                                        #
# --------------------------------------------------------------------------- #

@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    color, rast, pos, tri = rasterized_scene(batch=3, resolution=(48, 64), dtype=dtype)
    grad_out = torch.randn_like(color)
    results = []
    for device in ("cpu", "cuda"):
        c = color.to(device).requires_grad_(True)
        p = pos.to(device).requires_grad_(True)
        out = fo.antialias(c, rast.to(device), p, tri.to(device))
        results.append([out, *torch.autograd.grad(out, (c, p), grad_out.to(device))])
    tol = TOL[dtype] if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    for a, b in zip(*results):
        torch.testing.assert_close(b.cpu(), a, **tol)
    # the forward pass and grad_color are gathers: bitwise deterministic on the GPU
    c = color.cuda()
    assert torch.equal(fo.antialias(c, rast.cuda(), pos.cuda(), tri.cuda()), results[1][0].detach())


@cuda
def test_cuda_topology_and_shared_pos():
    color, rast, pos, tri = rasterized_scene(batch=2, resolution=(20, 24))
    assert torch.equal(fo.antialias_topology(tri.cuda()).cpu(), fo.antialias_topology(tri))
    out = fo.antialias(color.cuda(), rast.cuda(), pos[0].cuda(), tri.cuda())
    torch.testing.assert_close(out.cpu(), fo.antialias(color, rast, pos[0], tri), **TOL[torch.float64])
