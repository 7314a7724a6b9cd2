"""TrackerRenderer against a brute-force PyTorch3D rasteriser (culling, pixel centres, perspective-correct
barycentrics), MT:renderer.py's shading, the UV path and the rasterisation cache."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegeom.tracking.camera import TrackerCamera
from facegeom.tracking.render import TrackerRenderer, back_facing

from . import _authors
from .conftest import random_state

dt = torch.float64


def _camera(state):
    return TrackerCamera(state["R"], state["t"], state["focal_length"], state["principal_point"])


@pytest.mark.parametrize("size", [(20, 20), (16, 26), (26, 16)])
def test_visibility_and_attributes_match_pytorch3d(model64, size):
    state = random_state(model64, seed=11)
    camera = _camera(state)
    out = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R, state["eyelids"])
    albedo = model64.flame.albedo(state["tex"])
    renderer = TrackerRenderer(model64.faces, model64.render_mask)
    ours = renderer(out.vertices, camera, albedo, state["sh"], size)
    ndc = camera.ndc(out.vertices)[0]
    images, mask, position, alpha, pix_to_face = _authors.render(out.vertices[0], model64.faces, ndc, albedo[0],
                                                                 state["sh"], model64.render_mask, *size)
    assert alpha.sum() > 20
    assert torch.equal(ours.alpha, alpha)
    assert torch.equal(ours.mask, mask[:, :1])
    assert torch.allclose(ours.image, images, atol=1e-9)
    assert torch.allclose(ours.position.permute(0, 3, 1, 2)[0], position, atol=1e-9)


def test_back_faces_are_dropped_before_rasterising():
    """A back-facing triangle in front of a front-facing one: PyTorch3D (cull_backfaces=True) shows the one
    behind; the plain op would draw the nearer one."""
    # NDC +X left: the front face is wound counter-clockwise in PyTorch3D's EdgeFunction sense.
    far = torch.tensor([[0.9, -0.9, 3.0], [-0.9, -0.9, 3.0], [0.0, 0.9, 3.0]], dtype=dt)
    near = far[[0, 2, 1]].clone()
    near[:, 2] = 2.0
    vertices_ndc = torch.cat([far, near])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    areas = _authors.edge_function(vertices_ndc[faces[:, 0], :2], vertices_ndc[faces[:, 1], :2],
                                   vertices_ndc[faces[:, 2], :2])
    assert areas[0] > 0 > areas[1]
    assert back_facing(vertices_ndc[None, :, :2], faces).tolist() == [[False, True]]
    renderer = TrackerRenderer(faces)
    raster = renderer.rasterize(vertices_ndc[None], (12, 12))
    drawn = raster.rast[0, ..., 3]
    assert int(drawn.max()) == 1 and raster.tri.shape[0] == 1  # only the far (front-facing) triangle
    pix_to_face, _ = _authors.rasterize_p3d(vertices_ndc, faces, 12, 12)
    assert torch.equal((drawn > 0), pix_to_face == 0)
    pix_to_face_no_cull, _ = _authors.rasterize_p3d(vertices_ndc, faces, 12, 12, cull_backfaces=False)
    assert (pix_to_face_no_cull == 1).any()  # without culling the near triangle would win


def test_cached_rasterisation_reinterpolates_attributes(model64):
    """Between resets the ids/barycentrics stay (MT:tracker_rasterizer.py:39-44) while the attributes follow
    the vertices; the gradient reaches the vertices through the NDC positions only."""
    state = random_state(model64, seed=12)
    camera = _camera(state)
    out = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R, state["eyelids"])
    renderer = TrackerRenderer(model64.faces, model64.render_mask)
    albedo = model64.flame.albedo(state["tex"])
    first = renderer(out.vertices, camera, albedo, state["sh"], (20, 20))
    moved = (out.vertices + 0.01).requires_grad_(True)
    cached = renderer(moved, camera, albedo, state["sh"], (20, 20))
    assert torch.equal(cached.alpha, first.alpha)
    fresh_ndc = camera.ndc(moved)
    assert not torch.allclose(cached.position, first.position)
    cached.position.sum().backward()
    assert moved.grad is not None and moved.grad.abs().sum() > 0
    renderer.reset()
    refreshed = renderer(moved.detach(), camera, albedo, state["sh"], (20, 20))
    assert not torch.equal(refreshed.alpha, first.alpha)  # a new rasterisation sees the moved mesh
    assert fresh_ndc.shape == (1, model64.flame.num_vertices, 3)


def test_uv_albedo_is_grid_sampled(model64):
    """UV path (MT:renderer.py:80-82,177): grid_sample(texture, interpolated uv*2-1 with v flipped)."""
    state = random_state(model64, seed=13)
    camera = _camera(state)
    out = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R, state["eyelids"])
    faces = model64.faces
    g = torch.Generator().manual_seed(0)
    uv = torch.rand(model64.flame.num_vertices, 2, generator=g, dtype=dt)
    texture = torch.rand(1, 3, 8, 8, generator=g, dtype=dt)
    renderer = TrackerRenderer(faces, model64.render_mask, uv_coords=uv.numpy(), uv_faces=faces.numpy())
    size = (18, 18)
    ours = renderer(out.vertices, camera, texture, state["sh"], size)
    ndc = camera.ndc(out.vertices)[0]
    pix_to_face, bary = _authors.rasterize_p3d(ndc, faces, *size)
    uvcoords = torch.cat([uv, uv[:, 0:1] * 0. + 1.], -1).float().double() * 2 - 1  # MT:renderer.py:80-82
    uvcoords[..., 1] = -uvcoords[..., 1]
    grid = _authors.interpolate_face_attributes(pix_to_face, bary, uvcoords[faces]).permute(1, 2, 0)[None, ..., :2]
    albedo_images = F.grid_sample(texture, grid, align_corners=False)
    normals = _authors.vertex_normals(out.vertices, faces[None])[0]
    normal_images = _authors.interpolate_face_attributes(pix_to_face, bary, normals[faces])[None]
    alpha = (pix_to_face >= 0).double()
    expected = albedo_images * _authors.add_SHlight(normal_images, state["sh"]) * alpha
    assert torch.allclose(ours.image, expected, atol=1e-6)


def test_renderer_rejects_bad_inputs(model64):
    renderer = TrackerRenderer(model64.faces, model64.render_mask)
    state = random_state(model64)
    camera = _camera(state)
    vertices = model64.flame.v_template[None]
    with pytest.raises(ValueError, match="sh"):
        renderer(vertices, camera, vertices, state["sh"][:, :4], (8, 8))
    with pytest.raises(ValueError, match="uv_coords"):
        renderer(vertices, camera, torch.ones(1, 3, 4, 4, dtype=dt), state["sh"], (8, 8))
    with pytest.raises(ValueError, match="uv_faces"):
        TrackerRenderer(model64.faces, uv_coords=np.zeros((3, 2)))


@pytest.mark.parametrize("uv", [False, True])
def test_render_pixels_are_the_masked_pixels_of_the_image(model64, uv):
    """render_pixels (what the photometric term uses) == forward's image and positions inside its mask, for a
    batch of two different frames."""
    states = [random_state(model64, seed=70 + k) for k in range(2)]
    state = {k: torch.cat([s[k] for s in states]) for k in states[0]}
    camera = _camera(state)
    out = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R, state["eyelids"])
    faces = model64.faces
    if uv:
        g = torch.Generator().manual_seed(1)
        renderer = TrackerRenderer(faces, model64.render_mask, torch.rand(len(model64.render_mask), 2, generator=g,
                                                                          dtype=dt).numpy(), faces.numpy())
        albedo = torch.rand(2, 3, 8, 8, generator=g, dtype=dt)
    else:
        renderer = TrackerRenderer(faces, model64.render_mask)
        albedo = model64.flame.albedo(state["tex"])
    image = renderer(out.vertices, camera, albedo, state["sh"], (18, 22))
    samples = renderer.render_pixels(out.vertices, camera, albedo, state["sh"], (18, 22))
    inside = image.mask[:, 0] > 0  # [B, H, W]
    assert samples.counts.tolist() == inside.flatten(1).sum(1).tolist() and min(samples.counts.tolist()) > 10
    assert torch.allclose(samples.colour, image.image.permute(0, 2, 3, 1)[inside], atol=1e-9)
    assert torch.allclose(samples.position, image.position[inside], atol=1e-12)
    assert samples.batch.tolist() == sorted(samples.batch.tolist())


@pytest.mark.parametrize("size", [(20, 20), (16, 26)])
def test_depth_map_matches_render_depth(model64, size, tmp_path):
    """``render_depth`` (MT:renderer.py:128-141) with extra faces first and a depth mask, then the 16-bit PNG in
    millimetres (MT:tracker.py:633-634)."""
    from facegeom.tracking.io import read_depth, save_depth

    state = random_state(model64, seed=5)
    camera = _camera(state)
    out = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R, state["eyelids"])
    g = torch.Generator().manual_seed(3)
    num_vertices = out.vertices.shape[1]
    extra = torch.randint(0, num_vertices, (40, 3), generator=g)
    faces = torch.cat([extra, model64.faces])
    depth_mask = torch.rand(num_vertices, generator=g) > 0.3
    renderer = TrackerRenderer(model64.faces, model64.render_mask)
    cached = renderer.rasterize(camera.ndc(out.vertices), size)
    renderer._raster = cached
    ours = renderer.render_depth(out.vertices, camera, size, faces, depth_mask)
    assert renderer._raster is cached  # the photometric cache is left alone
    ndc = camera.ndc(out.vertices)[0]
    theirs = _authors.render_depth(out.vertices[0], faces, ndc, depth_mask, *size)
    assert ours.shape == (1, 1) + size
    assert (theirs[2] > 0).sum() > 20 and (theirs[2] == 0).sum() > 20
    assert torch.allclose(ours[0, 0], theirs[2], atol=1e-9)
    # The extra faces and the mask change the picture (the comparison above is not vacuous).
    plain = renderer.render_depth(out.vertices, camera, size)
    assert not torch.equal(plain, ours)
    path = save_depth(tmp_path, "00007", ours[0])
    assert path.endswith("depth/00007.png")
    png = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(path))
    assert png.dtype == np.uint16 and np.array_equal(png, _authors.depth_png(theirs))
    assert np.allclose(read_depth(path), png / 1000.0)


def test_depth_map_rejects_bad_inputs(model64, tmp_path):
    from facegeom.tracking.io import depth_to_png

    state = random_state(model64, seed=5)
    camera = _camera(state)
    out = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R, state["eyelids"])
    renderer = TrackerRenderer(model64.faces, model64.render_mask)
    with pytest.raises(IndexError, match="faces"):
        renderer.render_depth(out.vertices, camera, (8, 8), torch.tensor([[0, 1, 10 ** 6]]))
    with pytest.raises(ValueError, match="depth_mask"):
        renderer.render_depth(out.vertices, camera, (8, 8), None, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="16-bit"):
        depth_to_png(torch.full((2, 2), 70.0))
    with pytest.raises(ValueError, match="depth must be"):
        depth_to_png(torch.zeros(2, 2, 2))
