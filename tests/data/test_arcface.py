"""facegeom.data.arcface against transcriptions of skimage's _umeyama, insightface's
estimate_norm / norm_crop and OpenCV 4.x warpAffine (tests/data/_authors.py)."""
import warnings

import numpy as np
import pytest
import torch

from facegeom.data import arcface
from facegeom.data.arcface import ARCFACE_TEMPLATE
from tests.data import _authors as A
from tests.data.conftest import smooth_image


def _kps(seed, scale=1.7, shift=30.0):
    rng = np.random.default_rng(seed)
    return ARCFACE_TEMPLATE.astype(np.float64) * scale + rng.normal(0, 4, (5, 2)) + shift


def test_template_values():
    np.testing.assert_array_equal(ARCFACE_TEMPLATE, np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
        dtype=np.float32))


@pytest.mark.parametrize("dim", [2, 3])
def test_umeyama_matches_skimage_transcription(dim):
    rng = np.random.default_rng(dim)
    src = rng.normal(size=(4, 7, dim))
    dst = rng.normal(size=(4, 7, dim)) + src * 2
    dst[1] = src[1].copy()
    dst[1][:, 0] *= -1                      # a reflection: det(A) < 0
    out = arcface.umeyama(torch.tensor(src), torch.tensor(dst))
    for b in range(4):
        np.testing.assert_allclose(out[b].numpy(), A.sk_umeyama(src[b], dst[b]), atol=1e-10)
    rigid = arcface.umeyama(torch.tensor(src[0]), torch.tensor(dst[0]), estimate_scale=False)
    np.testing.assert_allclose(rigid.numpy(), A.sk_umeyama(src[0], dst[0], estimate_scale=False), atol=1e-10)


def test_umeyama_degenerate_cases():
    rng = np.random.default_rng(0)
    line = np.stack([np.linspace(0, 1, 5), 2 * np.linspace(0, 1, 5)], 1)     # rank D-1
    dst = rng.normal(size=(5, 2))
    np.testing.assert_allclose(arcface.umeyama(torch.tensor(line), torch.tensor(dst)).numpy(),
                               A.sk_umeyama(line, dst), atol=1e-10)
    same = np.ones((5, 2))                                                       # rank 0
    assert torch.isnan(arcface.umeyama(torch.tensor(same), torch.tensor(dst))).all()
    with pytest.raises(ValueError, match="degenerate"):
        arcface.estimate_norm(same)


@pytest.mark.parametrize("size", [112, 224, 128, 256])
def test_estimate_norm_matches_insightface(size):
    lmk = _kps(size)
    np.testing.assert_allclose(arcface.estimate_norm(lmk, size), A.if_estimate_norm(lmk, size), atol=1e-9)


def test_estimate_norm_recovers_a_similarity():
    ang, s, t = 0.3, 1.9, np.array([12.0, -7.0])
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    lmk = (ARCFACE_TEMPLATE.astype(np.float64) - t) @ np.linalg.inv(s * R).T   # exact preimage
    M = arcface.estimate_norm(lmk)
    np.testing.assert_allclose(lmk @ M[:, :2].T + M[:, 2], ARCFACE_TEMPLATE, atol=1e-4)


def test_norm_crop_matches_opencv4_transcription():
    img = smooth_image(64, 60)
    lmk = _kps(1, scale=0.45, shift=4.0)
    M = A.if_estimate_norm(lmk, 112)
    ref = A.cv_warp_affine_loop(img, M, (112, 112), quantize=True)
    out = arcface.norm_crop(img, lmk)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - ref).max() <= 0.5 + 1e-6
    assert (out == 0).all(-1).any()          # the source does not cover the whole output: border 0


def test_norm_crop_against_opencv(cv2_or_skip):
    cv2 = cv2_or_skip
    img = smooth_image(300, 280)
    lmk = _kps(2)
    bits = None if int(cv2.__version__.split(".")[0]) >= 5 else 5
    ref = cv2.warpAffine(img, A.if_estimate_norm(lmk, 112), (112, 112), borderValue=0.0)
    assert np.abs(arcface.norm_crop(img, lmk, subpixel_bits=bits).astype(int) - ref).max() <= 1


def test_estimate_norm_against_skimage():
    trans = pytest.importorskip("skimage.transform")
    lmk = _kps(3)
    tform = trans.SimilarityTransform()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # skimage >= 0.26 deprecates estimate()
        tform.estimate(lmk, ARCFACE_TEMPLATE)
    # skimage keeps the float32 template's precision
    np.testing.assert_allclose(arcface.estimate_norm(lmk), tform.params[:2], atol=1e-5)


def test_arcface_blob():
    img = np.random.default_rng(0).integers(0, 256, (112, 112, 3)).astype(np.uint8)
    blob = arcface.arcface_blob(img)
    assert blob.shape == (1, 3, 112, 112) and blob.dtype == torch.float32
    want = (img[..., ::-1].astype(np.float64) - 127.5) / 127.5
    np.testing.assert_allclose(blob[0].permute(1, 2, 0).numpy(), want, atol=1e-6)
    with pytest.raises(ValueError, match="aligned_bgr"):
        arcface.arcface_blob(img[:100])


def test_bad_inputs():
    with pytest.raises(ValueError, match="lmk must have shape"):
        arcface.estimate_norm(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="image_size"):
        arcface.estimate_norm(_kps(0), 100)
    with pytest.raises(TypeError, match="img"):
        arcface.norm_crop(np.zeros((10, 10, 3), np.float32), _kps(0))

