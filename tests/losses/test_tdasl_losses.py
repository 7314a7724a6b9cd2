"""2DASL / 3DDFA losses against numpy transcriptions of the authors' arithmetic
(3DDFA:wpdc_loss.py:50-126, 3DDFA:vdc_loss.py:48-86; 2DASL paper eq. 3-6)."""
import numpy as np
import pytest
import torch

from facegeom.data.crops import map_2d_18pts_2d
from facegeom.losses import tdasl as L
from facegeom.pipelines.tdasl import DDFAModel

N = 300


def _model(seed=0):
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 50, (3 * N, 1))
    w_shp = rng.normal(0, 1e3, (3 * N, 40))
    w_exp = rng.normal(0, 1.0, (3 * N, 10))
    kp_v = rng.choice(N, 68, replace=False)
    kp = np.stack([3 * kp_v, 3 * kp_v + 1, 3 * kp_v + 2], 1).reshape(-1)
    return DDFAModel(u, w_shp, w_exp, kp, dtype=torch.float64), (u, w_shp, w_exp, kp)


def _stats(seed=1):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 1, 62)
    mean[:12] = [1e-3, 0, 0, 60, 0, 1e-3, 0, 60, 0, 0, 1e-3, 0]
    std = np.abs(rng.normal(0, 1, 62)) + 0.1
    std[:12] = 2e-4
    std[12:52] *= 1e-4  # 3DDFA: alpha_shp ~ 1e5 units... keep the scale moderate
    return mean, std


def _ref_parse(p):
    n = p.shape[0]
    p_ = p[:, :12].reshape(n, 3, 4)
    return p_[:, :, :3], p_[:, :, 3].reshape(n, 3, 1), p[:, 12:52].reshape(n, -1, 1), p[:, 52:].reshape(n, -1, 1)


def _ref_wpdc(inp_w, tgt_w, mean, std, u, w_shp, w_exp, mix):
    """3DDFA:wpdc_loss.py _calc_weights_resample + forward, re-written in numpy."""
    w_shp_base, u_base, w_exp_base = w_shp[mix], u[mix], w_exp[mix]
    inp = std * inp_w + mean
    tgt = std * tgt_w + mean
    n = inp.shape[0]
    _, _, a_shp, a_exp = _ref_parse(inp)
    weights = np.zeros_like(inp)
    tmpv = (u_base + w_shp_base @ a_shp + w_exp_base @ a_exp).reshape(n, -1, 3).transpose(0, 2, 1)
    tmpv_norm = np.linalg.norm(tmpv, axis=2)
    offset_norm = np.sqrt(w_shp_base.shape[0] // 3)
    diff = np.abs(inp[:, :11] - tgt[:, :11])
    for ind in range(11):
        if ind in [0, 4, 8]:
            weights[:, ind] = diff[:, ind] * tmpv_norm[:, 0]
        elif ind in [1, 5, 9]:
            weights[:, ind] = diff[:, ind] * tmpv_norm[:, 1]
        elif ind in [2, 6, 10]:
            weights[:, ind] = diff[:, ind] * tmpv_norm[:, 2]
        else:
            weights[:, ind] = diff[:, ind] * offset_norm
    w = np.concatenate((w_shp_base, w_exp_base), axis=1)
    weights[:, 12:] = 0.00057339936 * np.abs(inp[:, 12:] - tgt[:, 12:]) * np.linalg.norm(w, axis=0)
    weights[:, :11] += 1e-6
    weights[:, 12:] += 1e-6
    weights /= weights.max(axis=1).reshape(-1, 1)
    weights[:, 11] = 0
    return weights, (weights * (inp_w - tgt_w) ** 2).mean()


def test_wpdc_matches_3ddfa_transcription_and_gradient():
    model, (u, w_shp, w_exp, kp) = _model()
    mean, std = _stats()
    rng = np.random.default_rng(2)
    inp, tgt = rng.normal(0, 1, (3, 62)), rng.normal(0, 1, (3, 62))
    index = L.resample_index(model.keypoints, N, 132, torch.Generator().manual_seed(0))
    assert index.shape == (3 * 200,) and torch.equal(index[:204], model.keypoints)
    mix = index.numpy()
    w_ref, loss_ref = _ref_wpdc(inp, tgt, mean, std, u, w_shp, w_exp, mix)
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    x = t(inp).requires_grad_()
    w = L.wpdc_weights(x, t(tgt), t(mean), t(std), model, index)
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-10, atol=1e-14)
    assert (w[:, 11] == 0).all() and np.allclose(w.max(1).values.numpy(), 1.0)
    loss = L.wpdc_loss(x, t(tgt), t(mean), t(std), model, index=index)
    np.testing.assert_allclose(loss.item(), loss_ref, rtol=1e-10)
    loss.backward()  # weights carry no gradient: d/dx = 2 w (x - t) / numel
    np.testing.assert_allclose(x.grad.numpy(), 2 * w_ref * (inp - tgt) / inp.size, rtol=1e-9, atol=1e-15)


def test_wpdc_resamples_and_rejects_bad_shapes():
    model, _ = _model()
    mean, std = (torch.tensor(a) for a in _stats())
    x = torch.randn(2, 62, dtype=torch.float64)
    a = L.wpdc_loss(x, x * 0, mean, std, model, generator=torch.Generator().manual_seed(0))
    b = L.wpdc_loss(x, x * 0, mean, std, model, generator=torch.Generator().manual_seed(0))
    assert a == b and a > 0
    with pytest.raises(ValueError, match="input"):
        L.wpdc_loss(x[:, :61], x[:, :61], mean, std, model)


def _ref_vdc(inp_w, tgt_w, mean, std, u, w_shp, w_exp, rows):
    inp, tgt = inp_w * std + mean, tgt_w * std + mean
    p, off, a, e = _ref_parse(inp)
    pg, offg, ag, eg = _ref_parse(tgt)
    off = off.copy()
    off[:, -1] = offg[:, -1]
    n = inp.shape[0]
    gt = pg @ (u[rows] + w_shp[rows] @ ag + w_exp[rows] @ eg).reshape(n, -1, 3).transpose(0, 2, 1) + offg
    pr = p @ (u[rows] + w_shp[rows] @ a + w_exp[rows] @ e).reshape(n, -1, 3).transpose(0, 2, 1) + off
    return ((gt - pr) ** 2).mean()


def test_vdc_matches_3ddfa_transcription():
    model, (u, w_shp, w_exp, kp) = _model()
    mean, std = _stats()
    rng = np.random.default_rng(3)
    inp, tgt = rng.normal(0, 1, (2, 62)), rng.normal(0, 1, (2, 62))
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    got = L.vdc_loss(t(inp), t(tgt), t(mean), t(std), model)
    np.testing.assert_allclose(got.item(), _ref_vdc(inp, tgt, mean, std, u, w_shp, w_exp, slice(None)), rtol=1e-10)
    index = L.resample_index(model.keypoints, N, 132, torch.Generator().manual_seed(1))
    got = L.vdc_loss(t(inp), t(tgt), t(mean), t(std), model, opt_style="resample", index=index)
    np.testing.assert_allclose(got.item(), _ref_vdc(inp, tgt, mean, std, u, w_shp, w_exp, index.numpy()), rtol=1e-10)
    # tz is taken from the ground truth: changing only the predicted tz changes nothing
    inp2 = inp.copy()
    inp2[:, 11] += 5
    assert L.vdc_loss(t(inp2), t(tgt), t(mean), t(std), model).item() == pytest.approx(
        L.vdc_loss(t(inp), t(tgt), t(mean), t(std), model).item(), rel=1e-12)
    with pytest.raises(ValueError, match="opt_style"):
        L.vdc_loss(t(inp), t(tgt), t(mean), t(std), model, opt_style="x")


def test_landmarks_18_matches_crops_numpy():
    pts = np.random.default_rng(4).uniform(0, 119, (68, 2))
    got = L.landmarks_18(torch.tensor(pts)[None])[0].numpy()
    np.testing.assert_allclose(got, map_2d_18pts_2d(pts.T).T)


def test_landmark_consistency_terms():
    x = torch.zeros(2, 18, 2)
    y = torch.zeros(2, 18, 2)
    # 2DASL@ead2e16:advers_proj_utils_3.py lmsMask_18pts: [13, 16] -> 2, [7, 10, 15, 17] -> 1, rest 0.5
    assert L.LANDMARK_WEIGHTS_18[13] == L.LANDMARK_WEIGHTS_18[16] == 2.0
    assert [L.LANDMARK_WEIGHTS_18[i] for i in (7, 10, 15, 17)] == [1.0] * 4 and sum(L.LANDMARK_WEIGHTS_18) == 14.0
    y[0, 0] = torch.tensor([3.0, 4.0])   # eyebrow, weight 0.5 -> 2.5
    y[0, 13] = torch.tensor([0.0, 1.0])  # nose tip, weight 2 -> 2
    y[1, 15] = torch.tensor([1.0, 0.0])  # mouth corner, weight 1 -> 1
    assert L.landmark_2d_consistency(x, y).item() == pytest.approx((2.5 + 2 + 1) / 2)
    assert L.cycle_consistency(x, y).item() == pytest.approx(2.75)
    assert L.landmark_2d_consistency(x, y, weights=[1.0] * 18).item() == pytest.approx((5 + 1 + 1) / 2)
    a = torch.zeros(1, 68, 3)
    b = a.clone()
    b[0, :2] = torch.tensor([1.0, 2.0, 2.0])
    assert L.landmark_3d_consistency(a, b).item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="x and y"):
        L.landmark_2d_consistency(x[:, :17], y[:, :17])
    with pytest.raises(ValueError, match="weights"):
        L.landmark_2d_consistency(x, y, weights=[1.0] * 17)


def test_self_critic_and_adversarial_losses():
    torch.manual_seed(0)
    critic = L.SelfCritic(widths=(4, 4, 8, 8, 16, 512)).eval()
    convs = [m for m in critic.encoder if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in critic.encoder if isinstance(m, torch.nn.MaxPool2d)]
    assert len(convs) == 6 and len(pools) == 6
    assert [m.out_features for m in critic.critic if isinstance(m, torch.nn.Linear)] == [512, 1024, 1024, 1, 1]
    logits = critic(torch.randn(2, 3, 120, 120), torch.randn(2, 62))
    assert logits.shape == (2,)
    real, fake = torch.tensor([0.3, -1.0]), torch.tensor([2.0, 0.5])
    sig = torch.sigmoid
    expected = -(torch.log(sig(real)).mean() + torch.log(1 - sig(fake)).mean())
    assert L.critic_loss(real, fake).item() == pytest.approx(expected.item(), rel=1e-6)
    assert L.adversarial_loss(fake).item() == pytest.approx(-torch.log(sig(fake)).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="params"):
        critic(torch.randn(2, 3, 120, 120), torch.randn(2, 61))
