"""Synthetic inputs for the tracker: the tracker's optional assets for :func:`facegeom.models.synthetic_head`
and rendered sequences with known parameters (the embedded default of ``facegeom track --synthetic``).

What the tracker reads from FLAME's asset files (PIPELINES.md §7.2) is built here for the synthetic head,
with the same layouts and meanings:

- a 105-point MediaPipe embedding (face index + barycentrics) placed where MediaPipe's points are on a face
  (brows, eye rings, nose, lip rings) in the id order of
  :data:`facegeom.tracking.model.MEDIAPIPE_LANDMARK_IDS`, with the eye-closure pairs of
  ``MT:util.py:132-139`` (upper above lower);
- 5 iris vertices on each eyeball (``MT:tracker.py:59-62``), left = FLAME joint 3 (the ``+x`` eye);
- eyelid blendshapes ``[V, 3]`` that lower the upper lid (``MT:flame/FLAME.py:244-246``);
- the render mask: the face region + eyeballs (``MT:masking.py:81-91``).

:func:`render_sequence` renders frames with :class:`~facegeom.tracking.render.TrackerRenderer` and writes the
detector landmarks as the authors' layouts hold them: 68 FAN points and 478 MediaPipe points in pixels
(PyTorch3D screen space), zeros for points no detector would give (here every MediaPipe id outside the
105 + iris), which the tracker masks (``MT:tracker.py:662-663``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch

from facegeom.models import synthetic_head
from facegeom.models.synthetic_head import direction, embed_directions  # the head's own landmark embedding
from facegeom.tracking.camera import TrackerCamera, look_at_view_transform
from facegeom.tracking.model import (LEFT_IRIS_MP, MEDIAPIPE_LANDMARK_IDS, MEDIAPIPE_POINTS, RIGHT_IRIS_MP,
                                     TrackerFLAME)
from facegeom.tracking.render import TrackerRenderer
from facegeom.transforms import axis_angle_to_matrix, matrix_to_rotation_6d

Tensor = torch.Tensor
#: Factor on the synthetic head's expression components (see :func:`synthetic_tracker_model`).
EXPRESSION_SCALE = 5.0
#: Focal length (NDC) of the synthetic camera: the tracker's 5000 / H on its 512-pixel crops.
FOCAL_NDC = 5000.0 / 512.0


def _mediapipe_directions() -> np.ndarray:
    """(azimuth, elevation) degrees of the 105 points, in MEDIAPIPE_LANDMARK_IDS order (+azimuth = subject's left)."""
    brow = [(s * a, 16.0 + 2.0 * math.sin(math.pi * (a - 9.0) / 27.0)) for s in (1, -1)
            for a in np.linspace(9.0, 36.0, 10)]
    eyes = []
    # Positions (within each eye's 16) of the eye-closure pairs: upper 29, 30, 31 <-> lower 25, 24, 23
    # (left eye, MT:util.py:133-134) and 47, 46, 45 <-> 39, 40, 41 (right eye): angles +-60, +-90, +-120.
    special = {9: 60.0, 10: 90.0, 11: 120.0, 5: -60.0, 4: -90.0, 3: -120.0}  # left eye, offsets from 20
    special_right = {11: 60.0, 10: 90.0, 9: 120.0, 3: -60.0, 4: -90.0, 5: -120.0}  # offsets from 36
    others = [0.0, 20.0, 40.0, 140.0, 160.0, 180.0, -160.0, -140.0, -40.0, -20.0]
    for sign, table in ((1, special), (-1, special_right)):
        rest = iter(others)
        for k in range(16):
            angle = math.radians(table[k] if k in table else next(rest))
            eyes.append((sign * 21.0 + 7.0 * math.cos(angle), 6.0 + 3.5 * math.sin(angle)))
    nose = [(0.0, 3.0), (0.0, -1.0), (0.0, -5.0), (0.0, -9.0), (0.0, -14.0), (0.0, -17.0), (-6.0, -18.0),
            (-4.0, -20.0), (-2.0, -20.5), (0.0, -20.5), (2.0, -20.5), (4.0, -20.0), (6.0, -18.0)]
    lips = [(12.0 * math.cos(t), -30.5 + 4.5 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40, endpoint=False)]
    directions = np.array(brow[:10] + brow[10:] + eyes + nose + lips, dtype=np.float64)
    assert len(directions) == len(MEDIAPIPE_LANDMARK_IDS)
    return directions


def _bump(az, el, centre_az, centre_el, s_az, s_el):
    return np.exp(-0.5 * (((az - centre_az) / s_az) ** 2 + ((el - centre_el) / s_el) ** 2))


def synthetic_tracker_model(seed: int = 0, n_shape: int = 50, n_exp: int = 50, n_tex: int = 50,
                            dtype=None) -> TrackerFLAME:
    """:class:`~facegeom.tracking.model.TrackerFLAME` on :func:`facegeom.models.synthetic_head` with every
    optional asset (MediaPipe embedding, iris, eyelids, render mask); deterministic for a seed."""
    head = synthetic_head(seed=seed, n_shape=n_shape, n_exp=n_exp, n_tex=n_tex, dtype=dtype)
    # The tracker's weights (w_exp = 0.02 on Σ exp², MT:configs/config.py:60) assume FLAME's expression scale,
    # where a unit coefficient moves the face by several millimetres; the synthetic head's components are
    # about EXPRESSION_SCALE times weaker.
    with torch.no_grad():
        head.shapedirs[..., n_shape:] *= EXPRESSION_SCALE
    vertices = head.v_template.double().numpy()
    faces = head.faces.numpy()
    weights = head.lbs_weights.double().numpy()
    is_eye = weights[:, 3:5] > 0.5  # [V, 2]: joint 3 (left, +x) and joint 4 eyeballs
    on_head = ~is_eye.any(1)
    head_faces = np.nonzero(on_head[faces].all(1))[0]
    unit = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    directions = _mediapipe_directions()
    local, bary = embed_directions(unit, faces[head_faces], direction(directions[:, 0], directions[:, 1]))
    mp_faces = head_faces[local]

    iris = []
    for k in range(2):
        ids = np.nonzero(is_eye[:, k])[0]
        centre = vertices[ids].mean(0)
        radius = np.linalg.norm(vertices[ids] - centre, axis=1).mean()
        front = np.array([0.0, 0.0, 1.0])
        targets = [front] + [math.cos(0.6) * front + math.sin(0.6) * np.array(d)
                             for d in ((1, 0, 0), (0, 1, 0), (-1, 0, 0), (0, -1, 0))]
        chosen = [ids[np.argmin(np.linalg.norm(vertices[ids] - (centre + radius * t), axis=1))] for t in targets]
        iris.append(np.array(chosen))

    az = np.degrees(np.arctan2(unit[:, 0], unit[:, 2]))
    el = np.degrees(np.arcsin(np.clip(unit[:, 1], -1, 1)))
    eyelids = []
    for sign in (1.0, -1.0):  # l_eyelid moves the +x eye's upper lid
        weight = _bump(az, el, sign * 21.0, 9.5, 6.0, 2.5) * on_head
        displacement = np.zeros_like(vertices)
        displacement[:, 1] = -0.006 * weight
        displacement[:, 2] = 0.002 * weight
        eyelids.append(displacement)
    face_region = on_head & (np.abs(az) < 70.0) & (el > -55.0) & (el < 35.0)
    render_mask = face_region | is_eye.any(1)
    return TrackerFLAME(head, mp_faces, bary, eyelids=tuple(eyelids), iris=tuple(iris), render_mask=render_mask)


@dataclass
class SyntheticSequence:
    """A rendered sequence with its ground truth (``N`` frames of ``H x W``).

    Attributes:
        images: ``[N, 3, H, W]`` RGB in [0, 1].
        landmarks: ``[N, 68, 2]`` FAN-style points in pixels (PyTorch3D screen space).
        landmarks_dense: ``[N, 478, 2]`` MediaPipe-style points (zeros where no point is given).
        identity: ``[n_shape]`` the shape prior handed to the tracker (truth + noise, as MICA's estimate).
        truth: ground-truth parameters per frame (``shape``, ``exp``, ``jaw``, ``eyes``, ``eyelids``, ``R``, ``t``,
            ``focal``, ``principal_point``, ``tex``, ``sh``) and ``vertices [N, V, 3]``.
    """

    images: Tensor
    landmarks: Tensor
    landmarks_dense: Tensor
    identity: Tensor
    truth: Dict[str, Tensor]


def render_sequence(model: TrackerFLAME, num_frames: int = 4, image_size: int = 128, seed: int = 0,
                    identity_noise: float = 0.1, distance: float = 2.0) -> SyntheticSequence:
    """Render a short sequence of the model with a smooth expression / jaw / eye / eyelid / head-pose
    trajectory, lit by DECA SH, with the per-vertex albedo of the head (``texture`` coefficients).
    The camera has the tracker's initial focal length ``5000 / 512`` (NDC) and looks at the head from about
    ``distance`` metres (the face then spans about half of the frame, as on the authors' 2.5x crops)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    generator = torch.Generator().manual_seed(seed)
    dtype = model.flame.v_template.dtype

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    time = torch.arange(num_frames, dtype=dtype)[:, None] / max(num_frames, 8)  # < 1 period over 8+ frames
    phase = 2 * math.pi * time
    shape = randn(1, model.n_shape) * 0.8
    exp = 0.6 * torch.sin(phase + randn(1, model.n_exp)) * randn(1, model.n_exp).abs() ** 0.5
    zero = torch.zeros_like(time)
    jaw = matrix_to_rotation_6d(axis_angle_to_matrix(torch.cat([0.08 + 0.06 * torch.sin(phase), zero, zero], 1)))
    gaze = torch.cat([0.05 * torch.sin(phase), 0.08 * torch.cos(phase), zero], 1)
    eye_code = matrix_to_rotation_6d(axis_angle_to_matrix(gaze))
    eyes = torch.cat([eye_code, eye_code], 1)
    eyelids = (0.3 + 0.3 * torch.sin(phase)).expand(num_frames, 2).clone()
    # Head pose: the camera orbits slightly (the tracker keeps the head fixed, MT:tracker.py:482-489).
    R0, T0 = look_at_view_transform(dist=1.0, dtype=dtype)
    head_rotation = axis_angle_to_matrix(torch.cat([0.10 * torch.sin(phase), 0.25 * torch.sin(phase + 0.5),
                                                    0.05 * torch.cos(phase)], 1))
    R = head_rotation.transpose(1, 2) @ R0  # X_view = X R_head^T ... as a camera: X (R_h^T R0) + T
    t = T0 + torch.cat([0.01 * torch.sin(phase), 0.008 * torch.cos(phase), distance - 1.0 + 0.05 * time], 1)
    # The tracker's lens: 5000 / 512 in NDC (MT:tracker.py:293 on its 512-pixel crops), at any resolution.
    focal = torch.full((num_frames, 1), FOCAL_NDC, dtype=dtype)
    principal_point = torch.zeros(num_frames, 2, dtype=dtype)
    camera = TrackerCamera(matrix_to_rotation_6d(R), t, focal, principal_point)
    tex = randn(1, model.flame.n_tex) * 0.5
    sh = torch.zeros(1, 9, 3, dtype=dtype)
    sh[:, 0] = 3.2
    sh[:, 1:4] = torch.tensor([[0.3, 0.6, 1.0]], dtype=dtype).T * 0.4

    with torch.no_grad():
        out = model(shape, exp, jaw, eyes, camera.R, eyelids)
        renderer = TrackerRenderer(model.faces, model.render_mask)
        albedo = model.flame.albedo(tex)
        rendering = renderer(out.vertices, camera, albedo, sh, (image_size, image_size))
        images = rendering.image.clamp(0.0, 1.0)
        landmarks = camera.screen(out.landmarks68, image_size)
        dense = torch.zeros(num_frames, MEDIAPIPE_POINTS, 2, dtype=dtype)
        dense[:, list(MEDIAPIPE_LANDMARK_IDS)] = camera.screen(out.landmarks_mp, image_size)
        left, right = out.iris
        dense[:, list(LEFT_IRIS_MP)] = camera.screen(left, image_size)
        dense[:, list(RIGHT_IRIS_MP)] = camera.screen(right, image_size)
    identity = (shape + identity_noise * randn(1, model.n_shape))[0]
    truth = dict(shape=shape.expand(num_frames, -1), exp=exp, jaw=jaw, eyes=eyes, eyelids=eyelids,
                 R=camera.R6, t=t, focal=focal, principal_point=principal_point, tex=tex, sh=sh,
                 vertices=out.vertices)
    return SyntheticSequence(images, landmarks, dense, identity, truth)
