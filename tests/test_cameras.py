"""Cameras: each paper's projection formula reproduced, project/to_clip agree with
the rasterizer's pixel convention, depth order, gradients, torch.compile, bad input."""
import math

import numpy as np
import pytest
import torch

from facegeom.cameras import Pinhole, ScaledOrthographic, WeakPerspective
from tests.conftest import cuda


def head_points(batch=2, n=50, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.16, 0.22, 0.18], dtype=dtype)


def rotation(yaw, pitch, roll, dtype=torch.float64):
    from scipy.spatial.transform import Rotation

    return torch.tensor(Rotation.from_euler("yxz", [yaw, pitch, roll]).as_matrix(), dtype=dtype)


def cameras(dtype=torch.float64):
    weak = WeakPerspective(torch.tensor([[8.0, 0.01, -0.02], [9.0, -0.02, 0.03]], dtype=dtype), image_size=224)
    R = torch.stack([rotation(0.3, -0.1, 0.05, dtype), rotation(-0.2, 0.2, 0.0, dtype)])
    P = torch.cat([R * 1e-3, torch.tensor([[[60.0], [61.0], [5.0]], [[59.0], [58.0], [-3.0]]], dtype=dtype)], 2)
    ortho = ScaledOrthographic(P, image_size=120)
    deep3d = Pinhole.deep3d(batch=2, dtype=dtype)
    return {"weak": weak, "ortho": ortho, "pinhole": deep3d}


# --------------------------------------------------------------------------- #
# The papers' formulas                                                        #
# --------------------------------------------------------------------------- #

def test_weak_perspective_is_decas_batch_orth_proj():
    cam = torch.tensor([[8.0, 0.01, -0.02], [9.0, -0.02, 0.03]], dtype=torch.float64)
    points = head_points()
    camera = WeakPerspective(cam, image_size=224)
    # DECA: X_trans = X[:, :, :2] + cam[:, :, 1:]; Xn = cam[:, :, 0:1] * cat([X_trans, X[:, :, 2:]])
    expected = cam[:, None, :1] * torch.cat([points[..., :2] + cam[:, None, 1:], points[..., 2:]], -1)
    torch.testing.assert_close(camera.normalized(points), expected)
    # DECA's pixels: y negated, then (n + 1) * size / 2 (edges at integers); ours are 0.5 less.
    deca_pixels = torch.stack([expected[..., 0], -expected[..., 1]], -1) * 112.0 + 112.0
    torch.testing.assert_close(camera.project(points), deca_pixels - 0.5)


def test_scaled_orthographic_is_3ddfa():
    g = torch.Generator().manual_seed(3)
    params = torch.randn(2, 62, generator=g, dtype=torch.float64)
    mean = torch.randn(62, generator=g, dtype=torch.float64) * 1e-3
    std = torch.rand(62, generator=g, dtype=torch.float64) * 1e-3 + 1e-4
    points = head_points() * 1e5  # 3DDFA's BFM is in micrometre-ish units
    camera = ScaledOrthographic.from_params(params, mean, std)
    pixels = camera.project(points)
    for b in range(2):
        # 3DDFA: p = param * std + mean; R_ = p[:12].reshape(3, -1); pts = R @ X + offset;
        # similar_transform: x -= 1, y = size - y.
        p = (params[b] * std + mean).numpy()
        R_ = p[:12].reshape(3, -1)
        pts = R_[:, :3] @ points[b].numpy().T + R_[:, 3:]
        np.testing.assert_allclose(pixels[b, :, 0].numpy(), pts[0] - 1, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(pixels[b, :, 1].numpy(), 120 - pts[1], rtol=1e-12, atol=1e-9)


def test_pinhole_deep3d_formula_and_from_K():
    points = head_points()
    camera = Pinhole.deep3d(batch=2, dtype=torch.float64)
    pixels = camera.project(points)
    x, y, z = points.unbind(-1)
    # Deep3DFaceRecon: z' = 10 - z; u = 1015 x / z' + 112; v_up = 1015 y / z' + 112; image y = 223 - v_up.
    torch.testing.assert_close(pixels[..., 0], 1015 * x / (10 - z) + 112)
    torch.testing.assert_close(pixels[..., 1], 223 - (1015 * y / (10 - z) + 112))
    K = torch.tensor([[1015.0, 0, 112], [0, 1015.0, 111], [0, 0, 1]], dtype=torch.float64)
    other = Pinhole.from_K(K, camera.R, camera.t, image_size=224, near=5.0, far=15.0)
    torch.testing.assert_close(other.project(points), pixels)
    torch.testing.assert_close(other.to_clip(points), camera.to_clip(points))


# --------------------------------------------------------------------------- #
# project <-> to_clip <-> rasterizer pixel convention                         #
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name", ["weak", "ortho", "pinhole"])
def test_to_clip_matches_project_in_rasterizer_convention(name):
    camera = cameras()[name]
    points = head_points()
    if name == "ortho":
        points = points * 5e5  # BFM units as 3DDFA uses them, with s ~ 1e-3
    pixels = camera.project(points)
    pos = camera.to_clip(points)
    assert pos.shape == (2, 50, 4)
    height, width = camera.image_size
    ndc = pos[..., :3] / pos[..., 3:]
    # nvdiffrast: pixel (column c, raster row r) has its centre at NDC ((c + 0.5) / W * 2 - 1, (r + 0.5) / H * 2 - 1),
    # raster row 0 at the bottom; the image row is H - 1 - r.
    column = (ndc[..., 0] + 1) / 2 * width - 0.5
    raster_row = (ndc[..., 1] + 1) / 2 * height - 0.5
    torch.testing.assert_close(column, pixels[..., 0])
    torch.testing.assert_close(raster_row, height - 1 - pixels[..., 1])
    assert (ndc[..., 2].abs() < 1).all()  # a head in front of the camera is inside the depth range


@pytest.mark.parametrize("name", ["weak", "ortho", "pinhole"])
def test_nearer_points_have_smaller_depth(name):
    camera = cameras()[name]
    scale = 5e5 if name == "ortho" else 1.0
    near_point = torch.tensor([[0.0, 0.0, 0.05]], dtype=torch.float64) * scale
    far_point = torch.tensor([[0.0, 0.0, -0.05]], dtype=torch.float64) * scale
    if name == "ortho":  # the camera looks along the rotated model's +z
        near_point, far_point = (p @ camera.P[0, :, :3] / 1e-3 for p in (near_point, far_point))
    depth = [(lambda pos: pos[..., 2] / pos[..., 3])(camera.to_clip(p))[0, 0] for p in (near_point, far_point)]
    assert depth[0] < depth[1]


def test_pinhole_to_clip_is_finite_at_and_behind_the_camera():
    camera = Pinhole.deep3d(dtype=torch.float64)
    points = torch.tensor([[0.1, 0.0, 10.0], [0.1, 0.2, 12.0]], dtype=torch.float64)  # on / behind the camera plane
    pos = camera.to_clip(points)
    assert torch.isfinite(pos).all() and (pos[0, :, 3] <= 0).all()


def test_pyramid_resolution_and_aspect_ratio():
    camera = Pinhole.deep3d(dtype=torch.float64)
    points = head_points(1)
    torch.testing.assert_close(camera.to_clip(points, (112, 112)), camera.to_clip(points))
    with pytest.raises(ValueError, match="aspect ratio"):
        camera.to_clip(points, (112, 200))


def test_a_centred_point_lands_on_the_centre_pixel():
    # An image of odd size has a middle pixel; its centre projects to NDC (0, 0).
    camera = WeakPerspective(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), image_size=(5, 7))
    pixels = camera.project(torch.zeros(1, 3, dtype=torch.float64))
    torch.testing.assert_close(pixels, torch.tensor([[[3.0, 2.0]]], dtype=torch.float64))


# --------------------------------------------------------------------------- #
# Gradients, compile, batching, bad input                                     #
# --------------------------------------------------------------------------- #

def test_gradcheck_every_camera():
    points = head_points(2, 5).requires_grad_(True)
    cam = torch.tensor([[8.0, 0.01, -0.02]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, p: WeakPerspective(c).to_clip(p), (cam, points))
    P = torch.cat([rotation(0.3, 0.1, 0.0) * 500, torch.tensor([[60.0], [60.0], [0.0]], dtype=torch.float64)], 1)
    P = P.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, p: ScaledOrthographic(m).to_clip(p * 1e3), (P, points))
    focal = torch.tensor([1015.0, 1000.0], dtype=torch.float64, requires_grad=True)
    centre = torch.tensor([112.0, 111.0], dtype=torch.float64, requires_grad=True)
    R = rotation(0.1, 0.2, 0.3).requires_grad_(True)
    t = torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, c, r, tt, p: Pinhole(f, c, r, tt).to_clip(p),
                                    (focal, centre, R, t, points))
    assert torch.autograd.gradcheck(lambda f, c, r, tt, p: Pinhole(f, c, r, tt).project(p),
                                    (focal, centre, R, t, points))


def test_torch_compile_fullgraph():
    points = head_points(2, 7, dtype=torch.float32)
    for camera in cameras(torch.float32).values():
        compiled = torch.compile(lambda p: (camera.project(p), camera.to_clip(p)), fullgraph=True, backend="aot_eager")
        for got, want in zip(compiled(points), (camera.project(points), camera.to_clip(points))):
            torch.testing.assert_close(got, want)


def test_unbatched_and_broadcast():
    camera = WeakPerspective(torch.tensor([8.0, 0.0, 0.0], dtype=torch.float64))
    points = head_points(3)
    assert camera.project(points).shape == (3, 50, 2)
    assert camera.project(points[0]).shape == (1, 50, 2)
    torch.testing.assert_close(camera.project(points)[1], camera.project(points[1])[0])
    batch2 = WeakPerspective(torch.tensor([[8.0, 0.0, 0.0]] * 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="batch sizes"):
        batch2.project(points)


def test_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="cam"):
        WeakPerspective(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="cam"):
        WeakPerspective(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="P"):
        ScaledOrthographic(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="params"):
        ScaledOrthographic.from_params(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="focal"):
        Pinhole(torch.zeros(3), torch.zeros(2))
    with pytest.raises(TypeError, match="principal_point"):
        Pinhole(1000.0, [112, 112])
    with pytest.raises(ValueError, match="near"):
        Pinhole(1000.0, torch.zeros(2), near=5.0, far=1.0)
    with pytest.raises(ValueError, match="skew"):
        Pinhole.from_K(torch.tensor([[1000.0, 1.0, 112], [0, 1000.0, 112], [0, 0, 1]]))
    with pytest.raises(ValueError, match="image_size"):
        WeakPerspective(torch.zeros(3), image_size=(0, 10))
    camera = WeakPerspective(torch.ones(3))
    with pytest.raises(ValueError, match="points"):
        camera.project(torch.zeros(2, 5, 2))
    with pytest.raises(TypeError, match="points"):
        camera.project(torch.zeros(2, 5, 3, dtype=torch.float64))


# --------------------------------------------------------------------------- #
# Agreement with the rasterizer                                               #
# --------------------------------------------------------------------------- #

def _tiny_triangles_at_pixel_centres(camera, points, offsets):
    """For each point, a triangle of radius 0.35 px around the point moved so that
    it projects to the nearest pixel centre plus ``offsets`` (px). Returns the
    triangle vertices [T*3, 3] and the target image pixels [T, 2] (integers)."""
    vertices, targets = [], []
    for point, offset in zip(points, offsets):
        p = point.clone()
        target = torch.round(camera.project(p[None])[0, 0])
        for _ in range(3):  # Newton steps in the plane the camera sees
            jac = torch.autograd.functional.jacobian(lambda q: camera.project(q[None])[0, 0], p)  # [2, 3]
            step = torch.linalg.pinv(jac)  # [3, 2]: image displacement -> world displacement
            p = p + step @ (target + offset - camera.project(p[None])[0, 0])
        angles = torch.tensor([90.0, 210.0, 330.0], dtype=p.dtype) * math.pi / 180
        corners = 0.35 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)  # [3, 2] px
        vertices.append(p + corners @ step.T)
        targets.append(target)
    return torch.cat(vertices), torch.stack(targets).long()


@pytest.mark.parametrize("name", ["weak", "ortho", "pinhole"])
def test_projected_point_lands_on_the_pixel_the_rasterizer_draws(name):
    from facegeom.ops import rasterize

    camera = cameras()[name]
    camera_batch = {"weak": lambda: WeakPerspective(camera.cam[:1]), "ortho": lambda: ScaledOrthographic(camera.P[:1]),
                    "pinhole": lambda: Pinhole.deep3d(dtype=torch.float64)}[name]()
    g = torch.Generator().manual_seed(7)
    points = head_points(1, 40, seed=3)[0] * {"weak": 0.8, "ortho": 5e5, "pinhole": 5.0}[name]
    offsets = (torch.rand(40, 2, generator=g, dtype=torch.float64) - 0.5) * 0.2  # within 0.1 px of a centre
    vertices, targets = _tiny_triangles_at_pixel_centres(camera_batch, points, offsets)
    height, width = camera_batch.image_size
    # Keep triangles on distinct pixels inside the image, so none hides another.
    keep, seen = [], set()
    for k, (column, row) in enumerate(targets.tolist()):
        if 0 <= column < width and 0 <= row < height and (column, row) not in seen:
            keep.append(k)
            seen.add((column, row))
    assert len(keep) >= 30
    targets = targets[keep]
    vertices = vertices.view(-1, 3, 3)[keep].reshape(-1, 3)
    pos = camera_batch.to_clip(vertices)
    tri = torch.arange(len(vertices), dtype=torch.int32).view(-1, 3)
    rast, _ = rasterize(pos.float().contiguous(), tri, (height, width))
    ids = rast[0, ..., 3].round().long()  # [H, W], triangle id + 1, raster row 0 at the bottom
    for k, (column, image_row) in enumerate(targets.tolist()):
        drawn = (ids == k + 1).nonzero().tolist()
        assert drawn == [[height - 1 - image_row, column]], (k, drawn)


def test_landmarks_of_the_synthetic_head_fall_on_the_rendered_head():
    from facegeom.models import synthetic_head
    from facegeom.ops import rasterize

    head = synthetic_head()
    out = head(pose=torch.tensor([[0.1, 0.3, 0.0]]))
    camera = WeakPerspective(torch.tensor([[4.5, 0.0, 0.03]]), image_size=(96, 128))
    rast, _ = rasterize(camera.to_clip(out.vertices), head.faces.int(), camera.image_size)
    image_coverage = torch.flip(rast[0, ..., 3] > 0, dims=[0])  # top row first, like the pixels
    # The inner-face landmarks (the contour ones sit on the silhouette, where a
    # rounding can fall either side).
    pixels = torch.round(camera.project(out.landmarks2d)[0, 17:]).long()
    assert image_coverage[pixels[:, 1], pixels[:, 0]].all()
    assert 0.1 < image_coverage.float().mean() < 0.9


@pytest.mark.cuda
@cuda
def test_cameras_on_cuda_match_cpu():
    points = head_points()
    for name, camera in cameras().items():
        scaled = points * (5e5 if name == "ortho" else 1.0)
        moved = {"weak": lambda: WeakPerspective(camera.cam.cuda()),
                 "ortho": lambda: ScaledOrthographic(camera.P.cuda()),
                 "pinhole": lambda: Pinhole.deep3d(batch=2, dtype=torch.float64, device="cuda")}[name]()
        torch.testing.assert_close(moved.to_clip(scaled.cuda()).cpu(), camera.to_clip(scaled))
        torch.testing.assert_close(moved.project(scaled.cuda()).cpu(), camera.project(scaled))
