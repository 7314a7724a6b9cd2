"""facegeom.tracking.energies and Tracker.energies against transcriptions of MT:util.py / MT:tracker.py."""
import pytest
import torch
import torch.nn.functional as F

from facegeom.tracking import energies
from facegeom.tracking.camera import TrackerCamera
from facegeom.tracking.model import LEFT_IRIS_MP, MEDIAPIPE_LANDMARK_IDS, RIGHT_IRIS_MP
from facegeom.tracking.tracker import Config, FrameData, Level, Tracker

from . import _authors
from .conftest import random_state



def _landmarks(batch, count, seed, zero_rows=()):
    g = torch.Generator().manual_seed(seed)
    pred = torch.rand(batch, count, 2, generator=g, dtype=torch.float64) * 500
    target = pred + torch.randn(batch, count, 2, generator=g, dtype=torch.float64) * 7
    for row in zero_rows:
        target[:, row] = 0.0
    mask = ~(target.sum(2, keepdim=True) == 0)  # MT:tracker.py:662-663
    return pred, target, mask


@pytest.mark.parametrize("size", [(512.0, 512.0), (128.0, 256.0)])
def test_landmark_losses_equal_transcriptions(size):
    pred, target, mask = _landmarks(1, 68, 0, zero_rows=(3, 40))
    assert torch.allclose(energies.lmk_loss(pred, target, size, mask), _authors.lmk_loss(pred, target, size, mask),
                          rtol=1e-12, atol=0)
    assert torch.allclose(energies.oval_lmk_loss(pred, target, size, mask),
                          _authors.oval_lmk_loss(pred, target, size, mask), rtol=1e-12, atol=0)
    pred, target, mask = _landmarks(1, 105, 1, zero_rows=(24, 30, 60, 90))
    assert torch.allclose(energies.face_lmk_loss(pred, target, size, mask),
                          _authors.face_lmk_loss(pred, target, size, True, mask), rtol=1e-12, atol=0)
    assert torch.allclose(energies.mouth_lmk_loss(pred, target, size, mask),
                          _authors.mouth_lmk_loss(pred, target, size, True, mask), rtol=1e-12, atol=0)
    assert torch.allclose(energies.eye_closure_lmk_loss(pred, target, size, mask),
                          _authors.eye_closure_lmk_loss(pred, target, size, mask), rtol=1e-12, atol=0)


def test_index_sets_are_the_authors():
    assert list(energies.NOSE_POSITIONS) == _authors.get_idx(_authors.NOSE_LANDMARK_IDS) == list(range(52, 65))
    assert list(energies.LIPS_POSITIONS) == _authors.get_idx(_authors.LIPS_LANDMARK_IDS) == list(range(65, 105))
    assert list(MEDIAPIPE_LANDMARK_IDS) == _authors.MP_LANDMARKS.tolist()


def test_losses_are_per_frame():
    """B frames give each frame's own value (what the authors' code gives for that frame alone)."""
    pred, target, mask = _landmarks(3, 105, 2, zero_rows=(5,))
    together = energies.face_lmk_loss(pred, target, (256, 256), mask)
    assert together.shape == (3,)
    for b in range(3):
        alone = _authors.face_lmk_loss(pred[b:b + 1], target[b:b + 1], (256, 256), True, mask[b:b + 1])
        assert torch.allclose(together[b], alone, rtol=1e-12)


def test_pixel_loss_equals_transcription_and_empty_mask():
    g = torch.Generator().manual_seed(3)
    a, b = (torch.rand(2, 3, 16, 20, generator=g, dtype=torch.float64) for _ in range(2))
    mask = (torch.rand(2, 1, 16, 20, generator=g, dtype=torch.float64) > 0.4).double().expand(-1, 3, -1, -1)
    ours = energies.pixel_loss(a, b, mask)
    for k in range(2):
        assert torch.allclose(ours[k], _authors.pixel_loss(a[k:k + 1], b[k:k + 1], mask[k:k + 1]), rtol=1e-12)
    # An empty mask: the authors divide 0 by 0 (NaN); facegeom documents 0.
    assert float(energies.pixel_loss(a[:1], b[:1], torch.zeros_like(mask[:1]))) == 0.0


def test_regularisers_equal_transcription(model64):
    state = random_state(model64, seed=4)
    mica = state["shape"] + 0.1
    ours = energies.reg_terms(state, mica, Config())
    cfg = Config()
    I6D = torch.tensor([[1.0, 0, 0, 0, 1, 0]], dtype=torch.float64)
    exp, eyes, jaw, eyelids = state["exp"], state["eyes"], state["jaw"], state["eyelids"]
    right_eye, left_eye = eyes[:, :6], eyes[:, 6:]
    expected = {  # MT:tracker.py:507-515
        'reg/exp': torch.sum(exp ** 2) * cfg.w_exp,
        'reg/sym': torch.sum((right_eye - left_eye) ** 2) * 8.0,
        'reg/jaw': torch.sum((I6D - jaw) ** 2) * cfg.w_jaw,
        'reg/eye_lids': torch.sum((eyelids[:, 0] - eyelids[:, 1]) ** 2),
        'reg/eye_left': torch.sum((I6D - left_eye) ** 2),
        'reg/eye_right': torch.sum((I6D - right_eye) ** 2),
        'reg/shape': torch.sum((state["shape"] - mica) ** 2) * cfg.w_shape,
        'reg/tex': torch.sum(state["tex"] ** 2) * cfg.w_tex,
        'reg/pp': torch.sum(state["principal_point"] ** 2),
    }
    assert set(ours) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(ours[name][0], value, rtol=1e-12), name


def _frame(model, state, size, seed):
    """A frame whose landmarks are the model's projections plus noise, with missing points."""
    g = torch.Generator().manual_seed(seed)
    camera = TrackerCamera(state["R"], state["t"], state["focal_length"], state["principal_point"])
    out = model(state["shape"], state["exp"] + 0.2, state["jaw"], state["eyes"], camera.R, state["eyelids"])
    lmk = camera.screen(out.landmarks68, size) + torch.randn(1, 68, 2, generator=g, dtype=torch.float64)
    dense = torch.zeros(1, 478, 2, dtype=torch.float64)
    dense[:, list(MEDIAPIPE_LANDMARK_IDS)] = camera.screen(out.landmarks_mp, size) + 1.0
    left, right = out.iris
    dense[:, list(LEFT_IRIS_MP)] = camera.screen(left, size) - 0.5
    dense[:, list(RIGHT_IRIS_MP)] = camera.screen(right, size) + 0.5
    lmk[:, 7] = 0.0  # a missing FAN point
    dense[:, 276] = 0.0  # a missing MediaPipe point
    image = torch.rand(1, 3, *size, generator=g, dtype=torch.float64)
    return FrameData(image, lmk, dense)


@pytest.mark.parametrize("initializing,k", [(False, 0), (False, 2), (True, 0)])
def test_iteration_terms_equal_transcription(model64, initializing, k):
    """Every term of one iteration (MT:tracker.py:475-526) on the same state: <= 1e-5 relative (the acceptance
    criterion), with the photometric term through a brute-force PyTorch3D rasteriser."""
    size = (24, 24)
    state = random_state(model64, seed=5)
    frame = _frame(model64, state, size, seed=6)
    tracker = Tracker(model64, Config())
    tracker.mica_shape = state["shape"] + 0.05
    level_image = _authors.gaussian_blur(frame.image, [7, 7], [9.0, 9.0])
    level = Level(level_image, 1, size, (float(size[0]), float(size[1])))
    targets = frame.parse()
    scale = 1.0
    iris = {"target_left": targets["left_iris"] * scale, "target_right": targets["right_iris"] * scale,
            "mask_left": targets["mask_left_iris"] * scale, "mask_right": targets["mask_right_iris"] * scale}
    photometric = k > 0 or initializing
    ours = tracker.energies(state, targets, targets["lmk"] * scale, targets["mp"] * scale, iris, level,
                            photometric, torch.flip(level_image, [2, 3]), torch.ones(1, 2, dtype=torch.float64))

    # ---- transcription of MT:tracker.py:475-526 (parse_batch: MT:tracker.py:657-675)
    cfg = Config()
    R = _authors.rotation_6d_to_matrix(state["R"])
    flame = model64.flame
    vertices, lmk68, lmkMP, _ = _authors.flame_forward(
        flame, state["shape"], torch.inverse(R), state["jaw"], state["eyes"], state["exp"], state["eyelids"],
        model64.l_eyelid, model64.r_eyelid, model64.mp_faces, model64.mp_bary)
    image_size = (float(size[0]), float(size[1]))

    def screen(points):
        return _authors.transform_points_screen(points, R, state["t"], state["focal_length"],
                                                state["principal_point"], image_size)

    landmarks, dense = frame.landmarks, frame.landmarks_dense
    lmk_dense_mask = ~(dense.sum(2, keepdim=True) == 0)
    lmk_mask = ~(landmarks.sum(2, keepdim=True) == 0)
    mp_idx = _authors.MP_LANDMARKS
    image_lmksMP, mp_mask = dense[:, mp_idx, :2], lmk_dense_mask[:, mp_idx, :]
    left_iris_flame, right_iris_flame = model64.iris_left.tolist(), model64.iris_right.tolist()
    proj_lmksMP, proj_lmks68, proj_vertices = screen(lmkMP), screen(lmk68), screen(vertices)
    left_iris, right_iris = dense[:, [468, 469, 470, 471, 472]], dense[:, [473, 474, 475, 476, 477]]
    mask_left_iris = lmk_dense_mask[:, [468, 469, 470, 471, 472]] * scale
    mask_right_iris = lmk_dense_mask[:, [473, 474, 475, 476, 477]] * scale
    expected = {
        'loss/lmk_oval': _authors.oval_lmk_loss(proj_lmks68, landmarks, image_size, lmk_mask) * cfg.w_lmks_oval,
        'loss/lmk_68': _authors.lmk_loss(proj_lmks68, landmarks, image_size, lmk_mask) * cfg.w_lmks_68,
        'loss/lmk_MP': _authors.face_lmk_loss(proj_lmksMP, image_lmksMP, image_size, True, mp_mask) * cfg.w_lmks,
        'loss/lmk_eye': _authors.eye_closure_lmk_loss(proj_lmksMP, image_lmksMP, image_size, mp_mask) * cfg.w_lmks_lid,
        'loss/lmk_mouth': _authors.mouth_lmk_loss(proj_lmksMP, image_lmksMP, image_size, True, mp_mask) * cfg.w_lmks_mouth,
        'loss/lmk_iris_left': _authors.lmk_loss(proj_vertices[:, left_iris_flame, ...], left_iris, image_size,
                                                mask_left_iris) * cfg.w_lmks_iris,
        'loss/lmk_iris_right': _authors.lmk_loss(proj_vertices[:, right_iris_flame, ...], right_iris, image_size,
                                                 mask_right_iris) * cfg.w_lmks_iris,
    }
    if photometric:
        ndc = _authors.ndc_vertices(vertices, R, state["t"], state["focal_length"], state["principal_point"])[0]
        albedo = flame.albedo(state["tex"])[0]
        images, mask, position, _, _ = _authors.render(vertices[0], model64.faces, ndc, albedo, state["sh"],
                                                       model64.render_mask, *size)
        grid = position.permute(1, 2, 0)[None]
        sampled = F.grid_sample(torch.flip(level_image, [2, 3]), grid * _authors.get_aspect_ratio(level_image).double(),
                                align_corners=False)
        expected['loss/pho'] = _authors.pixel_loss(images, sampled, mask) * cfg.w_pho
    regs = [name for name in ours if name.startswith("reg/")]
    assert set(ours) - set(regs) == set(expected)
    for name, value in expected.items():
        assert torch.allclose(ours[name][0], value, rtol=1e-5, atol=0), (name, float(ours[name][0]), float(value))
    if photometric:
        assert float(expected['loss/pho']) > 0
