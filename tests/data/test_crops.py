"""facegeom.data.crops against transcriptions of RingNet, 2DASL/3DDFA and the metrical
tracker's code (tests/data/_authors.py)."""
import numpy as np
import pytest
import torch

from facegeom.data import crops
from facegeom.data._image import cv2_resize
from tests.data import _authors as A
from tests.data.conftest import face_landmarks68, smooth_image


def _resize_linear(img, size):
    return np.clip(np.rint(A.cv_resize_loop(img, size)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(41, 30), (25, 37), (31, 31), (20, 9)])
def test_ringnet_crop_matches_authors(shape):
    img = smooth_image(*shape)
    out, proc = crops.ringnet_crop(img, img_size=24)      # small img_size keeps the loop fast
    ref, start, end = A.rn_preprocess(img, _resize_linear, img_size=24)
    assert out.shape == (24, 24, 3)
    np.testing.assert_allclose(out, ref, atol=2 / 255 + 1e-12)   # rounding ties: at most 1 grey level
    assert np.mean(np.abs(out - ref) > 1e-12) < 0.01
    np.testing.assert_array_equal(proc["start_pt"], start)
    np.testing.assert_array_equal(proc["end_pt"], end)
    assert out.min() >= -1 and out.max() <= 1


def test_ringnet_crop_no_resize_at_224_and_edge_padding():
    img = smooth_image(224, 150)
    out, proc = crops.ringnet_crop(img)
    assert proc["scale"] == 1.0
    # width 150 < 224: the 37 columns each side are edge padding (copies of the border column)
    np.testing.assert_allclose(out[:, 37:187], 2 * (img / 255.0 - 0.5))
    np.testing.assert_allclose(out[:, :37], np.repeat(out[:, 37:38], 37, 1))


def test_tdasl_map_matches_authors():
    pts = face_landmarks68(60, 60, 50, 1).T.astype(np.float32)    # [2, 68]
    pts[0, 17] = 130.0      # > 119: clipped to 119
    pts[1, 30] = -0.5       # negative: numpy wraps, as the authors' code
    np.testing.assert_array_equal(crops.obtain_18pts_map(pts), A.tdasl_map(pts))
    np.testing.assert_array_equal(crops.obtain_18pts_map(pts.T), A.tdasl_map(pts))   # [68, 2] accepted
    m = crops.obtain_18pts_map(pts)
    assert set(np.unique(m)) == {-1.0, 1.0} and (m == 1).sum() <= 18
    with pytest.raises(IndexError, match="pts68"):
        crops.obtain_18pts_map(np.full((2, 68), -500.0))


def test_map_2d_18pts():
    pts = np.arange(136, dtype=np.float64).reshape(2, 68)
    out = crops.map_2d_18pts_2d(pts)
    assert out.shape == (2, 18)
    np.testing.assert_array_equal(out[:, 0], pts[:, 17])
    np.testing.assert_array_equal(out[:, 7], (pts[:, 37] + pts[:, 40]) / 2)
    np.testing.assert_array_equal(out[:, 16], (pts[:, 62] + pts[:, 66]) / 2)


def test_tdasl_input():
    img = smooth_image(120, 120)
    pts = face_landmarks68(60, 60, 50, 2).T
    x = crops.tdasl_input(img, pts)
    assert x.shape == (4, 120, 120) and x.dtype == torch.float32
    np.testing.assert_allclose(x[:3].numpy(), (img.transpose(2, 0, 1) - 127.5) / 128, atol=1e-6)
    np.testing.assert_array_equal(x[3].numpy(), A.tdasl_map(pts))
    with pytest.raises(ValueError, match="crop_bgr"):
        crops.tdasl_input(img[:100], pts)


def test_ddfa_roi_and_crop_match_authors():
    pts = face_landmarks68(70, 60, 50, 3).T
    np.testing.assert_allclose(crops.parse_roi_box_from_landmark(pts), A.ddfa_roi_from_landmark(pts))
    box = [10.3, 20.7, 90.1, 110.9]
    np.testing.assert_allclose(crops.parse_roi_box_from_bbox(box), A.ddfa_roi_from_bbox(box))
    img = smooth_image(100, 120)
    for roi in ([-10.4, -5.6, 60.2, 70.5], [80.5, 50.5, 140.2, 130.4], [10, 10, 50, 40]):
        np.testing.assert_array_equal(crops.crop_img(img, roi), A.ddfa_crop_img(img, roi))
    out = crops.ddfa_crop(img, [-10.4, -5.6, 60.2, 70.5])
    np.testing.assert_array_equal(out, cv2_resize(A.ddfa_crop_img(img, [-10.4, -5.6, 60.2, 70.5]), (120, 120)))
    with pytest.raises(ValueError, match="roi_box"):
        crops.crop_img(img, [10, 10, 5, 40])


@pytest.mark.parametrize("center,size", [((80, 60), 30), ((20, 25), 40), ((150, 100), 25)])
def test_tracker_bbox_and_crop_match_authors(center, size):
    img = smooth_image(120, 170)
    lm = face_landmarks68(*center, size, 4)
    box = crops.get_bbox(img.shape, lm, bb_scale=2.5)
    np.testing.assert_array_equal(box, A.mt_get_bbox(img, lm, bb_scale=2.5))
    out, box2 = crops.tracker_crop(img, lm, size=32)
    np.testing.assert_array_equal(box2, box)
    cropped = A.mt_crop_image(img, box[0], box[2], box[1], box[3])
    ref = np.clip(np.rint(A.cv_resize_loop(A.mt_pad_square(cropped), (32, 32), cubic=True)), 0, 255)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out - ref).max() <= 1
    # the same box is reused for later frames
    out2, _ = crops.tracker_crop(img, None, size=32, bbox=box)
    np.testing.assert_array_equal(out2, out)


def test_squarefiy_padding_is_black():
    img = np.full((10, 20, 3), 200, np.uint8)
    out = crops.squarefiy(img, size=20)
    assert out.shape == (20, 20, 3)
    assert out[0].max() == 0 and out[-1].max() == 0 and out[10, 10, 0] == 200
