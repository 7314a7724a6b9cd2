"""facegeom.pipelines.deep3d against transcriptions of Deep3DFaceRecon_pytorch
(D3D:models/bfm.py ParametricFaceModel, models/networks.py ReconNetWrapper,
models/facerecon_model.py compute_losses, util/nvdiffrast.py MeshRenderer)."""
import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F

from facegeom.losses import deep3d as L
from facegeom.models import BFM
from facegeom.pipelines import deep3d as D
from tests.pipelines.deep3d_files import write_deep3d_bfm
from tests.render.test_deep3d_renderer import authors_renderer


class AuthorsFaceModel:
    """D3D:models/bfm.py ParametricFaceModel (float32, recenter=True), line for line."""

    def __init__(self, path, focal=1015., center=112., camera_distance=10.):
        model = scipy.io.loadmat(path)
        self.mean_shape = model['meanshape'].astype(np.float32)
        self.id_base = model['idBase'].astype(np.float32)
        self.exp_base = model['exBase'].astype(np.float32)
        self.mean_tex = model['meantex'].astype(np.float32)
        self.tex_base = model['texBase'].astype(np.float32)
        self.point_buf = model['point_buf'].astype(np.int64) - 1
        self.face_buf = model['tri'].astype(np.int64) - 1
        self.keypoints = np.squeeze(model['keypoints']).astype(np.int64) - 1
        self.front_face_buf = model['tri_mask2'].astype(np.int64) - 1
        self.front_mask = np.squeeze(model['frontmask2_idx']).astype(np.int64) - 1
        self.skin_mask = np.squeeze(model['skinmask'])
        mean_shape = self.mean_shape.reshape([-1, 3])
        mean_shape = mean_shape - np.mean(mean_shape, axis=0, keepdims=True)
        self.mean_shape = mean_shape.reshape([-1, 1])
        self.persc_proj = np.array([focal, 0, center, 0, focal, center, 0, 0, 1]).reshape([3, 3]).astype(
            np.float32).transpose()
        self.camera_distance = camera_distance
        self.init_lit = np.array([0.8, 0, 0, 0, 0, 0, 0, 0, 0]).reshape([1, 1, -1]).astype(np.float32)
        for key, value in list(self.__dict__.items()):
            if type(value).__module__ == np.__name__:
                setattr(self, key, torch.tensor(value))

    def compute_for_render(self, coeffs):
        a = [np.pi, 2 * np.pi / np.sqrt(3.), 2 * np.pi / np.sqrt(8.)]
        c = [1 / np.sqrt(4 * np.pi), np.sqrt(3.) / np.sqrt(4 * np.pi), 3 * np.sqrt(5.) / np.sqrt(12 * np.pi)]
        B = coeffs.shape[0]
        ident, exp, tex = coeffs[:, :80], coeffs[:, 80:144], coeffs[:, 144:224]
        angles, gamma, trans = coeffs[:, 224:227], coeffs[:, 227:254], coeffs[:, 254:]
        face_shape = (torch.einsum('ij,aj->ai', self.id_base, ident) + torch.einsum('ij,aj->ai', self.exp_base, exp)
                      + self.mean_shape.reshape([1, -1])).reshape([B, -1, 3])
        ones, zeros = torch.ones([B, 1]), torch.zeros([B, 1])
        x, y, z = angles[:, :1], angles[:, 1:2], angles[:, 2:]
        rot_x = torch.cat([ones, zeros, zeros, zeros, torch.cos(x), -torch.sin(x), zeros, torch.sin(x),
                           torch.cos(x)], dim=1).reshape([B, 3, 3])
        rot_y = torch.cat([torch.cos(y), zeros, torch.sin(y), zeros, ones, zeros, -torch.sin(y), zeros,
                           torch.cos(y)], dim=1).reshape([B, 3, 3])
        rot_z = torch.cat([torch.cos(z), -torch.sin(z), zeros, torch.sin(z), torch.cos(z), zeros, zeros, zeros,
                           ones], dim=1).reshape([B, 3, 3])
        rotation = (rot_z @ rot_y @ rot_x).permute(0, 2, 1)
        face_vertex = face_shape @ rotation + trans.unsqueeze(1)
        face_vertex[..., -1] = self.camera_distance - face_vertex[..., -1]
        face_proj = face_vertex @ self.persc_proj
        face_proj = face_proj[..., :2] / face_proj[..., 2:]
        landmark = face_proj[:, self.keypoints]
        face_texture = ((torch.einsum('ij,aj->ai', self.tex_base, tex) + self.mean_tex) / 255.).reshape([B, -1, 3])
        v1, v2, v3 = (face_shape[:, self.face_buf[:, k]] for k in range(3))
        face_norm = F.normalize(torch.cross(v1 - v2, v2 - v3, dim=-1), dim=-1, p=2)
        face_norm = torch.cat([face_norm, torch.zeros(face_norm.shape[0], 1, 3)], dim=1)
        face_norm = F.normalize(torch.sum(face_norm[:, self.point_buf], dim=2), dim=-1, p=2) @ rotation
        gamma = (gamma.reshape([B, 3, 9]) + self.init_lit).permute(0, 2, 1)
        n = face_norm
        Y = torch.cat([a[0] * c[0] * torch.ones_like(n[..., :1]), -a[1] * c[1] * n[..., 1:2], a[1] * c[1] * n[..., 2:],
                       -a[1] * c[1] * n[..., :1], a[2] * c[2] * n[..., :1] * n[..., 1:2],
                       -a[2] * c[2] * n[..., 1:2] * n[..., 2:], 0.5 * a[2] * c[2] / np.sqrt(3.) * (3 * n[..., 2:] ** 2 - 1),
                       -a[2] * c[2] * n[..., :1] * n[..., 2:], 0.5 * a[2] * c[2] * (n[..., :1] ** 2 - n[..., 1:2] ** 2)],
                      dim=-1)
        face_color = torch.cat([Y @ gamma[..., :1], Y @ gamma[..., 1:2], Y @ gamma[..., 2:]], dim=-1) * face_texture
        return face_vertex, face_texture, face_color, landmark


@pytest.fixture(scope="module")
def bfm_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("deep3d_pipeline") / "BFM_model_front.mat"
    write_deep3d_bfm(path)
    return path


def random_params(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(batch, 257, generator=g)
    p[:, :224] *= 1.0
    p[:, 224:227] *= 0.3                      # angles
    p[:, 227:254] *= 0.2                      # gamma
    p[:, 254:257] = p[:, 254:257] * 0.2       # trans (z near 0: camera distance ~10)
    return p


def test_split_coeff():
    p = torch.arange(2 * 257, dtype=torch.float32).reshape(2, 257)
    c = D.split_coeff(p)
    bounds = {"id": (0, 80), "exp": (80, 144), "tex": (144, 224), "angle": (224, 227), "gamma": (227, 254),
              "trans": (254, 257)}
    for k, (a, b) in bounds.items():
        assert torch.equal(c[k], p[:, a:b])
    with pytest.raises(ValueError, match="257"):
        D.split_coeff(torch.zeros(2, 256))


def test_decode_matches_parametric_face_model(bfm_path):
    model = BFM.from_deep3d(bfm_path)
    authors = AuthorsFaceModel(bfm_path)
    params = random_params(3)
    out = D.decode(params, model)
    vertex, texture, color, landmark = authors.compute_for_render(params.clone())
    torch.testing.assert_close(out.vertices, vertex, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.texture, texture, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.color, color, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.landmarks, landmark, rtol=0, atol=1e-5 * 224)  # pixels: 1e-5 relative
    assert (out.landmarks - landmark).abs().max() < 1e-4
    # the render equals the authors' renderer given the same vertices and colours
    same_mask, _, same_face = authors_renderer()(out.vertices.detach().clone(), authors.face_buf, feat=out.color)
    assert torch.equal(out.mask, same_mask) and out.mask.sum() > 1000
    torch.testing.assert_close(out.image, same_face, rtol=0, atol=1e-5)
    # end to end against the authors' decode + render: the decoded vertices differ from theirs by
    # float32 rounding (<= 1 ulp of the camera distance, ~1e-6), which moves barycentrics at
    # grazing triangles; everywhere else the images agree to 1e-5
    a_mask, _, a_face = authors_renderer()(vertex.clone(), authors.face_buf, feat=color)
    assert torch.equal(out.mask, a_mask)
    close = (out.image - a_face).abs() <= 1e-5
    assert close.float().mean() > 0.999 and (out.image - a_face).abs().max() < 1e-3
    # PyTorch crop mask: tri_mask2 against the full buffer (facerecon_model.py:159)
    a_crop, _, _ = authors_renderer()(vertex.clone(), authors.front_face_buf)
    assert torch.equal(out.crop_mask, a_crop)


def test_crop_mask_modes(bfm_path):
    model = BFM.from_deep3d(bfm_path)
    params = random_params(1, seed=2)
    tf = D.decode(params, model, D.Config(crop_mask="tf"))
    pytorch = D.decode(params, model)
    none = D.decode(params, model, D.Config(crop_mask="none"))
    assert torch.equal(none.crop_mask, none.mask)
    # the TF mask is the front part of the face: inside the full mask, and not the PyTorch one
    assert tf.crop_mask.sum() > 0 and bool((tf.crop_mask <= tf.mask).all())
    assert not torch.equal(tf.crop_mask, pytorch.crop_mask)
    authors = AuthorsFaceModel(bfm_path)
    vertex = authors.compute_for_render(params.clone())[0]
    want, _, _ = authors_renderer()(vertex[:, authors.front_mask].contiguous(), authors.front_face_buf)
    assert torch.equal(tf.crop_mask, want)


def test_reconnet_layout_zero_init_and_checkpoint(tmp_path):
    net = D.ReconNet("resnet50")
    keys = net.state_dict()
    assert len(keys) == 332 and sum(k.startswith("backbone.") for k in keys) == 318
    for i, k in enumerate((80, 64, 80, 3, 27, 2, 1)):
        assert keys[f"final_layers.{i}.weight"].shape == (k, 2048, 1, 1)
        assert keys[f"final_layers.{i}.bias"].shape == (k,)
        assert keys[f"final_layers.{i}.weight"].abs().sum() == 0
    assert "backbone.fc.weight" not in keys
    # an epoch_20.pth-layout file from random weights (ResNet-18 for speed) + DDP prefix variant
    g = torch.Generator().manual_seed(0)
    small = D.ReconNet("resnet18")
    state = {k: (torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v)
             for k, v in small.state_dict().items()}
    state = {k: (v.abs() + 0.5 if "running_var" in k else v) for k, v in state.items()}
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": state, "opt_00": {"state": {}, "param_groups": []}, "sched_00": {"last_epoch": 20}}, path)
    loaded = D.load_checkpoint(path).eval()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = torch.rand(2, 3, 64, 64, generator=g)
    # ReconNetWrapper.forward: cat of the 7 1x1 convs of the pooled features, flattened
    feats = loaded.backbone(x)
    want = torch.flatten(torch.cat([F.conv2d(feats, state[f"final_layers.{i}.weight"], state[f"final_layers.{i}.bias"])
                                    for i in range(7)], 1), 1)
    torch.testing.assert_close(loaded(x), want, rtol=0, atol=1e-6)
    assert want.abs().max() > 0
    ddp = tmp_path / "ddp.pth"
    torch.save({"net_recon": {"module." + k: v for k, v in state.items()}}, ddp)
    torch.testing.assert_close(D.load_checkpoint(ddp).eval()(x), want, rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        D.load_checkpoint(tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"something": {}}, bad)
    with pytest.raises(ValueError, match=r"bad\.pth"):
        D.load_checkpoint(bad)
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pth"):
        D.load_checkpoint(bad)


def authors_compute_losses(out_vertex, pred_tex, pred_color, pred_lm, coeffs, batch, authors, opt):
    """D3D:models/facerecon_model.py:145-175 without the feat term, on the transcribed renderer."""
    renderer = authors_renderer()
    pred_mask, _, pred_face = renderer(out_vertex.clone(), authors.face_buf, feat=pred_color)
    face_mask, _, _ = renderer(out_vertex.clone(), authors.front_face_buf)
    from tests.losses.test_deep3d_losses import (authors_landmark_loss, authors_photo_loss,
                                                 authors_reflectance_loss, authors_reg_loss)
    n = lambda t: t.detach().double().numpy()  # noqa: E731
    color = opt["w_color"] * authors_photo_loss(n(pred_face), n(batch["imgs"]), n(batch["msks"] * face_mask))
    reg, gamma = authors_reg_loss({k: n(v) for k, v in coeffs.items()}, 1.0, 0.8, 1.7e-2)
    lm = opt["w_lm"] * authors_landmark_loss(n(pred_lm), n(batch["lms"]))
    reflc = opt["w_reflc"] * authors_reflectance_loss(n(pred_tex), n(authors.skin_mask))
    return {"color": color, "reg": opt["w_reg"] * reg, "gamma": opt["w_gamma"] * gamma, "lm": lm, "reflc": reflc}


def test_losses_match_compute_losses(bfm_path):
    model = BFM.from_deep3d(bfm_path)
    authors = AuthorsFaceModel(bfm_path)
    params = random_params(2, seed=4).requires_grad_()
    g = torch.Generator().manual_seed(5)
    batch = {"imgs": torch.rand(2, 3, 224, 224, generator=g), "lms": torch.rand(2, 68, 2, generator=g) * 224,
             "msks": torch.rand(2, 1, 224, 224, generator=g)}
    out = D.decode(params, model)
    terms = D.losses(out, batch)
    assert set(terms) == {"color", "reg", "gamma", "lm", "reflc", "total"}
    vertex, tex, color, lm = authors.compute_for_render(params.detach().clone())
    want = authors_compute_losses(vertex, tex, color, lm, D.split_coeff(params.detach()), batch, authors,
                                  dict(w_color=1.92, w_reg=3e-4, w_gamma=10.0, w_lm=1.6e-3, w_reflc=5.0))
    for k, v in want.items():
        assert float(terms[k].detach()) == pytest.approx(v, rel=1e-5), k
    torch.testing.assert_close(terms["total"], sum(terms[k] for k in want))
    terms["total"].backward()
    assert torch.isfinite(params.grad).all() and params.grad[:, :80].abs().sum() > 0
    assert params.grad[:, 227:254].abs().sum() > 0  # gamma gets gradients through the photo loss


def test_losses_with_recognition_net(bfm_path):
    model = BFM.from_deep3d(bfm_path)
    params = random_params(2, seed=6)
    torch.manual_seed(0)
    recog = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(192, 16))
    g = torch.Generator().manual_seed(7)
    M = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]]).expand(2, 2, 3)
    batch = {"imgs": torch.rand(2, 3, 224, 224, generator=g), "lms": torch.rand(2, 68, 2, generator=g) * 224, "M": M}
    out = D.decode(params, model)
    terms = D.losses(out, batch, D.Config(use_predef_M=True), recog_net=recog)
    pred = L.recog_features(recog, out.image, M)
    gt = L.recog_features(recog, batch["imgs"], M)
    torch.testing.assert_close(terms["feat"], 0.2 * L.perceptual_loss(pred, gt))
    torch.testing.assert_close(terms["total"], sum(v for k, v in terms.items() if k != "total"))
    with pytest.raises(ValueError, match="'M'"):
        D.losses(out, {"imgs": batch["imgs"], "lms": batch["lms"]}, recog_net=recog)


def test_config_and_errors(bfm_path):
    c = D.Config()
    assert (c.w_feat, c.w_color, c.w_lm, c.w_reg, c.w_gamma, c.w_reflc) == (0.2, 1.92, 1.6e-3, 3e-4, 10.0, 5.0)
    assert (c.w_id, c.w_exp, c.w_tex, c.init_lit, c.image_size) == (1.0, 0.8, 1.7e-2, 0.8, 224)
    with pytest.raises(Exception):
        c.w_color = 1.0  # frozen
    tiny = D.Config.tiny()
    assert tiny.net_recon == "resnet18" and tiny.image_size == 64
    with pytest.raises(ValueError, match="crop_mask"):
        D.Config(crop_mask="both")
    model = BFM.from_deep3d(bfm_path)
    with pytest.raises(TypeError, match="params"):
        D.decode(torch.zeros(1, 257, dtype=torch.float64), model)
    out = D.decode(torch.zeros(1, 257), model, render=False)
    assert out.image is None
    with pytest.raises(ValueError, match="render"):
        D.losses(out, {"imgs": torch.zeros(1, 3, 224, 224), "lms": torch.zeros(1, 68, 2)})


def test_tiny_end_to_end(bfm_path):
    """Tiny config: ReconNet -> decode at 64 x 64 -> losses -> backward reaches the heads."""
    cfg = D.Config.tiny()
    net = D.ReconNet(cfg.net_recon)
    model = BFM.from_deep3d(bfm_path)
    g = torch.Generator().manual_seed(8)
    images = torch.rand(2, 3, cfg.image_size, cfg.image_size, generator=g)
    out = D.decode(net(images), model, cfg)
    assert out.image.shape == (2, 3, 64, 64) and out.mask.sum() > 100  # the mean face, frontal, centred
    terms = D.losses(out, {"imgs": images, "lms": torch.rand(2, 68, 2, generator=g) * 64}, cfg)
    terms["total"].backward()
    assert net.final_layers[0].bias.grad.abs().sum() > 0


# ---- C-Net (paper §5, eq. 7-8) ------------------------------------------------------------ #

def test_confidence_net_structure_and_zero_init():
    cnet = D.ConfidenceNet()
    assert 2.9e6 < sum(p.numel() for p in cnet.parameters()) < 3.1e6  # paper: "3M parameters"
    g = torch.Generator().manual_seed(0)
    shallow, pooled = torch.rand(3, 256, 56, 56, generator=g), torch.rand(3, 2048, generator=g)
    c = cnet(shallow, pooled)
    assert c.shape == (3, 80) and torch.equal(c, torch.full((3, 80), 0.5))  # zero last FC: plain averaging
    small = D.ConfidenceNet.for_reconnet(D.ReconNet("resnet18"))
    assert small.convs[0].in_channels == 64 and small.fc1.in_features == 256 + 512
    with pytest.raises(ValueError, match="shallow"):
        cnet(torch.rand(3, 64, 56, 56), pooled)
    with pytest.raises(ValueError, match="pooled"):
        cnet(shallow, torch.rand(3, 512))


def test_aggregate_identity_eq7():
    g = torch.Generator().manual_seed(1)
    alpha, conf = torch.randn(2, 5, 80, generator=g, dtype=torch.float64), torch.rand(2, 5, 80, generator=g, dtype=torch.float64)
    a, c = alpha.numpy(), conf.numpy()
    want = np.stack([(c[s] * a[s]).sum(0) / c[s].sum(0) for s in range(2)])  # eq. 7 per set
    np.testing.assert_allclose(D.aggregate_identity(alpha, conf).numpy(), want, rtol=1e-12)
    torch.testing.assert_close(D.aggregate_identity(alpha, torch.ones_like(conf)), alpha.mean(1))
    with pytest.raises(ValueError, match="confidence"):
        D.aggregate_identity(alpha, conf[:, :4])


def test_multi_image_losses_train_only_the_cnet(bfm_path):
    cfg = D.multi_image_config(D.Config.tiny())
    assert (cfg.w_lm, cfg.w_color, cfg.w_feat, cfg.lr) == (1.6e-3, 1.9, 0.1, 2e-5)
    model = BFM.from_deep3d(bfm_path)
    torch.manual_seed(0)
    rnet = D.ReconNet(cfg.net_recon).eval()
    for layer in rnet.final_layers:  # a "trained" R-Net: identity varies with the image
        torch.nn.init.normal_(layer.weight, std=0.05)
    cnet = D.ConfidenceNet.for_reconnet(rnet)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, 3, 64, 64, generator=g)
    batch = {"lms": torch.rand(6, 68, 2, generator=g) * 64}
    terms, out, conf = D.multi_image_losses(rnet, cnet, images, batch, model, cfg)
    assert conf.shape == (2, 3, 80)
    # at initialisation eq. 7 is the plain average of the set's identities
    with torch.no_grad():
        ident = rnet(images.flatten(0, 1))[:, :80].reshape(2, 3, 80)
    torch.testing.assert_close(out.coeffs["id"].reshape(2, 3, 80), ident.mean(1, keepdim=True).expand(2, 3, 80),
                               rtol=1e-5, atol=1e-6)
    terms["total"].backward()
    assert all(p.grad is None for p in rnet.parameters())  # R-Net frozen
    assert cnet.fc2.weight.grad.abs().sum() > 0
