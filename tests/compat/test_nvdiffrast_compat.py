"""facegeom.compat.nvdiffrast: nvdiffrast-style code runs unchanged after
swapping the import, returns nvdiffrast's tuples, and an nvdiffrast-style
optimisation (fit a cube's vertices to target renders through rasterize ->
interpolate -> antialias, Adam) converges."""
import numpy as np
import pytest
import torch

import facegeom.compat.nvdiffrast as dr  # the only line that differs from nvdiffrast code
import facegeom.ops as fo
from tests.conftest import cuda, requires_native

# --------------------------------------------------------------------------- #
# An nvdiffrast-style script (written after the idiom of nvdiffrast's samples) #
# --------------------------------------------------------------------------- #


def projection(x=0.1, n=1.0, f=50.0):
    return np.array([[n / x, 0, 0, 0],
                     [0, n / x, 0, 0],
                     [0, 0, -(f + n) / (f - n), -(2 * f * n) / (f - n)],
                     [0, 0, -1, 0]]).astype(np.float32)


def translate(x, y, z):
    return np.array([[1, 0, 0, x], [0, 1, 0, y], [0, 0, 1, z], [0, 0, 0, 1]]).astype(np.float32)


def random_rotation(rng):
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w), 0],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w), 0],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y), 0],
                  [0, 0, 0, 1]])
    return r.astype(np.float32)


def transform_pos(mtx, pos):
    t_mtx = torch.from_numpy(mtx).to(pos.device) if isinstance(mtx, np.ndarray) else mtx
    posw = torch.cat([pos, torch.ones([pos.shape[0], 1], device=pos.device)], axis=1)
    return torch.matmul(posw, t_mtx.t())[None, ...]


def render(glctx, mtx, pos, pos_idx, vtx_col, col_idx, resolution):
    pos_clip = transform_pos(mtx, pos)
    rast_out, _ = dr.rasterize(glctx, pos_clip, pos_idx, resolution=[resolution, resolution])
    color, _ = dr.interpolate(vtx_col[None, ...], rast_out, col_idx)
    color = dr.antialias(color, rast_out, pos_clip, pos_idx)
    return color


def cube():
    """Unit cube: 8 corners, 12 outward-wound triangles, a colour per corner."""
    pos = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], np.float32)
    tri = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    col = np.array([[x + 0.5, y + 0.5, z + 0.5] for x, y, z in pos], np.float32) * 0.8 + 0.1
    return pos, tri, col


def fit_cube(device, max_iter=50, resolution=32, seed=0):
    """Optimise perturbed cube corners towards the true cube from random views."""
    rng = np.random.RandomState(seed)
    vtxp, pos_idx, vtxc = cube()
    pos_idx = torch.from_numpy(pos_idx).to(device)
    col_idx = pos_idx
    vtx_pos = torch.from_numpy(vtxp).to(device)
    vtx_col = torch.from_numpy(vtxc).to(device)
    noise = torch.from_numpy(rng.uniform(-0.15, 0.15, size=vtxp.shape).astype(np.float32)).to(device)
    vtx_pos_opt = (vtx_pos + noise).detach().requires_grad_(True)
    glctx = dr.RasterizeCudaContext(device=device)
    optimizer = torch.optim.Adam([vtx_pos_opt], lr=0.01)
    proj = projection(x=0.4)
    errors, losses = [], []
    for it in range(max_iter):
        r_mvp = np.matmul(proj, np.matmul(translate(0, 0, -3.5), random_rotation(rng))).astype(np.float32)
        color = render(glctx, r_mvp, vtx_pos, pos_idx, vtx_col, col_idx, resolution)
        color_opt = render(glctx, r_mvp, vtx_pos_opt, pos_idx, vtx_col, col_idx, resolution)
        loss = torch.mean((color - color_opt) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(float(torch.sqrt(torch.mean((vtx_pos_opt.detach() - vtx_pos) ** 2))))
        losses.append(float(loss.detach()))
    return errors, losses


# --------------------------------------------------------------------------- #
# Tests                                                                       #
# --------------------------------------------------------------------------- #

@requires_native
def test_cube_fit_converges():
    errors, losses = fit_cube("cpu")
    assert all(np.isfinite(errors)) and all(np.isfinite(losses))
    assert errors[-1] < errors[0] / 4, (errors[0], errors[-1])
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 5


@requires_native
def test_silhouette_only_fit_needs_antialias():
    # With a constant colour, interpolate carries no position gradient: only
    # antialias moves the vertices (the reason antialias exists).
    vtxp, tri, _ = cube()
    tri = torch.from_numpy(tri)
    pos = transform_pos(np.matmul(projection(x=0.4), np.matmul(translate(0, 0, -3.5),
                                                              random_rotation(np.random.RandomState(1)))),
                        torch.from_numpy(vtxp)).detach().requires_grad_(True)
    glctx = dr.RasterizeGLContext()
    rast, _ = dr.rasterize(glctx, pos, tri, resolution=[24, 24])
    white, _ = dr.interpolate(torch.ones(1, 8, 1), rast, tri)
    (no_grad,) = torch.autograd.grad(white.sum(), pos, allow_unused=True, retain_graph=True)
    assert no_grad is None or torch.count_nonzero(no_grad) == 0
    (grad,) = torch.autograd.grad(dr.antialias(white, rast, pos, tri).sum(), pos)
    assert torch.count_nonzero(grad) > 0


@requires_native
def test_return_tuples_match_nvdiffrast():
    vtxp, tri, col = cube()
    tri, col = torch.from_numpy(tri), torch.from_numpy(col)
    mvp = np.matmul(projection(x=0.4), np.matmul(translate(0, 0, -3.5), random_rotation(np.random.RandomState(2))))
    pos = transform_pos(mvp, torch.from_numpy(vtxp))
    with pytest.warns(DeprecationWarning):
        gl_contexts = [dr.RasterizeGLContext(output_db=True), dr.RasterizeGLContext(output_db=False)]
    for ctx in [dr.RasterizeCudaContext()] + gl_contexts:
        # nvdiffrast's current release ignores output_db: rast_db always comes out
        rast, rast_db = dr.rasterize(ctx, pos, tri, resolution=[16, 20])
        assert rast.shape == (1, 16, 20, 4) and rast_db.shape == (1, 16, 20, 4)
    rast, rast_db = dr.rasterize(dr.RasterizeCudaContext(), pos, tri, (16, 20))
    out, out_da = dr.interpolate(col[None], rast, tri)
    assert out.shape == (1, 16, 20, 3) and out_da.shape == (1, 16, 20, 0)
    out, out_da = dr.interpolate(col[None], rast, tri, rast_db=rast_db, diff_attrs="all")
    assert out_da.shape == (1, 16, 20, 6)
    out, out_da = dr.interpolate(col, rast, tri, rast_db=rast_db, diff_attrs=[0, 2])
    assert out_da.shape == (1, 16, 20, 4)
    # range mode: pos [V, 4] with ranges
    rast_r, _ = dr.rasterize(dr.RasterizeCudaContext(), pos[0], tri, (16, 20),
                             ranges=torch.tensor([[0, 12], [0, 6]], dtype=torch.int32))
    assert rast_r.shape == (2, 16, 20, 4)
    torch.testing.assert_close(rast_r[:1], rast)
    # antialias: the same result with and without a prebuilt topology hash
    aa = dr.antialias(out, rast, pos, tri)
    topo = dr.antialias_construct_topology_hash(tri)
    assert isinstance(topo, dr.TopologyHashWrapper)
    assert torch.equal(dr.antialias(out, rast, pos, tri, topology_hash=topo), aa)
    torch.testing.assert_close(aa, fo.antialias(out, rast, pos, tri))
    assert aa.shape == out.shape


@requires_native
def test_pos_gradient_boost_scales_only_pos_gradients():
    vtxp, tri, col = cube()
    tri, col = torch.from_numpy(tri), torch.from_numpy(col)
    mvp = np.matmul(projection(x=0.4), np.matmul(translate(0, 0, -3.5), random_rotation(np.random.RandomState(3))))
    pos0 = transform_pos(mvp, torch.from_numpy(vtxp))
    rast, _ = dr.rasterize(dr.RasterizeCudaContext(), pos0, tri, (24, 24))
    color0, _ = dr.interpolate(col[None], rast, tri)
    grads = []
    for boost in (1.0, 2.5):
        pos, color = pos0.clone().requires_grad_(True), color0.clone().requires_grad_(True)
        out = dr.antialias(color, rast, pos, tri, pos_gradient_boost=boost)
        grads.append(torch.autograd.grad(out.square().sum(), (color, pos)))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], 2.5 * grads[0][1])
    assert torch.count_nonzero(grads[0][1]) > 0


def test_contexts_and_bad_arguments():
    # RasterizeGLContext as nvdiffrast's current release: a deprecated RasterizeCudaContext
    # whose output_db / mode are ignored and whose set_context / release_context do nothing.
    with pytest.warns(DeprecationWarning, match="deprecated"):
        gl = dr.RasterizeGLContext(output_db=False, mode="manual")
    assert isinstance(gl, dr.RasterizeCudaContext)
    gl.set_context()
    gl.release_context()
    pos = torch.zeros(1, 3, 4)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    with pytest.raises(TypeError, match="glctx"):
        dr.rasterize(None, pos, tri, (4, 4))
    with pytest.raises(TypeError, match="grad_db"):
        dr.rasterize(dr.RasterizeCudaContext(), pos, tri, (4, 4), grad_db=1)
    with pytest.raises(TypeError, match="resolution must hold ints"):
        dr.rasterize(dr.RasterizeCudaContext(), pos, tri, (4.0, 4))
    with pytest.raises(TypeError, match="device"):
        dr.RasterizeCudaContext(device=1.5)
    rast = torch.zeros(1, 4, 4, 4)
    with pytest.raises(TypeError, match="topology_hash"):
        dr.antialias(torch.zeros(1, 4, 4, 3), rast, pos, tri, topology_hash=object())
    with pytest.raises(ValueError, match="topology_hash"):
        dr.antialias(torch.zeros(1, 4, 4, 3), rast, pos, tri,
                     topology_hash=dr.antialias_construct_topology_hash(torch.cat([tri, tri])))
    with pytest.raises(ValueError, match="rast_db"):
        dr.interpolate(torch.zeros(3, 2), rast, tri, diff_attrs="all")


def test_log_level():
    assert dr.get_log_level() == 1  # nvdiffrast's default
    try:
        dr.set_log_level(3)
        assert dr.get_log_level() == 3
        with pytest.raises(TypeError, match="level"):
            dr.set_log_level("info")
    finally:
        dr.set_log_level(1)


def _triangle():
    pos = torch.tensor([[[-0.8, -0.8, 0, 1], [0.8, -0.8, 0, 1], [-0.8, 0.8, 0, 1]]], requires_grad=True)
    return pos, torch.tensor([[0, 1, 2]], dtype=torch.int32)


@requires_native
def test_resolution_as_numpy_or_tensor_ints():
    pos, tri = _triangle()
    want, _ = dr.rasterize(dr.RasterizeCudaContext(), pos, tri, (12, 16))
    for resolution in (np.array([12, 16]), (np.int64(12), np.int32(16)), torch.tensor([12, 16]),
                       [torch.tensor(12), torch.tensor(16)]):
        got, _ = dr.rasterize(dr.RasterizeCudaContext(), pos, tri, resolution)
        assert torch.equal(got, want)


@requires_native
def test_grad_db_false_passes_a_zero_gradient():
    pos, tri = _triangle()
    _, rast_db = dr.rasterize(dr.RasterizeCudaContext(), pos, tri, (8, 8), grad_db=True)
    (with_db,) = torch.autograd.grad(rast_db.square().sum(), pos)
    assert torch.count_nonzero(with_db) > 0
    _, rast_db = dr.rasterize(dr.RasterizeCudaContext(), pos, tri, (8, 8), grad_db=False)
    assert rast_db.requires_grad  # in the graph, as nvdiffrast's
    (without,) = torch.autograd.grad(rast_db.square().sum(), pos)
    assert torch.count_nonzero(without) == 0


@requires_native
def test_context_device_is_honoured():
    pos, tri = _triangle()
    rast, _ = dr.rasterize(dr.RasterizeCudaContext(device="cpu"), pos, tri, (8, 8))
    assert rast.device.type == "cpu"
    with pytest.raises(ValueError, match="context was created for cuda"):
        dr.rasterize(dr.RasterizeCudaContext(device="cuda:0"), pos, tri, (8, 8))
    with pytest.raises(ValueError, match="context was created for cuda"):
        dr.rasterize(dr.RasterizeCudaContext(device=0), pos, tri, (8, 8))


def _layered_scene():
    """Three overlapping triangles at z/w = -0.2, 0.1, 0.5 (ids 2, 0, 1 front to back)."""
    pos = torch.tensor([[[-0.8, -0.8, 0.1, 1], [0.8, -0.8, 0.1, 1], [-0.8, 0.8, 0.1, 1],
                         [-0.5, -0.5, 0.5, 1], [0.9, -0.5, 0.5, 1], [-0.5, 0.9, 0.5, 1],
                         [-0.9, -0.9, -0.2, 1], [0.2, -0.9, -0.2, 1], [-0.9, 0.2, -0.2, 1]]], dtype=torch.float64)
    return pos, torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=torch.int32)


@requires_native
def test_depth_peeler_returns_the_layers_front_to_back():
    pos, tri = _layered_scene()
    glctx = dr.RasterizeCudaContext()
    with dr.DepthPeeler(glctx, pos, tri, (16, 16)) as peeler:
        with pytest.raises(RuntimeError, match="during depth peeling"):
            dr.rasterize(glctx, pos, tri, (16, 16))
        layers = [peeler.rasterize_next_layer() for _ in range(4)]
    first, _ = dr.rasterize(glctx, pos, tri, (16, 16))  # usable again after the with block
    assert torch.equal(layers[0][0], first)
    ids = [rast[0, ..., 3].long() - 1 for rast, _ in layers]
    # Brute-force per pixel: the triangles covering it sorted by depth.
    covering = [fo.rasterize(pos, tri[i:i + 1], (16, 16))[0][0] for i in range(3)]
    depth = torch.stack([torch.where(c[..., 3] > 0, c[..., 2], torch.tensor(float("inf"), dtype=torch.float64))
                         for c in covering])
    order = depth.argsort(0)
    for k in range(4):
        want = torch.where(depth.sort(0).values[k].isfinite(), order[k], -1) if k < 3 else torch.full_like(ids[3], -1)
        assert torch.equal(ids[k], want), k
    assert (ids[1] >= 0).sum() > 0 and (ids[2] >= 0).sum() > 0
    # The second layer's barycentrics equal rasterizing its triangles alone.
    second = layers[1][0][0]
    for i in range(3):
        mask = ids[1] == i
        torch.testing.assert_close(second[mask][:, :3], covering[i][mask][:, :3])
    # Gradients reach pos through a peeled layer.
    pos_g = pos.clone().requires_grad_(True)
    with dr.DepthPeeler(glctx, pos_g, tri, (16, 16)) as peeler:
        peeler.rasterize_next_layer()
        rast, rast_db = peeler.rasterize_next_layer()
    (grad,) = torch.autograd.grad(rast[..., :3].sum() + rast_db.sum(), pos_g)
    assert torch.count_nonzero(grad[0, 3:6]) > 0
    with pytest.raises(RuntimeError, match="re-enter"):
        with peeler:
            pass


@requires_native
def test_texture_and_mip_wrapper_match_facegeom_ops():
    g = torch.Generator().manual_seed(0)
    tex = torch.rand(1, 16, 16, 3, generator=g)
    uv = torch.rand(2, 6, 6, 2, generator=g)
    uv_da = torch.randn(2, 6, 6, 4, generator=g) * 0.05
    torch.testing.assert_close(dr.texture(tex, uv), fo.texture(tex, uv))
    want = fo.texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear")
    mip = dr.texture_construct_mip(tex)
    assert isinstance(mip, dr.TextureMipWrapper)
    torch.testing.assert_close(dr.texture(tex, uv, uv_da, mip=mip), want)
    # nvdiffrast's mip object: gradients reaching the levels go to tex, as without it.
    grads = []
    for m in (None, mip):
        t = tex.clone().requires_grad_(True)
        dr.texture(t, uv, uv_da, mip=m, filter_mode="linear-mipmap-linear").square().sum().backward()
        grads.append(t.grad)
    torch.testing.assert_close(grads[1], grads[0])
    # A custom stack (list): the levels get their own gradients.
    levels = [level.clone().requires_grad_(True) for level in mip.levels]
    dr.texture(tex, uv, uv_da, mip=levels).sum().backward()
    assert all(level.grad is not None for level in levels)
    # Cube maps and 'auto'.
    env = torch.rand(1, 6, 8, 8, 3, generator=g)
    direction = torch.randn(1, 4, 4, 3, generator=g)
    torch.testing.assert_close(dr.texture(env, direction, boundary_mode="cube"),
                               fo.texture(env, direction, boundary_mode="cube"))
    with pytest.raises(ValueError, match="mip was built for a texture of shape"):
        dr.texture(torch.rand(1, 8, 8, 3), uv, uv_da, mip=mip)
    with pytest.raises(TypeError, match="TextureMipWrapper"):
        dr.texture(tex, uv, uv_da, mip="levels")


@cuda
def test_cube_fit_converges_on_cuda():
    errors, losses = fit_cube("cuda")
    assert errors[-1] < errors[0] / 3
