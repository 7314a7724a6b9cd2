"""MICA (PIPELINES.md §6): mapping network and ArcFace freezing vs transcriptions of
``MICA:models/generator.py`` / ``models/arcface.py``, the masked loss vs ``utils/masking.py`` +
``micalib/models/mica.py:107-120``, ``mica.tar`` loading in the authors' layout, the demo's
outputs, preprocessing and ``facegeom train --method mica``."""
import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facegeom.losses import mica as L
from facegeom.models import synthetic_head
from facegeom.models.flame import load_flame_masks
from facegeom.nets.iresnet import IResNet, iresnet100
from facegeom.pipelines import mica as M


@pytest.fixture(scope="module")
def head():
    return synthetic_head(n_shape=50, n_exp=1, n_tex=1, dtype=torch.float32)


def tiny_net():
    torch.manual_seed(3)
    return IResNet([1, 1, 1, 1])


def fake_masks(num_vertices, seed=0):
    """Overlapping random regions with FLAME_masks.pkl's names."""
    rng = np.random.default_rng(seed)
    names = ["face", "left_eyeball", "right_eyeball", "left_ear", "right_ear", "left_eye_region",
             "right_eye_region", "forehead", "nose", "lips", "scalp"]
    return {n: np.sort(rng.choice(num_vertices, size=int(rng.integers(20, num_vertices // 3)), replace=False))
            for n in names}


# ----------------------------------------------------------------- mapping network
def test_mapping_network_matches_authors_init_and_forward():
    torch.manual_seed(0)
    ours = M.MappingNetwork(512, 300, 300, hidden=3)
    # transcription of generator.py:31-60: layers created in order, kaiming on `network`, output *= 0.25
    torch.manual_seed(0)
    layers = [nn.Linear(512, 300)] + [nn.Linear(300, 300) for _ in range(3)]
    out = nn.Linear(300, 300)
    for layer in layers:
        torch.nn.init.kaiming_normal_(layer.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
    with torch.no_grad():
        out.weight *= 0.25
    names = sorted(ours.state_dict())
    assert names == sorted([f"network.{i}.{p}" for i in range(4) for p in ("weight", "bias")]
                           + ["output.weight", "output.bias"])
    for i, layer in enumerate(layers):
        assert torch.equal(ours.network[i].weight, layer.weight) and torch.equal(ours.network[i].bias, layer.bias)
    assert torch.equal(ours.output.weight, out.weight)
    z = F.normalize(torch.randn(4, 512))
    h = z
    for layer in layers:
        h = F.leaky_relu(layer(h), 0.2)
    torch.testing.assert_close(ours(z), out(h), rtol=0, atol=0)
    # kaiming(a=0.2) std = sqrt(2 / (1 + 0.04)) / sqrt(fan_in)
    std = float(ours.network[1].weight.detach().std())
    assert abs(std - (2 / 1.04) ** 0.5 / 300 ** 0.5) < 0.05 * std


def test_mapping_network_skips_only_above_five_hidden():
    assert M.MappingNetwork(hidden=3).skips == []
    net = M.MappingNetwork(8, 6, 5, hidden=6)
    assert net.skips == [3] and net.network[4].in_features == 6 + 8
    assert net(torch.randn(2, 8)).shape == (2, 5)
    with pytest.raises(ValueError, match="z_dim"):
        M.MappingNetwork(0)


# ----------------------------------------------------------------- ArcFace freezing
def test_arcface_frozen_parts_and_bn_drift(head):
    model = M.MICA(head, tiny_net())
    trainable = {n for n, p in model.arcface.named_parameters() if p.requires_grad}
    for n, _ in model.arcface.named_parameters():
        frozen = n.split(".")[0] in M.FROZEN or n == "features.weight"
        assert (n not in trainable) == frozen, n
    assert "features.bias" in trainable and "fc.weight" in trainable and "layer4.0.conv1.weight" in trainable
    model.train()
    before = model.arcface.layer1[0].bn1.running_mean.clone()
    out = model(torch.randn(3, 3, 112, 112))
    assert torch.allclose(out["identity"].norm(dim=1), torch.ones(3))
    out["vertices"].sum().backward()
    assert model.arcface.conv1.weight.grad is None and model.arcface.layer3[0].conv1.weight.grad is None
    assert model.arcface.layer4[0].conv1.weight.grad is not None and model.arcface.fc.weight.grad is not None
    assert model.arcface.features.bias.grad is not None and model.arcface.features.weight.grad is None
    assert not torch.equal(before, model.arcface.layer1[0].bn1.running_mean)  # frozen BN stats drift in train()
    with pytest.raises(ValueError, match=r"\[B, 3, 112, 112\]"):
        model(torch.randn(1, 3, 64, 64))


def test_arcface_features_equal_plain_forward_in_eval():
    net = tiny_net().eval()
    x = torch.randn(2, 3, 112, 112)
    torch.testing.assert_close(M.arcface_features(M.freeze_arcface(net), x), net(x))


def test_decoder_zero_expression_pose_and_now_landmarks(head):
    model = M.MICA(head, tiny_net()).eval()
    shape = torch.randn(2, 50)
    out = model.decode(shape)
    ref = head(shape=shape)
    torch.testing.assert_close(out["vertices"], ref.vertices)
    torch.testing.assert_close(out["kpt7"], ref.landmarks3d[:, [36, 39, 42, 45, 33, 48, 54]])
    # 7 NoW points = full_lmk[17:][[19, 22, 25, 28, 16, 31, 37]] (MICA demo.py)
    assert [17 + i for i in (19, 22, 25, 28, 16, 31, 37)] == list(M.NOW_LANDMARKS)


def test_optimizer_param_groups(head):
    model = M.MICA(head, tiny_net())
    opt = M.optimizer(model)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == [1e-5, 1e-5]
    assert all(g["weight_decay"] == 2e-4 and not g["amsgrad"] for g in opt.param_groups)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.regressor.parameters()}
    arc = {id(p) for p in opt.param_groups[1]["params"]}
    assert arc == {id(p) for p in model.arcface.parameters() if p.requires_grad}
    assert id(model.arcface.conv1.weight) not in arc


# ----------------------------------------------------------------- loss and masks
def _authors_weights(masks, nv, w):
    """transcription of masking.py get_weights_per_vertex (+ get_mask_eyes / get_mask_ears)."""
    mask = np.ones((1, nv, 3), np.float32) * w["whole"]
    mask[:, np.unique(np.concatenate((masks["left_eyeball"], masks["right_eyeball"]))), :] = w["eyes"]
    mask[:, np.unique(np.concatenate((masks["left_ear"], masks["right_ear"]))), :] = w["ears"]
    mask[:, masks["face"], :] = w["face"]
    return mask


def _authors_triangles(faces, m):
    selected = [i for i in range(faces.shape[0]) if sum(int(v in m) for v in faces[i]) == 3]
    return np.unique(selected)


def test_masks_and_weights_match_authors(tmp_path, head):
    nv = head.num_vertices
    raw = fake_masks(nv)
    path = tmp_path / "FLAME_masks.pkl"
    with open(path, "wb") as f:
        pickle.dump(raw, f)
    masks = load_flame_masks(path, nv)
    w = {"whole": 1.0, "eyes": 0.01, "ears": 0.01, "face": 150.0}
    ours = L.weights_per_vertex(masks, nv, dtype=torch.float32)
    np.testing.assert_array_equal(ours.numpy(), _authors_weights(raw, nv, w))
    assert set(np.unique(ours.numpy())) <= {1.0, np.float32(0.01), 150.0}
    faces = head.faces.numpy()
    eyes = set(np.unique(np.concatenate((raw["left_eyeball"], raw["right_eyeball"]))).tolist())
    np.testing.assert_array_equal(L.triangle_mask(head.faces, L.mask_eyes(masks)).numpy(),
                                  _authors_triangles(faces, eyes))
    tri = L.weights_per_triangle(masks, head.faces)
    ref = np.ones((1, faces.shape[0], 1)) * w["whole"]
    ref[:, _authors_triangles(faces, eyes), :] = w["eyes"]
    ref[:, _authors_triangles(faces, set(raw["face"].tolist())), :] = w["face"]
    np.testing.assert_allclose(tri.numpy(), ref)
    lr = np.unique(np.concatenate((raw["left_eye_region"], raw["right_eye_region"], sorted(eyes))))
    np.testing.assert_array_equal(L.mask_lr_eye_region(masks).numpy(), lr)
    np.testing.assert_array_equal(L.mask_ears(masks).numpy(),
                                  np.unique(np.concatenate((raw["left_ear"], raw["right_ear"]))))
    with pytest.raises(KeyError, match="left_eyeball"):
        L.weights_per_vertex({"face": masks["face"]}, nv)
    with pytest.raises(IndexError):
        L.weights_per_vertex(masks, 10)


def test_vertex_loss_matches_authors(head):
    nv = head.num_vertices
    raw = fake_masks(nv, seed=1)
    masks = {k: torch.from_numpy(v) for k, v in raw.items()}
    weights = L.weights_per_vertex(masks, nv, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(4, nv, 3, generator=g) * 0.01
    gt = torch.randn(4, nv, 3, generator=g) * 0.01
    # transcription of mica.py compute_losses
    diff = (pred.numpy() - gt.numpy()).astype(np.float64)
    ref = np.mean(np.abs(diff) * _authors_weights(raw, nv, L.MASK_WEIGHTS)) * 1000.0
    assert abs(float(L.vertex_loss(pred, gt, weights)) - ref) < 1e-5 * ref
    assert abs(float(L.vertex_loss(pred, gt)) - np.mean(np.abs(diff)) * 1000) < 1e-5
    pred.requires_grad_(True)
    gt.requires_grad_(True)
    L.vertex_loss(pred, gt, weights).backward()
    assert pred.grad is not None and gt.grad is None  # the authors detach the ground truth
    with pytest.raises(ValueError, match="target"):
        L.vertex_loss(pred, gt[:1])
    with pytest.raises(ValueError, match="weights"):
        L.vertex_loss(pred, gt, weights[:, :10])


# ----------------------------------------------------------------- mica.tar
@pytest.fixture(scope="module")
def authors_checkpoint(tmp_path_factory, head):
    """A mica.tar in the authors' layout: IResNet-100 + Generator (regressor + FLAME buffers)."""
    torch.manual_seed(7)
    net = iresnet100()
    for m in net.modules():  # non-trivial BN statistics, as a trained checkpoint has
        if isinstance(m, nn.Conv2d):  # insightface's N(0, 0.1) init overflows over 49 blocks
            nn.init.normal_(m.weight, 0, 0.3 / m.weight[0].numel() ** 0.5)
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    mapping = M.MappingNetwork(512, 300, 50)
    flame_model = {f"regressor.{k}": v for k, v in mapping.state_dict().items()}
    flame_model.update({"generator.v_template": head.v_template.clone(), "generator.faces_tensor": head.faces.clone(),
                        "generator.shapedirs": head.shapedirs.clone(),
                        "generator.lbs_weights": head.lbs_weights.clone()})
    path = tmp_path_factory.mktemp("mica") / "mica.tar"
    torch.save({"arcface": net.state_dict(), "flameModel": flame_model}, path)
    x = torch.randn(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the authors' eval forward: arcface -> normalize -> mapping -> FLAME
        code = mapping(F.normalize(net.eval()(x)))
        verts = head(shape=code).vertices
    assert torch.isfinite(code).all() and code.abs().max() > 1e-3
    del net
    return path, x, code, verts


def test_load_checkpoint_reproduces_shape_code_and_vertices(authors_checkpoint, head):
    path, x, code, verts = authors_checkpoint
    model = M.MICA(head, iresnet100())
    M.load_checkpoint(model, path)
    with torch.no_grad():
        out = model.eval()(x)
    torch.testing.assert_close(out["shape"], code, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["vertices"], verts, rtol=0, atol=1e-5)
    wrong = model
    wrong.flame = synthetic_head(seed=1, n_shape=50, n_exp=1, n_tex=1, dtype=torch.float32)  # another FLAME
    with pytest.raises(ValueError, match="FLAME stored in the checkpoint differs"):
        M.load_checkpoint(wrong, path)
    with pytest.warns(UserWarning, match="shapedirs"):
        M.load_checkpoint(wrong, path, check_flame="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.load_checkpoint(wrong, path, check_flame="ignore")


def test_load_checkpoint_errors(tmp_path, head):
    model = M.MICA(head, tiny_net())
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        M.load_checkpoint(model, tmp_path / "missing.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.tar"):
        M.load_checkpoint(model, tmp_path / "junk.tar")
    torch.save({"model": {}}, tmp_path / "bad.tar")
    with pytest.raises(ValueError, match="'arcface' and 'flameModel'"):
        M.load_checkpoint(model, tmp_path / "bad.tar")
    torch.save({"arcface": model.arcface.state_dict(), "flameModel": {"regressor.output.weight": torch.zeros(1)}},
               tmp_path / "reg.tar")
    with pytest.raises(ValueError, match="regressor"):
        M.load_checkpoint(model, tmp_path / "reg.tar")
    with pytest.raises(ValueError, match="check_flame"):
        M.load_checkpoint(model, tmp_path / "reg.tar", check_flame="no")
    # no generator.* buffers: fine
    torch.save({"arcface": model.arcface.state_dict(),
                "flameModel": {f"regressor.{k}": v for k, v in model.regressor.state_dict().items()}},
               tmp_path / "ok.tar")
    M.load_checkpoint(model, tmp_path / "ok.tar")


# ----------------------------------------------------------------- outputs and preprocessing
def test_write_outputs_in_millimetres(tmp_path, head):
    import trimesh

    model = M.MICA(head, tiny_net()).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    paths = M.write_outputs(tmp_path / "a", out, head.faces, index=1)
    assert sorted(os.listdir(tmp_path / "a")) == ["identity.npy", "kpt68.npy", "kpt7.npy", "mesh.obj", "mesh.ply"]
    mesh = trimesh.load(paths["mesh.ply"], process=False)
    np.testing.assert_allclose(mesh.vertices, out["vertices"][1].double().numpy() * 1000, atol=1e-3)
    np.testing.assert_array_equal(mesh.faces, head.faces.numpy())
    np.testing.assert_allclose(np.load(paths["identity"]), out["shape"][1].numpy())
    kpt68 = np.load(paths["kpt68"])
    assert kpt68.shape == (1, 68, 3)
    np.testing.assert_allclose(np.load(paths["kpt7"]), kpt68[0, [36, 39, 42, 45, 33, 48, 54]], rtol=1e-6)


def test_preprocess_from_keypoint_file(tmp_path):
    from facegeom.data.arcface import ARCFACE_TEMPLATE, arcface_blob, norm_crop

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 180, 3), dtype=np.uint8)
    kps = ARCFACE_TEMPLATE * 1.3 + np.array([20.0, 30.0])
    np.savetxt(tmp_path / "k.txt", kps)
    np.save(tmp_path / "k.npy", kps)
    ref = arcface_blob(norm_crop(img, kps))
    for name in ("k.txt", "k.npy"):
        blob = M.preprocess(img, tmp_path / name)
        assert blob.shape == (1, 3, 112, 112) and blob.dtype == torch.float32
        torch.testing.assert_close(blob, ref, rtol=0, atol=1e-6)
    np.savetxt(tmp_path / "bad.txt", kps[:4])
    with pytest.raises(ValueError, match="5 keypoints"):
        M.load_keypoints(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        M.load_keypoints(tmp_path / "nope.txt")


def test_detection_needs_insightface():
    try:
        import insightface  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="insightface"):
            M.detect_keypoints(np.zeros((64, 64, 3), np.uint8))
    else:
        pytest.skip("insightface installed")


# ----------------------------------------------------------------- training
def test_train_cli_runs_two_steps(tmp_path):
    from facegeom import train as training
    from facegeom.cli import main as cli_main

    assert training.get_method("mica") is M.MICAMethod
    out = tmp_path / "run"
    assert cli_main(["train", "--method", "mica", "--data", "synthetic", "--steps", "2", "--batch-size", "2",
                     "--tiny", "--quiet", "--out", str(out)]) == 0
    lines = [json.loads(s) for s in open(out / "metrics.jsonl")]
    losses = [r["loss/total"] for r in lines if "loss/total" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    state = torch.load(out / "final.pt", map_location="cpu")
    assert "regressor.output.weight" in state and "arcface.layer4.0.conv1.weight" in state
    assert any(r.get("loss/pred_verts_shape_canonical_diff") is not None for r in lines)
    method = M.MICAMethod()
    model = method.build_model(M.Config.tiny())  # facegeom's own final.pt loads through load_checkpoint
    M.load_checkpoint(model, out / "final.pt")
    assert torch.equal(model.regressor.output.weight, state["regressor.output.weight"])
    assert torch.equal(model.arcface.fc.bias, state["arcface.fc.bias"])


def test_method_dataset_groups_identities():
    method = M.MICAMethod()
    cfg = M.MICAConfig.tiny()
    ds = method.dataset(cfg, "synthetic", "train", 0)
    item = ds[1]
    assert item["arcface"].shape == (cfg.images_per_identity, 3, 112, 112)
    assert item["arcface"].min() >= -1 and item["arcface"].max() <= 1
    params = ds.faces.sample_params(1 * cfg.images_per_identity + 1)
    torch.testing.assert_close(item["shape"], params["shape"].float())
    with pytest.raises(ValueError, match="synthetic"):
        method.dataset(cfg, "/no/such", "train", 0)
    import dataclasses
    with pytest.raises(ValueError, match="synthetic head"):
        method.dataset(dataclasses.replace(cfg, flame="generic_model.pkl"), "synthetic", "train", 0)


def test_write_now_reads_back_with_now_eval_readers(tmp_path, head):
    from facegeom.eval.io import read_landmarks, read_mesh

    model = M.MICA(head, tiny_net()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 112, 112))
    paths = M.write_now(tmp_path, "FaMoS_180424_03335_TA/multiview_neutral/IMG_0101", out["vertices"][0],
                        out["kpt7"][0], head.faces)
    v, f = read_mesh(paths["mesh"])
    np.testing.assert_allclose(v, out["vertices"][0].double().numpy() * 1000, atol=1e-3)
    np.testing.assert_array_equal(f, head.faces.numpy())
    np.testing.assert_allclose(read_landmarks(paths["landmarks"], 7), out["kpt7"][0].double().numpy() * 1000,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="kpt7"):
        M.write_now(tmp_path, "x", out["vertices"][0], out["kpt7"][0, :5], head.faces)
