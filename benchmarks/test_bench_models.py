"""Model benchmarks (pytest-benchmark): a FLAME-sized forward with the 68
landmarks through facegeom.models.FLAME vs the same computation with the
smplx-style reference ops vs smplx's own lbs + landmark functions (when
installed); a Deep3DFaceRecon-sized BFM decode; building the synthetic head.

    python -m pytest benchmarks/test_bench_models.py -q --benchmark-columns=min,median,rounds

Timings depend on sizes, not values: the FLAME case is random arrays of the real
FLAME sizes (5023 vertices, 300 + 100 components) with a random landmark embedding.
"""
import importlib

import numpy as np
import pytest
import torch

from facegeom import testing
from facegeom.models import BFM, FLAME, synthetic_head
from facegeom.ops import reference

try:
    import smplx.lbs as smplx_lbs
except ImportError:  # a peer, not a dependency
    smplx_lbs = None


def flame_sized_model() -> FLAME:
    case = testing.lbs_case(1)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 5023, (9976, 3))
    model = FLAME(case["v_template"], case["shapedirs"], case["posedirs"], case["J_regressor"],
                  case["lbs_weights"], faces, n_shape=300, n_exp=100)
    bary = rng.random((79, 17, 3))
    model.set_landmark_embedding(rng.integers(0, 9976, 51), rng.random((51, 3)), rng.integers(0, 9976, (79, 17)),
                                 bary / bary.sum(-1, keepdims=True), rng.integers(0, 9976, 68), rng.random((68, 3)))
    return model


def reference_flame(model, shape, expression, pose):
    """The same forward with facegeom.ops.reference (smplx's algorithm, step by step)."""
    batch = shape.shape[0]
    betas = torch.cat([shape, expression], 1)
    vertices, joints = reference.lbs(betas, pose, model.v_template, model.shapedirs, model.posedirs,
                                     model.J_regressor, model.parents, model.lbs_weights)
    rows = model.contour_rows(pose)
    faces = model.faces
    corners = vertices[torch.arange(batch)[:, None, None], faces[model.dynamic_lmk_faces_idx[rows]]]
    contour = (corners * model.dynamic_lmk_bary_coords[rows][..., None]).sum(-2)
    static = (vertices[:, faces[model.lmk_faces_idx]] * model.lmk_bary_coords[..., None]).sum(-2)
    full = (vertices[:, faces[model.full_lmk_faces_idx]] * model.full_lmk_bary_coords[..., None]).sum(-2)
    return vertices, joints, torch.cat([contour, static], 1), full


def smplx_flame(model, shape, expression, pose):
    batch = shape.shape[0]
    betas = torch.cat([shape, expression], 1)
    vertices, joints = smplx_lbs.lbs(betas, pose, model.v_template, model.shapedirs, model.posedirs,
                                     model.J_regressor, model.parents, model.lbs_weights)
    dyn_faces, dyn_bary = smplx_lbs.find_dynamic_lmk_idx_and_bcoords(
        vertices, pose, model.dynamic_lmk_faces_idx, model.dynamic_lmk_bary_coords, torch.tensor([1, 0]))
    # smplx's FLAME repeats (copies) the embedding per batch element: its
    # vertices2landmarks needs contiguous indices.
    static = smplx_lbs.vertices2landmarks(vertices, model.faces, model.lmk_faces_idx.repeat(batch, 1),
                                          model.lmk_bary_coords.repeat(batch, 1, 1))
    contour = smplx_lbs.vertices2landmarks(vertices, model.faces, dyn_faces, dyn_bary)
    full = smplx_lbs.vertices2landmarks(vertices, model.faces, model.full_lmk_faces_idx.repeat(batch, 1),
                                        model.full_lmk_bary_coords.repeat(batch, 1, 1))
    return vertices, joints, torch.cat([contour, static], 1), full


def facegeom_flame(model, shape, expression, pose):
    out = model(shape, expression, pose[:, :3], pose[:, 3:6], pose[:, 6:9], pose[:, 9:])
    return out.vertices, out.joints, out.landmarks2d, out.landmarks3d


IMPLEMENTATIONS = {"facegeom": facegeom_flame, "reference": reference_flame, "smplx": smplx_flame}


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("batch", [1, 16])
def test_flame_forward(benchmark, impl, mode, batch):
    if impl == "smplx" and smplx_lbs is None:
        pytest.skip("smplx is not installed")
    fn = IMPLEMENTATIONS[impl]
    benchmark.group = f"FLAME + 68 landmarks B={batch} {mode}"
    model = flame_sized_model()
    g = torch.Generator().manual_seed(1)
    grad = mode != "forward"
    shape = torch.randn(batch, 300, generator=g).requires_grad_(grad)
    expression = torch.randn(batch, 100, generator=g).requires_grad_(grad)
    pose = (torch.randn(batch, 15, generator=g) * 0.2).requires_grad_(grad)

    def step():
        outputs = fn(model, shape, expression, pose)
        if grad:
            sum(o.sum() for o in outputs).backward()

    if grad:
        benchmark(step)
    else:
        with torch.no_grad():
            benchmark(step)


@pytest.mark.parametrize("impl", ["facegeom", "reference"])
def test_bfm_deep3d_sized_decode(benchmark, impl):
    """35,709 vertices, 80 identity + 64 expression + 80 texture components, B = 1."""
    benchmark.group = "BFM Deep3D-sized decode B=1"
    g = torch.Generator().manual_seed(0)
    n = 35709
    bfm = BFM(torch.randn(n, 3, generator=g), torch.randn(80, n, 3, generator=g) * 1e-3,
              torch.randn(64, n, 3, generator=g) * 1e-3, torch.zeros(1, 3, dtype=torch.int64),
              torch.rand(n, 3, generator=g), torch.randn(80, n, 3, generator=g) * 1e-2)
    coeffs = [torch.randn(1, k, generator=g) for k in (80, 64, 80)]
    with torch.no_grad():
        if impl == "facegeom":
            benchmark(lambda: bfm(*coeffs))
        else:
            benchmark(lambda: (reference.blendshapes(torch.cat(coeffs[:2], 1), bfm.shape_basis, bfm.mean_shape),
                               reference.blendshapes(coeffs[2], bfm.texture_basis, bfm.mean_texture)))


def test_synthetic_head_build(benchmark):
    """Building the synthetic head from scratch (its per-seed cache cleared each round)."""
    benchmark.group = "synthetic head"
    module = importlib.import_module("facegeom.models.synthetic_head")

    def build():
        module._build.cache_clear()
        return synthetic_head(seed=0)

    benchmark.pedantic(build, rounds=5, iterations=1)
