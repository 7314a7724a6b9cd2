"""facegeom.data.augment against a transcription of D3D:data/base_dataset.py:77-131."""
import numpy as np
import pytest
import torch
from PIL import Image

from facegeom.data import augment
from tests.data import _authors as A
from tests.data.conftest import face_landmarks68, smooth_image


def test_mirror_order_matches_authors():
    lm = np.arange(136, dtype=np.float64).reshape(68, 2)
    affine = np.eye(3)
    ref = A.d3d_apply_lm_affine(lm, affine, True, (224, 224))
    np.testing.assert_array_equal(lm[augment.MIRROR_68], ref)
    # an involution that swaps left/right pairs; the nose bridge 27-30 stays
    np.testing.assert_array_equal(augment.MIRROR_68[augment.MIRROR_68], np.arange(68))
    np.testing.assert_array_equal(augment.MIRROR_68[27:31], [27, 28, 29, 30])
    assert augment.MIRROR_68[0] == 16 and augment.MIRROR_68[36] == 45 and augment.MIRROR_68[48] == 54


@pytest.mark.parametrize("p", [augment.AffineParams(3, -7, 1.06, 8.2, False),
                               augment.AffineParams(-10, 10, 0.91, -9.5, True),
                               augment.AffineParams()])
@pytest.mark.parametrize("size", [(224, 224), (225, 201)])
def test_affine_and_landmarks_match_authors(p, size):
    w, h = size
    affine, inv, flip = augment.get_affine_mat(p, size)
    ref, ref_inv, _ = A.d3d_get_affine_mat(w, h, p.shift_x, p.shift_y, p.scale, p.rot_angle, p.flip)
    np.testing.assert_allclose(affine, ref, atol=1e-12)
    np.testing.assert_allclose(inv, ref_inv, atol=1e-12)
    lm = face_landmarks68(110, 100, 90)
    np.testing.assert_allclose(augment.apply_lm_affine(lm, affine, flip, size),
                               A.d3d_apply_lm_affine(lm, ref, p.flip, size), atol=1e-10)


@pytest.mark.parametrize("flip", [False, True])
def test_image_follows_landmarks(flip):
    # a bright dot at a landmark moves to where apply_lm_affine sends the landmark; with a flip
    # the image lands one pixel left of it (pixel-index vs PIL's continuous coordinates, as coded)
    img = np.zeros((224, 224, 3), np.uint8)
    x, y_img = 80, 70
    img[y_img - 1:y_img + 2, x - 1:x + 2] = 255
    lm = face_landmarks68(112, 112, 80)
    lm[0] = (x, 223 - y_img)                       # y-up
    p = augment.AffineParams(5, -4, 1.05, 7.0, flip)
    out, lm_out, _, _ = augment.augment(Image.fromarray(img), lm, params=p)
    arr = np.asarray(out)[..., 0].astype(float)
    yy, xx = np.unravel_index(np.argmax(arr), arr.shape)
    j = augment.MIRROR_68[0] if flip else 0       # after the flip point 0 sits at index 16
    assert abs(xx - (lm_out[j, 0] - (1.0 if flip else 0.0))) <= 1 and abs(yy - (223 - lm_out[j, 1])) <= 1


def test_image_warp_matches_pil_call():
    img = Image.fromarray(smooth_image(50, 60))
    p = augment.AffineParams(2, 3, 1.05, 4.0, False)
    _, inv, _ = augment.get_affine_mat(p, img.size)
    ref = img.transform(img.size, Image.Transform.AFFINE, data=inv.flatten()[:6], resample=Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(augment.apply_img_affine(img, inv)), np.asarray(ref))


def test_sampling_is_deterministic_and_in_range():
    a = [augment.sample_affine_params(torch.Generator().manual_seed(5)) for _ in range(2)]
    assert a[0] == a[1]
    g = torch.Generator().manual_seed(0)
    draws = [augment.sample_affine_params(g) for _ in range(300)]
    sx = np.array([d.shift_x for d in draws])
    assert sx.min() == -10 and sx.max() == 10
    assert all(0.9 <= d.scale <= 1.1 and -10 <= d.rot_angle <= 10 for d in draws)
    assert 0.35 < np.mean([d.flip for d in draws]) < 0.65


def test_mask_warped_like_image():
    img = Image.fromarray(smooth_image(40, 40))
    lm = face_landmarks68(20, 20, 15)
    p = augment.AffineParams(1, 2, 1.0, 3.0, False)
    out, _, m, _ = augment.augment(img, lm, img.copy(), params=p)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(m))
    with pytest.raises(ValueError, match="68 points"):
        augment.apply_lm_affine(lm[:5], np.eye(3), True, (40, 40))
