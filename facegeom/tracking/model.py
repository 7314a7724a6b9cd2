"""FLAME as the metrical tracker uses it (PIPELINES.md §7.2, ``MT:flame/FLAME.py``).

``MT`` = ``Zielon/metrical-tracker`` at c2a517244759d7eeaa0e84893d6748e75293f81a.

Differences from :class:`facegeom.models.FLAME`'s own forward, all as the tracker codes them:

- every rotation is 6D (PyTorch3D's first-two-rows convention, :func:`facegeom.transforms.rotation_6d_to_matrix`);
  the global rotation and the neck are the identity and there is no global translation: the
  head pose lives in the camera extrinsics (``MT:flame/FLAME.py:212-233``, ``MT:tracker.py:482-489``);
- ``eyes [B, 12]``: ``eyes[:, :6]`` drives FLAME joint 3 and ``eyes[:, 6:]`` joint 4 (the tracker calls them
  "right" and "left", ``MT:tracker.py:495``);
- eyelid blendshapes ``l_eyelid`` / ``r_eyelid`` ``[V, 3]`` added after skinning, scaled by
  ``eyelids[:, 0]`` / ``eyelids[:, 1]`` (``MT:flame/FLAME.py:244-246``);
- the 17 contour landmarks are picked with the **camera-dependent** yaw: the rotation of the neck
  chain is pre-multiplied by the inverse camera rotation and the yaw is negated before the table
  lookup (``MT:flame/FLAME.py:126-163``);
- 105 MediaPipe landmarks from a barycentric embedding (``mediapipe_landmark_embedding.npz``,
  ``MT:flame/FLAME.py:104-111,261-264``) and the iris vertices (``MT:tracker.py:59-62``).

The model works for any :class:`facegeom.models.FLAME` (the official file or
:func:`facegeom.models.synthetic_head`; :mod:`facegeom.tracking.synthetic` builds the optional
assets for the synthetic head). Every input has a leading batch ``B`` (frames optimised together).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from facegeom import _checks, ops
from facegeom.models.flame import FLAME, contour_row, vertices_to_landmarks, yaw_degrees
from facegeom.transforms import rotation_6d_to_matrix

Tensor = torch.Tensor

#: MediaPipe FaceMesh ids of the 105 tracked points, in the embedding's order: eyebrows L/R, eyes L/R,
#: nose, lips (``MT:flame/mediapipe/landmarks.py:39-46``; the sorted ids of each FACEMESH_* set).
MEDIAPIPE_LANDMARK_IDS = (
    276, 282, 283, 285, 293, 295, 296, 300, 334, 336,
    46, 52, 53, 55, 63, 65, 66, 70, 105, 107,
    249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466,
    7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
    168, 6, 197, 195, 5, 4, 129, 98, 97, 2, 326, 327, 358,
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270,
    291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
)
#: ``NOSE_LANDMARK_IDS`` (``MT:flame/mediapipe/landmarks.py:44``).
NOSE_LANDMARK_IDS = (168, 6, 197, 195, 5, 4, 129, 98, 97, 2, 326, 327, 358)
#: ``FACEMESH_LIPS`` ids (``MT:flame/mediapipe/landmarks.py:45``): the last 40 of the 105.
LIPS_LANDMARK_IDS = MEDIAPIPE_LANDMARK_IDS[65:]
#: Number of MediaPipe FaceMesh points with ``refine_landmarks=True`` (``kpt_dense/*.npy``).
MEDIAPIPE_POINTS = 478
#: Iris vertices of FLAME 2020 and the MediaPipe points they are fitted to (``MT:tracker.py:59-62``).
LEFT_IRIS_FLAME = (4597, 4542, 4510, 4603, 4570)
RIGHT_IRIS_FLAME = (4051, 3996, 3964, 3932, 4028)
LEFT_IRIS_MP = (468, 469, 470, 471, 472)
RIGHT_IRIS_MP = (473, 474, 475, 476, 477)
#: The 30 triangles the authors add to FLAME 2020's faces for the depth map only (they close the gaps at the
#: eye corners; ``get_flame_extra_faces``, ``MT:util.py:437-468``, used at ``MT:tracker.py:632``).
FLAME_EXTRA_FACES = (
    (1573, 1572, 1860), (1742, 1862, 1572), (1830, 1739, 1665), (2857, 2862, 2730), (2708, 2857, 2730),
    (1862, 1742, 1739), (1830, 1862, 1739), (1852, 1835, 1666), (1835, 1665, 1666), (2862, 2861, 2731),
    (1747, 1742, 1594), (3497, 1852, 3514), (1595, 1747, 1594), (1746, 1747, 1595), (1742, 1572, 1594),
    (2941, 3514, 2783), (2708, 2945, 2857), (2941, 3497, 3514), (1852, 1666, 3514), (2930, 2933, 2782),
    (2933, 2941, 2783), (2862, 2731, 2730), (2945, 2930, 2854), (1835, 1830, 1665), (2857, 2945, 2854),
    (1572, 1862, 1860), (2854, 2930, 2782), (2708, 2709, 2943), (2782, 2933, 2783), (2708, 2943, 2945),
)
#: FLAME regions left out of the depth map (``Masking.get_mask_depth``, ``MT:masking.py:93-98``).
DEPTH_EXCLUDED_REGIONS = ("boundary", "left_ear", "right_ear")


def get_idx(ids: Sequence[int]) -> list:
    """Positions in the 105-point array of the MediaPipe ``ids`` (``MT:flame/mediapipe/landmarks.py:55-60``)."""
    wanted = set(int(i) for i in ids)
    return [k for k, j in enumerate(MEDIAPIPE_LANDMARK_IDS) if j in wanted]


def identity_6d(batch: int = 1, dtype=None, device=None) -> Tensor:
    """``[B, 6]`` 6D code of the identity rotation (``I6D`` of ``MT:tracker.py:56-57``)."""
    return torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], dtype=dtype, device=device).expand(batch, 6).clone()


@dataclass
class TrackerOutput:
    """What :meth:`TrackerFLAME.forward` returns (FLAME frame, metres).

    Attributes:
        vertices: ``[B, V, 3]``, or None from ``forward(..., landmarks_only=True)``.
        landmarks68: ``[B, 68, 3]`` 17 camera-dependent contour points + 51 static ones.
        landmarks_mp: ``[B, 105, 3]`` the MediaPipe points, or None without the embedding.
        contour_rows: ``[B]`` int64 row of the dynamic contour table that was used.
        iris: ``([B, 5, 3], [B, 5, 3])`` left and right iris vertices, or None without them.
    """

    vertices: Optional[Tensor]
    landmarks68: Tensor
    landmarks_mp: Optional[Tensor]
    contour_rows: Tensor
    iris: Optional[tuple] = None


class _LandmarkSubset(NamedTuple):
    """FLAME restricted to the vertices the landmarks read, plus 5 virtual vertices carrying the joints:
    ``J = J_regressor (v_template + shapedirs β)`` is linear in ``β``, so the virtual vertex ``j`` has template
    ``J_regressor[j] @ v_template`` and blendshapes ``J_regressor[j] @ shapedirs``, and the subset's regressor
    picks them (one-hot). Skinning and pose correctives are per vertex, so the kept vertices come out as in the
    full forward."""

    v_template: Tensor
    shapedirs: Tensor
    posedirs: Tensor
    J_regressor: Tensor
    lbs_weights: Tensor
    faces: Tensor  # [F, 3] the model's faces renumbered into the subset (-1: a vertex not kept)
    l_eyelid: Optional[Tensor]
    r_eyelid: Optional[Tensor]
    iris_left: Optional[Tensor]
    iris_right: Optional[Tensor]


class TrackerFLAME(nn.Module):
    """FLAME with the tracker's parameterisation and landmark sets.

    Args:
        flame: a :class:`facegeom.models.FLAME` with a landmark embedding (5 joints).
        mediapipe_faces: optional ``[105]`` face indices of the MediaPipe embedding
            (``lmk_face_idx`` of ``mediapipe_landmark_embedding.npz``).
        mediapipe_bary: ``[105, 3]`` barycentric weights (``lmk_b_coords``).
        eyelids: optional pair ``(l_eyelid, r_eyelid)`` of ``[V, 3]`` blendshapes.
        iris: optional pair ``(left, right)`` of 5 vertex indices each (defaults for FLAME 2020 topology
            are :data:`LEFT_IRIS_FLAME` / :data:`RIGHT_IRIS_FLAME`).
        render_mask: optional ``[V]`` bool: the vertices of the photometric region (FLAME ``face`` +
            both eyeballs, ``MT:masking.py:81-91``); all vertices when None.
        depth_mask: optional ``[V]`` bool: the vertices drawn in the depth map (all but FLAME's ``boundary``
            and ears, ``MT:masking.py:93-98``); all vertices when None.
        extra_faces: optional ``[E, 3]`` triangles added before the model's faces for the depth map only
            (:data:`FLAME_EXTRA_FACES` for FLAME 2020, ``MT:tracker.py:632``).
    """

    def __init__(self, flame: FLAME, mediapipe_faces=None, mediapipe_bary=None, eyelids=None, iris=None,
                 render_mask=None, depth_mask=None, extra_faces=None):
        super().__init__()
        if not isinstance(flame, FLAME):
            raise TypeError(f"flame must be a facegeom.models.FLAME, got {type(flame).__name__}")
        if not flame.has_landmarks:
            raise ValueError("flame has no landmark embedding: the tracker needs the 68 landmarks "
                             "(FLAME.load_landmark_embedding)")
        if flame.num_joints != 5:
            raise ValueError(f"flame must have FLAME's 5 joints, got {flame.num_joints}")
        self.flame = flame
        ref = flame.v_template
        num_vertices, num_faces = flame.num_vertices, flame.faces.shape[0]
        for name in ("mp_faces", "mp_bary", "l_eyelid", "r_eyelid", "iris_left", "iris_right"):
            self.register_buffer(name, None)
        if (mediapipe_faces is None) != (mediapipe_bary is None):
            raise ValueError("mediapipe_faces and mediapipe_bary must be given together")
        if mediapipe_faces is not None:
            faces = torch.as_tensor(np.asarray(mediapipe_faces), dtype=torch.int64, device=ref.device).reshape(-1)
            bary = torch.as_tensor(np.asarray(mediapipe_bary), dtype=ref.dtype, device=ref.device)
            _checks.shape("mediapipe_faces", faces, [len(MEDIAPIPE_LANDMARK_IDS)], "[105]")
            _checks.shape("mediapipe_bary", bary, [len(MEDIAPIPE_LANDMARK_IDS), 3], "[105, 3]")
            _checks.indices("mediapipe_faces", faces, num_faces, what="face indices")
            self.mp_faces, self.mp_bary = faces, bary
        if eyelids is not None:
            left, right = (torch.as_tensor(np.asarray(e), dtype=ref.dtype, device=ref.device) for e in eyelids)
            _checks.shape("l_eyelid", left, [num_vertices, 3], "[V, 3]")
            _checks.shape("r_eyelid", right, [num_vertices, 3], "[V, 3]")
            self.l_eyelid, self.r_eyelid = left, right
        if iris is not None:
            left, right = (torch.as_tensor(np.asarray(i), dtype=torch.int64, device=ref.device) for i in iris)
            for name, value in (("iris left", left), ("iris right", right)):
                _checks.shape(name, value, [5], "[5]")
                _checks.indices(name, value, num_vertices, what="vertex indices")
            self.iris_left, self.iris_right = left, right
        mask = torch.ones(num_vertices, dtype=torch.bool) if render_mask is None else \
            torch.as_tensor(np.asarray(render_mask), dtype=torch.bool)
        _checks.shape("render_mask", mask, [num_vertices], "[V]")
        self.register_buffer("render_mask", mask.to(ref.device))
        depth = torch.ones(num_vertices, dtype=torch.bool) if depth_mask is None else \
            torch.as_tensor(np.asarray(depth_mask), dtype=torch.bool)
        _checks.shape("depth_mask", depth, [num_vertices], "[V]")
        self.register_buffer("depth_mask", depth.to(ref.device))
        extra = torch.zeros(0, 3, dtype=torch.int64) if extra_faces is None else \
            torch.as_tensor(np.asarray(extra_faces), dtype=torch.int64).reshape(-1, 3)
        _checks.indices("extra_faces", extra, num_vertices, what="vertex indices")
        self.register_buffer("extra_faces", extra.to(flame.faces.device))

    @property
    def faces(self) -> Tensor:
        return self.flame.faces

    @property
    def depth_faces(self) -> Tensor:
        """``[E + F, 3]`` the triangles of the depth map: the extra faces, then the model's
        (``torch.cat([get_flame_extra_faces(), faces])``, ``MT:tracker.py:632``)."""
        return torch.cat([self.extra_faces, self.faces.to(self.extra_faces)])

    @property
    def n_shape(self) -> int:
        return self.flame.n_shape

    @property
    def n_exp(self) -> int:
        return self.flame.n_exp

    @property
    def has_mediapipe(self) -> bool:
        return self.mp_faces is not None

    @property
    def has_iris(self) -> bool:
        return self.iris_left is not None

    @classmethod
    def from_assets(cls, folder, n_shape: int = 300, n_exp: int = 100, dtype=None) -> "TrackerFLAME":
        """Read the tracker's files from ``folder`` under their official names:
        ``generic_model.pkl`` and ``landmark_embedding.npy`` (required), ``mediapipe_landmark_embedding.npz``,
        ``l_eyelid.npy`` + ``r_eyelid.npy`` and ``FLAME_masks.pkl`` (optional; each part is left out when its
        file is absent; the masks give the photometric region and the depth map's). The iris vertices
        (``MT:tracker.py:59-62``) and the depth map's extra faces (:data:`FLAME_EXTRA_FACES`) are FLAME 2020's
        when the model has FLAME's 5023 vertices.
        """
        from facegeom.models.flame import load_flame_masks

        folder = os.fspath(folder)

        def path(name):
            return os.path.join(folder, name)

        for name in ("generic_model.pkl", "landmark_embedding.npy"):
            if not os.path.isfile(path(name)):
                raise FileNotFoundError(f"{path(name)} not found: the tracker's assets folder needs {name}")
        flame = FLAME.from_file(path("generic_model.pkl"), n_shape=n_shape, n_exp=n_exp,
                                landmark_embedding=path("landmark_embedding.npy"), dtype=dtype)
        mp_faces = mp_bary = eyelids = mask = iris = depth = extra = None
        if os.path.isfile(path("mediapipe_landmark_embedding.npz")):
            data = np.load(path("mediapipe_landmark_embedding.npz"), allow_pickle=False)
            for key in ("lmk_face_idx", "lmk_b_coords"):
                if key not in data.files:
                    raise ValueError(f"{path('mediapipe_landmark_embedding.npz')}: missing key {key!r}")
            mp_faces, mp_bary = data["lmk_face_idx"].astype(np.int64), data["lmk_b_coords"]
        if os.path.isfile(path("l_eyelid.npy")) and os.path.isfile(path("r_eyelid.npy")):
            eyelids = (np.load(path("l_eyelid.npy")), np.load(path("r_eyelid.npy")))
        if os.path.isfile(path("FLAME_masks.pkl")):
            masks = load_flame_masks(path("FLAME_masks.pkl"), flame.num_vertices)
            mask = torch.zeros(flame.num_vertices, dtype=torch.bool)
            for region in ("face", "left_eyeball", "right_eyeball"):
                if region not in masks:
                    raise ValueError(f"{path('FLAME_masks.pkl')}: missing region {region!r}")
                mask[masks[region]] = True
            depth = torch.ones(flame.num_vertices, dtype=torch.bool)
            for region in DEPTH_EXCLUDED_REGIONS:
                if region not in masks:
                    raise ValueError(f"{path('FLAME_masks.pkl')}: missing region {region!r}")
                depth[masks[region]] = False
        if flame.num_vertices == 5023:
            iris = (LEFT_IRIS_FLAME, RIGHT_IRIS_FLAME)
            extra = FLAME_EXTRA_FACES
        return cls(flame, mp_faces, mp_bary, eyelids, iris, mask, depth, extra)

    def _landmark_subset(self) -> _LandmarkSubset:
        """The subset of :class:`_LandmarkSubset`, built on first use (per dtype / device)."""
        flame = self.flame
        ref = flame.v_template
        cached = getattr(self, "_subset", None)
        if cached is not None and cached.v_template.dtype == ref.dtype and cached.v_template.device == ref.device:
            return cached
        faces = flame.faces
        used = [flame.lmk_faces_idx.reshape(-1), flame.dynamic_lmk_faces_idx.reshape(-1)]
        if self.mp_faces is not None:
            used.append(self.mp_faces)
        ids = [faces[torch.cat(used)].reshape(-1)]
        if self.iris_left is not None:
            ids += [self.iris_left, self.iris_right]
        ids = torch.unique(torch.cat(ids))
        count, num_joints = ids.shape[0], flame.num_joints
        renumber = torch.full((flame.num_vertices,), -1, dtype=torch.int64, device=ref.device)
        renumber[ids] = torch.arange(count, device=ref.device)
        joints_template = flame.J_regressor @ flame.v_template  # [J, 3]
        joints_dirs = torch.einsum("jv,vck->jck", flame.J_regressor, flame.shapedirs)  # [J, 3, K]
        posedirs = flame.posedirs.reshape(flame.posedirs.shape[0], -1, 3)[:, ids]  # [P, S, 3]
        posedirs = torch.cat([posedirs, posedirs.new_zeros(posedirs.shape[0], num_joints, 3)], 1)
        regressor = ref.new_zeros(num_joints, count + num_joints)
        regressor[:, count:] = torch.eye(num_joints, dtype=ref.dtype, device=ref.device)
        weights = torch.cat([flame.lbs_weights[ids], flame.lbs_weights.new_zeros(num_joints, num_joints)])
        weights[count:, 0] = 1.0  # the virtual vertices follow the root (their positions are not used)
        eyelid = (lambda e: None if e is None else torch.cat([e[ids], e.new_zeros(num_joints, 3)]))
        iris = (lambda i: None if i is None else renumber[i])
        self._subset = _LandmarkSubset(
            torch.cat([flame.v_template[ids], joints_template]), torch.cat([flame.shapedirs[ids], joints_dirs]),
            posedirs.reshape(posedirs.shape[0], -1), regressor, weights, renumber[faces], eyelid(self.l_eyelid),
            eyelid(self.r_eyelid), iris(self.iris_left), iris(self.iris_right))
        return self._subset

    def forward(self, shape: Tensor, expression: Tensor, jaw: Tensor, eyes: Tensor, camera_rotation: Tensor,
                eyelids: Optional[Tensor] = None, landmarks_only: bool = False) -> TrackerOutput:
        """Decode one set of tracker parameters per batch element (all differentiable).

        Args:
            shape: ``[B or 1, n_shape]``; expression: ``[B or 1, n_exp]``.
            jaw: ``[B or 1, 6]`` 6D; eyes: ``[B or 1, 12]`` two 6D codes (joint 3 then joint 4).
            camera_rotation: ``[B or 1, 3, 3]`` PyTorch3D camera rotation (``X_view = X R + T``); only its
                inverse is used, to pick the contour row (``MT:flame/FLAME.py:152``).
            eyelids: ``[B or 1, 2]`` or None (no eyelid blendshapes, as ``MT:tracker.py:401``).
            landmarks_only: skin only the vertices the landmarks and the iris read (the landmark-only pyramid
                level needs nothing else); ``vertices`` is then None. Same values (the joints are regressed
                through the linearity of ``J_regressor``, see ``_LandmarkSubset``).

        Returns:
            :class:`TrackerOutput`.
        """
        ref = self.flame.v_template
        named = {"shape": (shape, self.n_shape), "expression": (expression, self.n_exp), "jaw": (jaw, 6),
                 "eyes": (eyes, 12)}
        for name, (value, size) in named.items():
            _checks.floating(name, value, ref, "the model's buffers")
            _checks.shape(name, value, [None, size], f"[B, {size}]")
        _checks.floating("camera_rotation", camera_rotation, ref, "the model's buffers")
        _checks.shape("camera_rotation", camera_rotation, [None, 3, 3], "[B, 3, 3]")
        batches = {name: value.shape[0] for name, (value, _) in named.items()}
        batches["camera_rotation"] = camera_rotation.shape[0]
        if eyelids is not None:
            _checks.floating("eyelids", eyelids, ref, "the model's buffers")
            _checks.shape("eyelids", eyelids, [None, 2], "[B, 2]")
            batches["eyelids"] = eyelids.shape[0]
            if self.l_eyelid is None:
                raise ValueError("eyelids given but the model has no eyelid blendshapes")
        batch = _checks.batch_size(batches)

        # Global rotation and neck are the identity (MT:flame/FLAME.py:216-219, MT:tracker.py:482-489).
        eye = torch.eye(3, dtype=ref.dtype, device=ref.device).expand(batch, 2, 3, 3)
        joint_rot = rotation_6d_to_matrix(torch.stack([jaw.expand(batch, 6), eyes[:, :6].expand(batch, 6),
                                                       eyes[:, 6:].expand(batch, 6)], 1))  # [B, 3, 3, 3]
        rot_mats = torch.cat([eye, joint_rot], 1)  # [B, 5, 3, 3]: global, neck, jaw, eye 3, eye 4
        betas = torch.cat([shape.expand(batch, -1), expression.expand(batch, -1)], 1)
        flame = self.flame
        model = self._landmark_subset() if landmarks_only else flame
        l_eyelid, r_eyelid = (model.l_eyelid, model.r_eyelid) if landmarks_only else (self.l_eyelid, self.r_eyelid)
        iris_left, iris_right = (model.iris_left, model.iris_right) if landmarks_only else \
            (self.iris_left, self.iris_right)
        vertices, _ = ops.lbs(betas, rot_mats, model.v_template, model.shapedirs, model.posedirs,
                              model.J_regressor, flame.parents, model.lbs_weights, pose2rot=False)
        if eyelids is not None:  # MT:flame/FLAME.py:244-246
            vertices = vertices + r_eyelid * eyelids[:, 1:2, None] + l_eyelid * eyelids[:, 0:1, None]

        rows = self.contour_rows(rot_mats, camera_rotation.expand(batch, 3, 3))
        faces = model.faces
        contour = vertices_to_landmarks(vertices, faces, flame.dynamic_lmk_faces_idx[rows],
                                        flame.dynamic_lmk_bary_coords[rows])
        static = vertices_to_landmarks(vertices, faces, flame.lmk_faces_idx, flame.lmk_bary_coords)
        landmarks_mp = None
        if self.mp_faces is not None:
            landmarks_mp = vertices_to_landmarks(vertices, faces, self.mp_faces, self.mp_bary)
        iris = None if iris_left is None else (vertices[:, iris_left], vertices[:, iris_right])
        return TrackerOutput(None if landmarks_only else vertices, torch.cat([contour, static], 1), landmarks_mp,
                             rows, iris)

    @staticmethod
    def contour_rows(rot_mats: Tensor, camera_rotation: Tensor) -> Tensor:
        """Contour-table rows ``[B]`` (``MT:flame/FLAME.py:144-158``): ``rel = R_cam^-1 @ R_global @ R_neck``,
        ``y = round(clamp(-yaw(rel), max=39))``, negative ``y`` -> ``78`` below -39 else ``39 - y``
        (that lookup is :func:`facegeom.models.flame.contour_row` of the negated yaw)."""
        with torch.no_grad():
            relative = rot_mats[:, 0] @ rot_mats[:, 1]  # neck first, then global (the chain's bmm order)
            relative = torch.linalg.inv(camera_rotation) @ relative
            return contour_row(-yaw_degrees(relative))
