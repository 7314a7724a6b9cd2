"""``facegeom reconstruct --method mica|ringnet`` -> ``facegeom now-eval`` in one flow
(issue 13 "Both": NoW files from reconstruct evaluate with now-eval without edits)."""
import json
import os

import numpy as np
import pytest
import torch

from facegeom import reconstruct as R
from facegeom import testing
from facegeom.cli import main as cli_main
from facegeom.data.synthetic import SyntheticFaces
from facegeom.eval import now
from facegeom.eval.io import read_landmarks, read_mesh, read_pp
from facegeom.pipelines import mica as M
from facegeom.pipelines import ringnet as RN


def _synthetic(method):
    if method == "mica":
        cfg = M.MICAConfig.tiny()
        return SyntheticFaces(num_samples=4, image_size=cfg.render_size, seed=7, images_per_identity=2, mask=None,
                              n_shape=cfg.synthetic_n_shape, n_exp=1, n_tex=1)
    cfg = RN.RingNetConfig.tiny()
    return SyntheticFaces(num_samples=4, image_size=cfg.image_size, seed=7, images_per_identity=2, mask=None,
                          n_shape=cfg.n_shape, n_exp=cfg.n_exp, n_tex=1)


@pytest.mark.parametrize("method", ["mica", "ringnet"])
def test_images_to_now_numbers_in_one_flow(tmp_path, method):
    run = tmp_path / "run"
    assert cli_main(["train", "--method", method, "--data", "synthetic", "--steps", "2", "--batch-size", "2",
                     "--tiny", "--quiet", "--out", str(run)]) == 0
    faces = _synthetic(method)
    paths = testing.write_synthetic_now(tmp_path / "data", faces, 2)
    pred = tmp_path / "pred"
    assert cli_main(["reconstruct", "--method", method, "--checkpoint", str(run / "final.pt"), "--assets", "synthetic",
                     "--tiny", paths["images"], "--image-root", paths["images"], "--out", str(pred), "--quiet"]) == 0
    results = tmp_path / "results"
    assert cli_main(["now-eval", "--predictions", str(pred), "--dataset", paths["dataset"], "--out", str(results),
                     "--quiet"]) == 0
    summary = json.loads((results / "summary.json").read_text())
    assert summary["images_listed"] == summary["images_evaluated"] == 4
    assert summary["num_missing_files"] == summary["num_failed"] == 0
    assert np.isfinite(summary["all"]["median"]) and summary["all"]["median"] > 0

    # the files are the model's prediction, and now-eval's number is the protocol on them
    stem = "SYNTH_000001/multiview_expressions/IMG_0001"
    vertices, tri = read_mesh(pred / (stem + ".obj"))
    kpt7 = read_landmarks(pred / (stem + ".npy"), 7)
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(os.path.join(paths["images"], stem + ".png")))
    if method == "mica":
        model = M.MICAMethod().build_model(M.MICAConfig.tiny())
        M.load_checkpoint(model, run / "final.pt")
        lm = np.loadtxt(os.path.join(paths["images"], stem + ".txt"))
        with torch.no_grad():
            out = model.eval()(M.preprocess(image[..., ::-1], M.keypoints5(lm)))
        expected_v, expected_l = out["vertices"][0] * 1000, out["kpt7"][0] * 1000  # millimetres, as MICA's demo
    else:
        model = RN.RingNetMethod().build_model(RN.RingNetConfig.tiny())
        RN.load_checkpoint(model, run / "final.pt")
        with torch.no_grad():
            out = model.eval()(RN.preprocess(image, RN.RingNetConfig.tiny().image_size))
            neutral = model.flame(shape=out["shape"])  # zero pose and expression
        expected_v, expected_l = neutral.vertices[0], neutral.landmarks3d[0, list(now.NOW_LANDMARKS_68)]
        np.testing.assert_allclose(np.load(pred / (stem + ".npz"))["shape"], out["shape"][0].numpy(), rtol=1e-6)
    tol = 1e-6 * max(1.0, float(expected_v.abs().max()))  # float32 predictions, written with 6 decimals
    np.testing.assert_allclose(vertices, expected_v.double().numpy(), atol=5 * tol)
    np.testing.assert_array_equal(tri, faces.faces.numpy())
    np.testing.assert_allclose(kpt7, expected_l.double().numpy(), atol=5 * tol)
    scan, _ = read_mesh(os.path.join(paths["dataset"], "scans", "SYNTH_000001", "natural_head_rotation.000001.obj"))
    picked = read_pp(os.path.join(paths["dataset"], "scans_lmks_onlypp", "SYNTH_000001",
                                  "natural_head_rotation.000001_picked_points.pp"))
    direct = now.now_distances(scan, picked, vertices, tri, kpt7).distances.numpy()
    np.testing.assert_allclose(np.load(results / "distances" / (stem + ".npy")), direct, rtol=1e-9, atol=1e-12)
    overlay = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(pred / (stem + "_overlay.png")))
    assert overlay.shape == image.shape


def test_landmark_sidecars(tmp_path):
    """MICA needs the 5 / 68 points; RingNet reads the whole image (RN:demo.py) and needs none."""
    faces = _synthetic("ringnet")
    paths = testing.write_synthetic_now(tmp_path / "data", faces, 1)
    for root, _, names in os.walk(paths["images"]):
        for name in names:
            if name.endswith(".txt"):
                os.remove(os.path.join(root, name))
    run = tmp_path / "run"
    assert cli_main(["train", "--method", "ringnet", "--data", "synthetic", "--steps", "1", "--batch-size", "1",
                     "--tiny", "--quiet", "--out", str(run)]) == 0
    summary = R.run("ringnet", str(run / "final.pt"), "synthetic", [paths["images"]], str(tmp_path / "rn"),
                    image_root=paths["images"], options={"tiny": True}, progress=False)
    assert summary["ok"] == 2 and summary["failed"] == 0
    mica_run = tmp_path / "mica_run"
    assert cli_main(["train", "--method", "mica", "--data", "synthetic", "--steps", "1", "--batch-size", "1",
                     "--tiny", "--quiet", "--out", str(mica_run)]) == 0
    summary = R.run("mica", str(mica_run / "final.pt"), "synthetic", [paths["images"]], str(tmp_path / "mi"),
                    image_root=paths["images"], options={"tiny": True}, progress=False)
    assert summary["ok"] == 0 and all("no landmark file" in e["error"] for e in summary["images"])
    with pytest.raises(FileNotFoundError, match="generic_model.pkl"):
        M.reconstructor(str(mica_run / "final.pt"), str(tmp_path), {"tiny": True})
    with pytest.raises(FileNotFoundError, match="generic_model.pkl"):
        RN.reconstructor(str(run / "final.pt"), str(tmp_path), {"tiny": True})
    with pytest.raises(ValueError, match="--checkpoint"):
        M.reconstructor(None, "synthetic", {"tiny": True})
    with pytest.raises(ValueError, match="5, 2"):
        M.keypoints5(np.zeros((7, 2)))


def test_fit_weak_perspective_recovers_the_camera():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(9, 3))
    cam = np.array([0.7, 0.1, -0.2])
    from facegeom.cameras import WeakPerspective

    pixels = WeakPerspective(torch.tensor(cam)[None], (40, 60)).project(torch.tensor(points)[None])[0].numpy()
    np.testing.assert_allclose(R.fit_weak_perspective(points, pixels, (40, 60)), cam, atol=1e-12)
    with pytest.raises(ValueError, match="degenerate"):
        R.fit_weak_perspective(np.zeros((5, 3)), pixels[:5], (40, 60))


@pytest.mark.parametrize("shape", [(64, 48), (100, 140), (64, 64)])
def test_crop_to_image_inverts_the_loose_crop(shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    crop = RN.loose_crop(image, 64)
    xs, ys = RN.crop_to_image(64, image.shape)
    inside = (xs >= 0) & (xs < 64) & (ys >= 0) & (ys < 64)
    assert inside.mean() > 0.5
    if max(shape) == 64:  # no resampling: the crop pixel is the image pixel
        back = (crop[ys[inside], xs[inside]] / 2 + 0.5) * 255
        np.testing.assert_allclose(back, image[inside], atol=1e-9)
