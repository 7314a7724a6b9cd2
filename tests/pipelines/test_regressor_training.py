"""Training direction of MICA and RingNet on synthetic identities (issue 13), the validation
metrics the convergence runs report (benchmarks/converge_regressors.py), RingNet's HMR start
(theta_0) and Deep3D's aligned shape error (issue 12)."""
import dataclasses
import math

import pytest
import torch

from facegeom.nets.resnet import resnet18
from facegeom.pipelines import deep3d as D
from facegeom.pipelines import mica as M
from facegeom.pipelines import ringnet as RN


def _batch(dataset, count):
    return torch.utils.data.default_collate([dataset[i] for i in range(count)])


def _train(method, model, batch, name, optimizer, steps):
    model.train()
    for _ in range(steps):
        loss = method.training_step(model, batch, {name: optimizer})["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


# ------------------------------------------------------------------ metrics
def test_ring_separation_transcription():
    g = torch.Generator().manual_seed(0)
    shape = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    out = RN.ring_separation(shape, eta=0.5)
    same, other, gaps = [], [], []
    for i in range(3):  # loops over the ring as described in the docstring
        for j in range(3):
            d_other = float(((shape[i, j] - shape[i, 3]) ** 2).sum())
            other.append(d_other)
            for k in range(3):
                if j != k:
                    d_same = float(((shape[i, j] - shape[i, k]) ** 2).sum())
                    same.append(d_same)
                    gaps.append(d_other - d_same - 0.5 > 0)
    assert float(out["same_sq"]) == pytest.approx(sum(same) / len(same), rel=1e-12)
    assert float(out["other_sq"]) == pytest.approx(sum(other) / len(other), rel=1e-12)
    assert float(out["separated"]) == pytest.approx(sum(gaps) / len(gaps), rel=1e-12)
    apart = torch.zeros(2, 3, 4)
    apart[:, -1] = 1.0  # same identity identical, the other one at squared distance 4 > eta
    assert float(RN.ring_separation(apart)["separated"]) == 1.0
    with pytest.raises(ValueError, match="R >= 3"):
        RN.ring_separation(torch.zeros(2, 2, 4))


def test_vertex_error_mm():
    a = torch.zeros(2, 5, 3)
    b = a.clone()
    b[..., 0] = 0.003  # 3 mm along x
    assert float(M.vertex_error_mm(a, b)) == pytest.approx(3.0)


def test_deep3d_aligned_shape_error_removes_similarity():
    model = D.synthetic_bfm()
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(3, 80, generator=g)
    assert float(D._vertex_error(model, truth, truth, aligned=True).max()) < 1e-5
    raw = D._vertex_error(model, torch.zeros(3, 80), truth)
    aligned = D._vertex_error(model, torch.zeros(3, 80), truth, aligned=True)
    assert (aligned <= raw + 1e-6).all() and (aligned > 0).all()


# ------------------------------------------------------------------ RingNet's start
def test_ringnet_hmr_start(tmp_path):
    head = RN.RingNetMethod().build_model(RN.Config.tiny()).flame
    hmr = RN.RingNet(head, resnet18(num_classes=None), theta_init="hmr")
    initial = hmr.regressor.initial
    lm = head().landmarks2d[0, :, 1]
    scale = 1.0 / float(lm.max() - lm.min())  # the mean face's landmarks span half the crop
    assert float(initial[0]) == pytest.approx(scale, rel=1e-6) and float(initial[3]) == pytest.approx(math.pi)
    assert float(initial.abs().sum()) == pytest.approx(scale + math.pi, rel=1e-6)
    paper = RN.RingNet(head, resnet18(num_classes=None))  # the paper's theta_0 = 0
    assert float(paper.regressor.initial.abs().sum()) == 0.0
    reg = hmr.regressor.eval()
    x = torch.randn(2, reg.fc1.in_features - reg.n_params)
    theta = initial.expand(2, -1)
    for t, est in enumerate(reg(x)):  # theta_{t+1} = theta_t + fc3(...), from theta_0 = initial
        theta = theta + reg.fc3(torch.relu(reg.fc2(torch.relu(reg.fc1(torch.cat([x, theta], 1))))))
        torch.testing.assert_close(est, theta)
    assert "regressor.initial" in hmr.state_dict()  # checkpoints carry their start
    with pytest.raises(ValueError, match="theta_init"):
        RN.RingNet(head, resnet18(num_classes=None), theta_init="mean")
    with pytest.raises(ValueError, match="initial"):
        RN.IEFRegressor(8, 5, initial=torch.zeros(4))


# ------------------------------------------------------------------ direction over a few steps
def test_mica_few_steps_lower_the_vertex_error():
    method = M.MICAMethod()
    config = dataclasses.replace(M.MICAConfig.tiny(), lr=1e-3, arcface_lr=1e-3)
    torch.manual_seed(0)
    model = method.build_model(config)
    opt = method.optimizers(model, config)["adamw"]
    batch = _batch(method.dataset(config, "synthetic", "train", 0), 2)
    with torch.no_grad():
        before = method.validation_step(model.eval(), batch)
    _train(method, model, batch, "adamw", opt, 6)
    with torch.no_grad():
        after = method.validation_step(model.eval(), batch)
    assert float(after["mean_shape_mm"]) == pytest.approx(float(before["mean_shape_mm"]))
    assert float(after["vertex_mm"]) < float(before["vertex_mm"])
    assert float(after["loss"]) < float(before["loss"])


def test_ringnet_few_steps_separate_a_ring():
    method = RN.RingNetMethod()
    config = dataclasses.replace(RN.Config.tiny(), lr=1e-3, dropout=0.0)
    torch.manual_seed(0)
    model = method.build_model(config)
    opt = method.optimizers(model, config)["adam"]
    batch = _batch(method.dataset(config, "synthetic", "train", 0), 2)

    def measure():
        with torch.no_grad():
            return method.validation_step(model.eval(), batch)

    before = measure()
    _train(method, model, batch, "adam", opt, 30)
    after = measure()
    assert float(after["loss"]) < 0.5 * float(before["loss"])
    assert float(after["landmarks"]) < 0.5 * float(before["landmarks"])
    assert float(after["ring"]) < float(before["ring"])
    gap = lambda m: float(m["other_sq"] - m["same_sq"])  # noqa: E731
    assert gap(after) > gap(before)


def test_mica_trainable_stem_option():
    """freeze_stem=False (random-weight runs) trains conv1..layer3 too; the default freezes
    them as the authors do."""
    method = M.MICAMethod()
    frozen = method.build_model(M.MICAConfig.tiny())
    assert not frozen.arcface.conv1.weight.requires_grad and not frozen.arcface.layer3[0].conv1.weight.requires_grad
    model = method.build_model(dataclasses.replace(M.MICAConfig.tiny(), freeze_stem=False))
    assert not model.arcface.features.weight.requires_grad  # still fixed at 1, as the authors
    out = M.arcface_features(model.arcface, torch.randn(2, 3, 112, 112))
    out.sum().backward()
    assert model.arcface.conv1.weight.grad is not None and model.arcface.layer1[0].conv1.weight.grad.abs().sum() > 0
    opt = M.optimizer(model)
    assert any(p is model.arcface.conv1.weight for p in opt.param_groups[1]["params"])
    out = M.arcface_features(frozen.arcface, torch.randn(2, 3, 112, 112))
    out.sum().backward()
    assert frozen.arcface.conv1.weight.grad is None and frozen.arcface.layer4[0].conv1.weight.grad is not None
