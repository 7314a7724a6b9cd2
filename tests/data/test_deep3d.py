"""facegeom.data.deep3d against a transcription of D3D:util/preprocess.py (tests/data/_authors.py)."""
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from facegeom.data import deep3d
from tests.data import _authors as A
from tests.data.conftest import face_landmarks68, smooth_image


def _case(h, w, cx, cy, size, seed=0):
    img = Image.fromarray(smooth_image(h, w, seed))
    lm = face_landmarks68(cx, cy, size, seed)
    lm[:, 1] = h - 1 - lm[:, 1]     # y-up, as D3D:test.py:31
    return img, lm


def test_extract_5p_and_pos_match_authors():
    lm = face_landmarks68(100, 90, 80, 3)
    np.testing.assert_array_equal(deep3d.extract_5p(lm), A.d3d_extract_5p(lm))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5))
    xp = rng.normal(size=(2, 5)) * 50 + 100
    t, s = deep3d.POS(xp, x)
    t_ref, s_ref = A.d3d_POS(xp, x)
    np.testing.assert_allclose(t, t_ref[:, 0], rtol=1e-12, atol=1e-12)
    assert s == pytest.approx(float(s_ref), rel=1e-12)


@pytest.mark.parametrize("h,w,cx,cy,size", [(240, 320, 170, 120, 110), (300, 200, 100, 160, 70),
                                              (180, 180, 40, 50, 90), (257, 411, 350, 200, 130)])
def test_align_img_matches_authors(h, w, cx, cy, size):
    img, lm = _case(h, w, cx, cy, size)
    mask = Image.fromarray(smooth_image(h, w, 7))
    tp, im, lm_new, m = deep3d.align_img(img, lm, deep3d.LM3D_STD, mask=mask)
    tp_r, im_r, lm_r, m_r = A.d3d_align_img(img, lm, deep3d.LM3D_STD, mask=mask)
    np.testing.assert_allclose(tp, tp_r, rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(im), np.asarray(im_r))
    np.testing.assert_array_equal(np.asarray(m), np.asarray(m_r))
    np.testing.assert_allclose(lm_new, lm_r, rtol=1e-10, atol=1e-9)
    assert im.size == (224, 224) and lm_new.shape == (68, 2)


def test_align_img_five_points_and_black_fill():
    # a face at the image corner: the 224 box leaves the image; PIL fills with black
    img, lm = _case(160, 160, 30, 30, 110)
    lm5 = deep3d.extract_5p(lm)
    tp, im, lm_new, _ = deep3d.align_img(img, lm5)
    tp_r, im_r, lm_r, _ = A.d3d_align_img(img, lm5, deep3d.LM3D_STD)
    np.testing.assert_array_equal(np.asarray(im), np.asarray(im_r))
    np.testing.assert_allclose(lm_new, lm_r, atol=1e-9)
    arr = np.asarray(im)
    assert (arr.reshape(-1, 3) == 0).all(1).sum() > 1000


def test_landmark_and_image_inverse():
    img, lm = _case(240, 320, 170, 120, 110)
    tp, im, lm_new, _ = deep3d.align_img(img, lm)
    np.testing.assert_allclose(deep3d.landmarks_to_original(lm_new, tp), lm, atol=1e-9)
    back, valid = deep3d.image_to_original(im, tp)
    assert back.size == img.size and valid.shape == (240, 320) and valid.any() and not valid.all()
    a = np.asarray(back).astype(float)
    b = np.asarray(img).astype(float)
    # interior of the covered region: bicubic there and back of a smooth image
    inner = valid.copy()
    ys, xs = np.nonzero(valid)
    inner[:] = False
    inner[ys.min() + 4:ys.max() - 4, xs.min() + 4:xs.max() - 4] = True
    assert np.abs(a - b)[inner].mean() < 3.0
    assert np.all(a[~valid] == 0)


def test_estimate_norm_matches_authors():
    img, lm = _case(240, 320, 170, 120, 110)
    _, im, lm_new, _ = deep3d.align_img(img, lm)
    M = deep3d.estimate_norm(lm_new, 224)
    np.testing.assert_allclose(M, A.d3d_estimate_norm(lm_new.copy(), 224), atol=1e-9)
    # landmarks in the aligned crop land near the 112 template
    from facegeom.data.arcface import ARCFACE_TEMPLATE
    p = deep3d.extract_5p(lm_new.copy())
    p[:, 1] = 223 - p[:, 1]
    mapped = p @ M[:, :2].T + M[:, 2]
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 15
    Mt = deep3d.estimate_norm_torch(torch.tensor(np.stack([lm_new, lm_new])), 224)
    assert Mt.shape == (2, 2, 3) and Mt.dtype == torch.float32
    np.testing.assert_allclose(Mt[1].numpy(), M, atol=1e-5)
    # degenerate: all points equal -> identity (the authors' singular case)
    np.testing.assert_array_equal(deep3d.estimate_norm(np.ones((68, 2)), 224), np.eye(3)[:2])


def test_load_lm3d(tmp_path):
    lm = np.random.default_rng(0).normal(size=(68, 3))
    scipy.io.savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": lm})
    np.testing.assert_allclose(deep3d.load_lm3d(tmp_path), A.d3d_extract_5p(lm))
    with pytest.raises(FileNotFoundError, match="similarity_Lm3D_all.mat"):
        deep3d.load_lm3d(tmp_path / "nope")


def test_to_tensor():
    arr = smooth_image(5, 7)
    t = deep3d.to_tensor(arr)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), arr / 255.0, atol=1e-7)


def test_bad_inputs():
    img, lm = _case(100, 100, 50, 50, 40)
    with pytest.raises(ValueError, match="lm must have shape"):
        deep3d.align_img(img, lm[:10])
    with pytest.raises(ValueError, match="finite"):
        deep3d.align_img(img, np.full((68, 2), np.nan))
    with pytest.raises(TypeError, match="img"):
        deep3d.align_img(np.zeros((10, 10, 3), np.float32), lm)
    with pytest.raises(ValueError, match="mask size"):
        deep3d.align_img(img, lm, mask=Image.new("RGB", (5, 5)))
    with pytest.raises(ValueError, match="trans_params"):
        deep3d.landmarks_to_original(lm, [1, 2, 3])
