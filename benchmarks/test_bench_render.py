"""Renderer benchmarks (pytest-benchmark): a FLAME-sized model decoded with lbs
and rendered by MeshRenderer, forward and forward+backward, against the same
pipeline written with the pure-PyTorch reference ops, in one run.

    python -m pytest benchmarks/test_bench_render.py -q --benchmark-columns=min,median,rounds

The model is FLAME-sized: V = 4972 vertices and F = 9940 faces (FLAME: 5023 /
9976) on a closed sphere, K = 400 coefficients, FLAME's 5 joints; rendered with
an SH light, per-vertex shading and antialiasing through a weak-perspective
projection. The reference runs only at 64 x 64: its brute-force rasterizer
takes minutes at 224 x 224. Replace ``flame_sized_case`` with your own tensors
to measure your data.
"""
import math

import pytest
import torch

from facegeom import ops, testing
from facegeom.ops import reference
from facegeom.render import MeshRenderer


def uv_sphere(rings: int, segments: int, radius: float):
    """Closed UV sphere, outward faces: (rings - 1) * segments + 2 vertices."""
    polar = torch.arange(1, rings, dtype=torch.float64) * math.pi / rings
    azimuth = torch.arange(segments, dtype=torch.float64) * 2 * math.pi / segments
    p, a = torch.meshgrid(polar, azimuth, indexing="ij")
    ring = torch.stack([p.sin() * a.sin(), p.cos(), p.sin() * a.cos()], -1).reshape(-1, 3)
    vertices = torch.cat([torch.tensor([[0.0, 1.0, 0.0]]), ring.float(), torch.tensor([[0.0, -1.0, 0.0]])]) * radius
    bottom = vertices.shape[0] - 1

    def index(i, j):
        return 1 + (i - 1) * segments + j % segments

    faces = []
    for j in range(segments):
        faces += [[0, index(1, j), index(1, j + 1)], [bottom, index(rings - 1, j + 1), index(rings - 1, j)]]
        for i in range(1, rings - 1):
            a, b, c, d = index(i, j), index(i, j + 1), index(i + 1, j), index(i + 1, j + 1)
            faces += [[a, c, b], [b, c, d]]
    return vertices, torch.tensor(faces, dtype=torch.int32)


def flame_sized_case(requires_grad: bool):
    template, faces = uv_sphere(rings=72, segments=70, radius=0.1)
    model = testing.lbs_case(1, num_vertices=template.shape[0], requires_grad=requires_grad)
    model["v_template"] = template
    # lbs_case's random bases move each vertex by ~2 cm: a crumpled ball of
    # slivers. Scaled to ~1 mm offsets the surface stays a smooth, face-like layer.
    with torch.no_grad():
        model["shapedirs"] *= 0.05
        model["posedirs"] *= 0.05
    sh = torch.zeros(1, 9, 3)
    sh[:, 0] = 0.8
    sh[:, 1:4] = 0.2
    albedo = torch.full((1, template.shape[0], 3), 0.6)
    scale = torch.tensor([7.0])
    return dict(model=model, faces=faces, albedo=albedo.requires_grad_(requires_grad),
                sh=sh.requires_grad_(requires_grad), scale=scale.requires_grad_(requires_grad))


def weak_perspective_clip(vertices, scale):
    xy = scale[:, None, None] * vertices[..., :2]
    z = -0.1 * scale[:, None, None] * vertices[..., 2:]
    return torch.cat([xy, z, torch.ones_like(z)], -1)


def facegeom_pipeline(case, size):
    renderer = MeshRenderer(case["faces"], size)

    def run():
        vertices, _ = ops.lbs(**case["model"])
        return renderer(vertices, case["albedo"], case["sh"], pos=weak_perspective_clip(vertices, case["scale"])).image

    return run


def reference_pipeline(case, size):
    faces = case["faces"]
    topology = reference.antialias_topology(faces)

    def run():
        vertices, _ = reference.lbs(**case["model"])
        pos = weak_perspective_clip(vertices, case["scale"])
        rast, _ = reference.rasterize(pos, faces, (size, size))
        normals = reference.vertex_normals(vertices, faces)
        colour = reference.sh_shading(normals, case["albedo"], case["sh"], "deep3d")
        image, _ = reference.interpolate(colour, rast, faces)
        alpha = (rast[..., 3:] > 0).to(image.dtype)
        return reference.antialias(torch.cat([image, alpha], -1), rast, pos, faces, topology)[..., :3].flip(1)

    return run


PIPELINES = {"facegeom": facegeom_pipeline, "reference": reference_pipeline}


@pytest.mark.parametrize("impl", list(PIPELINES))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("size", [64, 224])
def test_flame_sized_render(benchmark, impl, mode, size):
    if impl == "reference" and size > 64:
        pytest.skip("the brute-force reference rasterizer takes minutes at this size")
    benchmark.group = f"lbs + render {size}x{size} B=1 {mode}"
    case = flame_sized_case(requires_grad=mode != "forward")
    run = PIPELINES[impl](case, size)
    target = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(0))
    rounds = 2 if impl == "reference" else 10
    if mode == "forward":
        with torch.no_grad():
            benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    else:
        benchmark.pedantic(lambda: (run() - target).square().mean().backward(), rounds=rounds, warmup_rounds=1)


def test_demo_iteration(benchmark):
    """One full-resolution iteration of `facegeom demo`: synthetic head forward,
    landmarks, render at 224 x 224, photometric + landmark loss, backward."""
    from facegeom import demo

    subject = demo.synthetic_subject()
    generator = torch.Generator().manual_seed(0)
    truth = demo.ground_truth(subject, generator, torch.float32)
    renderer = MeshRenderer(subject.faces, demo.IMAGE_SIZE, demo.SH_CONVENTION)
    with torch.no_grad():
        target, target_landmarks, _ = demo.forward(subject, renderer, truth, demo.IMAGE_SIZE)
    params = {k: v.clone().requires_grad_(True) for k, v in demo.initial_guess(subject, torch.float32).items()}

    def step():
        rendering, landmarks, _ = demo.forward(subject, renderer, params, demo.IMAGE_SIZE)
        loss = (rendering.image - target.image).square().mean() + (landmarks - target_landmarks).square().mean()
        loss.backward()

    benchmark.group = "demo iteration 224x224"
    benchmark.pedantic(step, rounds=10, warmup_rounds=1)
