"""Deep3D's preprocess, training method (facegeom.train) and `facegeom reconstruct` (issue 12 items 5)."""
import json
import os

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from facegeom import train as training
from facegeom.cli import main as cli_main
from facegeom.data import deep3d as data3d
from facegeom.pipelines import deep3d as D


@pytest.fixture(scope="module")
def sample_images():
    """Two synthetic 96 x 96 faces with their 68 landmarks (y down)."""
    from facegeom.data.synthetic import SyntheticFaces

    ds = SyntheticFaces(num_samples=2, image_size=96, mask=None, seed=3)
    out = []
    for i in range(2):
        s = ds[i]
        pixels = (s["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        out.append((pixels, s["landmarks"].double().numpy()))
    return out


# ---- preprocess ------------------------------------------------------------------------- #

@pytest.mark.parametrize("count", [68, 5])
def test_preprocess_is_align_img_of_flipped_landmarks_and_inverts(sample_images, count):
    pixels, lm68 = sample_images[0]
    lm = lm68 if count == 68 else data3d.extract_5p(lm68)
    image, tp, lm_crop = D.preprocess(pixels, lm)
    # transcription of D3D:test.py:26-36: y-up = H - 1 - y, then align_img (224, 102)
    up = lm.copy()
    up[:, 1] = pixels.shape[0] - 1 - up[:, 1]
    tp_ref, crop_ref, lm_ref, _ = data3d.align_img(Image.fromarray(pixels), up)
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    np.testing.assert_array_equal(tp, tp_ref)
    np.testing.assert_allclose(lm_crop, lm_ref, atol=1e-9)
    np.testing.assert_array_equal((image.permute(1, 2, 0).numpy() * 255).round(), np.asarray(crop_ref))
    # inverse: crop landmarks (y-up) back to the image (row 0 at the top)
    np.testing.assert_allclose(D.landmarks_to_image(lm_crop, tp), lm, atol=1e-6)
    # the tiny configuration crops 64 x 64 with the same field of view
    small, tp_small, lm_small = D.preprocess(torch.from_numpy(pixels).permute(2, 0, 1) / 255.0, lm, D.Config.tiny())
    assert small.shape == (3, 64, 64)
    np.testing.assert_allclose(lm_small, lm_crop * 64 / 224, atol=0.7)  # int() truncations in the crop box
    np.testing.assert_allclose(D.landmarks_to_image(lm_small, tp_small, D.Config.tiny()), lm, atol=1e-6)


def test_preprocess_rejects_bad_input(sample_images):
    pixels, lm68 = sample_images[0]
    with pytest.raises(ValueError, match="landmarks"):
        D.preprocess(pixels, lm68[:10])
    with pytest.raises(ValueError, match="landmarks"):
        D.preprocess(pixels, np.full((5, 2), np.nan))
    with pytest.raises(TypeError, match="image"):
        D.preprocess("not an image", lm68)


# ---- training method -------------------------------------------------------------------- #

def test_synthetic_sample_is_the_authors_training_sample():
    cfg = D.Config.tiny()
    ds = D.Deep3DMethod().dataset(cfg, "synthetic", "train", 0)
    s = ds[1]
    assert s["imgs"].shape == (3, 64, 64) and s["msks"].shape == (1, 64, 64) and s["M"].shape == (2, 3)
    assert s["lms"].shape == (68, 2) and s["params"]["shape"].shape == (80,)
    assert 0 < float(s["msks"].mean()) < 1  # the skin GMM finds the face, not the whole image
    # lms are y-up in the crop: back to the 64 x 64 render they are its landmarks (row 0 at the top)
    back = data3d.landmarks_to_original(s["lms"].double().numpy(), s["trans_params"].numpy(), 64.0)
    back[:, 1] = 64 - 1 - back[:, 1]
    np.testing.assert_allclose(back, s["landmarks"].double().numpy(), atol=1e-4)
    np.testing.assert_allclose(s["M"].numpy(), data3d.estimate_norm(s["lms"].double().numpy(), 64), rtol=1e-4,
                               atol=1e-4)
    val = D.Deep3DMethod().dataset(cfg, "synthetic", "val", 0)
    assert len(val) == cfg.val_samples and not torch.equal(val[0]["imgs"], ds[0]["imgs"])


def test_synthetic_landmarks_are_the_decoders_keypoint_vertices():
    """The synthetic head's barycentric landmarks (with the yaw-dependent contour) are not the
    face model's 68 keypoint vertices that decode() projects; the hook uses the latter
    (model_landmarks=True, the default) and the data's low-dimensional space comes from the Config."""
    from facegeom.cameras import Pinhole

    cfg = D.Config.tiny(synthetic_id_components=3, synthetic_exp_components=2, synthetic_tex_components=0,
                        synthetic_shape_std=2.0, synthetic_max_jaw=0.0)
    ds = D.Deep3DMethod().dataset(cfg, "synthetic", "train", 0)
    old = D.Deep3DMethod().dataset(cfg.replace(synthetic_model_landmarks=False), "synthetic", "train", 0)
    keypoints = D.synthetic_bfm().keypoints.long()
    gaps = []
    for i in range(3):
        s, t = ds[i], old[i]
        p = s["params"]
        assert torch.count_nonzero(p["shape"][3:]) == 0 and torch.count_nonzero(p["expression"][2:]) == 0
        assert torch.count_nonzero(p["texture"]) == 0 and float(p["jaw"][0]) == 0.0
        out = ds.head(shape=p["shape"][None], expression=p["expression"][None], pose=p["rotation"][None],
                      jaw=p["jaw"][None], texture=p["texture"][None])
        camera = Pinhole.from_K(p["K"], p["R"], p["t"], image_size=(64, 64))
        expected = camera.project(out.vertices[:, keypoints])[0]
        torch.testing.assert_close(s["landmarks"], expected.to(s["landmarks"].dtype), atol=1e-4, rtol=0)
        torch.testing.assert_close(t["landmarks"], camera.project(out.landmarks2d)[0].float(), atol=1e-4, rtol=0)
        assert torch.equal(s["image"], t["image"])  # same render, only the landmark definition differs
        gaps.append(float((s["landmarks"] - t["landmarks"]).norm(dim=-1).mean()))
    assert min(gaps) > 0.2, gaps  # px at 64 x 64: as large as the shape signal
    with pytest.raises(ValueError, match="synthetic_id_components"):
        D.Config(synthetic_id_components=-2)
    with pytest.raises(ValueError, match="synthetic_rotation_scale"):
        D.Config(synthetic_rotation_scale=-1.0)


def test_synthetic_bfm_matches_the_synthetic_head():
    from facegeom.models import synthetic_head

    bfm = D.synthetic_bfm()
    head = synthetic_head(n_shape=80, n_exp=64, n_tex=80, dtype=torch.float32)
    alpha = torch.randn(1, 80)
    neutral = head(shape=alpha).vertices[0]
    ours = bfm(alpha).vertices[0] / D.SYNTHETIC_SCALE
    np.testing.assert_allclose(ours.numpy(), (neutral - head().vertices[0].mean(0)).numpy(), atol=1e-5)
    assert bfm.n_shape == 80 and bfm.n_exp == 64 and bfm.n_tex == 80 and "skin_mask" in bfm.masks


def test_optimizer_and_scheduler_are_the_authors():
    method = D.Deep3DMethod()
    cfg = D.Config.tiny(num_samples=10)
    net = method.build_model(cfg)
    opts = method.optimizers(net, cfg)
    assert isinstance(opts["adam"], torch.optim.Adam) and opts["adam"].param_groups[0]["lr"] == 1e-4
    sched = method.schedulers(opts, cfg, training.TrainConfig(batch_size=4))["adam"]
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
    assert sched.step_size == 10 * 3 and sched.gamma == 0.2  # 10 epochs of ceil(10 / 4) steps
    assert method.schedulers(opts, cfg.replace(steps_per_epoch=7), training.TrainConfig())["adam"].step_size == 70
    assert set(net.state_dict()) == set(D.ReconNet("resnet18").state_dict())  # no face model / recog net inside


def test_training_and_validation_steps():
    method = D.Deep3DMethod()
    cfg = D.Config.tiny(w_feat=0.2)  # with the (random) IResNet-50 perceptual term
    ds = method.dataset(cfg, "synthetic", "val", 0)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    torch.manual_seed(0)
    net = method.build_model(cfg)
    terms = method.training_step(net, batch, None)
    assert set(terms) == {"feat", "color", "reg", "gamma", "lm", "reflc", "total"}
    terms["total"].backward()
    assert net.final_layers[0].bias.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.aux(torch.device("cpu"))[2].parameters())  # recog net frozen
    val = method.validation_step(net.eval(), batch)
    assert {"loss", "shape_mm", "shape_mm_mean"} <= set(val)
    torch.testing.assert_close(val["shape_mm"], val["shape_mm_mean"])  # zero heads predict the mean face


def test_folder_data_needs_the_model_file(tmp_path):
    with pytest.raises(ValueError, match="steps_per_epoch"):
        D.Config(steps_per_epoch=-1)
    with pytest.raises(ValueError, match="bfm_path"):
        D.Deep3DMethod().dataset(D.Config(), str(tmp_path), "train", 0)
    with pytest.raises(ValueError, match="224"):
        D.Deep3DMethod().dataset(D.Config.tiny(bfm_path="x.mat"), str(tmp_path), "train", 0)


def test_a_few_steps_lower_the_loss(tmp_path):
    cfg = D.Config.tiny(num_samples=2)
    config = training.TrainConfig(steps=6, batch_size=2, out=str(tmp_path), progress=False, device="cpu")
    result = training.train("deep3d", config, cfg)
    lines = [json.loads(line) for line in open(result.metrics_path)]
    totals = [r["loss/total"] for r in lines if "loss/total" in r]
    assert len(totals) == 6 and totals[-1] < 0.9 * totals[0], totals
    lm = [r["loss/lm"] for r in lines if "loss/lm" in r]
    assert lm[-1] < lm[0], lm


# ---- CLI: train then reconstruct -------------------------------------------------------- #

def test_cli_train_then_reconstruct(tmp_path, sample_images, capsys):
    out = tmp_path / "train"
    rc = cli_main(["train", "--method", "deep3d", "--data", "synthetic", "--steps", "2", "--batch-size", "2",
                   "--tiny", "--out", str(out), "--quiet", "--device", "cpu"])
    assert rc == 0 and (out / "final.pt").is_file()
    assert isinstance(D.load_checkpoint(out / "final.pt"), D.ReconNet)

    images = tmp_path / "images"
    (images / "subject" / "a").mkdir(parents=True)
    for k, (pixels, lm) in enumerate(sample_images):
        Image.fromarray(pixels).save(images / "subject" / "a" / f"face{k}.png")
        pts = lm if k == 0 else data3d.extract_5p(lm)  # 68 rows as .txt, 5 rows as .npy
        if k == 0:
            np.savetxt(images / "subject" / "a" / f"face{k}.txt", pts)
        else:
            np.save(images / "subject" / "a" / f"face{k}.npy", pts)
    (images / "subject" / "a" / "broken.png").write_bytes(b"not a png")
    np.savetxt(images / "subject" / "a" / "broken.txt", sample_images[0][1])
    Image.fromarray(sample_images[0][0]).save(images / "subject" / "a" / "nolandmarks.png")
    result = tmp_path / "recon"
    capsys.readouterr()
    rc = cli_main(["reconstruct", "--method", "deep3d", "--checkpoint", str(out / "final.pt"), "--assets",
                   "synthetic", "--tiny", str(images), "--image-root", str(images), "--out", str(result),
                   "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1  # two bad images: reported and skipped, the others written
    assert "broken.png" in err and "nolandmarks.png" in err
    summary = json.load(open(result / "summary.json"))
    assert summary["ok"] == 2 and summary["failed"] == 2
    bfm = D.synthetic_bfm()
    for k in range(2):
        stem = result / "subject" / "a" / f"face{k}"
        mesh = trimesh.load(str(stem) + ".obj", process=False)
        assert mesh.vertices.shape == (bfm.num_vertices, 3) and len(mesh.faces) == len(bfm.faces)
        params = np.load(str(stem) + ".npz")
        assert params["id"].shape == (1, 80) and params["lm68"].shape == (1, 68, 2)
        assert params["lm68_image"].shape == (68, 2) and params["trans_params"].shape == (5,)
        overlay = np.asarray(Image.open(str(stem) + "_overlay.png"))
        assert overlay.shape == sample_images[k][0].shape
        assert (overlay != sample_images[k][0]).any(axis=-1).mean() > 0.02  # the render covers the face
        # the predicted landmarks land on the face (in the image frame, row 0 at the top)
        assert np.abs(params["lm68_image"].mean(0) - sample_images[k][1].mean(0)).max() < 20


def test_reconstruct_errors(tmp_path, capsys):
    from facegeom import reconstruct as R

    assert "deep3d" in R.available()
    assert cli_main(["reconstruct", "--method", "nosuchmethod", str(tmp_path)]) == 2
    assert "nosuchmethod" in capsys.readouterr().err
    assert cli_main(["reconstruct", "--method", "deep3d", "--checkpoint", str(tmp_path / "none.pth"), "--assets",
                     "synthetic", str(tmp_path)]) == 2
    assert "none.pth" in capsys.readouterr().err

    with pytest.raises(ValueError, match="no reconstruct support"):
        R.get("nosuchmethod")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        R.find_images([str(tmp_path / "missing.png")])
    with pytest.raises(FileNotFoundError, match="BFM_model_front.mat"):
        D.reconstructor(str(tmp_path / "w.pt"), str(tmp_path), {})
    with pytest.raises(ValueError, match="checkpoint"):
        D.reconstructor(None, "synthetic", {})


def test_folder_data_in_the_authors_layout(tmp_path, sample_images):
    """<DIR>/datalist/train/masks.txt -> Deep3DFlistDataset (y-up landmark files); a bad entry is
    replaced by the next readable sample; one training step on a BFM_model_front.mat."""
    from tests.pipelines.deep3d_files import write_deep3d_bfm

    root = tmp_path / "data"
    for sub in ("faces/mask", "faces/landmarks", "datalist/train"):
        (root / sub).mkdir(parents=True)
    names = []
    for k, (pixels, lm) in enumerate(sample_images):
        Image.fromarray(pixels).save(root / "faces" / f"f{k}.png")
        Image.fromarray(np.full_like(pixels, 255)).save(root / "faces" / "mask" / f"f{k}.png")
        up = lm.copy()
        up[:, 1] = pixels.shape[0] - 1 - up[:, 1]  # the authors' landmark files are y-up
        np.savetxt(root / "faces" / "landmarks" / f"f{k}.txt", up)
        names.append(f"faces/mask/f{k}.png")
    (root / "datalist" / "train" / "masks.txt").write_text("\n".join(["faces/mask/missing.png"] + names) + "\n")
    write_deep3d_bfm(tmp_path / "BFM_model_front.mat")
    cfg = D.Config(net_recon="resnet18", w_feat=0.0, bfm_path=str(tmp_path / "BFM_model_front.mat"))
    method = D.Deep3DMethod()
    ds = method.dataset(cfg, str(root), "train", 0)
    assert method.dataset(cfg, str(root), "val", 0) is None  # no val list: no validation
    assert len(ds) == 3
    first = ds[0]  # the missing file is skipped: the next sample comes instead
    assert first["imgs"].shape == (3, 224, 224) and first["lms"].shape == (68, 2) and first["M"].shape == (2, 3)
    batch = torch.utils.data.default_collate([ds[0], ds[2]])
    net = method.build_model(cfg)
    terms = method.training_step(net, batch, None)
    assert torch.isfinite(terms["total"]) and {"color", "lm", "reg", "gamma", "reflc"} <= set(terms)
