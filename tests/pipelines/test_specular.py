"""The specular-albedo method (Deng et al. 2022; facegeom.pipelines.specular, PIPELINES.md §5):
layout, decoding and shading against transcriptions of eq. 3-5, the AlbedoMM h5 layout, the
inner-mouth loss through antialias, and tiny training / reconstruct runs."""
import json
import math

import numpy as np
import pytest
import torch

from facegeom.losses import specular as L
from facegeom.pipelines import specular as S
from tests.models.test_bfm import FACES, V, VERTS, interleave, statismo_sample, write_statismo

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    config = S.Config.tiny()
    return config, S.synthetic_model(config)


def test_layout_and_zero_init(tiny):
    config, model = tiny
    assert sum(S.COEFF_SIZES.values()) == 482 and list(S.COEFF_SIZES)[:3] == ["shape", "expression", "albedo"]
    net = S.SpecularNet(config)
    params = net(torch.rand(2, 3, 64, 64))
    assert params.shape == (2, sum(config.sizes.values())) and params.abs().max() == 0
    parts = S.split_coeff(params, config)
    assert {k: v.shape[1] for k, v in parts.items()} == config.sizes
    out = S.decode(params, model, config, render=False)
    torch.testing.assert_close(out.vertices, model().vertices.expand(2, -1, -1))  # mean face, R = I, f = 1, t = 0
    assert out.shininess.tolist() == [config.shininess_init] * 2
    torch.testing.assert_close(out.light, torch.tensor([list(config.light_init)] * 2))
    with pytest.raises(ValueError, match=r"\[B, 78\]"):
        S.split_coeff(torch.zeros(1, 77), config)


def _sh_basis_deep3d(n):
    """PIPELINES.md §1.4 (``D3D:models/bfm.py:140-171``)."""
    a = [math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0)]
    c = [1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi)]
    x, y, z = n
    return np.array([a[0] * c[0], -a[1] * c[1] * y, a[1] * c[1] * z, -a[1] * c[1] * x, a[2] * c[2] * x * y,
                     -a[2] * c[2] * y * z, 0.5 * a[2] * c[2] / math.sqrt(3.0) * (3 * z * z - 1),
                     -a[2] * c[2] * x * z, 0.5 * a[2] * c[2] * (x * x - y * y)])


def _normalize(v):
    return v / np.linalg.norm(v)


def test_decode_follows_eq2_to_eq5(tiny):
    config, model = tiny
    g = torch.Generator().manual_seed(0)
    params = 0.2 * torch.randn(1, sum(config.sizes.values()), generator=g)
    out = S.decode(params, model, config, render=False)
    c = {k: v[0].double().numpy() for k, v in out.coeffs.items()}
    # eq. 1-2: one albedo vector c_t drives the diffuse and the specular albedo
    td = model.mean_texture.double() + torch.einsum("k,kvc->vc", torch.tensor(c["albedo"]), model.texture_basis.double())
    ts = model.mean_specular.double() + torch.einsum("k,kvc->vc", torch.tensor(c["albedo"]),
                                                     model.specular_basis.double())
    np.testing.assert_allclose(out.diffuse_albedo[0].double(), td, atol=1e-5)
    np.testing.assert_allclose(out.specular_albedo[0].double(), ts, atol=1e-5)
    # eq. 3: f R S + t, R = Rz Ry Rx of the Euler angles (x, y, z)
    ax, ay, az = c["angle"]
    Rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    Ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    Rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    shape = model(shape=out.coeffs["shape"], expression=out.coeffs["expression"]).vertices[0].double().numpy()
    posed = math.exp(c["scale"][0]) * shape @ (Rz @ Ry @ Rx).T + c["translation"]
    np.testing.assert_allclose(out.vertices[0].double(), posed, atol=1e-4)
    # the fixed camera: Deep3D's pinhole, pixels y down
    f, cc, d = config.focal, config.center, config.camera_d
    kp = posed[model.keypoints.numpy()]
    expected = np.stack([f * kp[:, 0] / (d - kp[:, 2]) + cc, config.image_size - 1 - (f * kp[:, 1] / (d - kp[:, 2]) + cc)], 1)
    np.testing.assert_allclose(out.landmarks[0].double(), expected, atol=1e-3)
    # eq. 4-5 per vertex: c_d = t_d sum_b lambda_b Y_b(n); c_s = t_s [Nor(v_out - v_in) . n]^phi
    sh = c["sh"].reshape(3, 9).copy()
    sh[:, 0] += config.init_lit
    light = np.asarray(config.light_init) + c["light"]
    phi = config.shininess_init * math.exp(c["shininess"][0])
    eye = np.array([0.0, 0.0, d])
    normals = out.normals[0].double().numpy()
    for v in range(0, model.num_vertices, 97):
        n, p = normals[v], out.vertices[0, v].double().numpy()
        cd = td[v].numpy() * (sh @ _sh_basis_deep3d(n))
        v_in = _normalize(p - light)  # incoming light direction (light -> surface)
        v_out = _normalize(eye - p)   # outgoing, towards the camera
        cs = ts[v].numpy() * max(float(_normalize(v_out - v_in) @ n), 0.0) ** phi
        np.testing.assert_allclose(out.lit_diffuse[0, v].double(), cd, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out.specular[0, v].double(), cs, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(out.color[0, v].double(), np.maximum(cd + cs, 1e-6) ** (1 / 2.2), rtol=1e-3,
                                   atol=1e-5)


def test_renders_and_gamma_shader(tiny):
    config, model = tiny
    params = torch.zeros(2, sum(config.sizes.values()))
    params[1, -1] = -1.0  # a broader highlight in the second image
    out = S.decode(params, model, config)
    covered = out.alpha > 0
    assert covered.float().mean() > 0.2
    assert out.render_full.shape == (2, 3, 64, 64) and out.mouth.shape == (2, 1, 64, 64)
    assert (out.render_full[~covered.expand_as(out.render_full)] == 0).all()  # black background
    spec = out.render_full - out.render_diffuse  # gamma(c_d + c_s) >= gamma(c_d)
    assert spec.min() > -1e-6 and spec.max() > 0.01
    assert spec[1].sum() > spec[0].sum()
    # GammaShader = the linear shader's output to the power 1/2.2 on covered pixels
    from facegeom.render import SHShader, ShadingInputs

    renderer = S.SpecularRenderer(model, config)
    camera = renderer.camera(2, out.vertices)
    fragments = renderer.face.rasterize(out.vertices, camera.to_clip(out.vertices, renderer.face.image_size))
    inputs = ShadingInputs(out.diffuse_albedo, out.sh)
    linear = SHShader("deep3d")(fragments, inputs)
    gamma = renderer.face.shader(fragments, inputs)
    mask = fragments.covered.expand_as(linear)
    torch.testing.assert_close(gamma[mask], linear[mask].clamp(min=1e-6) ** (1 / 2.2))
    # no specular albedo: the two renders agree
    zero = S.SpecularOutput(**{**out.__dict__, "specular_albedo": torch.zeros_like(out.specular_albedo)})
    d, f, _, _ = renderer(zero, camera)
    torch.testing.assert_close(d, f)


def _write_face12(folder, n_shape=7, n_exp=4, n_albedo=5):
    h5py = pytest.importorskip("h5py")
    r = np.random.default_rng(7)
    shape = (interleave(VERTS * 1e3 + 50.0), r.standard_normal((3 * V, n_shape)), np.linspace(40, 4, n_shape))
    expression = (np.zeros(3 * V), r.standard_normal((3 * V, n_exp)), np.linspace(9, 1, n_exp))
    with h5py.File(folder / "model2017-1_face12_nomouth.h5", "w") as f:
        write_statismo(f.create_group("shape"), *shape)
        write_statismo(f.create_group("expression"), *expression)
        f.create_dataset("shape/representer/cells", data=FACES.T.astype(np.uint32))
        f.create_dataset("shape/representer/points", data=VERTS.T.astype(np.float32))
    albedo = {"diffuseAlbedo": (r.uniform(0.2, 0.8, 3 * V), r.standard_normal((3 * V, n_albedo)) * 0.01,
                                np.linspace(3, 1, n_albedo)),
              "specularAlbedo": (r.uniform(0.0, 0.3, 3 * V), r.standard_normal((3 * V, n_albedo)) * 0.01,
                                 np.linspace(2, 1, n_albedo))}
    with h5py.File(folder / "albedoModel2020_face12_albedoPart.h5", "w") as f:
        for name, arrays in albedo.items():
            write_statismo(f.create_group(name), *arrays)
    keypoints = r.integers(0, V, 68)
    np.save(folder / "keypoints.npy", keypoints)
    return shape, expression, albedo, keypoints


def test_load_face_model_reads_the_published_albedomm_layout(tmp_path):
    shape, expression, albedo, keypoints = _write_face12(tmp_path)
    model = S.load_face_model(tmp_path / "model2017-1_face12_nomouth.h5",
                              tmp_path / "albedoModel2020_face12_albedoPart.h5", tmp_path / "keypoints.npy",
                              n_shape=7, n_exp=4, n_albedo=5, dtype=torch.float64)
    assert (model.n_shape, model.n_exp, model.n_tex, model.n_spec) == (7, 4, 5, 5)
    r = np.random.default_rng(8)
    ci, ce, ct = r.normal(size=7), r.normal(size=4), r.normal(size=5)
    out = model(shape=torch.tensor(ci)[None], expression=torch.tensor(ce)[None], texture=torch.tensor(ct)[None],
                specular=torch.tensor(ct)[None])
    raw = statismo_sample(*shape, ci) + statismo_sample(*expression, ce)  # millimetres
    mean = statismo_sample(*shape, np.zeros(0)).mean(0)
    np.testing.assert_allclose(out.vertices[0].numpy(), (raw - mean) * 0.01, rtol=1e-6, atol=1e-9)  # dm, re-centred
    np.testing.assert_allclose(out.albedo[0].numpy(), statismo_sample(*albedo["diffuseAlbedo"], ct), atol=1e-9)
    np.testing.assert_allclose(out.specular[0].numpy(), statismo_sample(*albedo["specularAlbedo"], ct), atol=1e-9)
    assert model.keypoints.tolist() == keypoints.tolist()
    assert S.inner_mouth_faces(model.keypoints).shape == (6, 3)
    with pytest.raises(FileNotFoundError, match="keypoints_path"):
        S.load_face_model(tmp_path / "model2017-1_face12_nomouth.h5", tmp_path / "albedoModel2020_face12_albedoPart.h5",
                          tmp_path / "missing.npy", 7, 4, 5)
    np.save(tmp_path / "bad.npy", np.arange(10))
    with pytest.raises(ValueError, match="68 integer vertex indices"):
        S.load_face_model(tmp_path / "model2017-1_face12_nomouth.h5", tmp_path / "albedoModel2020_face12_albedoPart.h5",
                          tmp_path / "bad.npy", 7, 4, 5)


def test_inner_mouth_loss_moves_the_mouth_contour_to_the_target(tiny):
    """L_mouth alone (eq. 11 through antialias) opens the model's mouth towards a labelled mask."""
    from facegeom.models import synthetic_head

    config = S.Config.tiny(center=64.0, focal=1015.0 * 64.0 / 112.0)
    model = S.synthetic_model(config)
    head = synthetic_head(seed=0, n_shape=config.n_shape, n_exp=config.n_exp, n_tex=config.n_albedo)
    with torch.no_grad():  # the last expression component = the head's jaw opening, linearised (0.1 rad / unit)
        jaw = head(jaw=torch.tensor([[0.1, 0.0, 0.0]])).vertices[0] - head().vertices[0]
        model.shape_basis[-1] = jaw * S.SYNTHETIC_SCALE
    renderer = S.SpecularRenderer(model, config)
    size = sum(config.sizes.values())
    exp_index = config.n_shape + config.n_exp - 1
    target = torch.zeros(1, size)
    target[0, exp_index] = 2.5
    with torch.no_grad():
        goal = S.decode(target, model, config, renderer).landmarks[0, list(S.INNER_LIP)]
    mask = torch.from_numpy(S.polygon_mask(goal.numpy(), config.image_size, config.image_size))[None, None]
    assert mask.sum() > 40  # an open mouth
    coeff = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.Adam([coeff], lr=0.1)

    def state():
        params = torch.zeros(1, size)
        params[0, exp_index] = coeff[0]
        out = S.decode(params, model, config, renderer)
        return out, L.mouth_loss(mask, out.mouth)

    out, first = state()
    start = (out.landmarks[0, list(S.INNER_LIP)] - goal).norm(dim=-1).mean().item()
    for _ in range(25):
        out, loss = state()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    out, last = state()
    end = (out.landmarks[0, list(S.INNER_LIP)] - goal).norm(dim=-1).mean().item()
    assert last.item() < 0.5 * first.item(), (first.item(), last.item())
    assert end < 0.5 * start, (start, end)
    assert 1.5 < coeff.item() < 3.5
    # without antialias the coverage is piecewise constant: no gradient reaches the geometry
    flat = S.SpecularRenderer(model, config)
    flat.mouth.antialias = False
    p = torch.zeros(1, size, requires_grad=True)
    assert not L.mouth_loss(mask, S.decode(p, model, config, flat).mouth).requires_grad


def test_inner_mouth_proxy_covers_the_labelled_polygon(tiny):
    """At the true geometry the proxy faces rasterise to the labelled inner-mouth mask (the
    polygon of the 8 projected inner-lip landmarks, pixel centres inside). The synthetic
    mouths are nearly closed and their contours not convex: a fan from landmark 60 (the
    proxy before) covered ~2 extra pixels per image, so L_mouth's minimum was not the true
    expression; the lip-to-lip strip does not."""
    from facegeom.cameras import Pinhole
    from facegeom.render import MeshRenderer, UnlitShader

    config, _ = tiny
    data = S.synthetic_dataset(config, 16, 1_000_003)
    keypoints = S._keypoint_vertices(data.head)
    ring = keypoints[list(S.INNER_LIP)]
    fan = torch.stack([ring[:1].expand(6), ring[1:7], ring[2:8]], 1).long()
    errors = {"strip": [], "fan": []}
    for i in range(len(data)):
        s = data[i]
        p = s["params"]
        camera = Pinhole.from_K(p["K"], p["R"], p["t"], image_size=(64, 64))
        vertices = s["vertices"][None]
        for name, faces in (("strip", S.inner_mouth_faces(keypoints)), ("fan", fan)):
            renderer = MeshRenderer(faces, 64, antialias=False, shader=UnlitShader())
            area = renderer(vertices, torch.ones_like(vertices), camera=camera, background=0.0).alpha[0, ..., 0]
            errors[name].append(float((area - s["mouth"][0]).abs().sum()))
    assert sum(float(data[i]["mouth"].sum()) for i in range(4)) > 4  # the masks are not empty
    strip, fan_error = np.mean(errors["strip"]), np.mean(errors["fan"])
    assert strip < 0.2 and fan_error > 1.0 and max(errors["strip"]) <= 1, errors


def test_train_tiny_losses_fall_then_reconstruct(tmp_path, capsys):
    from facegeom.cli import main as cli_main

    out = tmp_path / "run"
    code = cli_main(["train", "--method", "specular", "--data", "synthetic", "--steps", "10", "--batch-size", "2",
                     "--out", str(out), "--tiny", "--set", "lr=0.0003", "--set", "num_samples=2", "--set",
                     "val_samples=2", "--val-every", "10", "--seed", "0"])
    assert code == 0
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    train = [r for r in records if "loss/total" in r]
    for name in ("photo", "lmk", "mouth", "reg", "uniform"):
        assert all(np.isfinite(r[f"loss/{name}"]) for r in train)
    # the same 2 images every step: the total falls
    assert np.mean([r["loss/total"] for r in train[-3:]]) < 0.7 * train[0]["loss/total"], [r["loss/total"] for r in train]
    val = [r for r in records if "val/loss" in r][-1]
    for key in ("val/shape_mm", "val/shape_mm_mean", "val/exp_err", "val/albedo_err"):
        assert np.isfinite(val[key])
    state = torch.load(out / "final.pt")
    assert int(state["step"]) == 10 and "heads.shape.weight" in state
    net, config = S.load_checkpoint(out / "final.pt", S.Config.tiny())
    assert config.net == "resnet18" and config.sizes == S.Config.tiny().sizes
    # facegeom reconstruct --method specular on two synthetic images (68 and 5 landmarks)
    import trimesh
    from PIL import Image

    from facegeom.data.synthetic import SyntheticFaces

    ds = SyntheticFaces(num_samples=2, image_size=160, seed=3)
    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        s = ds[k]
        Image.fromarray((s["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(images / f"f{k}.png")
        np.savetxt(images / f"f{k}.txt", (s["landmarks"] if k == 0 else s["keypoints5"]).numpy())
    result = tmp_path / "recon"
    capsys.readouterr()
    assert cli_main(["reconstruct", "--method", "specular", "--checkpoint", str(out / "final.pt"), "--assets",
                     "synthetic", "--tiny", str(images), "--out", str(result), "--device", "cpu", "--quiet"]) == 0
    model = S.synthetic_model(S.Config.tiny())
    for k in range(2):
        mesh = trimesh.load(str(result / f"f{k}.obj"), process=False)
        assert mesh.vertices.shape == (model.num_vertices, 3) and len(mesh.faces) == len(model.faces)
        params = np.load(result / f"f{k}.npz")
        assert params["shape"].shape == (1, 20) and params["albedo"].shape == (1, 10)
        assert params["lm68"].shape == (68, 2) and params["lm68_image"].shape == (68, 2)
        overlay = np.asarray(Image.open(result / f"f{k}_overlay.png"))
        assert overlay.shape == (160, 160, 3)
        assert (overlay != np.asarray(Image.open(images / f"f{k}.png"))).any(axis=-1).mean() > 0.02
    assert cli_main(["reconstruct", "--method", "specular", "--checkpoint", str(out / "final.pt"), "--assets",
                     str(tmp_path), str(images), "--out", str(result)]) == 2
    assert "model2017-1_face12_nomouth.h5" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a specular checkpoint"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
        S.load_checkpoint(tmp_path / "other.pt")


def test_polygon_mask_and_synthetic_hook(tiny):
    square = np.array([[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [1.0, 3.0]])
    mask = S.polygon_mask(square + 0.5, 6, 7)  # pixel centres (2..4, 2..3) inside
    assert mask.shape == (6, 7) and mask.sum() == 6 and mask[2:4, 2:5].all()
    config, _ = tiny
    ds = S.synthetic_dataset(config, 2, 0)
    s = ds[1]
    assert s["image"].shape == (3, 64, 64) and 0 <= s["image"].min() and s["image"].max() <= 1
    assert s["skin"].shape == s["face"].shape == s["mouth"].shape == (1, 64, 64)
    assert 0 <= s["skin"].min() and s["skin"].max() <= 1 and "mask" not in s
    torch.testing.assert_close(s["mouth"][0], torch.from_numpy(S.polygon_mask(s["landmarks"][list(S.INNER_LIP)], 64, 64)))
    # the image is gamma(SH diffuse + Blinn-Phong) of the head: without the lobe it is darker
    from facegeom.cameras import Pinhole
    from facegeom.render import MeshRenderer

    p = s["params"]
    head = ds.head
    out = head(shape=p["shape"][None], expression=p["expression"][None], pose=p["rotation"][None],
               jaw=p["jaw"][None], texture=p["texture"][None])
    camera = Pinhole.from_K(p["K"], p["R"], p["t"], image_size=64)
    plain = MeshRenderer(head.faces, 64)(out.vertices, out.albedo.clamp(0, 1), p["light"][None], camera=camera,
                                         background=p["background"] ** 2.2)
    diffuse = plain.image[0].clamp(1e-6, 1).permute(2, 0, 1) ** (1 / 2.2)
    lit = s["image"] - diffuse
    assert lit.min() > -1e-4 and lit.max() > 0.02  # a highlight, nothing darker
    eye = -(camera.R[0].T @ camera.t[0])
    light = camera.R[0].T @ (p["light_position"] - camera.t[0])
    mean_spec, basis = S.synthetic_specular(head)
    full = MeshRenderer(head.faces, 64)(out.vertices, out.albedo.clamp(0, 1), p["light"][None], camera=camera,
                                        specular_albedo=(mean_spec + torch.einsum("k,kvc->vc", p["texture"], basis))[None],
                                        light_position=light, camera_position=eye, shininess=float(p["shininess"]),
                                        background=p["background"] ** 2.2)
    torch.testing.assert_close(s["image"], full.image[0].clamp(1e-6, 1).permute(2, 0, 1) ** (1 / 2.2),
                               atol=1e-5, rtol=1e-5)


def test_uniform_term_reaches_albedo_and_light_not_geometry(tiny):
    config, model = tiny
    size = sum(config.sizes.values())
    params = (0.1 * torch.randn(2, size, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    out = S.decode(params, model, config)
    batch = {"image": torch.rand(2, 3, 64, 64), "landmarks": out.landmarks.detach()}
    terms = S.losses(out, batch, config.replace(w_photo=0, w_lmk=0, w_reg=0, w_mouth=0), skin_mask=model.masks["skin"])
    terms["total"].backward()
    g = S.split_coeff(params.grad, config)
    for name in ("albedo", "sh"):
        assert g[name].abs().sum() > 0
    for name in ("shape", "expression", "angle", "translation", "scale", "light", "shininess"):
        assert g[name].abs().sum() == 0, name
