"""Deep3DFaceRecon pipeline benchmark (pytest-benchmark): decode + render + every loss but
the identity term, forward and forward+backward, batch 32 at 224 x 224, float32 on CPU:
facegeom.pipelines.deep3d against the authors' Python path (their ParametricFaceModel,
MeshRenderer and losses, transcribed in tests/, with nvdiffrast served by
facegeom.compat.nvdiffrast), in one run on the same inputs.

    python -m pytest benchmarks/test_bench_deep3d.py -q --benchmark-columns=min,median,rounds

The model is a BFM-sized file in the official layout (tests/pipelines/deep3d_files.py,
icosphere level 6: 40,962 vertices, 81,920 faces; BFM front: 35,709 / 70,789).
Set FACEGEOM_BENCH_DEEP3D_BATCH to change the batch.
"""
import os

import pytest
import torch

from facegeom.models import BFM
from facegeom.pipelines import deep3d as D
from tests.pipelines.deep3d_files import write_deep3d_bfm
from tests.pipelines.test_deep3d import AuthorsFaceModel
from tests.render.test_deep3d_renderer import authors_renderer

BATCH = int(os.environ.get("FACEGEOM_BENCH_DEEP3D_BATCH", "32"))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_deep3d") / "BFM_model_front.mat"
    write_deep3d_bfm(path, subdivisions=6)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(BATCH, 257, generator=g) * 0.2
    batch = {"imgs": torch.rand(BATCH, 3, 224, 224, generator=g), "lms": torch.rand(BATCH, 68, 2, generator=g) * 224,
             "msks": torch.rand(BATCH, 1, 224, 224, generator=g)}
    return BFM.from_deep3d(path), AuthorsFaceModel(path), params, batch


def facegeom_step(model, params, batch, backward):
    params = params.clone().requires_grad_(backward)
    total = D.losses(D.decode(params, model), batch)["total"]
    if backward:
        total.backward()
    return total


def authors_step(authors, renderer, params, batch, backward):
    """D3D:models/facerecon_model.py:134-175 (no feat term) with D3D:models/losses.py in torch."""
    params = params.clone().requires_grad_(backward)
    B = params.shape[0]
    vertex, tex, color, lm = authors.compute_for_render(params)
    mask, _, face = renderer(vertex, authors.face_buf, feat=color)
    crop, _, _ = renderer(vertex, authors.front_face_buf)
    m = batch["msks"] * crop.detach()
    photo = torch.sqrt(1e-6 + torch.sum((face - batch["imgs"]) ** 2, dim=1, keepdim=True)) * m
    photo = torch.sum(photo) / torch.max(torch.sum(m), torch.tensor(1.0))
    w = torch.ones(68)
    w[28:31] = 20
    w[-8:] = 20
    lm_loss = torch.sum(torch.sum((lm - batch["lms"]) ** 2, dim=-1) * w[None]) / (B * 68)
    ident, exp, tx, gamma = params[:, :80], params[:, 80:144], params[:, 144:224], params[:, 227:254]
    reg = (torch.sum(ident ** 2) + 0.8 * torch.sum(exp ** 2) + 1.7e-2 * torch.sum(tx ** 2)) / B
    gamma = gamma.reshape(-1, 3, 9)
    gamma_loss = torch.mean((gamma - gamma.mean(1, keepdim=True)) ** 2)
    skin = authors.skin_mask.float().reshape(1, -1, 1)
    mean = torch.sum(skin * tex, dim=1, keepdim=True) / torch.sum(skin)
    reflc = torch.sum(((tex - mean) * skin) ** 2) / (B * torch.sum(skin))
    total = 1.92 * photo + 1.6e-3 * lm_loss + 3e-4 * reg + 10 * gamma_loss + 5 * reflc
    if backward:
        total.backward()
    return total


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_facegeom(benchmark, case, mode):
    model, _, params, batch = case
    benchmark.group = f"deep3d decode+render+losses B={BATCH} {mode}"
    benchmark.pedantic(facegeom_step, args=(model, params, batch, mode != "forward"), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_authors_on_compat(benchmark, case, mode):
    _, authors, params, batch = case
    renderer = authors_renderer()
    benchmark.group = f"deep3d decode+render+losses B={BATCH} {mode}"
    benchmark.pedantic(authors_step, args=(authors, renderer, params, batch, mode != "forward"), rounds=3,
                       warmup_rounds=1)


def test_same_losses(case):
    """Both paths compute the same total (so the timings compare like with like)."""
    model, authors, params, batch = case
    small = {k: v[:2] for k, v in batch.items()}
    want = authors_step(authors, authors_renderer(), params[:2], small, False)
    got = facegeom_step(model, params[:2], small, False)
    assert float(got) == pytest.approx(float(want), rel=1e-4)
