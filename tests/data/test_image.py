"""facegeom.data._image: the OpenCV-equivalent resize and warp against per-pixel
transcriptions of OpenCV's arithmetic (and OpenCV itself when importable)."""
import numpy as np
import pytest


def assert_rounded(out_u8, ref):
    """uint8 output equals the rounded float reference, except at exact .5 ties (float order)."""
    want = np.clip(np.rint(ref), 0, 255)
    tie = np.abs(ref - np.floor(ref) - 0.5) < 1e-6
    assert np.all((out_u8 == want) | (tie & (np.abs(out_u8 - ref) <= 0.5 + 1e-6)))

from facegeom.data._image import cv2_resize, cv2_warp_affine, invert_affine
from tests.data._authors import cv_resize_loop, cv_warp_affine_loop
from tests.data.conftest import smooth_image


@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("size", [(13, 9), (5, 4), (11, 7), (24, 17), (6, 9)])
def test_resize_matches_transcription(interp, size):
    img = np.random.default_rng(1).integers(0, 256, (9, 11, 3)).astype(np.uint8)
    ref = cv_resize_loop(img, size, cubic=interp == "cubic")
    out_f = cv2_resize(img.astype(np.float64), size, interp)
    np.testing.assert_allclose(out_f, ref, atol=1e-9)
    out_u8 = cv2_resize(img, size, interp)
    assert out_u8.dtype == np.uint8 and out_u8.shape == (size[1], size[0], 3)
    assert_rounded(out_u8, ref)


def test_resize_grey_and_identity():
    img = np.random.default_rng(2).integers(0, 256, (7, 5)).astype(np.uint8)
    np.testing.assert_array_equal(cv2_resize(img, (5, 7), "linear"), img)
    np.testing.assert_array_equal(cv2_resize(img, (5, 7), "cubic"), img)


@pytest.mark.parametrize("quant", [True, False])
def test_warp_matches_transcription(quant):
    img = np.random.default_rng(3).integers(0, 256, (12, 10, 3)).astype(np.uint8)
    M = np.array([[0.93, 0.21, -1.3], [-0.17, 1.08, 2.6]])
    ref = cv_warp_affine_loop(img, M, (14, 11), quantize=quant)
    out = cv2_warp_affine(img.astype(np.float64), M, (14, 11), subpixel_bits=5 if quant else None)
    np.testing.assert_allclose(out, ref, atol=1e-9)
    out_u8 = cv2_warp_affine(img, M, (14, 11), subpixel_bits=5 if quant else None)
    assert_rounded(out_u8, ref)


def test_warp_identity_and_border():
    img = np.random.default_rng(4).integers(1, 256, (6, 8, 3)).astype(np.uint8)
    np.testing.assert_array_equal(cv2_warp_affine(img, np.eye(3)[:2], (8, 6)), img)
    out = cv2_warp_affine(img, np.array([[1.0, 0, 3], [0, 1.0, 0]]), (8, 6))
    np.testing.assert_array_equal(out[:, :3], 0)          # shifted right: left columns are border
    np.testing.assert_array_equal(out[:, 3:], img[:, :5])


def test_invert_affine():
    M = np.array([[1.2, -0.3, 4.0], [0.5, 0.9, -2.0]])
    A = invert_affine(M)
    full = np.vstack([M, [0, 0, 1]]) @ np.vstack([A, [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-12)


def test_bad_arguments():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="interpolation"):
        cv2_resize(img, (2, 2), "nearest")
    with pytest.raises(ValueError, match="size"):
        cv2_resize(img, (0, 2))
    with pytest.raises(ValueError, match="M must have shape"):
        cv2_warp_affine(img, np.eye(3), (4, 4))
    with pytest.raises(ValueError, match="subpixel_bits"):
        cv2_warp_affine(img, np.eye(3)[:2], (4, 4), subpixel_bits=3)


@pytest.mark.parametrize("interp", ["linear", "cubic"])
def test_resize_within_one_level_of_opencv(cv2_or_skip, interp):
    cv2 = cv2_or_skip
    img = smooth_image(37, 53)
    flag = cv2.INTER_LINEAR if interp == "linear" else cv2.INTER_CUBIC
    for size in [(100, 70), (20, 15), (26, 18), (224, 160)]:
        ours = cv2_resize(img, size, interp).astype(int)
        assert np.abs(ours - cv2.resize(img, size, interpolation=flag)).max() <= 1
        f = img.astype(np.float32)
        np.testing.assert_allclose(cv2_resize(f, size, interp), cv2.resize(f, size, interpolation=flag), atol=1e-3)


def test_warp_within_one_level_of_opencv(cv2_or_skip):
    cv2 = cv2_or_skip
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    M = np.array([[0.9, 0.2, -3.3], [-0.15, 1.1, 4.7]])
    ref = cv2.warpAffine(img, M, (60, 50), borderValue=0.0)
    # OpenCV >= 5 samples at the exact coordinate; 4.x quantises to 1/32 pixel.
    bits = None if int(cv2.__version__.split(".")[0]) >= 5 else 5
    assert np.abs(cv2_warp_affine(img, M, (60, 50), subpixel_bits=bits).astype(int) - ref).max() <= 1
