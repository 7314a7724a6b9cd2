"""2DASL pipeline: 3DDFA v1 model folder, whitening files, decoding in both pixel bases,
roi-box mapping, checkpoint loading and the training method (PIPELINES.md §4).
Files are written here in the authors' exact layouts (small sizes)."""
import copy
import json
import pickle

import numpy as np
import pytest
import torch

from facegeom.data.crops import obtain_18pts_map
from facegeom.pipelines import tdasl as T

N = 200


def _write_folder(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "u_shp.npy": rng.normal(0, 50, (3 * N, 1)).astype(np.float32),
        "u_exp.npy": rng.normal(0, 5, (3 * N, 1)).astype(np.float32),
        "w_shp_sim.npy": rng.normal(0, 1, (3 * N, 40)).astype(np.float32),
        "w_exp_sim.npy": rng.normal(0, 1, (3 * N, 10)).astype(np.float32),
    }
    kp_v = rng.choice(N, 68, replace=False)
    arrays["keypoints_sim.npy"] = np.stack([3 * kp_v, 3 * kp_v + 1, 3 * kp_v + 2], 1).reshape(-1).astype(np.int64)
    for name, a in arrays.items():
        np.save(tmp_path / name, a)
    return arrays


def _params(rng, b=2):
    p = rng.normal(0, 1, (b, 62))
    p[:, :12] = np.array([[1e-3, 2e-4, 0, 60, -2e-4, 1e-3, 1e-5, 58, 0, 0, 1e-3, 3]]) + rng.normal(0, 1e-5, (b, 12))
    p[:, 3] += rng.normal(0, 2, b)
    return p


def _ref_reconstruct(p, a, dense):
    """2DASL:ddfa_utils2.py / 3DDFA:utils/inference.py reconstruct_vertex (non-whitened p), numpy."""
    u = a["u_shp.npy"].astype(np.float64) + a["u_exp.npy"]
    w_shp, w_exp, kp = a["w_shp_sim.npy"].astype(np.float64), a["w_exp_sim.npy"].astype(np.float64), a["keypoints_sim.npy"]
    if not dense:
        u, w_shp, w_exp = u[kp], w_shp[kp], w_exp[kp]
    p_ = p[:12].reshape(3, -1)
    P, offset = p_[:, :3], p_[:, -1].reshape(3, 1)
    vertex = P @ (u + w_shp @ p[12:52, None] + w_exp @ p[52:, None]).reshape(3, -1, order="F") + offset
    vertex[1, :] = 120 + 1 - vertex[1, :]
    return vertex


def test_model_folder_decodes_as_2dasl(tmp_path):
    a = _write_folder(tmp_path)
    model = T.DDFAModel.from_folder(tmp_path, dtype=torch.float64)
    assert model.num_vertices == N and model.u_base.shape == (204, 1) and model.w_shp_base.shape == (204, 40)
    rng = np.random.default_rng(1)
    p = _params(rng)
    for dense in (False, True):
        v1 = T.reconstruct_vertex(torch.tensor(p), model, dense=dense, pixel_base="v1").numpy()
        for i in range(2):
            np.testing.assert_allclose(v1[i], _ref_reconstruct(p[i], a, dense), rtol=1e-9, atol=1e-9)
        v2 = T.reconstruct_vertex(torch.tensor(p), model, dense=dense, pixel_base="v2").numpy()
        np.testing.assert_allclose(v1 - v2, np.ones_like(v1), atol=1e-9)  # 1 px apart in x, y (and z)


def test_whitening_files_and_dewhitening_all_62(tmp_path):
    rng = np.random.default_rng(2)
    mean1, std1 = rng.normal(0, 1, 62).astype(np.float32), rng.uniform(0.1, 1, 62).astype(np.float32)
    mean2, std2 = rng.normal(0, 1, 62).astype(np.float32), rng.uniform(0.1, 1, 62).astype(np.float32)
    with open(tmp_path / "param_whitening.pkl", "wb") as f:
        pickle.dump({"param_mean": mean1, "param_std": std1}, f)
    with open(tmp_path / "param_mean_std_62d_120x120.pkl", "wb") as f:
        pickle.dump({"mean": mean2, "std": std2}, f)
    m1, s1 = T.load_whitening(tmp_path / "param_whitening.pkl")
    m2, s2 = T.load_whitening(tmp_path / "param_mean_std_62d_120x120.pkl")
    np.testing.assert_array_equal(m1.numpy(), mean1)
    np.testing.assert_array_equal(s2.numpy(), std2)
    assert not torch.equal(m1, m2)
    # whitened decoding de-whitens every one of the 62 entries
    a = _write_folder(tmp_path)
    model = T.DDFAModel.from_folder(tmp_path, dtype=torch.float64)
    p = _params(rng, 1)[0]
    pw = (p - mean1.astype(np.float64)) / std1.astype(np.float64)
    got = T.reconstruct_vertex(torch.tensor(pw)[None], model, m1.double(), s1.double(), pixel_base="v1")[0].numpy()
    np.testing.assert_allclose(got, _ref_reconstruct(p, a, False), rtol=1e-6, atol=1e-6)
    with open(tmp_path / "bad.pkl", "wb") as f:
        pickle.dump({"mu": mean1}, f)
    with pytest.raises(ValueError, match="param_mean"):
        T.load_whitening(tmp_path / "bad.pkl")
    with pytest.raises(FileNotFoundError):
        T.load_whitening(tmp_path / "nope.pkl")


def test_model_folder_errors(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "u_exp.npy").unlink()
    with pytest.raises(FileNotFoundError, match="u_exp.npy"):
        T.DDFAModel.from_folder(tmp_path)
    with pytest.raises(FileNotFoundError):
        T.DDFAModel.from_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="w_shp"):
        T.DDFAModel(np.zeros((3 * N, 1)), np.zeros((3 * N + 3, 40)), np.zeros((3 * N, 10)), np.arange(204))
    with pytest.raises(ValueError, match="keypoints"):
        T.DDFAModel(np.zeros((3 * N, 1)), np.zeros((3 * N, 40)), np.zeros((3 * N, 10)), np.arange(200))


def test_roi_box_mapping_both_bases():
    rng = np.random.default_rng(3)
    v = rng.uniform(0, 120, (1, 3, 68))
    box = [30.0, 40.0, 270.0, 250.0]
    sx, sy, ex, ey = box
    ref = v[0].copy()  # 3DDFA:utils/inference.py _predict_vertices
    scale_x, scale_y = (ex - sx) / 120, (ey - sy) / 120
    ref[0] = ref[0] * scale_x + sx
    ref[1] = ref[1] * scale_y + sy
    ref[2] *= (scale_x + scale_y) / 2
    np.testing.assert_allclose(T.to_original(torch.tensor(v), box, "v1")[0].numpy(), ref)
    got2 = T.to_original(torch.tensor(v), torch.tensor([box]), "v2")[0].numpy()
    np.testing.assert_allclose(got2[:2], ref[:2])
    np.testing.assert_allclose(got2[2], ref[2] - ref[2].min())
    with pytest.raises(ValueError, match="pixel_base"):
        T.to_original(torch.tensor(v), box, "v3")
    with pytest.raises(ValueError, match="roi_box"):
        T.to_original(torch.tensor(v), [1.0, 2.0, 3.0], "v1")


def test_decode_to_original_image_matches_3ddfa(tmp_path):
    a = _write_folder(tmp_path)
    model = T.DDFAModel.from_folder(tmp_path, dtype=torch.float64)
    rng = np.random.default_rng(6)
    p = _params(rng, 1)
    mean, std = rng.normal(0, 1, 62), rng.uniform(0.5, 2, 62)
    box = [10.0, 20.0, 250.0, 260.0]
    out = T.decode(torch.tensor((p - mean) / std), model, torch.tensor(mean), torch.tensor(std), box, "v1")
    ref = _ref_reconstruct(p[0], a, False)  # then 3DDFA:utils/inference.py _predict_vertices
    s = (box[2] - box[0]) / 120
    ref[0] = ref[0] * s + box[0]
    ref[1] = ref[1] * s + box[1]
    ref[2] *= s
    np.testing.assert_allclose(out["landmarks"][0].numpy(), ref.T, rtol=1e-7, atol=1e-7)
    assert out["vertices"].shape == (1, N, 3)
    np.testing.assert_allclose(out["params"].numpy(), p, rtol=1e-9, atol=1e-12)


def test_preprocess_crops_and_maps_landmarks():
    from facegeom.data import crops

    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    pts = np.stack([rng.uniform(90, 190, 68), rng.uniform(80, 200, 68)])
    x, box = T.preprocess(img, pts.T)
    assert box == crops.parse_roi_box_from_landmark(pts)
    on_crop = (pts - np.array([[box[0]], [box[1]]])) * 120 / (box[2] - box[0])
    torch.testing.assert_close(x, crops.tdasl_input(crops.ddfa_crop(img, box), on_crop))


def test_checkpoint_res_state_dict_loads(tmp_path):
    torch.manual_seed(0)
    net = T.build_network().eval()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {"module." + k: v for k, v in net.state_dict().items()}
    assert state["module.conv1.weight"].shape == (64, 4, 7, 7) and state["module.fc.weight"].shape == (62, 2048)
    assert "module.layer4.0.downsample.0.weight" in state
    torch.save({"res_state_dict": state, "epoch": 1}, tmp_path / "2DASL_checkpoint_epoch_allParams_stage1.pth.tar")
    loaded = T.load_checkpoint(tmp_path / "2DASL_checkpoint_epoch_allParams_stage1.pth.tar")
    x = torch.randn(1, 4, 120, 120)
    with torch.no_grad():
        out = loaded(x)
        assert out.shape == (1, 62)
        torch.testing.assert_close(out, net(x), rtol=0, atol=1e-5)
    torch.save({"state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="res_state_dict"):
        T.load_checkpoint(tmp_path / "other.pth")
    del state["module.fc.bias"]
    torch.save({"res_state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing"):
        T.load_checkpoint(tmp_path / "broken.pth")


def test_landmark_map_matches_obtain_18pts_map():
    pts = np.random.default_rng(5).uniform(0, 119.9, (2, 68, 2))
    got = T.landmark_map(torch.tensor(pts, dtype=torch.float32))
    assert got.shape == (2, 1, 120, 120)
    for i in range(2):
        np.testing.assert_array_equal(got[i, 0].numpy(), obtain_18pts_map(pts[i]))


def test_synthetic_ground_truth_reprojects_to_landmarks():
    config = T.Config.tiny()
    method = T.TDASL
    ds = method.dataset(config, "synthetic", "train", 0)
    model, mean, std = T.synthetic_model(config)
    s = ds[0]
    assert s["input"].shape == (4, 120, 120) and s["params62"].shape == (62,)
    assert set(s["input"][3].unique().tolist()) == {-1.0, 1.0}
    p = s["params62"][None].double() * std.double() + mean.double()
    lm = T.reconstruct_vertex(p, copy.deepcopy(model).double(), pixel_base="v2")[0, :2].T
    # the sample's landmarks are the projected keypoint vertices (SyntheticTDASL.model_landmarks):
    # the ground truth reprojects onto all 68 up to the render's perspective (affine fit)
    err = (lm.float() - s["landmarks"]).norm(dim=1)
    assert err.mean() < 1.0, err.mean()
    with pytest.raises(ValueError, match="synthetic"):
        method.dataset(config, "/some/folder", "train", 0)


def test_train_cli_tiny(tmp_path, capsys):
    from facegeom.cli import main as cli_main

    out = tmp_path / "run"
    code = cli_main(["train", "--method", "tdasl", "--data", "synthetic", "--steps", "2", "--batch-size", "2",
                     "--out", str(out), "--tiny"])
    assert code == 0
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    losses = [k for k in records[0] if k.startswith("loss/")]
    for name in ("total", "l3d", "l2d_con", "l3d_con", "cyc", "adv", "critic"):
        assert f"loss/{name}" in losses
        assert np.isfinite(records[-1][f"loss/{name}"])
    state = torch.load(out / "final.pt")
    assert any(k.startswith("critic.") for k in state) and any(k.startswith("regressor.") for k in state)
    net = T.load_checkpoint(out / "final.pt")  # facegeom's own final.pt
    torch.testing.assert_close(net.fc.weight, state["regressor.fc.weight"])
