"""``facegeom track`` end to end on a short synthetic sequence (tiny preset), and the input/output layouts."""
import json
import os

import numpy as np
import pytest
import torch

from facegeom.cli import main
from facegeom.tracking.io import ActorFolder, load_identity, read_depth, write_actor_folder
from facegeom.tracking.texture import FlameTexture, load_obj_uv


@pytest.mark.filterwarnings("ignore:video.mp4 not written")
def test_track_synthetic_recovers_pose_better_than_the_start(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["track", "--synthetic", "--preset", "tiny", "--frames", "3", "--out", str(out), "--quiet",
                 "--threads", "1"])
    report = json.loads((out / "report.json").read_text())
    assert code == (0 if report["converged"] else 1)
    assert report["converged"], report["checks"]
    # Tracking beats the starting point (camera stage, neutral expression) on landmarks and head rotation.
    assert report["landmark_px"] < 0.6 * report["initial"]["landmark_px"]
    assert report["rotation_deg"] < report["initial"]["rotation_deg"]
    # The tiny preset recovers the expression better than the neutral one (docs/tracking.md "The tiny preset").
    assert report["vertex_mm"] < report["initial"]["vertex_mm"]
    assert len(report["frames"]) == 3 and all(f["seconds"] > 0 for f in report["frames"])
    for sub, ext in (("checkpoint", ".frame"), ("mesh", ".ply"), ("overlay", ".png"), ("depth", ".png")):
        assert sorted(os.listdir(out / sub)) == [f"0000{k}{ext}" for k in range(3)]
    # depth/<id>.png: 16-bit millimetres (MT:tracker.py:631-634); the synthetic head is ~2 m from the camera.
    depth = read_depth(out / "depth" / "00001.png")
    assert depth.shape == (128, 128) and (depth > 0).sum() > 500
    assert 1.5 < float(np.median(depth[depth > 0])) < 2.5
    # canonical.obj (MT:tracker.py:227-236): the tracked shape with the jaw opened, FLAME's topology.
    import trimesh
    canonical = trimesh.load(out / "canonical.obj", process=False)
    assert canonical.vertices.shape[1] == 3 and len(canonical.faces) > 0
    checkpoint = torch.load(out / "checkpoint" / "00002.frame", weights_only=False)
    assert checkpoint["frame_id"] == "00002" and list(checkpoint["img_size"]) == [128, 128]
    assert checkpoint["opencv"]["K"].shape == (1, 3, 3) and checkpoint["global_step"] > 0
    assert "seconds_per_frame" in capsys.readouterr().out


def test_actor_folder_reads_the_authors_layout(tmp_path):
    images = torch.rand(2, 3, 10, 12)
    landmarks = torch.rand(2, 68, 2) * 10
    dense = torch.rand(2, 478, 2) * 10
    write_actor_folder(tmp_path, images, landmarks, dense, torch.arange(5.0))
    os.remove(tmp_path / "kpt_dense" / "00001.npy")
    source = ActorFolder(tmp_path)
    assert len(source) == 2 and source.stems == ["00000", "00001"]
    frame = source.frame(1)
    assert frame.image.shape == (1, 3, 10, 12) and torch.allclose(frame.image, images[1:2], atol=1 / 255)
    assert torch.allclose(frame.landmarks[0], landmarks[1])
    assert not bool(frame.parse()["mp_mask"].any())  # missing kpt_dense file: masked, not fatal
    assert torch.equal(source.identity(), torch.arange(5.0))
    os.remove(tmp_path / "kpt" / "00000.npy")
    with pytest.warns(UserWarning, match="kpt"):
        source = ActorFolder(tmp_path)
    assert not bool(source.frame(0).parse()["lmk_mask"].any())
    np.save(tmp_path / "kpt" / "00001.npy", np.zeros((60, 2)))
    with pytest.raises(ValueError, match="68"):
        source.frame(1)


def test_input_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="identity.npy"):
        load_identity(tmp_path / "identity.npy")
    with pytest.raises(FileNotFoundError, match="no frames"):
        ActorFolder(tmp_path)
    (tmp_path / "clip.mp4").write_bytes(b"")
    try:
        import imageio  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="imageio"):
            ActorFolder(tmp_path / "clip.mp4")
    with pytest.raises(SystemExit):
        main(["track", "--out", str(tmp_path / "o")])  # neither an input nor --synthetic


def test_flame_texture_and_obj_uvs(tmp_path):
    """FLAMETex (MT:flame/FLAME.py:309-316) on a small texture space, and the template's vt / f v/vt."""
    side, k = 4, 3
    rng = np.random.default_rng(0)
    mean = rng.random((1, side * side * 3)) * 255
    tex_dir = rng.normal(size=(side * side * 3, 200))
    np.savez(tmp_path / "FLAME_texture.npz", mean=mean, tex_dir=tex_dir)
    texture = FlameTexture.from_file(tmp_path / "FLAME_texture.npz", (6, 6), n_tex=k)
    code = torch.tensor(rng.normal(size=(2, k)), dtype=torch.float32)
    ours = texture(code)
    # transcription of FLAMETex.forward
    texture_mean = torch.from_numpy(mean.reshape(1, -1)).float()[None, ...]
    texture_basis = torch.from_numpy(tex_dir.reshape(-1, 200)[:, :k]).float()[None, ...]
    t = texture_mean + (texture_basis * code[:, None, :]).sum(-1)
    t = t.reshape(code.shape[0], side, side, 3).permute(0, 3, 1, 2)
    t = torch.nn.functional.interpolate(t, (6, 6), mode='bilinear')
    expected = t[:, [2, 1, 0], :, :] / 255.
    assert torch.allclose(ours, expected, atol=1e-5)
    (tmp_path / "t.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0.1 0.2\nvt 0.3 0.4\nvt 0.5 0.6\nf 1/3 2/2 3/1\n")
    uv, uv_faces, faces = load_obj_uv(tmp_path / "t.obj")
    assert uv.shape == (3, 2) and uv_faces.tolist() == [[2, 1, 0]] and faces.tolist() == [[0, 1, 2]]


@pytest.mark.filterwarnings("ignore:video.mp4 not written")
def test_track_real_input_layout_with_flame_assets(tmp_path):
    """``facegeom track ACTOR --assets DIR --batch 2``: the official FLAME files (a small model in their formats),
    the texture space with the template's UVs (the UV albedo path), frames + kpt/ + identity.npy."""
    from ..models.model_files import flame_arrays, landmark_arrays, write_generic_model

    assets, actor = tmp_path / "assets", tmp_path / "actor"
    assets.mkdir()
    arrays = flame_arrays(num_expression=100)
    write_generic_model(assets / "generic_model.pkl", arrays)
    faces = arrays["f"].astype(np.int64)
    np.save(assets / "landmark_embedding.npy", landmark_arrays(len(faces)), allow_pickle=True)
    rng = np.random.default_rng(0)
    uv = rng.random((len(arrays["v_template"]), 2))
    lines = [f"v {x} {y} {z}" for x, y, z in arrays["v_template"]] + [f"vt {u} {v}" for u, v in uv]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in faces]
    (assets / "head_template_mesh.obj").write_text("\n".join(lines) + "\n")
    side = 8
    np.savez(assets / "FLAME_texture.npz", mean=rng.random((1, side * side * 3)) * 255,
             tex_dir=rng.normal(size=(side * side * 3, 200)))
    images = torch.rand(2, 3, 24, 24)
    landmarks = torch.rand(2, 68, 2) * 10 + 7
    write_actor_folder(actor, images, landmarks, None, torch.zeros(300))
    out = tmp_path / "out"
    assert main(["track", str(actor), "--assets", str(assets), "--preset", "tiny", "--out", str(out), "--quiet",
                 "--threads", "1", "--batch", "2"]) == 0  # both frames in one optimisation
    checkpoint = torch.load(out / "checkpoint" / "00001.frame", weights_only=False)
    assert checkpoint["flame"]["tex"].shape == (1, 140) and checkpoint["flame"]["exp"].shape == (1, 100)
    assert checkpoint["flame"]["shape"].shape == (1, 300)
    report = json.loads((out / "report.json").read_text())
    assert np.isfinite(report["landmark_px"]) and np.isfinite(report["photometric"])
    assert sorted(os.listdir(out / "checkpoint")) == ["00000.frame", "00001.frame"]
    first = torch.load(out / "checkpoint" / "00000.frame", weights_only=False)
    assert not np.array_equal(first["flame"]["exp"], checkpoint["flame"]["exp"])  # each frame its own result
    with pytest.raises(FileNotFoundError, match="FLAME_texture"):
        os.remove(assets / "FLAME_texture.npz")
        main(["track", str(actor), "--assets", str(assets), "--preset", "tiny", "--out", str(out), "--quiet"])
