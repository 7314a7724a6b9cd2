"""facegeom.data.skin against a transcription of D3D:util/skin_mask.py (tests/data/_authors.py)."""
import numpy as np
import pytest
import torch

from facegeom.data import skin
from tests.data import _authors as A


def _image():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    img[0, 0] = (224, 172, 150)     # skin tone (RGB)
    img[0, 1] = (20, 60, 230)       # blue
    return img


def test_matches_authors_skinmask():
    rgb = _image()
    bgr = rgb[..., ::-1].astype(np.float32)          # the authors read with cv2.imread
    post_ref, mask_ref = A.d3d_skinmask(bgr)
    np.testing.assert_array_equal(skin.skinmask(bgr, bgr=True), mask_ref)
    np.testing.assert_array_equal(skin.skinmask(rgb), mask_ref)
    p = skin.skin_probability(rgb)
    assert p.shape == (6, 7) and p.dtype == torch.float64
    np.testing.assert_allclose(np.round(p.numpy() * 255), post_ref)
    assert p[0, 0] > 0.9 and p[0, 1] < 0.1


def test_constants_are_consistent():
    # det(C^-1) = 1 / det(C): checks every transcribed inverse-covariance entry against the
    # separately transcribed determinant (D3D:util/skin_mask.py:64-65,77-78).
    for dets, invs in ((skin.SKIN_COV_DET, skin.SKIN_COV_INV), (skin.NONSKIN_COV_DET, skin.NONSKIN_COV_INV)):
        for det, inv in zip(dets, invs):
            inv = np.array(inv)
            np.testing.assert_allclose(inv, inv.T)
            assert np.linalg.det(inv) * det == pytest.approx(1.0, rel=2e-3)
    assert sum(skin.SKIN_W) == pytest.approx(1.0, abs=1e-6)
    assert sum(skin.NONSKIN_W) == pytest.approx(1.0, abs=1e-6)
    assert skin.PRIOR_SKIN == 0.8


def test_ycbcr():
    rgb = torch.tensor([[0.0, 0, 0], [255, 255, 255], [255, 0, 0]])
    ycc = skin.rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(ycc[0].numpy(), [16, 128, 128])
    np.testing.assert_allclose(ycc[1].numpy(), [235, 128, 128], atol=1e-3)
    np.testing.assert_allclose(ycc[2].numpy(), [16 + 65.481, 128 - 37.797, 128 + 112], atol=1e-9)


def test_uint8_round_trip_and_loader():
    m = skin.skinmask(_image())
    assert m.dtype == np.uint8 and m.shape == (6, 7, 3)
    att = skin.load_skin_attention(m)
    assert att.shape == (1, 6, 7) and att.dtype == torch.float32
    p = skin.skin_probability(_image()).numpy()
    assert np.abs(att[0].numpy() - p).max() <= 0.5 / 255 + 1e-6


def test_bad_input():
    with pytest.raises(ValueError, match="img must have shape"):
        skin.skin_probability(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="mask"):
        skin.load_skin_attention(np.zeros((4, 4), np.float32))
