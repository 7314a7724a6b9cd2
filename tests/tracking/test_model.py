"""TrackerFLAME against MT:flame/FLAME.py + flame/lbs.py (transcribed), the camera against PyTorch3D's
conventions (transcribed), and the asset loader on files in the official formats."""
import os

import numpy as np
import pytest
import torch

from facegeom.models import FLAME
from facegeom.tracking.camera import TrackerCamera, look_at_view_transform
from facegeom.tracking.model import FLAME_EXTRA_FACES, LEFT_IRIS_FLAME, TrackerFLAME
from facegeom.transforms import axis_angle_to_matrix, matrix_to_rotation_6d

from ..models.model_files import flame_arrays, landmark_arrays, write_generic_model
from . import _authors
from .conftest import random_state

dt = torch.float64


def test_forward_equals_transcription(model64):
    state = random_state(model64, batch=3, seed=21)
    camera = TrackerCamera(state["R"], state["t"], state["focal_length"], state["principal_point"])
    out = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R, state["eyelids"])
    vertices, lmk68, mp, rows = _authors.flame_forward(
        model64.flame, state["shape"], torch.inverse(camera.R), state["jaw"], state["eyes"], state["exp"],
        state["eyelids"], model64.l_eyelid, model64.r_eyelid, model64.mp_faces, model64.mp_bary)
    assert torch.allclose(out.vertices, vertices, atol=1e-12)
    assert torch.equal(out.contour_rows, rows)
    assert torch.allclose(out.landmarks68, lmk68, atol=1e-12)
    assert torch.allclose(out.landmarks_mp, mp, atol=1e-12)
    without = model64(state["shape"], state["exp"], state["jaw"], state["eyes"], camera.R)  # MT:tracker.py:401
    assert not torch.allclose(without.vertices, out.vertices)


def test_contour_row_follows_the_camera(model64):
    """The contour row uses the inverse camera rotation and the negated yaw (MT:flame/FLAME.py:152-158):
    over yaws across the table's range, including both clamps and the rounding boundaries."""
    R0, _ = look_at_view_transform(dist=1.0, dtype=dt)
    yaws = torch.tensor([-60.0, -39.6, -39.4, -20.5, -0.4, 0.0, 0.6, 12.5, 38.6, 39.4, 75.0], dtype=dt)
    head = axis_angle_to_matrix(torch.stack([torch.zeros_like(yaws), torch.deg2rad(yaws), torch.zeros_like(yaws)], 1))
    R = head.transpose(1, 2) @ R0  # the head turned by `yaw`, as a camera
    batch = len(yaws)
    I6 = matrix_to_rotation_6d(torch.eye(3, dtype=dt)).expand(batch, 6)
    rot_mats = torch.eye(3, dtype=dt).expand(batch, 5, 3, 3)
    rows = TrackerFLAME.contour_rows(rot_mats, R)
    pose = torch.cat([I6, I6, I6, I6, I6], 1)
    expected = _authors.find_dynamic_lmk_idx(pose, torch.tensor([1, 0]), torch.inverse(R))
    assert torch.equal(rows, expected)
    assert rows.tolist()[0] == 78 and rows.tolist()[-1] == 39 and rows.tolist()[5] == 0


def test_camera_projection_equals_pytorch3d(model64):
    state = random_state(model64, batch=2, seed=22)
    camera = TrackerCamera(state["R"], state["t"], state["focal_length"], state["principal_point"])
    points = torch.randn(2, 50, 3, dtype=dt) * 0.1
    R = _authors.rotation_6d_to_matrix(state["R"])
    for size in ((512.0, 512.0), (128.0, 256.0), (135.0, 240.0)):
        expected = _authors.transform_points_screen(points, R, state["t"], state["focal_length"],
                                                    state["principal_point"], size)
        assert torch.allclose(camera.screen(points, size), expected, atol=1e-9)


@pytest.mark.parametrize("dist,elev,azim", [(1.0, 0.0, 0.0), (2.5, 30.0, -40.0), (1.0, 90.0, 0.0)])
def test_look_at_view_transform_equals_pytorch3d(dist, elev, azim):
    R, T = look_at_view_transform(dist, elev, azim, dtype=dt)
    R_ref, T_ref = _authors.look_at_view_transform(dist, elev, azim)
    assert torch.allclose(R, R_ref, atol=1e-12) and torch.allclose(T, T_ref, atol=1e-12)


def test_opencv_conversion_equals_pytorch3d(model64):
    state = random_state(model64, batch=2, seed=23)
    camera = TrackerCamera(state["R"], state["t"], state["focal_length"], state["principal_point"])
    for size in ((512, 512), (540, 960)):
        R, t, K = camera.to_opencv(size)
        R_ref, t_ref, K_ref = _authors.opencv_from_cameras_projection(
            camera.R, state["t"], state["focal_length"].expand(-1, 2), state["principal_point"],
            torch.tensor([size] * 2))
        assert torch.allclose(R, R_ref, atol=1e-12) and torch.allclose(t, t_ref) and torch.allclose(K, K_ref)


def test_from_assets_reads_the_official_layouts(tmp_path):
    arrays = flame_arrays(num_expression=10)
    write_generic_model(tmp_path / "generic_model.pkl", arrays)
    num_vertices, num_faces = len(arrays["v_template"]), len(arrays["f"])
    np.save(tmp_path / "landmark_embedding.npy", landmark_arrays(num_faces), allow_pickle=True)
    model = TrackerFLAME.from_assets(tmp_path, n_shape=20, n_exp=10)
    assert not model.has_mediapipe and model.l_eyelid is None and bool(model.render_mask.all())
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mediapipe_landmark_embedding.npz", lmk_face_idx=rng.integers(0, num_faces, 105).astype(np.uint32),
             lmk_b_coords=rng.dirichlet(np.ones(3), 105), landmark_indices=np.arange(105))
    np.save(tmp_path / "l_eyelid.npy", rng.normal(size=(num_vertices, 3)) * 1e-3)
    np.save(tmp_path / "r_eyelid.npy", rng.normal(size=(num_vertices, 3)) * 1e-3)
    import pickle
    with open(tmp_path / "FLAME_masks.pkl", "wb") as f:
        pickle.dump({"face": np.arange(10), "left_eyeball": np.array([20, 21]), "right_eyeball": np.array([30]),
                     "scalp": np.arange(40, 42), "boundary": np.array([0, 1]), "left_ear": np.array([5]),
                     "right_ear": np.array([7, 8])}, f, protocol=2)
    model = TrackerFLAME.from_assets(tmp_path, n_shape=20, n_exp=10, dtype=dt)
    assert model.has_mediapipe and model.l_eyelid.shape == (num_vertices, 3)
    assert model.render_mask.nonzero().squeeze(1).tolist() == list(range(10)) + [20, 21, 30]
    assert not model.has_iris  # FLAME 2020's iris ids need its 5023 vertices
    # The depth map's vertices: all but boundary and ears (MT:masking.py:93-98); no extra faces off FLAME 2020.
    assert (~model.depth_mask).nonzero().squeeze(1).tolist() == [0, 1, 5, 7, 8]
    assert model.extra_faces.shape == (0, 3) and torch.equal(model.depth_faces, model.faces)
    os.remove(tmp_path / "landmark_embedding.npy")
    with pytest.raises(FileNotFoundError, match="landmark_embedding.npy"):
        TrackerFLAME.from_assets(tmp_path)


def test_iris_defaults_are_the_authors():
    assert LEFT_IRIS_FLAME == (4597, 4542, 4510, 4603, 4570)  # MT:tracker.py:59


def test_depth_faces_put_the_extra_faces_first(model64):
    extra = FLAME_EXTRA_FACES
    assert len(extra) == 30 and extra[0] == (1573, 1572, 1860) and extra[-1] == (2708, 2943, 2945)  # MT:util.py:440,469
    flame = model64.flame
    model = TrackerFLAME(flame, extra_faces=[[0, 1, 2], [3, 4, 5]], depth_mask=np.arange(flame.num_vertices) % 2 == 0)
    assert model.depth_faces[:2].tolist() == [[0, 1, 2], [3, 4, 5]] and torch.equal(model.depth_faces[2:], flame.faces)
    with pytest.raises(IndexError, match="extra_faces"):
        TrackerFLAME(flame, extra_faces=[[0, 1, flame.num_vertices]])
    with pytest.raises(ValueError, match="depth_mask"):
        TrackerFLAME(flame, depth_mask=np.ones(3, dtype=bool))


def test_bad_inputs_raise(model64):
    state = random_state(model64)
    R = torch.eye(3, dtype=dt)[None]
    with pytest.raises(ValueError, match="eyes"):
        model64(state["shape"], state["exp"], state["jaw"], state["eyes"][:, :6], R)
    with pytest.raises(ValueError, match="camera_rotation"):
        model64(state["shape"], state["exp"], state["jaw"], state["eyes"], R[0])
    with pytest.raises(TypeError, match="flame"):
        TrackerFLAME("not a model")
    bare = FLAME(model64.flame.v_template, model64.flame.shapedirs, model64.flame.posedirs, model64.flame.J_regressor,
                 model64.flame.lbs_weights, model64.flame.faces, n_shape=model64.n_shape, n_exp=model64.n_exp)
    with pytest.raises(ValueError, match="landmark embedding"):
        TrackerFLAME(bare)
    with pytest.raises(ValueError, match="eyelid"):
        TrackerFLAME(model64.flame)(state["shape"], state["exp"], state["jaw"], state["eyes"], R, state["eyelids"])


def test_landmark_only_forward_equals_the_full_one(model64):
    """Skinning only the landmark / iris vertices (+ the joints as virtual vertices) gives the full forward's
    landmarks, iris points and gradients."""
    state = random_state(model64, batch=2, seed=24)
    inputs = {k: state[k].clone().requires_grad_(True) for k in ("shape", "exp", "jaw", "eyes", "eyelids")}
    R = _authors.rotation_6d_to_matrix(state["R"])
    full = model64(inputs["shape"], inputs["exp"], inputs["jaw"], inputs["eyes"], R, inputs["eyelids"])
    part = model64(inputs["shape"], inputs["exp"], inputs["jaw"], inputs["eyes"], R, inputs["eyelids"],
                   landmarks_only=True)
    assert part.vertices is None and model64._landmark_subset().v_template.shape[0] < model64.flame.num_vertices
    for a, b in ((full.landmarks68, part.landmarks68), (full.landmarks_mp, part.landmarks_mp),
                 (full.iris[0], part.iris[0]), (full.iris[1], part.iris[1])):
        assert torch.allclose(a, b, atol=1e-12)
    weights = torch.randn(2, 68 + 105, 3, dtype=dt)

    def grads(out):
        loss = (torch.cat([out.landmarks68, out.landmarks_mp], 1) * weights).sum() + out.iris[0].sum()
        return torch.autograd.grad(loss, list(inputs.values()))

    for a, b in zip(grads(full), grads(part)):
        assert torch.allclose(a, b, atol=1e-10)
