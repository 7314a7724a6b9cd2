"""facegeom.losses.deep3d against transcriptions of D3D:models/losses.py (numpy / torch,
written from the authors' arithmetic) and of kornia 0.5.5's warp_affine."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facegeom.losses import deep3d as L

G = torch.Generator().manual_seed(0)


def rand(*shape, dtype=torch.float64):
    return torch.rand(*shape, generator=G, dtype=dtype)


# ---- transcriptions of D3D:models/losses.py -------------------------------------------- #

def authors_photo_loss(imageA, imageB, mask, eps=1e-6):  # losses.py:45-54
    loss = np.sqrt(eps + np.sum((imageA - imageB) ** 2, axis=1, keepdims=True)) * mask
    return np.sum(loss) / max(np.sum(mask), 1.0)


def authors_landmark_loss(predict_lm, gt_lm):  # losses.py:56-72
    weight = np.ones([68])
    weight[28:31] = 20
    weight[-8:] = 20
    weight = np.expand_dims(weight, 0)
    loss = np.sum((predict_lm - gt_lm) ** 2, axis=-1) * weight
    return np.sum(loss) / (predict_lm.shape[0] * predict_lm.shape[1])


def authors_reg_loss(coeffs_dict, w_id=1.0, w_exp=0.8, w_tex=1.7e-2):  # losses.py:76-99
    creg_loss = w_id * np.sum(coeffs_dict['id'] ** 2) + w_exp * np.sum(coeffs_dict['exp'] ** 2) + \
        w_tex * np.sum(coeffs_dict['tex'] ** 2)
    creg_loss = creg_loss / coeffs_dict['id'].shape[0]
    gamma = coeffs_dict['gamma'].reshape([-1, 3, 9])
    gamma_mean = np.mean(gamma, axis=1, keepdims=True)
    return creg_loss, np.mean((gamma - gamma_mean) ** 2)


def authors_reflectance_loss(texture, mask):  # losses.py:101-112
    mask = mask.reshape([1, mask.shape[0], 1])
    texture_mean = np.sum(mask * texture, axis=1, keepdims=True) / np.sum(mask)
    return np.sum(((texture - texture_mean) * mask) ** 2) / (texture.shape[0] * np.sum(mask))


def authors_perceptual_loss(a, b):  # losses.py:39-42
    cosine_d = np.sum(a * b, axis=-1)
    return np.sum(1 - cosine_d) / cosine_d.shape[0]


def kornia055_warp_affine(src, M, dsize):
    """kornia 0.5.5 geometry/transform/imgwarp.py warp_affine (align_corners=True default)."""
    def normal_transform_pixel(height, width):
        tr = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]], dtype=src.dtype)
        tr[0, 0] = tr[0, 0] * 2.0 / (1e-14 if width == 1 else width - 1)
        tr[1, 1] = tr[1, 1] * 2.0 / (1e-14 if height == 1 else height - 1)
        return tr.unsqueeze(0)

    B, C, H, W = src.shape
    M_3x3 = F.pad(M, [0, 0, 0, 1], "constant", 0.0)
    M_3x3[..., -1, -1] += 1.0
    src_norm_trans_src_pix = normal_transform_pixel(H, W)
    src_pix_trans_src_norm = torch.inverse(src_norm_trans_src_pix)
    dst_norm_trans_dst_pix = normal_transform_pixel(*dsize)
    dst_norm_trans_src_norm = dst_norm_trans_dst_pix @ (M_3x3 @ src_pix_trans_src_norm)
    src_norm_trans_dst_norm = torch.inverse(dst_norm_trans_src_norm)
    grid = F.affine_grid(src_norm_trans_dst_norm[:, :2, :], [B, C, dsize[0], dsize[1]], align_corners=True)
    return F.grid_sample(src, grid, align_corners=True, mode="bilinear", padding_mode="zeros")


# ---- tests ------------------------------------------------------------------------------ #

def test_photo_loss():
    a, b = rand(2, 3, 8, 9), rand(2, 3, 8, 9)
    mask = (rand(2, 1, 8, 9) > 0.3).double() * rand(2, 1, 8, 9)
    want = authors_photo_loss(a.numpy(), b.numpy(), mask.numpy())
    torch.testing.assert_close(L.photo_loss(a, b, mask), torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    # an empty mask divides by 1, not 0; the gradient is finite where a == b
    assert float(L.photo_loss(a, b, torch.zeros(2, 1, 8, 9, dtype=torch.float64))) == 0.0
    x = a.clone().requires_grad_()
    L.photo_loss(x, a, torch.ones(2, 1, 8, 9, dtype=torch.float64)).backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="mask"):
        L.photo_loss(a, b, mask[:, :, :4])
    with pytest.raises(ValueError, match="imageB"):
        L.photo_loss(a, b[:, :2], mask)


def test_landmark_loss_weights_as_coded():
    p, q = rand(3, 68, 2) * 224, rand(3, 68, 2) * 224
    want = authors_landmark_loss(p.numpy(), q.numpy())
    torch.testing.assert_close(L.landmark_loss(p, q), torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    assert torch.nonzero(L.LANDMARK_WEIGHTS == 20).flatten().tolist() == [28, 29, 30, *range(60, 68)]
    torch.testing.assert_close(L.landmark_loss(p[:, :5], q[:, :5], torch.ones(5, dtype=torch.float64)),
                               ((p[:, :5] - q[:, :5]) ** 2).sum() / 15)
    with pytest.raises(ValueError, match="68 landmarks"):
        L.landmark_loss(p[:, :5], q[:, :5])
    with pytest.raises(ValueError, match="weight"):
        L.landmark_loss(p, q, torch.ones(67))


def test_reg_and_gamma_loss():
    coeffs = {"id": rand(4, 80) - 0.5, "exp": rand(4, 64) - 0.5, "tex": rand(4, 80) - 0.5, "gamma": rand(4, 27)}
    creg, gamma = authors_reg_loss({k: v.numpy() for k, v in coeffs.items()})
    torch.testing.assert_close(L.reg_loss(coeffs), torch.tensor(creg, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(L.gamma_loss(coeffs["gamma"]), torch.tensor(gamma, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(L.gamma_loss(coeffs["gamma"].reshape(4, 3, 9)), L.gamma_loss(coeffs["gamma"]))
    with pytest.raises(ValueError, match="'tex'"):
        L.reg_loss({"id": coeffs["id"], "exp": coeffs["exp"]})
    with pytest.raises(ValueError, match="gamma"):
        L.gamma_loss(rand(4, 26))


def test_reflectance_loss():
    texture = rand(2, 50, 3)
    mask = (rand(50) > 0.5).double()
    want = authors_reflectance_loss(texture.numpy(), mask.numpy())
    torch.testing.assert_close(L.reflectance_loss(texture, mask), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="mask"):
        L.reflectance_loss(texture, mask[:-1])


def test_resize_n_crop_is_kornia_warp_affine():
    image = rand(2, 3, 224, 224)
    angle = 0.2
    M = torch.tensor([[[0.5 * np.cos(angle), -0.5 * np.sin(angle), -20.0], [0.5 * np.sin(angle), 0.5 * np.cos(angle), -30.0]],
                      [[0.45, 0.0, -5.5], [0.0, 0.45, -10.25]]], dtype=torch.float64)
    got = L.resize_n_crop(image, M)
    want = kornia055_warp_affine(image, M, (112, 112))
    assert got.shape == (2, 3, 112, 112)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    got32 = L.resize_n_crop(image.float(), M.float())
    torch.testing.assert_close(got32, kornia055_warp_affine(image.float(), M.float(), (112, 112)), rtol=0, atol=1e-6)
    # pixel convention: the identity crop is the top-left 112 x 112 block, no resampling
    eye = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64).expand(2, 2, 3)
    torch.testing.assert_close(L.resize_n_crop(image, eye), image[:, :, :112, :112])
    with pytest.raises(ValueError, match="M"):
        L.resize_n_crop(image, M[:1])


def test_recog_features_and_perceptual_loss():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 8)).double()
    image_a, image_b = rand(2, 3, 40, 40), rand(2, 3, 40, 40)
    M = torch.tensor([[[0.4, 0.0, 0.0], [0.0, 0.4, 0.0]]], dtype=torch.float64).expand(2, 2, 3)
    fa = L.recog_features(net, image_a, M, input_size=16)
    fb = L.recog_features(net, image_b, M, input_size=16)
    # RecogNetWrapper.forward: normalize(net(2 * warp_affine(image, M) - 1))
    want_a = F.normalize(net(2 * kornia055_warp_affine(image_a, M, (16, 16)) - 1), dim=-1, p=2)
    torch.testing.assert_close(fa, want_a, rtol=0, atol=1e-10)
    want = authors_perceptual_loss(fa.detach().numpy(), fb.detach().numpy())
    torch.testing.assert_close(L.perceptual_loss(fa, fb), torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    assert float(L.perceptual_loss(fa, fa).detach()) == pytest.approx(0.0, abs=1e-12)
    image = image_a.clone().requires_grad_()
    L.perceptual_loss(L.recog_features(net, image, M, 16), fb.detach()).backward()
    assert image.grad.abs().sum() > 0
