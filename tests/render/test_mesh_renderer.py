"""MeshRenderer: shapes and dtypes, image convention, background, agreement with a
hand-written composition of the reference ops, gradients to every parameter,
batching, bad input, CUDA vs CPU."""
import math

import pytest
import torch

from facegeom.ops import rasterize, reference
from facegeom.render import MeshRenderer, Rendering
from tests.conftest import cuda

SIZE = (24, 20)  # H != W catches transposed axes


def sphere(rings=6, segments=8, radius=0.6, dtype=torch.float64):
    """A closed UV sphere with outward (counter-clockwise) faces, centred at 0."""
    verts = [[0.0, radius, 0.0]]
    for i in range(1, rings):
        polar = math.pi * i / rings
        for j in range(segments):
            azimuth = 2 * math.pi * j / segments
            verts.append([radius * math.sin(polar) * math.sin(azimuth), radius * math.cos(polar),
                          radius * math.sin(polar) * math.cos(azimuth)])
    verts.append([0.0, -radius, 0.0])
    bottom = len(verts) - 1

    def ring(i, j):
        return 1 + (i - 1) * segments + j % segments

    faces = []
    for j in range(segments):
        faces.append([0, ring(1, j), ring(1, j + 1)])
        faces.append([bottom, ring(rings - 1, j + 1), ring(rings - 1, j)])
        for i in range(1, rings - 1):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    return torch.tensor(verts, dtype=dtype), torch.tensor(faces, dtype=torch.int32)


def scene(batch=2, dtype=torch.float64, seed=0, rings=6, segments=8):
    """A sphere per batch element, slightly deformed and shifted, with random
    albedo, SH light and specular parameters; orthographic clip-space pos."""
    g = torch.Generator().manual_seed(seed)
    verts, faces = sphere(rings, segments, dtype=dtype)
    vertices = verts + 0.05 * torch.randn(batch, *verts.shape, generator=g, dtype=dtype)
    vertices = vertices + torch.tensor([0.1, -0.05, 0.0], dtype=dtype) * torch.arange(batch, dtype=dtype)[:, None, None]
    albedo = 0.3 + 0.6 * torch.rand(batch, verts.shape[0], 3, generator=g, dtype=dtype)
    sh = 0.2 * torch.randn(batch, 9, 3, generator=g, dtype=dtype)
    sh[:, 0] += 0.8
    return dict(vertices=vertices, faces=faces, albedo=albedo, sh_coeffs=sh,
                specular_albedo=0.3 * torch.rand(batch, verts.shape[0], 1, generator=g, dtype=dtype),
                light_position=torch.tensor([1.0, 2.0, 3.0], dtype=dtype).repeat(batch, 1),
                camera_position=torch.tensor([0.0, 0.0, 5.0], dtype=dtype).repeat(batch, 1))


def ortho(vertices):
    """Orthographic clip space: x, y as they are, nearer (+z) gets smaller z/w."""
    return torch.cat([vertices[..., :2], -0.5 * vertices[..., 2:], torch.ones_like(vertices[..., :1])], -1)


class OrthoCamera:
    """A minimal camera with a differentiable scale and 2D translation (the
    interface MeshRenderer expects: to_clip(points, image_size))."""

    def __init__(self, scale, translation):
        self.scale, self.translation = scale, translation

    def to_clip(self, points, image_size):
        xy = self.scale[:, None, None] * (points[..., :2] + self.translation[:, None])
        z = -0.5 * points[..., 2:]
        return torch.cat([xy, z, torch.ones_like(z)], -1)


def composed_reference(s, shading, specular, background=0.0):
    """The renderer written out by hand with the reference ops (no antialiasing)."""
    vertices, faces, batch = s["vertices"], s["faces"], s["vertices"].shape[0]
    pos = ortho(vertices)
    rast, _ = reference.rasterize(pos, faces, SIZE)
    normals = reference.vertex_normals(vertices, faces)
    if shading == "vertex":
        colour = reference.sh_shading(normals, s["albedo"], s["sh_coeffs"], "deep3d")
        if specular:
            colour = colour + reference.blinn_phong(normals, vertices, s["light_position"], s["camera_position"],
                                                    s["specular_albedo"], 20.0)
        image, _ = reference.interpolate(colour, rast, faces)
    else:
        albedo, _ = reference.interpolate(s["albedo"], rast, faces)
        pixel_normals, _ = reference.interpolate(normals, rast, faces)
        pixel_normals = pixel_normals / pixel_normals.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        image = reference.sh_shading(pixel_normals.reshape(batch, -1, 3), albedo.reshape(batch, -1, 3),
                                     s["sh_coeffs"], "deep3d").reshape(albedo.shape)
        if specular:
            points, _ = reference.interpolate(vertices, rast, faces)
            spec, _ = reference.interpolate(s["specular_albedo"], rast, faces)
            image = image + reference.blinn_phong(
                pixel_normals.reshape(batch, -1, 3), points.reshape(batch, -1, 3), s["light_position"],
                s["camera_position"], spec.reshape(batch, -1, 1), 20.0).reshape(*image.shape[:-1], -1)
    covered = rast[..., 3:] > 0
    image = torch.where(covered, image, torch.full_like(image, background))
    return image.flip(1), covered.flip(1), rast[..., 2:3].flip(1), (rast[..., 3].long() - 1).flip(1)


def render(s, renderer, specular=False, **kwargs):
    extra = {k: s[k] for k in ("specular_albedo", "light_position", "camera_position")} if specular else {}
    return renderer(s["vertices"], s["albedo"], s["sh_coeffs"], pos=ortho(s["vertices"]), **extra, **kwargs)


# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_ids(dtype):
    s = scene(dtype=dtype)
    out = render(s, MeshRenderer(s["faces"], SIZE, antialias=False))
    assert isinstance(out, Rendering)
    height, width = SIZE
    assert out.image.shape == (2, height, width, 3) and out.image.dtype == dtype
    assert out.alpha.shape == (2, height, width, 1) and out.alpha.dtype == dtype
    assert out.depth.shape == (2, height, width, 1) and out.depth.dtype == dtype
    assert out.triangle_id.shape == (2, height, width) and out.triangle_id.dtype == torch.int64
    covered = out.triangle_id >= 0
    assert 0 < covered.float().mean() < 1  # the sphere covers part of the image
    assert int(out.triangle_id.max()) < s["faces"].shape[0]
    assert torch.equal(out.alpha[..., 0] > 0, covered)
    assert bool((out.depth[..., 0][covered].abs() <= 1).all()) and bool((out.depth[..., 0][~covered] == 0).all())


@pytest.mark.parametrize("shading", ["vertex", "pixel"])
@pytest.mark.parametrize("specular", [False, True])
def test_matches_composition_of_reference_ops(shading, specular):
    s = scene()
    out = render(s, MeshRenderer(s["faces"], SIZE, shading=shading, antialias=False, background=0.25), specular)
    image, covered, depth, ids = composed_reference(s, shading, specular, background=0.25)
    torch.testing.assert_close(out.image, image, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.alpha, covered.double())
    torch.testing.assert_close(out.depth, depth, rtol=1e-10, atol=1e-10)
    assert torch.equal(out.triangle_id, ids)


def test_unlit_image_is_interpolated_albedo():
    s = scene()
    out = MeshRenderer(s["faces"], SIZE, antialias=False)(s["vertices"], s["albedo"], pos=ortho(s["vertices"]))
    rast, _ = reference.rasterize(ortho(s["vertices"]), s["faces"], SIZE)
    albedo, _ = reference.interpolate(s["albedo"], rast, s["faces"])
    torch.testing.assert_close(out.image, albedo.flip(1))


def test_image_rows_run_top_down():
    """A triangle above the centre (NDC y > 0) appears in the top rows, and a
    camera-style pixel (x right, y down) indexes the returned image directly."""
    vertices = torch.tensor([[-0.5, 0.2, 0.0], [0.5, 0.2, 0.0], [0.0, 0.9, 0.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    out = MeshRenderer(faces, SIZE, antialias=False)(vertices, torch.ones(3, 3, dtype=torch.float64),
                                                     pos=ortho(vertices))
    rows = torch.nonzero(out.triangle_id[0] >= 0)[:, 0]
    height, width = SIZE
    assert int(rows.max()) < height // 2
    # NDC (0, 0.5) is the pixel (x, y) = ((0 + 1) / 2 * W, (1 - 0.5) / 2 * H) with y down.
    column, row = int(0.5 * width), int(0.25 * height)
    assert int(out.triangle_id[0, row, column]) == 0
    assert int(out.triangle_id[0, height - 1 - row, column]) == -1


def test_background_colour_and_image():
    s = scene()
    height, width = SIZE
    rgb = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    out = render(s, MeshRenderer(s["faces"], SIZE, antialias=False, background=(0.1, 0.5, 0.9)))
    uncovered = out.triangle_id < 0
    assert bool((out.image[uncovered] == rgb).all())
    assert bool((out.alpha[uncovered] == 0).all())
    # A per-pixel background (image convention: row 0 at the top) shows through unchanged.
    gradient = torch.linspace(0, 1, height, dtype=torch.float64)[:, None, None].expand(height, width, 3)
    out = render(s, MeshRenderer(s["faces"], SIZE, antialias=False), background=gradient)
    expect = gradient.expand(2, -1, -1, -1)
    assert torch.equal(out.image[uncovered], expect[uncovered])
    assert not torch.equal(out.image[~uncovered], expect[~uncovered])


def test_batch_equals_single_renders():
    s = scene(batch=3)
    renderer = MeshRenderer(s["faces"], SIZE, antialias=False, shading="pixel")
    together = render(s, renderer, specular=True)
    for b in range(3):
        single = {k: (v[b:b + 1] if k != "faces" else v) for k, v in s.items()}
        alone = render(single, renderer, specular=True)
        for a, c in zip(together, alone):
            torch.testing.assert_close(a[b:b + 1], c, rtol=1e-12, atol=1e-12)


def test_shared_albedo_and_light_broadcast():
    s = scene()
    renderer = MeshRenderer(s["faces"], SIZE, antialias=False)
    shared = renderer(s["vertices"], s["albedo"][0], s["sh_coeffs"][0], pos=ortho(s["vertices"]))
    full = renderer(s["vertices"], s["albedo"][:1].expand(2, -1, -1), s["sh_coeffs"][:1].expand(2, -1, -1),
                    pos=ortho(s["vertices"]))
    torch.testing.assert_close(shared.image, full.image)


# --------------------------------------------------------------------------- #
# Gradients                                                                   #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("shading", ["vertex", "pixel"])
@pytest.mark.parametrize("antialias", [False, True])
def test_gradients_reach_every_parameter(shading, antialias):
    s = scene(dtype=torch.float32)
    leaves = {k: s[k].clone().requires_grad_(True) for k in
              ("vertices", "albedo", "sh_coeffs", "specular_albedo", "light_position", "camera_position")}
    shininess = torch.full((2,), 20.0, requires_grad=True)
    scale = torch.tensor([0.9, 1.1], requires_grad=True)
    translation = torch.tensor([[0.05, -0.02], [-0.03, 0.04]], requires_grad=True)
    renderer = MeshRenderer(s["faces"], SIZE, shading=shading, antialias=antialias)
    out = renderer(leaves["vertices"], leaves["albedo"], leaves["sh_coeffs"], camera=OrthoCamera(scale, translation),
                   specular_albedo=leaves["specular_albedo"], light_position=leaves["light_position"],
                   camera_position=leaves["camera_position"], shininess=shininess)
    target = torch.rand(out.image.shape, generator=torch.Generator().manual_seed(3))
    ((out.image - target).square().sum() + out.depth.sum()).backward()
    for name, leaf in [*leaves.items(), ("shininess", shininess), ("camera scale", scale),
                       ("camera translation", translation)]:
        assert leaf.grad is not None, name
        assert torch.isfinite(leaf.grad).all(), name
        assert leaf.grad.abs().sum() > 0, name


def test_silhouette_gradient_needs_antialias():
    """Alpha depends on the silhouette only through antialiasing: with it, moving
    the mesh changes the alpha loss to first order; without, alpha has no gradient."""
    s = scene(batch=1, dtype=torch.float32)
    shift = torch.zeros(1, 2, requires_grad=True)
    camera = OrthoCamera(torch.ones(1), shift)
    out = MeshRenderer(s["faces"], SIZE, antialias=True)(s["vertices"], s["albedo"], s["sh_coeffs"], camera=camera)
    out.alpha[..., :, : SIZE[1] // 2, :].sum().backward()  # coverage of the left half
    assert shift.grad is not None and shift.grad[0, 0] < 0  # moving right uncovers the left half
    hard = MeshRenderer(s["faces"], SIZE, antialias=False)(s["vertices"], s["albedo"], s["sh_coeffs"], camera=camera)
    assert not hard.alpha.requires_grad


@pytest.mark.parametrize("shading", ["vertex", "pixel"])
def test_gradcheck(shading):
    s = scene(batch=1, rings=4, segments=5)  # few vertices: gradcheck perturbs each coordinate
    renderer = MeshRenderer(s["faces"], (8, 6), shading=shading, antialias=False)

    def fn(vertices, albedo, sh_coeffs, light_position):
        out = renderer(vertices, albedo, sh_coeffs, pos=ortho(vertices), specular_albedo=s["specular_albedo"],
                       light_position=light_position, camera_position=s["camera_position"])
        return out.image, out.depth

    inputs = [s[k].clone().requires_grad_(True) for k in ("vertices", "albedo", "sh_coeffs", "light_position")]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_torch_compile_fullgraph():
    """The whole renderer traces as one graph (every op has a fake kernel) and
    the compiled function gives the same images and gradients."""
    s = scene(dtype=torch.float32)
    renderer = MeshRenderer(s["faces"], SIZE, shading="pixel")

    def fn(vertices, albedo, sh_coeffs, light_position):
        out = renderer(vertices, albedo, sh_coeffs, pos=ortho(vertices), specular_albedo=s["specular_albedo"],
                       light_position=light_position, camera_position=s["camera_position"])
        return out.image, out.alpha, out.depth, out.triangle_id

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager_inputs = [s[k].clone().requires_grad_(True) for k in ("vertices", "albedo", "sh_coeffs", "light_position")]
    compiled_inputs = [x.detach().clone().requires_grad_(True) for x in eager_inputs]
    expected, got = fn(*eager_inputs), compiled(*compiled_inputs)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    sum(x.sum() for x in expected[:3]).backward()
    sum(x.sum() for x in got[:3]).backward()
    for e, g in zip(eager_inputs, compiled_inputs):
        torch.testing.assert_close(g.grad, e.grad)


# --------------------------------------------------------------------------- #
# Bad input                                                                   #
# --------------------------------------------------------------------------- #
def test_bad_input():
    s = scene()
    faces, vertices, albedo, sh = s["faces"], s["vertices"], s["albedo"], s["sh_coeffs"]
    pos = ortho(vertices)
    renderer = MeshRenderer(faces, SIZE)
    with pytest.raises(ValueError, match="exactly one of camera"):
        renderer(vertices, albedo, sh)
    with pytest.raises(ValueError, match="exactly one of camera"):
        renderer(vertices, albedo, sh, camera=OrthoCamera(torch.ones(2), torch.zeros(2, 2)), pos=pos)
    with pytest.raises(TypeError, match="to_clip"):
        renderer(vertices, albedo, sh, camera=object())
    with pytest.raises(ValueError, match="vertices"):
        renderer(vertices[..., :2], albedo, sh, pos=pos)
    with pytest.raises(ValueError, match="albedo"):
        renderer(vertices, albedo[:, :-1], sh, pos=pos)
    with pytest.raises(ValueError, match="sh_coeffs"):
        renderer(vertices, albedo, sh[:, :4], pos=pos)
    with pytest.raises(ValueError, match="pos"):
        renderer(vertices, albedo, sh, pos=pos[..., :3])
    with pytest.raises(TypeError, match="albedo"):
        renderer(vertices, albedo.float(), sh, pos=pos)
    with pytest.raises(TypeError, match="vertices"):
        renderer(vertices.long(), albedo, sh, pos=pos)
    with pytest.raises(ValueError, match="batch sizes"):
        renderer(vertices, albedo.repeat(2, 1, 1), sh, pos=pos)
    with pytest.raises(ValueError, match="full batch"):
        renderer(vertices[:1], albedo, sh, pos=pos[:1])
    with pytest.raises(ValueError, match="batch sizes"):
        renderer(vertices, albedo, sh, pos=pos.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="specular_albedo"):
        renderer(vertices, albedo, sh, pos=pos, specular_albedo=albedo[..., :2],
                 light_position=s["light_position"], camera_position=s["camera_position"])
    with pytest.raises(ValueError, match="light_position and camera_position"):
        renderer(vertices, albedo, sh, pos=pos, specular_albedo=s["specular_albedo"])
    with pytest.raises(IndexError, match="faces index vertex"):
        renderer(vertices[:, :10], albedo[:, :10], sh, pos=pos[:, :10])
    with pytest.raises(ValueError, match="background"):
        renderer(vertices, albedo, sh, pos=pos, background=torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(IndexError, match="faces"):
        MeshRenderer(faces - 1, SIZE)
    with pytest.raises(TypeError, match="faces"):
        MeshRenderer(faces.float(), SIZE)
    with pytest.raises(ValueError, match="faces"):
        MeshRenderer(faces[:, :2], SIZE)
    with pytest.raises(ValueError, match="sh_convention"):
        MeshRenderer(faces, SIZE, sh_convention="sh9")
    with pytest.raises(ValueError, match="shading"):
        MeshRenderer(faces, SIZE, shading="flat")
    with pytest.raises(ValueError, match="image_size"):
        MeshRenderer(faces, (0, 4))


def test_empty_batch():
    s = scene()
    out = render({k: (v[:0] if k != "faces" else v) for k, v in s.items()},
                 MeshRenderer(s["faces"], SIZE, antialias=False))
    assert out.image.shape == (0, *SIZE, 3) and out.triangle_id.shape == (0, *SIZE)


# --------------------------------------------------------------------------- #
@cuda
@pytest.mark.parametrize("shading", ["vertex", "pixel"])
def test_cuda_matches_cpu(shading):
    s = scene(dtype=torch.float32)
    renderer = MeshRenderer(s["faces"], SIZE, shading=shading)
    cpu = render(s, renderer, specular=True)
    gpu = render({k: v.cuda() for k, v in s.items()}, renderer.cuda(), specular=True)
    for a, b in zip(cpu, gpu):
        if a.dtype == torch.int64:
            assert torch.equal(b.cpu(), a)  # the back ends run the same coverage arithmetic
        else:
            torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- #
# Checks once per entry point                                                 #
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("shading", ["vertex", "pixel"])
def test_render_range_checks_the_faces_once(monkeypatch, shading):
    """Each range check reads values back to the host (a sync on CUDA): the faces
    are range-checked once, when the renderer is built, and a render (rasterize,
    normals, shading, specular, interpolate, antialias) checks no indices again."""
    from facegeom import _checks

    calls = []
    real = _checks.indices

    def counting(name, t, *args, **kwargs):
        calls.append(name)
        return real(name, t, *args, **kwargs)

    monkeypatch.setattr(_checks, "indices", counting)
    s = scene()
    renderer = MeshRenderer(s["faces"], SIZE, shading=shading)
    assert calls.count("faces") == 1
    calls.clear()
    pos = ortho(s["vertices"])
    out = renderer(s["vertices"], s["albedo"], s["sh_coeffs"], pos=pos, specular_albedo=s["specular_albedo"],
                   light_position=s["light_position"], camera_position=s["camera_position"])
    assert calls == []
    # The public op does check: the counter sees it, so this test can fail.
    rasterize(pos, renderer.faces, (4, 4))
    assert calls == ["tri"]


def test_shaders_swap():
    """The shader is a swappable step: UnlitShader renders the albedo, as the
    default shader does without SH light; a custom shader sees the fragments."""
    from facegeom.render import Fragments, ShadingInputs, UnlitShader

    s = scene()
    pos = ortho(s["vertices"])
    unlit = MeshRenderer(s["faces"], SIZE, shader=UnlitShader())(s["vertices"], s["albedo"], s["sh_coeffs"], pos=pos)
    default = MeshRenderer(s["faces"], SIZE)(s["vertices"], s["albedo"], None, pos=pos)
    torch.testing.assert_close(unlit.image, default.image, atol=0, rtol=0)

    seen = {}

    class Depth(torch.nn.Module):
        def forward(self, fragments, inputs):
            seen["types"] = (type(fragments), type(inputs))
            return fragments.rast[..., 2:3].expand(-1, -1, -1, 3)

    out = MeshRenderer(s["faces"], SIZE, antialias=False)(s["vertices"], s["albedo"], pos=pos)
    depth = MeshRenderer(s["faces"], SIZE, antialias=False, shader=Depth())(s["vertices"], s["albedo"], pos=pos)
    assert seen["types"] == (Fragments, ShadingInputs)
    covered = out.alpha[..., 0] > 0
    torch.testing.assert_close(depth.image[..., 0][covered], out.depth[..., 0][covered], atol=0, rtol=0)
