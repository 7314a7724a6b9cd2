"""RingNet (PIPELINES.md §3): losses vs the printed equations (4-8) and HMR's keypoint L1,
the IEF regressor and output layout, loose-crop preprocessing, NoW neutral export and
``facegeom train --method ringnet``."""
import json
import os

import numpy as np
import pytest
import torch

from facegeom.losses import ringnet as L
from facegeom.models import synthetic_head
from facegeom.nets.resnet import resnet18
from facegeom.pipelines import ringnet as RN


def _printed_ring_loss(beta, eta, diagonal=True):
    """eqs. 4-6 as printed, with explicit loops."""
    n_b, R = beta.shape[:2]
    total = 0.0
    for i in range(n_b):
        for j in range(R - 1):
            for k in range(R - 1):
                if not diagonal and j == k:
                    continue
                d_jk = float(((beta[i, j] - beta[i, k]) ** 2).sum())
                d_jR = float(((beta[i, j] - beta[i, R - 1]) ** 2).sum())
                total += max(0.0, d_jk - d_jR + eta)
    return total / (n_b * R)


@pytest.mark.parametrize("diagonal", [True, False])
def test_ring_loss_equals_printed_formula(diagonal):
    beta = np.random.default_rng(0).normal(size=(3, 6, 100)) * 0.1
    ours = L.ring_loss(torch.from_numpy(beta), eta=0.5, include_diagonal=diagonal)
    assert abs(float(ours) - _printed_ring_loss(beta, 0.5, diagonal)) < 1e-10


def test_ring_loss_zero_when_identities_separate_and_gradients():
    beta = torch.zeros(2, 6, 4, dtype=torch.float64)
    beta[:, -1, 0] = 1.0  # the other identity at squared distance 1 > eta
    assert float(L.ring_loss(beta)) == 0.0
    beta[:, -1, 0] = 0.5  # squared distance 0.25 < eta: the diagonal terms count
    assert abs(float(L.ring_loss(beta)) - 2 * 5 * 5 * 0.25 / 12) < 1e-12
    assert abs(float(L.ring_loss(beta, include_diagonal=False)) - 2 * 5 * 4 * 0.25 / 12) < 1e-12
    with pytest.raises(ValueError, match="R >= 2"):
        L.ring_loss(torch.zeros(2, 1, 3))


def test_landmark_loss_hmr_normalisation():
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(2, 68, 2, generator=g, dtype=torch.float64), torch.randn(2, 68, 2, generator=g, dtype=torch.float64)
    conf = torch.rand(2, 68, generator=g, dtype=torch.float64)
    conf[0, 0] = 0.41  # not above the threshold
    vis = (conf > 0.41).numpy()
    diff = np.abs(pred.numpy() - gt.numpy())
    ref = (diff * vis[..., None]).sum() / (2 * vis.sum())  # tf absolute_difference, SUM_BY_NONZERO_WEIGHTS
    assert abs(float(L.landmark_loss(pred, gt, conf)) - ref) < 1e-12
    assert abs(float(L.landmark_loss(pred, gt)) - diff.mean()) < 1e-12
    assert float(L.landmark_loss(pred, gt, torch.zeros(2, 68, dtype=torch.float64))) == 0.0
    with pytest.raises(ValueError, match="confidence"):
        L.landmark_loss(pred, gt, conf[:, :5])


def test_total_loss_weights():
    g = torch.Generator().manual_seed(1)
    shape = torch.randn(2, 6, 10, generator=g)
    lm, gt, exp = torch.randn(12, 68, 2, generator=g), torch.randn(12, 68, 2, generator=g), torch.randn(12, 5, generator=g)
    t = L.total_loss(shape, lm, gt, None, exp)
    ref = (L.ring_loss(shape) + 60 * L.landmark_loss(lm, gt) + 1e-4 * (shape.flatten(0, 1) ** 2).sum(1).mean()
           + 1e-4 * (exp ** 2).sum(1).mean())
    torch.testing.assert_close(t["total"], ref)


@pytest.fixture(scope="module")
def head():
    return synthetic_head(n_shape=10, n_exp=5, n_tex=1, dtype=torch.float32)


def test_ief_regressor_iterations_and_init():
    torch.manual_seed(0)
    reg = RN.IEFRegressor(32, 20, iterations=3).eval()
    limit = (3 * 0.01 / ((512 + 20) / 2)) ** 0.5
    assert float(reg.fc3.weight.detach().abs().max()) <= limit and float(reg.fc3.weight.detach().abs().max()) > 0.8 * limit
    assert reg.fc1.in_features == 32 + 20
    x = torch.randn(4, 32)
    est = reg(x)
    theta = torch.zeros(4, 20)
    for t in range(3):  # transcription: theta_{t+1} = theta_t + fc3(relu(fc2(relu(fc1([x, theta])))))
        theta = theta + reg.fc3(torch.relu(reg.fc2(torch.relu(reg.fc1(torch.cat([x, theta], 1))))))
        torch.testing.assert_close(est[t], theta)


def test_ringnet_forward_layout_and_projection(head):
    torch.manual_seed(0)
    model = RN.RingNet(head, resnet18(num_classes=None)).eval()
    assert model.regressor.n_params == 3 + 6 + 10 + 5
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    theta = out["theta"]
    torch.testing.assert_close(out["cam"], theta[:, :3])
    torch.testing.assert_close(out["pose"], theta[:, 3:9])
    torch.testing.assert_close(out["shape"], theta[:, 9:19])
    torch.testing.assert_close(out["expression"], theta[:, 19:])
    ref = head(shape=out["shape"], expression=out["expression"], pose=out["pose"][:, :3], jaw=out["pose"][:, 3:])
    torch.testing.assert_close(out["vertices"], ref.vertices)
    s, t = out["cam"][:, None, :1], out["cam"][:, None, 1:]
    torch.testing.assert_close(out["landmarks"], s * (ref.landmarks2d[..., :2] + t))
    assert not any(p.requires_grad for p in model.flame.parameters())
    with pytest.raises(ValueError, match="theta"):
        RN.split_params(theta[:, :5], 10, 5)


def test_neutral_vertices_pad_shape():
    flame = synthetic_head(n_shape=20, n_exp=5, n_tex=1, dtype=torch.float32)
    shape = torch.randn(2, 10)
    padded = torch.cat([shape, torch.zeros(2, 10)], 1)
    torch.testing.assert_close(RN.neutral_vertices(flame, shape), flame(shape=padded, expression=torch.zeros(2, 5)).vertices)


def test_now_prediction_neutral(tmp_path):
    from facegeom.pipelines.mica import write_now

    flame = synthetic_head(n_shape=20, n_exp=5, n_tex=1, dtype=torch.float32)
    shape = torch.randn(1, 10)
    now = RN.now_prediction(flame, shape)
    ref = flame(shape=torch.cat([shape, torch.zeros(1, 10)], 1))
    torch.testing.assert_close(now["vertices"], ref.vertices)
    torch.testing.assert_close(now["kpt7"], ref.landmarks3d[:, [36, 39, 42, 45, 33, 48, 54]])
    paths = write_now(tmp_path, "s/c/img", now["vertices"][0], now["kpt7"][0], flame.faces, scale=1.0)
    assert os.path.isfile(paths["mesh"]) and np.load(paths["landmarks"]).shape == (7, 3)


def test_loose_crop_matches_release():
    from facegeom.data._image import cv2_resize

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (224, 150, 3), dtype=np.uint8)  # max side 224: no resize
    crop = RN.loose_crop(img)
    assert crop.shape == (224, 224, 3)
    # transcription of scale_and_crop: centre (x, y) = round((H, W) / 2)[::-1] = (75, 112); pad 112 (edge)
    pad = np.pad(img, ((112, 112), (112, 112), (0, 0)), mode="edge")
    np.testing.assert_allclose(crop, 2 * (pad[112:336, 75:299] / 255.0 - 0.5))
    big = rng.integers(0, 256, (301, 400, 3), dtype=np.uint8)
    s = 224 / 400
    new = np.floor(np.array([301, 400]) * s).astype(int)
    scaled = cv2_resize(big, (int(new[1]), int(new[0])))
    c = np.round(np.round(np.array([301, 400]) / 2)[::-1] * np.array([new[1] / 400, new[0] / 301])).astype(int)
    pad = np.pad(scaled, ((112, 112), (112, 112), (0, 0)), mode="edge")
    np.testing.assert_allclose(RN.loose_crop(big), 2 * (pad[c[1]:c[1] + 224, c[0]:c[0] + 224] / 255.0 - 0.5))
    x = RN.preprocess(big)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), RN.loose_crop(big), atol=1e-6)


def test_train_cli_ringnet_two_steps(tmp_path):
    from facegeom.cli import main as cli_main

    out = tmp_path / "run"
    assert cli_main(["train", "--method", "ringnet", "--data", "synthetic", "--steps", "2", "--batch-size", "2",
                     "--tiny", "--quiet", "--out", str(out)]) == 0
    lines = [json.loads(s) for s in open(out / "metrics.jsonl")]
    losses = [r["loss/total"] for r in lines if "loss/total" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any("loss/ring" in r for r in lines)
    state = torch.load(out / "final.pt", map_location="cpu")
    model = RN.RingNetMethod().build_model(RN.Config.tiny())
    RN.load_checkpoint(model, out / "final.pt")
    assert torch.equal(model.regressor.fc3.weight, state["regressor.fc3.weight"])
    with pytest.raises(FileNotFoundError):
        RN.load_checkpoint(model, tmp_path / "none.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="regressor"):
        RN.load_checkpoint(model, tmp_path / "other.pt")


def test_ring_dataset_layout():
    method = RN.RingNetMethod()
    cfg = RN.RingNetConfig.tiny()
    ds = method.dataset(cfg, "synthetic", "train", 0)
    item = ds[2]
    assert item["image"].shape == (cfg.ring_size, 3, cfg.image_size, cfg.image_size)
    ids = item["identity"].tolist()
    assert len(set(ids[:-1])) == 1 and ids[-1] != ids[0]
    assert item["landmarks"].shape == (cfg.ring_size, 68, 2)


def test_ring_dataset_shape_space_and_cache():
    """shape_std / shape_components reach the synthetic identities; cache_rings returns the
    rendered ring again (same tensors as rendering it anew)."""
    import dataclasses

    method = RN.RingNetMethod()
    base = dataclasses.replace(RN.RingNetConfig.tiny(), num_rings=2)
    wide = dataclasses.replace(base, shape_std=8.0, shape_components=3, cache_rings=True)
    plain = method.dataset(base, "synthetic", "train", 0)
    ds = method.dataset(wide, "synthetic", "train", 0)
    a, b = plain.faces.sample_params(0)["shape"], ds.faces.sample_params(0)["shape"]
    torch.testing.assert_close(b[:3], 8.0 * a[:3])
    assert torch.all(b[3:] == 0)
    first = ds[1]
    assert ds[1] is first
    fresh = method.dataset(dataclasses.replace(wide, cache_rings=False), "synthetic", "train", 0)[1]
    for key in ("image", "landmarks", "identity"):
        assert torch.equal(first[key], fresh[key])
