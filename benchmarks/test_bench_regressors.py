"""Training and inference cost of the regressors at the authors' sizes (pytest-benchmark, CPU,
float32): issue 13's "MICA inference images/s and training step time at batch 16; RingNet
training step at (n_b = 2, R = 6)" and issue 12's "training images/s at batch 8 with ResNet-50".

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_regressors.py -q \\
        --benchmark-columns=min,median,rounds

- MICA: IResNet-100 at 112 + mapping network + a FLAME-sized decoder (5023 vertices, 300
  shape components; random arrays of the real sizes, ``benchmarks/test_bench_models.py``),
  batch 16 = 8 identities x 2 images as ``configs/mica.yml``; inference under ``no_grad`` in
  ``eval()``; a training step = :meth:`MICAMethod.training_step` + backward + AdamW step.
- RingNet: ResNet-50 at 224 + IEF (3 iterations) + the FLAME-sized decoder (100 shape, 50
  expression) with 68 landmarks, 2 rings of 6; one step = loss (eq. 8) + backward + Adam step.
- Deep3D: ResNet-50 R-Net at 224, a BFM-sized model in the official layout (icosphere level 6:
  40,962 vertices), the authors' renderer, every loss including the perceptual one through a
  frozen IResNet-50 at 112; batch 8; one step = forward + backward + Adam step.

Images per second = batch / the median time. Set FACEGEOM_BENCH_ROUNDS (default 2).
"""
import os

import pytest
import torch

from facegeom.pipelines import deep3d as D
from facegeom.pipelines import mica as M
from facegeom.pipelines import ringnet as RN

ROUNDS = int(os.environ.get("FACEGEOM_BENCH_ROUNDS", "2"))


def _flame_with(n_shape, n_exp):
    """A FLAME-sized model with exactly ``n_shape`` / ``n_exp`` components."""
    from facegeom.models import FLAME
    from facegeom import testing
    import numpy as np

    case = testing.lbs_case(1)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 5023, (9976, 3))
    shapedirs = torch.cat([case["shapedirs"][..., :n_shape], case["shapedirs"][..., 300:300 + n_exp]], -1)
    model = FLAME(case["v_template"], shapedirs, case["posedirs"], case["J_regressor"], case["lbs_weights"],
                  faces, n_shape=n_shape, n_exp=n_exp)
    bary = rng.random((79, 17, 3))
    model.set_landmark_embedding(rng.integers(0, 9976, 51), rng.random((51, 3)), rng.integers(0, 9976, (79, 17)),
                                 bary / bary.sum(-1, keepdims=True), rng.integers(0, 9976, 68), rng.random((68, 3)))
    return model


def _train_step(method, model, batch, name, optimizer):
    """``training_step`` + backward + optimiser step, as the loop runs them."""

    def step():
        loss = method.training_step(model, batch, {name: optimizer})["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


@pytest.fixture(scope="module")
def mica():
    torch.manual_seed(0)
    model = M.MICA(_flame_with(300, 100))
    model.register_buffer("loss_weights", None, persistent=False)
    batch = {"arcface": torch.rand(8, 2, 3, 112, 112) * 2 - 1, "shape": torch.randn(8, 300)}
    return model, batch


def test_mica_inference_batch16(benchmark, mica):
    model, batch = mica
    images = batch["arcface"].flatten(0, 1)
    model.eval()

    def run():
        with torch.no_grad():
            return model(images)["vertices"]

    benchmark.group = "mica B=16"
    benchmark.extra_info["images"] = 16
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=0)


def test_mica_training_step_batch16(benchmark, mica):
    model, batch = mica
    method = M.MICAMethod()
    model.train()
    step = _train_step(method, model, batch, "adamw", M.optimizer(model))
    benchmark.group = "mica B=16"
    benchmark.extra_info["images"] = 16
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=0)


def test_ringnet_training_step_2x6(benchmark):
    torch.manual_seed(0)
    model = RN.RingNet(_flame_with(100, 50))
    model.loss_config = RN.RingNetConfig()
    model.train()
    opt = RN.RingNetMethod().optimizers(model, RN.RingNetConfig())["adam"]
    batch = {"image": torch.rand(2, 6, 3, 224, 224) * 2 - 1, "landmarks": torch.rand(2, 6, 68, 2) * 2 - 1}
    step = _train_step(RN.RingNetMethod(), model, batch, "adam", opt)
    benchmark.group = "ringnet n_b=2 R=6"
    benchmark.extra_info["images"] = 12
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=0)


def test_deep3d_training_step_batch8_resnet50(benchmark, tmp_path):
    from tests.pipelines.deep3d_files import write_deep3d_bfm

    path = tmp_path / "BFM_model_front.mat"
    write_deep3d_bfm(path, subdivisions=6)
    config = D.Config(bfm_path=str(path))
    method = D.Deep3DMethod()
    torch.manual_seed(0)
    model = method.build_model(config).train()
    opt = method.optimizers(model, config)["adam"]
    g = torch.Generator().manual_seed(0)
    M2 = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]).expand(8, 2, 3).contiguous()
    batch = {"imgs": torch.rand(8, 3, 224, 224, generator=g), "lms": torch.rand(8, 68, 2, generator=g) * 224,
             "msks": torch.rand(8, 1, 224, 224, generator=g), "M": M2}
    step = _train_step(method, model, batch, "adam", opt)
    benchmark.group = "deep3d train B=8 resnet50"
    benchmark.extra_info["images"] = 8
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=0)
