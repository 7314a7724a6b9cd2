"""facegeom.losses.specular against transcriptions of the printed formulas of Deng, Jin,
Le, Deng (ACM MM 2022), ``specular-albedo-deng2022.txt`` §4.1 eq. 7-13 (no code was
released; PIPELINES.md §5.6). Each ``_eqN`` helper follows the printed equation term by
term with explicit loops over pixels / landmarks / vertices, one image at a time."""
import math

import numpy as np
import pytest
import torch

from facegeom.losses import specular as L


def _eq7(f_in, f_r):
    """Eq. 7: 1 - F(I_in) F(I_r) / (||F(I_in)||_2 ||F(I_r)||_2)."""
    return 1.0 - float(np.dot(f_in, f_r)) / (np.linalg.norm(f_in) * np.linalg.norm(f_r))


def _eq9(p):
    """Eq. 9: C_skin = 1 if p > 0.5 else p."""
    return 1.0 if p > 0.5 else p


def _eq8(I_in, I_d, I_full, M, P, eta):
    """Eq. 8 for one image; M: set of (row, col) pixels; images [3, H, W]."""
    num = den = second = 0.0
    for (r, c) in M:
        C = _eq9(P[r, c])
        num += C * np.linalg.norm(I_in[:, r, c] - I_d[:, r, c])
        den += C
        second += np.linalg.norm(I_in[:, r, c] - I_full[:, r, c])
    return num / den + eta * second / len(M)


def _eq10(k, kp, mu):
    """Eq. 10: (1/|K|) sum_i mu_i ||k_i - k_i^p||_2."""
    return sum(mu[i] * np.linalg.norm(k[i] - kp[i]) for i in range(len(k))) / len(k)


def _eq11(A, Ap):
    """Eq. 11: ||A - A^p|| (l1 norm over the pixels)."""
    return sum(abs(a - b) for a, b in zip(A.ravel(), Ap.ravel()))


def _eq12(ci, ct, ce):
    """Eq. 12: ||c_i||^2 + ||c_t||^2 + ||c_e||^2."""
    return sum(float(np.dot(c, c)) for c in (ci, ct, ce))


def _eq13_squared(T, lam):
    """Eq. 13 with its differences squared (the documented reading): (1/|T|) sum_i
    ||t_i - t_mean||^2 + mean over (b, c) of (lambda_{b,c} - lambda_mean_b)^2."""
    t_mean = sum(T) / len(T)
    first = sum(float(np.dot(t - t_mean, t - t_mean)) for t in T) / len(T)
    second = 0.0
    for b in range(9):
        lam_bar = sum(lam[b, c] for c in range(3)) / 3
        for c in range(3):
            second += (lam[b, c] - lam_bar) ** 2
    return first + second / 27


def test_identity_loss_eq7():
    r = np.random.default_rng(0)
    a, b = r.normal(size=(3, 16)), r.normal(size=(3, 16))
    ours = L.identity_loss(torch.tensor(a), torch.tensor(b))
    assert float(ours) == pytest.approx(np.mean([_eq7(a[i], b[i]) for i in range(3)]), rel=1e-12)
    assert float(L.identity_loss(torch.tensor(a), torch.tensor(2.5 * a))) == pytest.approx(0.0, abs=1e-12)


def test_skin_confidence_eq9():
    p = torch.tensor([0.0, 0.2, 0.5, 0.5000001, 0.9])
    assert L.skin_confidence(p).tolist() == pytest.approx([_eq9(float(v)) for v in p])


def test_photo_loss_eq8():
    r = np.random.default_rng(1)
    B, H, W = 2, 5, 6
    I_in, I_d, I_f = (r.uniform(0, 1, (B, 3, H, W)) for _ in range(3))
    mask = (r.uniform(size=(B, 1, H, W)) > 0.4).astype(np.float64)
    P = r.uniform(size=(B, 1, H, W))
    eta = 0.7
    ours = L.photo_loss(*(torch.tensor(x) for x in (I_in, I_d, I_f, mask, P)), eta=eta, eps=0.0)
    theirs = []
    for b in range(B):
        M = [(i, j) for i in range(H) for j in range(W) if mask[b, 0, i, j] > 0]
        theirs.append(_eq8(I_in[b], I_d[b], I_f[b], M, P[b, 0], eta))
    assert float(ours) == pytest.approx(np.mean(theirs), rel=1e-12)
    # the default eps only adds sqrt(1e-6) per pixel at most, and keeps the gradient finite at 0
    x = torch.tensor(I_in, requires_grad=True)
    L.photo_loss(x, torch.tensor(I_in), torch.tensor(I_in), torch.tensor(mask), torch.tensor(P)).backward()
    assert torch.isfinite(x.grad).all()


def test_landmark_loss_eq10_not_squared_with_weight_20():
    r = np.random.default_rng(2)
    k, kp = r.normal(0, 5, (3, 68, 2)), r.normal(0, 5, (3, 68, 2))
    mu = L.LANDMARK_WEIGHTS.numpy()
    assert mu[17:27].tolist() == [20.0] * 10 and mu[48:60].tolist() == [20.0] * 12
    assert mu.sum() == 68 - 22 + 22 * 20
    ours = L.landmark_loss(torch.tensor(kp), torch.tensor(k))
    assert float(ours) == pytest.approx(np.mean([_eq10(k[b], kp[b], mu) for b in range(3)]), rel=1e-9)
    # linear (not quadratic) in the error: doubling every offset doubles the loss
    double = L.landmark_loss(torch.tensor(k + 2 * (kp - k)), torch.tensor(k))
    assert float(double) == pytest.approx(2 * float(ours), rel=1e-9)
    with pytest.raises(ValueError, match="68 landmarks"):
        L.landmark_loss(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2))


def test_mouth_loss_eq11():
    r = np.random.default_rng(3)
    A, Ap = (r.uniform(size=(2, 1, 7, 9)) for _ in range(2))
    ours = L.mouth_loss(torch.tensor(A), torch.tensor(Ap))
    assert float(ours) == pytest.approx(np.mean([_eq11(A[b], Ap[b]) for b in range(2)]), rel=1e-12)


def test_reg_loss_eq12():
    r = np.random.default_rng(4)
    ci, ct, ce = r.normal(size=(2, 199)), r.normal(size=(2, 145)), r.normal(size=(2, 100))
    ours = L.reg_loss(torch.tensor(ci), torch.tensor(ct), torch.tensor(ce))
    assert float(ours) == pytest.approx(np.mean([_eq12(ci[b], ct[b], ce[b]) for b in range(2)]), rel=1e-12)


def test_uniform_loss_eq13_squared_reading():
    r = np.random.default_rng(5)
    T, lam = r.uniform(0, 1, (2, 30, 3)), r.normal(size=(2, 9, 3))
    ours = L.uniform_loss(torch.tensor(T), torch.tensor(lam))
    assert float(ours) == pytest.approx(np.mean([_eq13_squared(list(T[b]), lam[b]) for b in range(2)]), rel=1e-12)
    # the region T: a mask selects the vertices
    mask = np.zeros(30)
    mask[5:20] = 1
    ours = L.uniform_loss(torch.tensor(T), torch.tensor(lam), torch.tensor(mask))
    assert float(ours) == pytest.approx(np.mean([_eq13_squared(list(T[b, 5:20]), lam[b]) for b in range(2)]),
                                        rel=1e-12)
    # why the printed formula cannot be used as is: its first term is identically zero
    printed_first = sum(T[0, i] - T[0].mean(0) for i in range(30)) / 30
    np.testing.assert_allclose(printed_first, 0.0, atol=1e-12)
    # uniform colours and white light give zero
    flat = torch.full((1, 30, 3), 0.4, dtype=torch.float64)
    white = torch.tensor(lam[:1, :, :1]).expand(1, 9, 3)
    assert float(L.uniform_loss(flat, white)) == pytest.approx(0.0, abs=1e-15)


def test_bad_arguments():
    img = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="face_mask"):
        L.photo_loss(img, img, img, torch.ones(1, 1, 3, 4), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="render_full"):
        L.photo_loss(img, img, torch.zeros(1, 3, 4, 5), torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="sh_coeffs"):
        L.uniform_loss(torch.zeros(1, 5, 3), torch.zeros(1, 27))
    with pytest.raises(ValueError, match="mask"):
        L.uniform_loss(torch.zeros(1, 5, 3), torch.zeros(1, 9, 3), torch.ones(4))
    with pytest.raises(ValueError, match="projected_area"):
        L.mouth_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        L.identity_loss(torch.zeros(2, 3), torch.zeros(3, 3))
    assert math.isfinite(float(L.landmark_loss(torch.zeros(1, 68, 2), torch.zeros(1, 68, 2))))
