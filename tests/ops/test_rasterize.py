"""rasterize / interpolate: kernels vs the brute-force float64 reference, an
independent (linear-solve) statement of the coverage rule, watertightness,
near/far and w = 0 handling, gradients (reference autograd, finite
differences), custom-op registration, torch.compile, and bad input."""
import math
import warnings

import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.ops import reference
from facegeom.ops.rasterize import MAX_TRIANGLES_FLOAT32
from tests.conftest import cuda, requires_native

ops = torch.ops.facegeom if _native.AVAILABLE else None
RES = (24, 32)  # non-square, so that H and W cannot be swapped unnoticed


def projection(near=1.0, far=10.0, focal=1.5, dtype=torch.float64):
    """OpenGL-style perspective matrix for a camera looking down +z (depth d > 0 in front):
    z/w = -1 at d = near, +1 at d = far."""
    m = torch.zeros(4, 4, dtype=dtype)
    m[0, 0] = m[1, 1] = focal
    m[2, 2] = (far + near) / (far - near)
    m[2, 3] = -2 * far * near / (far - near)
    m[3, 2] = 1.0
    return m


def random_scene(batch, num_vertices, num_triangles, seed, depth_range=(2.0, 6.0), dtype=torch.float64):
    """Random triangle soups (overlapping and intersecting) seen by randomly posed
    perspective cameras; clip-space pos [B, V, 4] and tri [F, 3] int32."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = depth_range
    points = torch.rand(batch, num_vertices, 3, generator=g, dtype=torch.float64)
    points[..., :2] = (points[..., :2] * 2 - 1) * 2.5
    points[..., 2] = lo + (hi - lo) * points[..., 2]
    # A small random camera rotation about the scene centre per image.
    angles = (torch.rand(batch, 3, generator=g, dtype=torch.float64) - 0.5) * 0.6
    rot = fo.reference.rodrigues(angles)
    centre = torch.tensor([0.0, 0.0, (lo + hi) / 2], dtype=torch.float64)
    cam = (points - centre) @ rot.transpose(1, 2) + centre
    homo = torch.cat([cam, torch.ones_like(cam[..., :1])], -1)
    pos = homo @ projection().T
    tri = torch.randint(0, num_vertices, (num_triangles, 3), generator=g, dtype=torch.int32)
    return pos.to(dtype), tri


def pixel_centres(resolution):
    height, width = resolution
    qx = (torch.arange(width, dtype=torch.float64) + 0.5) / width * 2 - 1
    qy = (torch.arange(height, dtype=torch.float64) + 0.5) / height * 2 - 1
    return qx, qy


def assert_rast_close(rast, ref, rast_db=None, ref_db=None):
    ids, ref_ids = rast[..., 3], ref[..., 3]
    mismatch = (ids != ref_ids).sum().item()
    assert mismatch == 0, f"{mismatch} pixels pick a different triangle than the reference"
    tol = dict(atol=1e-10, rtol=1e-10) if rast.dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rast.double(), ref.double(), **tol)
    if rast_db is not None:
        torch.testing.assert_close(rast_db.double(), ref_db.double(), **tol)


# --------------------------------------------------------------------------- #
# Forward vs reference                                                        #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_matches_reference(dtype, seed):
    pos, tri = random_scene(2, 40, 60, seed, dtype=dtype)
    rast, rast_db = fo.rasterize(pos, tri, RES, grad_db=True)
    ref, ref_db = reference.rasterize(pos.double(), tri, RES, grad_db=True)
    assert rast.dtype == dtype and rast.shape == (2, *RES, 4)
    assert (rast[..., 3] > 0).sum() > 100  # the scene does cover pixels
    assert_rast_close(rast, ref, rast_db, ref_db)
    nothing, none_db = fo.rasterize(pos, tri, RES)
    assert none_db is None
    torch.testing.assert_close(nothing, rast)


@requires_native
def test_rasterize_near_far_and_behind_camera_match_reference():
    # Depths from behind the camera to beyond the far plane: triangles crossing
    # w = 0, the near plane and the far plane.
    pos, tri = random_scene(2, 40, 80, seed=3, depth_range=(-3.0, 14.0))
    assert (pos[..., 3] < 0).any() and (pos[..., 3] > 0).any()
    rast, rast_db = fo.rasterize(pos, tri, RES, grad_db=True)
    ref, ref_db = reference.rasterize(pos, tri, RES, grad_db=True)
    assert_rast_close(rast, ref, rast_db, ref_db)
    drawn = rast[..., 3] > 0
    assert drawn.any()
    assert (rast[..., 2][drawn].abs() <= 1).all()


def _coverage_by_linear_solve(pos, tri, resolution):
    """Independent statement of the rule, per triangle: solve M b' = q for the ray
    through each pixel centre (M = [p0 p1 p2], p = (x, y, w)); the point is on the
    triangle and in front of the camera when b = b' / sum(b') >= 0 and
    w = 1 / sum(b') > 0, and drawn when its z/w lies in [-1, 1]. Returns per
    triangle the mask and min |b_i| (the distance to a tie)."""
    qx, qy = pixel_centres(resolution)
    q = torch.stack(torch.broadcast_tensors(qx[None, :], qy[:, None], torch.ones(1, dtype=torch.float64)), -1)
    masks, margins = [], []
    for t in tri.long():
        corners = pos[t].double()  # [3, 4]
        m = corners[:, [0, 1, 3]].T  # columns are the vertices
        if torch.linalg.det(m) == 0:  # zero projected area: never drawn
            masks.append(torch.zeros(resolution, dtype=torch.bool))
            margins.append(torch.full(resolution, math.inf, dtype=torch.float64))
            continue
        b_raw = torch.linalg.solve(m, q.reshape(-1, 3).T).T.reshape(*resolution, 3)
        total = b_raw.sum(-1, keepdim=True)
        b = b_raw / total
        depth = (b * corners[:, 2]).sum(-1) / (b * corners[:, 3]).sum(-1)
        masks.append((b >= 0).all(-1) & (total[..., 0] > 0) & (depth >= -1) & (depth <= 1))
        margins.append(torch.minimum(b.abs().amin(-1), (depth.abs() - 1).abs()))
    return torch.stack(masks), torch.stack(margins)


@requires_native
def test_coverage_follows_the_stated_rule_for_triangles_crossing_w0():
    """Each triangle alone (range mode): where the solve is unambiguous, coverage
    must agree, and every drawn pixel's surface point must project to the pixel
    centre from in front of the camera."""
    pos, tri = random_scene(1, 30, 40, seed=5, depth_range=(-4.0, 13.0))
    pos = pos[0]
    crossing = ((pos[tri.long(), 3] > 0).any(1) & (pos[tri.long(), 3] < 0).any(1)).sum()
    assert crossing >= 5
    ranges = torch.stack([torch.arange(40), torch.ones(40, dtype=torch.int64)], 1).int()
    rast, _ = fo.rasterize(pos, tri, RES, ranges=ranges)
    expected, margin = _coverage_by_linear_solve(pos, tri, RES)
    drawn = rast[..., 3] > 0
    clear = margin > 1e-9
    assert (drawn[clear] == expected[clear]).all()
    assert drawn.sum() > 200
    # The surface point behind each drawn pixel.
    qx, qy = pixel_centres(RES)
    n, y, x = torch.nonzero(drawn, as_tuple=True)
    u, v = rast[n, y, x, 0], rast[n, y, x, 1]
    corners = pos[tri[n].long()]  # [N, 3, 4]
    point = u[:, None] * corners[:, 0] + v[:, None] * corners[:, 1] + (1 - u - v)[:, None] * corners[:, 2]
    assert (point[:, 3] > 0).all()
    torch.testing.assert_close(point[:, 0] / point[:, 3], qx[x], atol=1e-9, rtol=0)
    torch.testing.assert_close(point[:, 1] / point[:, 3], qy[y], atol=1e-9, rtol=0)
    torch.testing.assert_close(point[:, 2] / point[:, 3], rast[n, y, x, 2], atol=1e-9, rtol=0)


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_range_mode_matches_instanced_and_reference(dtype):
    pos, tri = random_scene(1, 40, 60, seed=7, dtype=dtype)
    pos = pos[0]
    ranges = torch.tensor([[0, 60], [10, 25], [59, 1], [30, 0]], dtype=torch.int32)
    rast, rast_db = fo.rasterize(pos, tri, RES, ranges=ranges, grad_db=True)
    ref, ref_db = reference.rasterize(pos.double(), tri, RES, ranges=ranges, grad_db=True)
    assert rast.shape == (4, *RES, 4)
    assert_rast_close(rast, ref, rast_db, ref_db)
    # Ids are global: the sub-range image equals an instanced render of its slice, shifted.
    sub, _ = fo.rasterize(pos[None], tri[10:35], RES)
    shifted = torch.where(sub[..., 3:] > 0, sub + torch.tensor([0, 0, 0, 10], dtype=dtype), sub)
    torch.testing.assert_close(rast[1:2], shifted)
    assert (rast[3] == 0).all()
    full, _ = fo.rasterize(pos[None], tri, RES)
    torch.testing.assert_close(rast[0:1], full)


@requires_native
def test_depth_test_keeps_nearest_and_lower_id_on_equal_depth():
    quad = torch.tensor([[-0.9, -0.9], [0.9, -0.9], [0.0, 0.9]], dtype=torch.float64)
    pos = torch.zeros(1, 9, 4, dtype=torch.float64)
    for k, z in enumerate([0.5, -0.2, -0.2]):  # far, then two coincident near copies
        pos[0, 3 * k:3 * k + 3, :2] = quad
        pos[0, 3 * k:3 * k + 3, 2] = z
    pos[..., 3] = 1
    tri = torch.arange(9, dtype=torch.int32).view(3, 3)
    rast, _ = fo.rasterize(pos, tri, (16, 16))
    drawn = rast[..., 3] > 0
    assert drawn.sum() > 50
    assert (rast[..., 3][drawn] == 2).all()  # triangle 1: nearest, lower id than its twin
    assert torch.allclose(rast[..., 2][drawn], torch.tensor(-0.2, dtype=torch.float64))
    # Intersecting triangles: each pixel keeps the smaller z/w.
    pos2 = pos.clone()
    pos2[0, 3:6, 2] = torch.tensor([-0.9, 0.9, 0.0], dtype=torch.float64)
    pos2[0, 0:3, 2] = 0.0
    rast2, _ = fo.rasterize(pos2, tri[:2], (16, 16))
    ref2, _ = reference.rasterize(pos2, tri[:2], (16, 16))
    assert_rast_close(rast2, ref2)
    assert set(rast2[..., 3].unique().tolist()) == {0.0, 1.0, 2.0}


@requires_native
def test_non_contiguous_inputs_and_extreme_scales():
    pos, tri = random_scene(2, 40, 60, seed=59, depth_range=(-2.0, 12.0))
    base, base_db = fo.rasterize(pos, tri, RES, grad_db=True)
    wide = torch.zeros(2, 40, 8, dtype=torch.float64)
    wide[..., ::2] = pos
    rast, rast_db = fo.rasterize(wide[..., ::2], tri.t().contiguous().t(), RES, grad_db=True)
    assert torch.equal(rast, base) and torch.equal(rast_db, base_db)
    # Clip coordinates are homogeneous: scaling every one by a power of two
    # (exact) changes nothing, even at 2**+-100 (products reach 2**+-600).
    for scale in (2.0 ** -100, 2.0 ** 100):
        scaled, _ = fo.rasterize(pos * scale, tri, RES)
        assert torch.equal(scaled, base)
    attr = torch.randn(40, 6, dtype=torch.float64)
    out, out_da = fo.interpolate(attr[:, ::2], rast, tri, rast_db, diff_attrs="all")
    ref, ref_da = fo.interpolate(attr[:, ::2].contiguous(), rast, tri, rast_db, diff_attrs="all")
    assert torch.equal(out, ref) and torch.equal(out_da, ref_da)


# --------------------------------------------------------------------------- #
# Ties, watertightness, degenerate input                                      #
# --------------------------------------------------------------------------- #

def _grid_mesh(cells, cell_pixels, resolution, seed, w=1.0):
    """A watertight grid whose vertices lie exactly on pixel centres (every shared
    edge runs through pixel centres), random diagonals, random vertex order per
    triangle (both windings). Returns pos [V, 4], tri [F, 3] and the interior mask."""
    height, width = resolution
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(cells + 1, dtype=torch.float64) * cell_pixels + 2  # pixel index of grid lines
    gx, gy = torch.meshgrid((idx + 0.5) / width * 2 - 1, (idx + 0.5) / height * 2 - 1, indexing="xy")
    pos = torch.stack([gx, gy, torch.zeros_like(gx), torch.ones_like(gx)], -1).reshape(-1, 4) * w
    faces = []
    for r in range(cells):
        for c in range(cells):
            a, b = r * (cells + 1) + c, r * (cells + 1) + c + 1
            d, e = a + cells + 1, b + cells + 1
            pair = [(a, b, e), (a, e, d)] if torch.rand(1, generator=g) < 0.5 else [(a, b, d), (b, e, d)]
            for face in pair:
                k = int(torch.randint(0, 3, (1,), generator=g))
                face = face[k:] + face[:k]
                faces.append(face if torch.rand(1, generator=g) < 0.5 else face[::-1])
    lo, hi = int(idx[0]), int(idx[-1])
    inside = torch.zeros(resolution, dtype=torch.bool)
    inside[lo + 1:hi, lo + 1:hi] = True  # strictly inside the grid's outline
    return pos, torch.tensor(faces, dtype=torch.int32), inside, (lo, hi)


@requires_native
@pytest.mark.parametrize("cell_pixels,w", [(1, 1.0), (2, 1.0), (3, 2.0)])
def test_watertight_grid_covers_every_pixel_exactly_once(cell_pixels, w):
    resolution = (20, 20)
    pos, tri, inside, (lo, hi) = _grid_mesh(5, cell_pixels, resolution, seed=cell_pixels, w=w)
    # Every triangle in its own image: the sum of the coverage masks counts owners.
    ranges = torch.stack([torch.arange(len(tri)), torch.ones(len(tri), dtype=torch.int64)], 1).int()
    rast, _ = fo.rasterize(pos, tri, resolution, ranges=ranges)
    count = (rast[..., 3] > 0).sum(0)
    assert (count[inside] == 1).all(), count
    assert (count <= 1).all()
    assert (count[:lo] == 0).all() and (count[hi + 1:] == 0).all()
    # All at once: one image, every interior pixel drawn, ids match the reference.
    whole, _ = fo.rasterize(pos[None], tri, resolution)
    assert (whole[0, ..., 3][inside] > 0).all()
    ref, _ = reference.rasterize(pos[None], tri, resolution)
    assert_rast_close(whole, ref)


@requires_native
def test_degenerate_edge_on_and_sliver_triangles():
    pos = torch.tensor([
        [-0.8, -0.8, 0.0, 1.0], [0.8, 0.8, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0],   # collinear: zero area
        [0.3, 0.3, 0.1, 1.0],                                                 # repeated vertex
        [-0.5, -0.5, -0.5, 1.0], [0.5, 0.5, 0.5, 3.0], [-0.5, 0.5, 0.1, 1.0],
    ], dtype=torch.float64)
    # Edge-on: a triangle in a plane through the eye (all three projections collinear).
    eye_plane = torch.tensor([[0.2, 0.1, 0.0, 1.0], [0.4, 0.2, 0.3, 2.0], [0.8, 0.4, 0.6, 4.0]], dtype=torch.float64)
    sliver = torch.tensor([[-0.95, -0.9, 0.2, 1.0], [0.95, 0.9, 0.2, 1.0], [0.95, 0.9003, 0.2, 1.0]],
                          dtype=torch.float64)
    pos = torch.cat([pos, eye_plane, sliver])
    tri = torch.tensor([[0, 1, 2], [3, 3, 3], [4, 4, 5], [7, 8, 9], [10, 11, 12]], dtype=torch.int32)
    rast, rast_db = fo.rasterize(pos[None], tri, (64, 64), grad_db=True)
    ref, ref_db = reference.rasterize(pos[None], tri, (64, 64), grad_db=True)
    assert_rast_close(rast, ref, rast_db, ref_db)
    assert set(rast[..., 3].unique().tolist()) <= {0.0, 5.0}  # only the sliver can draw
    assert torch.isfinite(rast).all() and torch.isfinite(rast_db).all()
    # Non-finite coordinates draw nothing instead of garbage.
    bad = pos.clone()
    bad[10, 0] = float("nan")
    bad[11, 1] = float("inf")
    rast, _ = fo.rasterize(bad[None], tri, (64, 64))
    assert (rast == 0).all()


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_slivers_match_reference(dtype):
    """Needle-thin triangles (third vertex within ~1e-3 of an edge) in a random scene."""
    g = torch.Generator().manual_seed(61)
    pos, tri = random_scene(1, 100, 200, seed=61)
    corners = pos[0, tri.long()]  # [200, 3, 4]: unshared vertices
    t = torch.rand(200, 1, generator=g, dtype=torch.float64)
    offset = torch.randn(200, 4, generator=g, dtype=torch.float64) * 1e-3
    corners[:, 2] = corners[:, 0] + t * (corners[:, 1] - corners[:, 0]) + offset
    pos = corners.reshape(1, 600, 4).to(dtype)
    tri = torch.arange(600, dtype=torch.int32).view(200, 3)
    rast, rast_db = fo.rasterize(pos, tri, (48, 64), grad_db=True)
    ref, ref_db = reference.rasterize(pos.double(), tri, (48, 64), grad_db=True)
    assert (rast[..., 3] > 0).sum() > 20
    assert_rast_close(rast, ref, rast_db, ref_db)


@requires_native
def test_known_values_and_conventions():
    # One triangle over the lower-left half: pixel (0, 0) is the bottom-left one.
    pos = torch.tensor([[[-1.0, -1.0, 0.25, 1.0], [1.0, -1.0, 0.25, 1.0], [-1.0, 1.0, 0.25, 1.0]]])
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, rast_db = fo.rasterize(pos, tri, (4, 4), grad_db=True)
    torch.testing.assert_close(rast[0, 0, 0], torch.tensor([0.75, 0.125, 0.25, 1.0]))
    assert rast[0, 3, 3].eq(0).all()  # top-right pixel: background
    # u falls by 2/W * 1/2 per pixel in x, v rises by the same.
    torch.testing.assert_close(rast_db[0, 0, 0], torch.tensor([-0.25, -0.25, 0.25, 0.0]))
    # Perspective-correct: with w = 2 at vertex 1, the screen midpoint of edge 0-1
    # is at one third of the way in clip space.
    pos_p = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [2.0, -2.0, 0.0, 2.0], [-1.0, 1.0, 0.0, 1.0]]],
                         dtype=torch.float64)
    rast, _ = fo.rasterize(pos_p, tri, (64, 64))
    x = 31  # NDC x = -1/64 (just left of 0), on row 0
    u, v = rast[0, 0, x, 0], rast[0, 0, x, 1]
    qx = (x + 0.5) / 32 - 1
    point_x = (u * -1 + v * 2 + (1 - u - v) * -1) / (u + 2 * v + (1 - u - v))
    assert abs(point_x - qx) < 1e-12


# --------------------------------------------------------------------------- #
# Interpolate                                                                 #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batched_attr", [False, True])
def test_interpolate_matches_reference(dtype, batched_attr):
    pos, tri = random_scene(2, 40, 60, seed=11, dtype=dtype)
    rast, rast_db = fo.rasterize(pos, tri, RES, grad_db=True)
    g = torch.Generator().manual_seed(0)
    attr = torch.randn(*((2,) if batched_attr else ()), 40, 5, generator=g, dtype=torch.float64).to(dtype)
    tol = dict(atol=1e-10, rtol=0) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    for diff_attrs in (None, "all", [4, 0, 4]):
        out, out_da = fo.interpolate(attr, rast, tri, rast_db, diff_attrs=diff_attrs)
        ref, ref_da = reference.interpolate(attr, rast, tri, rast_db, diff_attrs=diff_attrs)
        torch.testing.assert_close(out, ref, **tol)
        if diff_attrs is None:
            assert out_da is None and ref_da is None
        else:
            assert out_da.shape == (2, *RES, 2 * (5 if diff_attrs == "all" else 3))
            torch.testing.assert_close(out_da, ref_da, **tol)
    assert (out[rast[..., 3] == 0] == 0).all()
    if not batched_attr:  # a batch of one broadcasts (nvdiffrast's rule)
        torch.testing.assert_close(fo.interpolate(attr[None], rast, tri)[0], fo.interpolate(attr, rast, tri)[0])


@requires_native
def test_interpolate_screen_derivatives_match_finite_differences_in_pixels():
    """out_da is d(attr)/d(pixel): compare with the difference of neighbouring
    pixels for an attribute that is affine in screen space (w = 1)."""
    pos = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [3.0, -1.0, 0.0, 1.0], [-1.0, 3.0, 0.0, 1.0]]],
                       dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, rast_db = fo.rasterize(pos, tri, (8, 8), grad_db=True)
    attr = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]], dtype=torch.float64)
    out, out_da = fo.interpolate(attr, rast, tri, rast_db, diff_attrs="all")
    torch.testing.assert_close(out_da[0, 3, 3, 0], out[0, 3, 4, 0] - out[0, 3, 3, 0])
    torch.testing.assert_close(out_da[0, 3, 3, 1], out[0, 4, 3, 0] - out[0, 3, 3, 0])
    torch.testing.assert_close(out_da[0, 3, 3, 3], out[0, 4, 3, 1] - out[0, 3, 3, 1])


# --------------------------------------------------------------------------- #
# Gradients                                                                   #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("range_mode", [False, True])
def test_rasterize_gradients_match_reference_autograd(range_mode):
    pos, tri = random_scene(2, 40, 60, seed=13, depth_range=(-2.0, 12.0))
    ranges = None
    if range_mode:
        pos, ranges = pos[0], torch.tensor([[0, 60], [20, 30]], dtype=torch.int32)
    pos.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    rast, rast_db = fo.rasterize(pos, tri, RES, ranges=ranges, grad_db=True)
    ref, ref_db = reference.rasterize(pos, tri, RES, ranges=ranges, grad_db=True)
    w_rast = torch.randn(rast.shape, generator=g, dtype=torch.float64)
    w_db = torch.randn(rast.shape, generator=g, dtype=torch.float64)
    for with_db in (False, True):
        loss = (rast * w_rast).sum() + ((rast_db * w_db).sum() if with_db else 0)
        ref_loss = (ref * w_rast).sum() + ((ref_db * w_db).sum() if with_db else 0)
        (grad,) = torch.autograd.grad(loss, pos, retain_graph=True)
        (ref_grad,) = torch.autograd.grad(ref_loss, pos, retain_graph=True)
        torch.testing.assert_close(grad, ref_grad, atol=1e-9, rtol=1e-9)
    assert grad[..., 2].abs().sum() > 0  # z/w carries a gradient


def _clear_of_edges(pos, tri, resolution, margin=1e-3):
    """True when no pixel centre lies within `margin` (in barycentric units) of an
    edge of the triangle drawn there or of one that could take it over."""
    masks, margins = _coverage_by_linear_solve(pos, tri, resolution)
    return bool((margins > margin).all())


@requires_native
def test_gradcheck_rasterize_and_interpolate_away_from_silhouettes():
    # Two overlapping triangles under perspective; pixel centres keep clear of
    # every edge so the finite differences do not flip coverage.
    pos = torch.tensor([[[-0.9, -0.8, 0.1, 1.0], [1.7, -0.7, 0.5, 1.6], [-0.2, 0.95, 0.3, 1.2],
                         [-0.6, 0.7, -0.3, 1.1], [0.2, -0.9, 0.2, 1.3], [0.8, 0.6, 0.4, 1.4]]],
                       dtype=torch.float64, requires_grad=True)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    assert _clear_of_edges(pos[0].detach(), tri, (6, 6), margin=1e-4)
    attr = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)

    def render(pos, attr):
        rast, rast_db = fo.rasterize(pos, tri, (6, 6), grad_db=True)
        out, out_da = fo.interpolate(attr, rast, tri, rast_db, diff_attrs=[0, 2])
        return rast[..., :3], rast_db, out, out_da

    assert (render(pos, attr)[0][..., 0] != 0).sum() > 10
    assert torch.autograd.gradcheck(render, (pos, attr), eps=1e-6, atol=1e-6, fast_mode=True)


@requires_native
def test_interpolate_gradients_match_reference_autograd():
    pos, tri = random_scene(2, 40, 60, seed=17)
    pos.requires_grad_(True)
    attr = torch.randn(2, 40, 4, dtype=torch.float64, requires_grad=True)
    shared = torch.randn(40, 4, dtype=torch.float64, requires_grad=True)
    rast, rast_db = fo.rasterize(pos, tri, RES, grad_db=True)
    g = torch.Generator().manual_seed(2)
    for a in (attr, shared):
        out, out_da = fo.interpolate(a, rast, tri, rast_db, diff_attrs=[1, 3])
        ref, ref_da = reference.interpolate(a, rast, tri, rast_db, diff_attrs=[1, 3])
        w, w_da = torch.randn(out.shape, generator=g, dtype=torch.float64), torch.randn(out_da.shape, generator=g, dtype=torch.float64)
        grads = torch.autograd.grad((out * w).sum() + (out_da * w_da).sum(), (a, pos), retain_graph=True)
        ref_grads = torch.autograd.grad((ref * w).sum() + (ref_da * w_da).sum(), (a, pos), retain_graph=True)
        for got, want in zip(grads, ref_grads):
            torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


@requires_native
def test_results_do_not_depend_on_thread_count():
    pos, tri = random_scene(2, 60, 120, seed=19)
    pos.requires_grad_(True)
    attr = torch.randn(60, 3, dtype=torch.float64, requires_grad=True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            rast, rast_db = fo.rasterize(pos, tri, RES, grad_db=True)
            out, out_da = fo.interpolate(attr, rast, tri, rast_db, diff_attrs="all")
            grads = torch.autograd.grad(out.square().sum() + out_da.sum(), (pos, attr))
            results.append((rast, rast_db, out, *grads))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- #
# Custom-op registration, compile                                             #
# --------------------------------------------------------------------------- #

def _opcheck_cases():
    if not _native.AVAILABLE:
        return []
    pos, tri = random_scene(2, 12, 16, seed=23)
    rast, rast_db = ops.rasterize(pos, tri, 8, 10, None, True)
    attr = torch.randn(12, 3, dtype=torch.float64)
    rn = lambda t: torch.randn_like(t)  # backward ops are first-order: no grad inputs
    ranges = torch.tensor([[0, 16], [4, 6]], dtype=torch.int32)
    rast_r, _ = ops.rasterize(pos[0], tri, 8, 10, ranges, False)
    grad_pos = pos.clone().requires_grad_(True)
    return [
        ("rasterize", ops.rasterize, (grad_pos, tri, 8, 10, None, True)),
        ("rasterize_no_db", ops.rasterize, (grad_pos, tri, 8, 10, None, False)),
        ("rasterize_ranges", ops.rasterize, (grad_pos[0].detach().requires_grad_(True), tri, 8, 10, ranges, False)),
        ("rasterize_backward", ops.rasterize_backward, (rn(rast), rn(rast), pos, tri, rast, None)),
        ("rasterize_backward_ranges", ops.rasterize_backward, (rn(rast_r), None, pos[0], tri, rast_r, ranges)),
        ("interpolate", ops.interpolate, (attr.clone().requires_grad_(True), rast.clone().requires_grad_(True), tri, rast_db.clone().requires_grad_(True), [0, 2])),
        ("interpolate_plain", ops.interpolate, (torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True), rast, tri, None, [])),
        ("interpolate_backward", ops.interpolate_backward,
         (torch.randn(2, 8, 10, 3, dtype=torch.float64), torch.randn(2, 8, 10, 4, dtype=torch.float64), attr, rast, tri, rast_db, [0, 2])),
    ]


@requires_native
@pytest.mark.parametrize("name,op,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


@requires_native
def test_double_backward_raises_clearly():
    pos, tri = random_scene(1, 12, 16, seed=29)
    pos.requires_grad_(True)
    rast, _ = fo.rasterize(pos, tri, (8, 8))
    (grad,) = torch.autograd.grad(rast[..., :3].square().sum(), pos, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad.sum().backward()


@requires_native
def test_torch_compile_fullgraph():
    pos, tri = random_scene(2, 30, 40, seed=31, dtype=torch.float32)
    attr = torch.randn(30, 3)

    def render(pos, attr):
        rast, rast_db = fo.rasterize(pos, tri, (16, 16), grad_db=True)
        out, out_da = fo.interpolate(attr, rast, tri, rast_db, diff_attrs="all")
        return out.sum(-1) + out_da.sum(-1) + rast[..., 2]

    compiled = torch.compile(render, fullgraph=True, backend="aot_eager")
    pos_a, attr_a = pos.clone().requires_grad_(True), attr.clone().requires_grad_(True)
    pos_b, attr_b = pos.clone().requires_grad_(True), attr.clone().requires_grad_(True)
    got, want = compiled(pos_a, attr_a), render(pos_b, attr_b)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(pos_a.grad, pos_b.grad)
    torch.testing.assert_close(attr_a.grad, attr_b.grad)


# --------------------------------------------------------------------------- #
# Bad input, limits, empty input, fallback                                    #
# --------------------------------------------------------------------------- #

def test_bad_input_names_the_argument():
    pos, tri = random_scene(1, 10, 5, seed=37, dtype=torch.float32)
    with pytest.raises(TypeError, match="pos"):
        fo.rasterize(pos.int(), tri, (8, 8))
    with pytest.raises(ValueError, match="pos"):
        fo.rasterize(pos[..., :3], tri, (8, 8))
    with pytest.raises(TypeError, match="tri"):
        fo.rasterize(pos, tri.float(), (8, 8))
    with pytest.raises(ValueError, match="tri"):
        fo.rasterize(pos, tri[:, :2], (8, 8))
    with pytest.raises(IndexError, match="tri"):
        fo.rasterize(pos, tri + 10, (8, 8))
    with pytest.raises(IndexError, match="tri"):
        fo.rasterize(pos, tri - 1 - tri, (8, 8))
    for resolution in [(0, 8), (8, -1), (8,), (8, 20000)]:
        with pytest.raises(ValueError, match="resolution"):
            fo.rasterize(pos, tri, resolution)
    with pytest.raises(TypeError, match="resolution"):
        fo.rasterize(pos, tri, (8.0, 8))
    with pytest.raises(ValueError, match="pos"):
        fo.rasterize(pos, tri, (8, 8), ranges=torch.tensor([[0, 5]], dtype=torch.int32))
    with pytest.raises(IndexError, match="ranges"):
        fo.rasterize(pos[0], tri, (8, 8), ranges=torch.tensor([[3, 5]], dtype=torch.int32))
    with pytest.raises(ValueError, match="ranges"):
        fo.rasterize(pos[0], tri, (8, 8), ranges=torch.tensor([0, 5], dtype=torch.int32))
    with pytest.raises(IndexError, match="ranges"):  # would wrap to (0, 1) as int32
        fo.rasterize(pos[0], tri, (8, 8), ranges=torch.tensor([[2**32, 1]]))
    rast, rast_db = fo.rasterize(pos, tri, (8, 8), grad_db=True)
    attr = torch.randn(10, 3)
    with pytest.raises(TypeError, match="attr"):
        fo.interpolate(attr.double(), rast, tri)
    with pytest.raises(ValueError, match="attr"):
        fo.interpolate(torch.randn(3, 10, 3), rast, tri)
    with pytest.raises(ValueError, match="rast"):
        fo.interpolate(attr, rast[..., :3], tri)
    with pytest.raises(ValueError, match="rast_db"):
        fo.interpolate(attr, rast, tri, diff_attrs="all")
    with pytest.raises(IndexError, match="diff_attrs"):
        fo.interpolate(attr, rast, tri, rast_db, diff_attrs=[3])
    with pytest.raises(TypeError, match="diff_attrs"):
        fo.interpolate(attr, rast, tri, rast_db, diff_attrs="some")
    with pytest.raises(IndexError, match="tri"):
        fo.interpolate(attr[:2], rast, tri)
    with pytest.raises(IndexError, match="triangle id"):
        fo.interpolate(attr, rast, tri[:1])
    with pytest.raises(IndexError, match=r"rast\[\.\.\., 3\]"):  # issue 17: an id, not a value error
        fo.interpolate(attr, torch.full_like(rast, float("nan")), tri)


def test_triangle_count_limit_for_float32_is_an_error():
    pos = torch.zeros(1, 3, 4)
    tri = torch.zeros(1, 3, dtype=torch.int32).expand(MAX_TRIANGLES_FLOAT32 + 1, 3)
    with pytest.raises(ValueError, match="float64"):
        fo.rasterize(pos, tri, (4, 4))


@requires_native
def test_direct_op_calls_are_checked_in_cpp():
    pos, tri = random_scene(1, 10, 5, seed=41)
    with pytest.raises(IndexError, match="tri"):
        ops.rasterize(pos, tri + 100, 8, 8, None, False)
    with pytest.raises(TypeError, match="tri"):
        ops.rasterize(pos, tri.long(), 8, 8, None, False)
    with pytest.raises(ValueError, match="resolution"):
        ops.rasterize(pos, tri, 0, 8, None, False)
    with pytest.raises(IndexError, match="ranges"):
        ops.rasterize(pos[0], tri, 8, 8, torch.tensor([[4, 4]], dtype=torch.int32), False)
    rast, _ = ops.rasterize(pos, tri, 8, 8, None, False)
    with pytest.raises(IndexError, match="diff_attrs"):
        ops.interpolate(torch.randn(10, 2, dtype=torch.float64), rast, tri, rast, [5])
    # A rast that names a triangle tri does not have gives NaN, not a stray read.
    bogus = rast.clone()
    bogus[0, 0, 0, 3] = 1000
    out, _ = ops.interpolate(torch.randn(10, 2, dtype=torch.float64), bogus, tri, None, [])
    assert torch.isnan(out[0, 0, 0]).all()


@requires_native
def test_empty_batch_empty_mesh_and_large_resolution():
    pos, tri = random_scene(2, 10, 5, seed=43, dtype=torch.float32)
    rast, rast_db = fo.rasterize(pos[:0], tri, (8, 8), grad_db=True)
    assert rast.shape == (0, 8, 8, 4) and rast_db.shape == (0, 8, 8, 4)
    pos.requires_grad_(True)
    rast, _ = fo.rasterize(pos, tri[:0], (8, 8))
    assert (rast == 0).all()
    rast.sum().backward()
    assert (pos.grad == 0).all()
    out, _ = fo.interpolate(torch.randn(10, 2), rast, tri[:0])
    assert (out == 0).all()
    # 4096 x 4096 (rast is 2**28 bytes): a half-screen triangle whose diagonal runs
    # through the centres X + Y = 4095, which the tie rule gives to the other side.
    big = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]]])
    rast, _ = fo.rasterize(big, torch.tensor([[0, 1, 2]], dtype=torch.int32), (4096, 4096))
    drawn = rast[0, ..., 3] > 0
    assert int(drawn.sum()) == 4096 * 4095 // 2
    assert bool(drawn[0, 0]) and bool(drawn[4094, 0]) and not bool(drawn[4095, 0])


def test_fallback_to_reference_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "AVAILABLE", False)
    monkeypatch.setattr(_native, "IMPORT_ERROR", "simulated")
    monkeypatch.setattr(_native, "_warned", set())
    pos, tri = random_scene(1, 12, 10, seed=47)
    with pytest.warns(RuntimeWarning, match="reference"):
        rast, _ = fo.rasterize(pos, tri, (8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fo.rasterize(pos, tri, (8, 8))
    torch.testing.assert_close(rast, reference.rasterize(pos, tri, (8, 8))[0])
    with pytest.warns(RuntimeWarning, match="reference"):
        out, _ = fo.interpolate(torch.randn(12, 2, dtype=torch.float64), rast, tri)
    assert out.shape == (1, 8, 8, 2)


# --------------------------------------------------------------------------- #
# CUDA vs CPU                                                                 #
# --------------------------------------------------------------------------- #

@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    pos, tri = random_scene(3, 200, 400, seed=53, depth_range=(-2.0, 12.0), dtype=dtype)
    attr = torch.randn(200, 5, dtype=dtype)
    cpu = fo.rasterize(pos, tri, (48, 64), grad_db=True)
    gpu = fo.rasterize(pos.cuda(), tri.cuda(), (48, 64), grad_db=True)
    assert torch.equal(gpu[0][..., 3].cpu(), cpu[0][..., 3])  # ids bit for bit
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], atol=1e-5, rtol=1e-5)
    ranges = torch.tensor([[0, 400], [100, 50], [399, 1]], dtype=torch.int32)
    cpu_r, _ = fo.rasterize(pos[0], tri, (48, 64), ranges=ranges)
    gpu_r, _ = fo.rasterize(pos[0].cuda(), tri.cuda(), (48, 64), ranges=ranges)
    assert torch.equal(gpu_r[..., 3].cpu(), cpu_r[..., 3])
    # Gradients through rasterize and interpolate.
    grads = []
    for device in ("cpu", "cuda"):
        p = pos.to(device).requires_grad_(True)
        a = attr.to(device).requires_grad_(True)
        rast, rast_db = fo.rasterize(p, tri.to(device), (48, 64), grad_db=True)
        out, out_da = fo.interpolate(a, rast, tri.to(device), rast_db, diff_attrs="all")
        loss = out.square().sum() + out_da.sum() + rast[..., 2].sum()
        grads.append([g.cpu() for g in torch.autograd.grad(loss, (p, a))] + [out.detach().cpu()])
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
