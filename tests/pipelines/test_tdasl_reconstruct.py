"""facegeom reconstruct --method tdasl (facegeom.pipelines.tdasl.reconstructor): the authors'
checkpoint layout with a 3DDFA v1 assets folder written from random arrays, and facegeom's own
final.pt with the synthetic model."""
import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from facegeom.cli import main as cli_main
from facegeom.pipelines import tdasl as T

torch.set_num_threads(1)


def _images(folder, count=2, size=160):
    from facegeom.data.synthetic import SyntheticFaces

    ds = SyntheticFaces(num_samples=count, image_size=size, seed=5)
    folder.mkdir()
    out = []
    for k in range(count):
        s = ds[k]
        pixels = (s["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"f{k}.png")
        np.savetxt(folder / f"f{k}.txt", s["landmarks"].numpy())
        out.append((pixels, s["landmarks"].numpy()))
    return out


def test_load_triangles(tmp_path):
    tri = np.array([[1, 2, 3], [2, 3, 4]]).T  # [3, F], 1-based (3DDFA's visualize/tri.mat)
    scipy.io.savemat(tmp_path / "tri.mat", {"tri": tri})
    assert T.load_triangles(tmp_path / "tri.mat", 4).tolist() == [[0, 1, 2], [1, 2, 3]]
    scipy.io.savemat(tmp_path / "f3.mat", {"tri": np.array([[0, 1, 2], [1, 2, 3], [0, 2, 3]])})  # [F, 3], 0-based
    assert T.load_triangles(tmp_path / "f3.mat", 4).tolist() == [[0, 1, 2], [1, 2, 3], [0, 2, 3]]
    with pytest.raises(ValueError, match="outside"):
        T.load_triangles(tmp_path / "tri.mat", 3)
    scipy.io.savemat(tmp_path / "none.mat", {"faces": tri})
    with pytest.raises(ValueError, match="no 'tri'"):
        T.load_triangles(tmp_path / "none.mat", 4)


def test_reconstruct_with_the_authors_layout(tmp_path, capsys):
    """A res_state_dict checkpoint (module. prefix) + a 3DDFA v1 folder: the mesh is the decoded
    dense shape in the input image, the landmarks are its 68 keypoint rows."""
    import pickle


    r = np.random.default_rng(0)
    nv = 300
    assets = tmp_path / "assets"
    assets.mkdir()
    u = r.normal(0, 60, (3 * nv, 1)).astype(np.float32)
    np.save(assets / "u_shp.npy", u)
    np.save(assets / "u_exp.npy", np.zeros_like(u))
    np.save(assets / "w_shp_sim.npy", r.normal(0, 1e3, (3 * nv, 40)).astype(np.float32))
    np.save(assets / "w_exp_sim.npy", r.normal(0, 1e3, (3 * nv, 10)).astype(np.float32))
    kp = r.choice(nv, 68, replace=False)
    np.save(assets / "keypoints_sim.npy", np.stack([3 * kp, 3 * kp + 1, 3 * kp + 2], 1).reshape(-1))
    mean = np.zeros(62)
    mean[[0, 5]] = 5e-4
    mean[10] = 5e-4
    mean[[3, 7]] = 60.0
    with open(assets / "param_whitening.pkl", "wb") as f:
        pickle.dump({"param_mean": mean, "param_std": np.full(62, 1e-3)}, f)
    scipy.io.savemat(assets / "tri.mat", {"tri": (np.arange(3 * 99).reshape(99, 3) % nv + 1).T})
    net = T.build_network()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    torch.save({"res_state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "ck.pth.tar")
    samples = _images(tmp_path / "images")
    out = tmp_path / "recon"
    rc = cli_main(["reconstruct", "--method", "tdasl", "--checkpoint", str(tmp_path / "ck.pth.tar"), "--assets",
                   str(assets), str(tmp_path / "images"), "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    model = T.DDFAModel.from_folder(assets)
    w_mean, w_std = T.load_whitening(assets / "param_whitening.pkl")
    net = T.load_checkpoint(tmp_path / "ck.pth.tar")
    for k, (pixels, lm) in enumerate(samples):
        params = np.load(out / f"f{k}.npz")
        x, roi = T.preprocess(np.ascontiguousarray(pixels[..., ::-1]), lm)
        with torch.no_grad():
            expected = T.decode(net(x[None]), model, w_mean, w_std, roi_box=roi)
        np.testing.assert_allclose(params["roi_box"], roi)
        np.testing.assert_allclose(params["lm68"], expected["landmarks"][0].numpy(), rtol=1e-5, atol=1e-3)
        obj = [line.split() for line in open(out / f"f{k}.obj")]
        verts = np.array([[float(v) for v in line[1:4]] for line in obj if line[0] == "v"])
        np.testing.assert_allclose(verts, expected["vertices"][0].numpy(), rtol=1e-5, atol=1e-3)
        assert sum(line[0] == "f" for line in obj) == 99
        overlay = np.asarray(Image.open(out / f"f{k}_overlay.png"))
        assert overlay.shape == pixels.shape
    summary = json.load(open(out / "summary.json"))
    assert summary["ok"] == 2


def test_reconstruct_needs_68_landmarks_and_assets(tmp_path, capsys):
    net = T.build_network()
    torch.save({"res_state_dict": net.state_dict()}, tmp_path / "ck.pth.tar")
    images = tmp_path / "images"
    _images(images, count=1)
    np.savetxt(images / "f0.txt", np.zeros((5, 2)))
    rc = cli_main(["reconstruct", "--method", "tdasl", "--checkpoint", str(tmp_path / "ck.pth.tar"), "--assets",
                   "synthetic", "--tiny", str(images), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 1 and "[2, 68]" in capsys.readouterr().err
    assert cli_main(["reconstruct", "--method", "tdasl", "--checkpoint", str(tmp_path / "ck.pth.tar"), "--assets",
                     str(tmp_path / "nowhere"), str(images), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err


def _reconstruct_synthetic(tmp_path, state):
    """Save ``state`` as final.pt, write one image and run ``facegeom reconstruct --method tdasl
    --assets synthetic --tiny`` on it: ``(pixels, landmarks, out folder)``."""
    torch.save(state, tmp_path / "final.pt")
    images = tmp_path / "images"
    [(pixels, lm)] = _images(images, count=1)
    out = tmp_path / "o"
    assert cli_main(["reconstruct", "--method", "tdasl", "--checkpoint", str(tmp_path / "final.pt"), "--assets",
                     "synthetic", "--tiny", str(images), "--out", str(out), "--quiet", "--device", "cpu"]) == 0
    return pixels, lm, out


def test_reconstruct_facegeom_final_pt_synthetic(tmp_path):
    """facegeom's own final.pt (regressor.* + its whitening buffers) with --assets synthetic."""
    _, mean, std = T.synthetic_model(T.Config.tiny())
    net = T.build_network()
    state = {"regressor." + k: v for k, v in net.state_dict().items()}
    state.update(param_mean=mean + 0.5, param_std=std)  # the checkpoint's whitening is the one used
    pixels, lm, out = _reconstruct_synthetic(tmp_path, state)
    model, _, _ = T.synthetic_model(T.Config.tiny())
    x, roi = T.preprocess(np.ascontiguousarray(pixels[..., ::-1]), lm)
    with torch.no_grad():
        expected = T.decode(T.load_checkpoint(tmp_path / "final.pt")(x[None]), model, mean + 0.5, std, roi_box=roi)
    np.testing.assert_allclose(np.load(out / "f0.npz")["lm68"], expected["landmarks"][0].numpy(), rtol=1e-5,
                               atol=1e-3)


def test_landmark_unit_scales_the_landmark_terms_and_tiny_regressor():
    """The landmark terms of eq. 3-5 are measured in Config.landmark_unit (crop widths by
    default): the same batch gives pixel-valued terms / 120, WPDC and the critic untouched."""
    torch.manual_seed(0)
    config = T.Config.tiny()
    assert config.landmark_unit == 120.0 and config.net == "resnet18" and T.Config().net == "resnet50"
    model = T.TDASL.build_model(config).eval()
    ds = T.TDASL.dataset(config, "synthetic", "train", 0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    with torch.no_grad():  # same seed: WPDC's 132 random vertices agree
        torch.manual_seed(1)
        out_cw = T.TDASL.losses(model, batch, config)
        torch.manual_seed(1)
        out_px = T.TDASL.losses(model, batch, T.Config.tiny(landmark_unit=1.0))
    for key in ("l2d_con", "l3d_con", "cyc"):
        torch.testing.assert_close(out_cw[key] * 120.0, out_px[key])
    for key in ("l3d", "adv", "critic"):
        torch.testing.assert_close(out_cw[key], out_px[key])
    assert out_px["cyc"] > 10 and out_cw["cyc"] < out_px["cyc"] / 100
    with pytest.raises(ValueError, match="landmark_unit"):
        T.Config(landmark_unit=0.0)
    with pytest.raises(ValueError, match="net"):
        T.build_network(net="vgg")
    assert "layer1.0.conv3.weight" not in T.build_network(net="resnet18").state_dict()


def test_validation_reports_recovery_against_the_mean():
    config = T.Config.tiny(val_samples=3)
    method = T.TDASL()
    model = T.TDASL.build_model(config).eval()
    val = method.dataset(config, "synthetic", "val", 0)
    assert len(val) == 3
    batch = torch.utils.data.default_collate([val[i] for i in range(3)])
    out = method.validation_step(model, batch)
    assert set(out) == {"loss", "vdc_mean", "lm_px", "lm_px_mean", "shape_rmse", "shape_rmse_mean", "shape_mm",
                        "shape_mm_mean", "exp_mm", "exp_mm_mean", "adv", "adv_mean", "critic"}
    # the mean answer (whitened zero) decodes to the mean parameters: its errors are the targets' own
    target = T.L.dewhiten(batch["params62"], model.param_mean, model.param_std)[:, 12:]
    mean = model.param_mean[12:].expand_as(target)
    torch.testing.assert_close(out["shape_rmse_mean"], (mean - target).pow(2).mean().sqrt())
    perfect = method.validation_step(_Oracle(model, batch["params62"]), batch)
    assert perfect["loss"] < 1e-6 and perfect["shape_rmse"] < 1e-5 and perfect["lm_px"] < 1.0
    assert perfect["shape_mm"] < 1e-3 and perfect["exp_mm"] < 1e-3


class _Oracle(torch.nn.Module):
    """A TDASLModel whose regressor returns the ground truth."""

    def __init__(self, model, params):
        super().__init__()
        self.inner, self.params = model, params
        self.regressor = lambda x: self.params
        self.param_mean, self.param_std, self.ddfa = model.param_mean, model.param_std, model.ddfa
        self.critic = model.critic

    def landmarks(self, pred):
        return self.inner.landmarks(pred)


def test_reconstruct_final_pt_uses_its_stored_model(tmp_path):
    """A final.pt carries the 3DDFA-layout model it was trained with (``ddfa.*``, e.g. in metres
    or micrometres, Config.model_unit_um); --assets synthetic decodes with that model, not the
    one the current tiny config would build."""
    model, mean, std = T.synthetic_model(T.Config.tiny())
    stored = T.DDFAModel(model.u * 1.1, model.w_shp, model.w_exp, model.keypoints)  # a different mean shape
    net = T.build_network()
    state = {"regressor." + k: v for k, v in net.state_dict().items()}
    state.update(param_mean=mean, param_std=std, **{"ddfa." + k: v for k, v in stored.state_dict().items()})
    pixels, lm, out = _reconstruct_synthetic(tmp_path, state)
    x, roi = T.preprocess(np.ascontiguousarray(pixels[..., ::-1]), lm)
    with torch.no_grad():
        params = T.load_checkpoint(tmp_path / "final.pt")(x[None])
        expected = T.decode(params, stored, mean, std, roi_box=roi)["landmarks"][0].numpy()
        other = T.decode(params, model, mean, std, roi_box=roi)["landmarks"][0].numpy()
    got = np.load(out / "f0.npz")["lm68"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    assert np.abs(got - other).max() > 1.0
