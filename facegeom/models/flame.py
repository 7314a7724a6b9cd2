"""FLAME (Li et al. 2017), read from the official files without chumpy.

:class:`FLAME` is a ``torch.nn.Module`` whose buffers hold the model in smplx's
layouts; :meth:`FLAME.forward` decodes shape, expression and pose with
:func:`facegeom.ops.lbs` and returns the vertices, joints and the 68 landmarks
(DECA's 2D-style set with the dynamic jaw contour, and the fixed 3D set).

Files read (users hold the licensed originals; nothing is bundled):

- ``generic_model.pkl`` (FLAME 2020 / 2023): a Python 2 pickle whose arrays are
  numpy arrays and chumpy ``Ch`` objects and whose ``J_regressor`` is a
  ``scipy.sparse`` matrix. It is read by :mod:`facegeom.models._pickle`, a
  restricted unpickler that turns chumpy objects into numpy arrays without
  importing chumpy and refuses every other class (no code runs from a model file).
- ``landmark_embedding.npy`` as DECA and MICA ship it (a pickled dict whose
  dynamic entries may be torch tensors), or RingNet's ``flame_static_embedding.pkl``
  + ``flame_dynamic_embedding.npy``: see :meth:`FLAME.load_landmark_embedding`.
- ``FLAME_masks.pkl``: :func:`load_flame_masks`.

Coordinate frame (FLAME's): metres, y up, the face looks along +z, x points to
the subject's left.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from facegeom import ops
from facegeom.models import _pickle
from facegeom import _checks

Tensor = torch.Tensor

#: Joint order of FLAME's kinematic tree (smplx's FLAME uses the same order).
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
PARENTS = (-1, 0, 1, 1, 1)
NECK_JOINT = 1
#: FLAME files put 300 shape components before the expression components.
FILE_SHAPE_COMPONENTS = 300
_REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
#: The dynamic contour table has one row per integer yaw in [-39, 39] degrees.
DYNAMIC_CONTOUR_ROWS = 79
MAX_CONTOUR_YAW = 39


@dataclass
class FLAMEOutput:
    """What :meth:`FLAME.forward` returns (``B`` = batch, ``V`` = vertices).

    Attributes:
        vertices: ``[B, V, 3]`` posed vertices (metres, after ``translation``).
        joints: ``[B, 5, 3]`` posed joints (global, neck, jaw, left eye, right eye).
        landmarks2d: ``[B, 68, 3]`` 3D points of the 68 iBUG landmarks as a 2D
            detector sees them (DECA's ``landmarks2d``): the 17 jaw-contour points
            follow the head's yaw (dynamic contour), then the 51 static ones.
            Project them with a camera. ``None`` without a landmark embedding.
        landmarks3d: ``[B, 68, 3]`` the fixed 3D landmarks (DECA's ``landmarks3d``,
            the embedding's ``full_lmk_*``). ``None`` when the embedding has none.
        albedo: ``[B, V, 3]`` per-vertex albedo when ``texture`` was passed to
            ``forward`` and the model has an albedo basis, else ``None``.
        specular: always ``None`` (FLAME has no specular albedo model); present so
            that every facegeom face model returns the same fields as
            :class:`~facegeom.models.BFMOutput` (API.md section 6).
    """

    vertices: Tensor
    joints: Tensor
    landmarks2d: Optional[Tensor] = None
    landmarks3d: Optional[Tensor] = None
    albedo: Optional[Tensor] = None
    specular: Optional[Tensor] = None


def vertices_to_landmarks(vertices: Tensor, faces: Tensor, face_index: Tensor, bary: Tensor) -> Tensor:
    """Barycentric landmarks: ``sum_i bary[..., i] * vertices[faces[face_index, i]]``.

    Args:
        vertices: ``[B, V, 3]`` (differentiable).
        faces: ``[F, 3]`` int64.
        face_index: ``[L]`` shared or ``[B, L]`` per batch element, int64.
        bary: ``[L, 3]`` or ``[B, L, 3]`` barycentric weights (differentiable).

    Returns:
        ``[B, L, 3]``.
    """
    batch = vertices.shape[0]
    corner_index = faces[face_index]  # [L, 3] or [B, L, 3]
    if corner_index.dim() == 2:
        corners = vertices[:, corner_index]  # [B, L, 3 corners, 3 xyz]
    else:
        rows = torch.arange(batch, device=vertices.device).view(-1, 1, 1)
        corners = vertices[rows, corner_index]  # [B, L, 3, 3]
    return (corners * bary.unsqueeze(-1)).sum(-2)


def yaw_degrees(rotation: Tensor) -> Tensor:
    """Yaw (rotation about y) of ``[B, 3, 3]`` matrices in degrees, as smplx's and
    DECA's ``rot_mat_to_euler``: ``atan2(-R[2, 0], sqrt(R[0, 0]^2 + R[1, 0]^2))``.
    Positive when the face (+z) turns towards +x, the subject's left."""
    sy = torch.sqrt(rotation[:, 0, 0] ** 2 + rotation[:, 1, 0] ** 2)
    return torch.atan2(-rotation[:, 2, 0], sy) * (180.0 / math.pi)


def contour_row(yaw: Tensor) -> Tensor:
    """Row of the dynamic contour table for yaw angles in degrees (DECA/MICA sign).

    The yaw is rounded to whole degrees and clamped to [-39, 39]; rows 0..39 hold
    yaw 0..39 and rows 40..78 hold yaw -1..-39 (row ``39 - yaw`` for negative yaw),
    the order of the official ``dynamic_lmk_faces_idx``. smplx's FLAME negates the
    yaw before this lookup; DECA and MICA (whose embedding file we read) do not.
    """
    degrees = torch.round(torch.clamp(yaw, -MAX_CONTOUR_YAW, MAX_CONTOUR_YAW)).long()
    return torch.where(degrees < 0, MAX_CONTOUR_YAW - degrees, degrees)


def _as_index(name: str, value, source: str) -> np.ndarray:
    return _pickle.integer_array(value, name, source)


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _require(data, key: str, source: str, what: str):
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a pickled dict ({what}), got {type(data).__name__}")
    if key not in data:
        raise ValueError(f"{source}: missing key {key!r} ({what} has {', '.join(sorted(map(str, data)))})")
    return data[key]


def _float_array(value, key: str, source: str, ndim: int) -> np.ndarray:
    array = _pickle.float_array(value, key, source)  # sparse, complex, object ... handled there
    if array.ndim != ndim:
        raise ValueError(f"{source}: {key} must have {ndim} dimensions, got shape {list(array.shape)}")
    return array


def load_flame_masks(path, num_vertices: Optional[int] = None) -> Dict[str, Tensor]:
    """Read ``FLAME_masks.pkl`` (a latin1 pickle of region name -> vertex indices,
    e.g. ``face``, ``eye_region``, ``left_eyeball``, ``right_ear``, ``scalp``, ...).

    Args:
        path: the file.
        num_vertices: if given, indices are checked against it (5023 for FLAME).

    Returns:
        ``{region: int64 tensor [N]}`` of 0-based vertex indices.
    """
    source = os.fspath(path)
    data = _pickle.load(source)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a pickled dict of region -> vertex indices, got {type(data).__name__}")
    masks = {}
    for name, value in data.items():
        indices = _as_index(f"region {name!r}", np.asarray(_to_numpy(value)).reshape(-1), source)
        if indices.size and (indices.min() < 0 or (num_vertices is not None and indices.max() >= num_vertices)):
            raise IndexError(f"{source}: region {name!r} has vertex indices outside [0, {num_vertices})")
        masks[str(name)] = torch.as_tensor(indices, dtype=torch.int64)
    return masks


class FLAME(nn.Module):
    """The FLAME head model (or any model in its layout, such as
    :func:`facegeom.models.synthetic_head`).

    Build it with :meth:`from_file` (the official ``generic_model.pkl``) or from
    arrays. Buffers (float ones follow ``.to(dtype)`` / ``.double()``):

    - ``v_template`` ``[V, 3]``; ``faces`` ``[F, 3]`` int64;
    - ``shapedirs`` ``[V, 3, n_shape + n_exp]``: shape components then expression
      components (smplx's layout, what :func:`facegeom.ops.lbs` takes);
    - ``posedirs`` ``[36, V*3]``; ``J_regressor`` ``[5, V]`` dense; ``lbs_weights``
      ``[V, 5]``; ``parents`` ``[5]``;
    - landmark embedding (optional): ``lmk_faces_idx`` ``[51]``, ``lmk_bary_coords``
      ``[51, 3]``, ``dynamic_lmk_faces_idx`` ``[79, 17]``, ``dynamic_lmk_bary_coords``
      ``[79, 17, 3]``, ``full_lmk_faces_idx`` ``[68]``, ``full_lmk_bary_coords`` ``[68, 3]``;
    - albedo (optional): ``albedo_mean`` ``[V, 3]`` and ``albedo_basis``
      ``[n_tex, V, 3]`` (per-vertex colours in [0, 1]).

    Args:
        v_template, shapedirs, posedirs, J_regressor, lbs_weights: arrays or
            tensors in the layouts above (``shapedirs`` holds exactly
            ``n_shape + n_exp`` components).
        faces: ``[F, 3]`` integer triangle indices (0-based).
        n_shape, n_exp: how many of ``shapedirs``' components are shape and
            expression.
        parents: kinematic tree, FLAME's ``(-1, 0, 1, 1, 1)`` by default.
        albedo_mean, albedo_basis: optional per-vertex albedo model.
        dtype: float dtype of the buffers.

    Example:
        >>> from facegeom.models import synthetic_head
        >>> head = synthetic_head()
        >>> out = head(torch.zeros(2, head.n_shape), torch.zeros(2, head.n_exp),
        ...            jaw=torch.tensor([[0.2, 0.0, 0.0]]).expand(2, 3))
        >>> out.vertices.shape, out.landmarks2d.shape
        (torch.Size([2, 2886, 3]), torch.Size([2, 68, 3]))
    """

    def __init__(
        self,
        v_template,
        shapedirs,
        posedirs,
        J_regressor,
        lbs_weights,
        faces,
        n_shape: int,
        n_exp: int,
        parents: Sequence[int] = PARENTS,
        albedo_mean=None,
        albedo_basis=None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")

        def floats(value):
            return torch.as_tensor(_to_numpy(value), dtype=dtype).contiguous()

        v_template = floats(v_template)
        _checks.shape("v_template", v_template, [None, 3], "[V, 3]")
        num_vertices = v_template.shape[0]
        shapedirs = floats(shapedirs)
        _checks.shape("shapedirs", shapedirs, [num_vertices, 3, n_shape + n_exp], "[V, 3, n_shape + n_exp]")
        parents_t = torch.as_tensor(list(parents), dtype=torch.int64)
        num_joints = parents_t.shape[0]
        values = parents_t.tolist()
        if num_joints < 2 or values[0] != -1 or any(not 0 <= p < j for j, p in enumerate(values) if j):
            raise ValueError(f"parents must be a kinematic tree with parents[0] = -1 and 0 <= parents[j] < j, "
                             f"got {values}")
        posedirs = floats(posedirs)
        _checks.shape("posedirs", posedirs, [9 * (num_joints - 1), 3 * num_vertices], "[(J-1)*9, V*3]")
        J_regressor = floats(J_regressor)
        _checks.shape("J_regressor", J_regressor, [num_joints, num_vertices], "[J, V]")
        lbs_weights = floats(lbs_weights)
        _checks.shape("lbs_weights", lbs_weights, [num_vertices, num_joints], "[V, J]")
        faces = torch.as_tensor(_as_index("faces", faces, "FLAME"), dtype=torch.int64).contiguous()
        _checks.shape("faces", faces, [None, 3], "[F, 3]")
        _checks.indices("faces", faces, num_vertices, what="vertex indices")
        self.n_shape = int(n_shape)
        self.n_exp = int(n_exp)
        self.register_buffer("v_template", v_template)
        self.register_buffer("shapedirs", shapedirs)
        self.register_buffer("posedirs", posedirs)
        self.register_buffer("J_regressor", J_regressor)
        self.register_buffer("lbs_weights", lbs_weights)
        self.register_buffer("parents", parents_t)
        self.register_buffer("faces", faces)
        for name in ("lmk_faces_idx", "lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords",
                     "full_lmk_faces_idx", "full_lmk_bary_coords", "albedo_mean", "albedo_basis"):
            self.register_buffer(name, None)
        if (albedo_mean is None) != (albedo_basis is None):
            raise ValueError("albedo_mean and albedo_basis must be given together")
        if albedo_mean is not None:
            self.set_albedo(albedo_mean, albedo_basis)
        self._neck_chain = self._kinematic_chain(NECK_JOINT)

    # ------------------------------------------------------------------ #
    # Sizes                                                              #
    # ------------------------------------------------------------------ #
    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_joints(self) -> int:
        return self.parents.shape[0]

    @property
    def n_tex(self) -> int:
        """Number of albedo components (0 without an albedo model)."""
        return 0 if self.albedo_basis is None else self.albedo_basis.shape[0]

    @property
    def has_landmarks(self) -> bool:
        return self.lmk_faces_idx is not None

    def _kinematic_chain(self, joint: int):
        chain, parents = [], self.parents.tolist()
        while joint != -1:
            chain.append(joint)
            joint = parents[joint]
        return chain  # from the joint up to the root

    # ------------------------------------------------------------------ #
    # Optional parts                                                     #
    # ------------------------------------------------------------------ #
    def set_albedo(self, mean, basis) -> None:
        """Attach a per-vertex albedo model: ``mean [V, 3]``, ``basis [K, V, 3]``."""
        dtype = self.v_template.dtype
        mean = torch.as_tensor(_to_numpy(mean), dtype=dtype).contiguous()
        basis = torch.as_tensor(_to_numpy(basis), dtype=dtype).contiguous()
        _checks.shape("albedo_mean", mean, [self.num_vertices, 3], "[V, 3]")
        _checks.shape("albedo_basis", basis, [None, self.num_vertices, 3], "[K, V, 3]")
        self.albedo_mean = mean.to(self.v_template.device)
        self.albedo_basis = basis.to(self.v_template.device)

    def set_landmark_embedding(self, static_faces, static_bary, dynamic_faces, dynamic_bary,
                               full_faces=None, full_bary=None, source: str = "landmark embedding") -> None:
        """Attach a landmark embedding (arrays or tensors).

        Args:
            static_faces: ``[51]`` face indices; static_bary: ``[51, 3]``.
            dynamic_faces: ``[79, 17]`` contour face indices per yaw row (see
                :func:`contour_row`); dynamic_bary: ``[79, 17, 3]``.
            full_faces, full_bary: optional ``[68]`` / ``[68, 3]`` fixed 3D landmarks.
            source: named in error messages (the file the arrays came from).
        """
        dtype, device = self.v_template.dtype, self.v_template.device
        num_faces = self.faces.shape[0]

        def index(name, value, shape, layout):
            array = _as_index(name, value, source)
            if list(array.shape) != shape:
                raise ValueError(f"{source}: {name} must have shape {layout} = {shape}, got {list(array.shape)}")
            if array.size and (array.min() < 0 or array.max() >= num_faces):
                raise IndexError(f"{source}: {name} must index faces in [0, {num_faces}), got range "
                                 f"[{array.min()}, {array.max()}]")
            return torch.as_tensor(array, dtype=torch.int64, device=device)

        def weights(name, value, shape, layout):
            array = _pickle.float_array(value, name, source)
            if list(array.shape) != shape:
                raise ValueError(f"{source}: {name} must have shape {layout} = {shape}, got {list(array.shape)}")
            return torch.as_tensor(array, dtype=dtype, device=device)

        num_static = _to_numpy(static_faces).reshape(-1).shape[0]
        self.lmk_faces_idx = index("static faces", np.reshape(_to_numpy(static_faces), -1), [num_static], "[L]")
        self.lmk_bary_coords = weights("static barycentrics", static_bary, [num_static, 3], "[L, 3]")
        num_contour = _to_numpy(dynamic_faces).shape[-1]
        self.dynamic_lmk_faces_idx = index("dynamic faces", dynamic_faces, [DYNAMIC_CONTOUR_ROWS, num_contour],
                                           "[79, C]")
        self.dynamic_lmk_bary_coords = weights("dynamic barycentrics", dynamic_bary,
                                               [DYNAMIC_CONTOUR_ROWS, num_contour, 3], "[79, C, 3]")
        if full_faces is not None:
            num_full = num_static + num_contour
            self.full_lmk_faces_idx = index("full faces", np.reshape(_to_numpy(full_faces), -1), [num_full], "[L]")
            self.full_lmk_bary_coords = weights("full barycentrics", full_bary, [num_full, 3], "[L, 3]")
        else:
            self.full_lmk_faces_idx = None
            self.full_lmk_bary_coords = None

    # ------------------------------------------------------------------ #
    # Files                                                              #
    # ------------------------------------------------------------------ #
    @classmethod
    def from_file(cls, path, n_shape: int = 300, n_exp: int = 100, landmark_embedding=None,
                  dtype: Optional[torch.dtype] = None) -> "FLAME":
        """Read the official ``generic_model.pkl`` (FLAME 2020 / 2023), without chumpy.

        Args:
            path: ``generic_model.pkl``. Keys used: ``v_template`` [V, 3],
                ``shapedirs`` [V, 3, 300 + E] (chumpy ``Ch`` or numpy), ``posedirs``
                [V, 3, 36], ``J_regressor`` (scipy sparse) [5, V], ``weights`` [V, 5],
                ``kintree_table`` [2, 5], ``f`` [F, 3].
            n_shape: shape components to keep (<= 300, the file's count).
            n_exp: expression components to keep (<= the file's, 100 for FLAME 2020/2023).
            landmark_embedding: optional embedding to attach: DECA/MICA's
                ``landmark_embedding.npy`` path, or RingNet's pair
                ``(flame_static_embedding.pkl, flame_dynamic_embedding.npy)``.
            dtype: float32 or float64.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: a key is missing or has the wrong shape (message names
                the file and the key).
            pickle.UnpicklingError: the file is corrupt or names a class outside
                the allow-list of :mod:`facegeom.models._pickle`.

        Example:
            >>> flame = FLAME.from_file("generic_model.pkl", n_shape=100, n_exp=50,
            ...                         landmark_embedding="landmark_embedding.npy")  # doctest: +SKIP
            >>> flame(torch.zeros(1, 100), torch.zeros(1, 50)).landmarks2d.shape  # doctest: +SKIP
            torch.Size([1, 68, 3])
        """
        source = os.fspath(path)
        data = _pickle.load(source)
        what = "a FLAME generic_model.pkl"
        for key in _REQUIRED_KEYS:
            _require(data, key, source, what)
        v_template = _float_array(data["v_template"], "v_template", source, 2)
        num_vertices = v_template.shape[0]
        if v_template.shape[1] != 3:
            raise ValueError(f"{source}: v_template must have shape [V, 3], got {list(v_template.shape)}")
        shapedirs = _float_array(data["shapedirs"], "shapedirs", source, 3)
        if shapedirs.shape[:2] != (num_vertices, 3):
            raise ValueError(f"{source}: shapedirs must have shape [V={num_vertices}, 3, K], got "
                             f"{list(shapedirs.shape)}")
        file_shape = min(FILE_SHAPE_COMPONENTS, shapedirs.shape[2])
        file_exp = shapedirs.shape[2] - file_shape
        if not 0 <= n_shape <= file_shape:
            raise ValueError(f"n_shape must be in [0, {file_shape}] for {source}, got {n_shape}")
        if not 0 <= n_exp <= file_exp:
            raise ValueError(f"n_exp must be in [0, {file_exp}] for {source}, got {n_exp}")
        shapedirs = np.concatenate([shapedirs[:, :, :n_shape], shapedirs[:, :, file_shape:file_shape + n_exp]], 2)
        posedirs = _float_array(data["posedirs"], "posedirs", source, 3)
        if posedirs.shape[:2] != (num_vertices, 3):
            raise ValueError(f"{source}: posedirs must have shape [V={num_vertices}, 3, P], got {list(posedirs.shape)}")
        posedirs = posedirs.reshape(-1, posedirs.shape[2]).T  # smplx: [P, V*3]
        kintree = _as_index("kintree_table", data["kintree_table"], source)
        if kintree.ndim != 2 or kintree.shape[0] != 2:
            raise ValueError(f"{source}: kintree_table must have shape [2, J], got {list(kintree.shape)}")
        num_joints = kintree.shape[1]
        regressor = _float_array(data["J_regressor"], "J_regressor", source, 2)
        weights = _float_array(data["weights"], "weights", source, 2)
        for key, array, wanted in (("J_regressor", regressor, (num_joints, num_vertices)),
                                   ("weights", weights, (num_vertices, num_joints))):
            if array.shape != wanted:
                raise ValueError(f"{source}: {key} must have shape {list(wanted)}, got {list(array.shape)}")
        parents = kintree[0].astype(np.int64)
        parents[0] = -1  # the root's parent is stored as the largest uint32
        faces = _as_index("f", data["f"], source)
        try:
            model = cls(v_template, shapedirs, posedirs, regressor, weights, faces, n_shape=n_shape,
                        n_exp=n_exp, parents=parents.tolist(), dtype=dtype)
        except (ValueError, IndexError) as error:
            raise type(error)(f"{source}: {error}") from error
        if landmark_embedding is not None:
            if isinstance(landmark_embedding, (tuple, list)):
                model.load_landmark_embedding(*landmark_embedding)
            else:
                model.load_landmark_embedding(landmark_embedding)
        return model

    def load_landmark_embedding(self, path, dynamic_path=None) -> None:
        """Attach the official landmark embedding.

        - DECA / MICA: ``load_landmark_embedding("landmark_embedding.npy")``, a pickled
          dict with ``static_lmk_faces_idx`` [51], ``static_lmk_bary_coords`` [51, 3],
          ``dynamic_lmk_faces_idx`` [79, 17], ``dynamic_lmk_bary_coords`` [79, 17, 3]
          (torch tensors in the files DECA ships), ``full_lmk_faces_idx`` [(1,) 68],
          ``full_lmk_bary_coords`` [(1,) 68, 3].
        - RingNet / smplx: ``load_landmark_embedding("flame_static_embedding.pkl",
          "flame_dynamic_embedding.npy")``: ``lmk_face_idx`` / ``lmk_b_coords`` in each
          (no fixed 3D set, so ``landmarks3d`` is None).

        The files are read with the restricted unpickler (no code execution).
        """
        source = os.fspath(path)
        data = _pickle.load_npy(source) if source.endswith(".npy") else _pickle.load(source)
        if dynamic_path is None:
            what = "a DECA/MICA landmark_embedding.npy"
            keys = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx",
                    "dynamic_lmk_bary_coords")
            static_faces, static_bary, dynamic_faces, dynamic_bary = (_require(data, k, source, what) for k in keys)
            full_faces = data.get("full_lmk_faces_idx")
            full_bary = data.get("full_lmk_bary_coords")
            if (full_faces is None) != (full_bary is None):
                raise ValueError(f"{source}: full_lmk_faces_idx and full_lmk_bary_coords must come together")

            def points(key, value):  # [L, 3] or DECA's [1, L, 3]
                array = _pickle.float_array(value, key, source)
                if array.size % 3:
                    raise ValueError(f"{source}: {key} must hold [L, 3] barycentric weights, got shape "
                                     f"{list(array.shape)}")
                return array.reshape(-1, 3)

            self.set_landmark_embedding(
                static_faces, points("static_lmk_bary_coords", static_bary), dynamic_faces, dynamic_bary,
                full_faces, None if full_bary is None else points("full_lmk_bary_coords", full_bary), source)
            return
        dynamic_source = os.fspath(dynamic_path)
        what = "a RingNet flame_static_embedding.pkl"
        static_faces = _require(data, "lmk_face_idx", source, what)
        static_bary = _require(data, "lmk_b_coords", source, what)
        dynamic = _pickle.load_npy(dynamic_source)
        what = "a RingNet flame_dynamic_embedding.npy"
        dynamic_faces = np.asarray(_require(dynamic, "lmk_face_idx", dynamic_source, what))
        dynamic_bary = np.asarray(_require(dynamic, "lmk_b_coords", dynamic_source, what))
        self.set_landmark_embedding(static_faces, static_bary, dynamic_faces, dynamic_bary,
                                    source=f"{source} + {dynamic_source}")

    # ------------------------------------------------------------------ #
    # Forward                                                            #
    # ------------------------------------------------------------------ #
    def albedo(self, texture: Tensor) -> Tensor:
        """Per-vertex albedo ``albedo_mean + sum_k texture[:, k] * albedo_basis[k]``.

        Args:
            texture: ``[B, K]`` with ``K <= n_tex`` (missing components are zero;
                differentiable).

        Returns:
            ``[B, V, 3]`` (not clamped to [0, 1]).
        """
        if self.albedo_basis is None:
            raise ValueError("this model has no albedo basis (n_tex = 0)")
        _checks.floating("texture", texture, self.albedo_basis, "the model's buffers")
        _checks.shape("texture", texture, [None, None], "[B, K]")
        if texture.shape[1] > self.n_tex:
            raise ValueError(f"texture has {texture.shape[1]} components, the model has {self.n_tex}")
        return ops.blendshapes(texture, self.albedo_basis[: texture.shape[1]], self.albedo_mean)

    def _coefficients(self, name: str, value: Optional[Tensor], size: int, batch: int, ref: Tensor) -> Tensor:
        if value is None:
            return ref.new_zeros(batch, size)
        _checks.floating(name, value, ref, "the model's buffers")
        _checks.shape(name, value, [None, None], f"[B, K<={size}]")
        if value.shape[1] > size:
            raise ValueError(f"{name} has {value.shape[1]} components, the model has {size}")
        if value.shape[1] < size:
            value = torch.cat([value, value.new_zeros(value.shape[0], size - value.shape[1])], 1)
        return value

    def _rotation(self, name: str, value: Optional[Tensor], size: int, batch: int, ref: Tensor) -> Tensor:
        if value is None:
            return ref.new_zeros(batch, size)
        _checks.floating(name, value, ref, "the model's buffers")
        _checks.shape(name, value, [None, size], f"[B, {size}]")
        return value

    def forward(
        self,
        shape: Optional[Tensor] = None,
        expression: Optional[Tensor] = None,
        pose: Optional[Tensor] = None,
        neck: Optional[Tensor] = None,
        jaw: Optional[Tensor] = None,
        eyes: Optional[Tensor] = None,
        translation: Optional[Tensor] = None,
        texture: Optional[Tensor] = None,
    ) -> FLAMEOutput:
        """Decode parameters (all differentiable, all optional; ``None`` = zeros).

        Args:
            shape: ``[B, <= n_shape]`` identity coefficients (missing trailing
                components are zero, as DECA pads them).
            expression: ``[B, <= n_exp]`` expression coefficients.
            pose: ``[B, 3]`` global head rotation (axis-angle, about the root joint);
                ``[B, 6]`` is read as DECA's / RingNet's ``pose_params`` (global
                rotation then jaw) when ``jaw`` is not given.
            neck: ``[B, 3]``; jaw: ``[B, 3]``; eyes: ``[B, 6]`` (left eye then right
                eye), axis-angle, each relative to its parent joint.
            translation: ``[B, 3]`` added to vertices, joints and landmarks.
            texture: ``[B, <= n_tex]`` albedo coefficients (models with an albedo basis).

        A batch of 1 broadcasts against the others.

        Returns:
            :class:`FLAMEOutput`. The dynamic contour row is picked from the yaw of
            the neck relative to the camera (global rotation times neck rotation),
            as DECA does; the pick itself has no gradient (it is an index), the
            landmark positions do.
        """
        ref = self.v_template
        given = {"shape": shape, "expression": expression, "pose": pose, "neck": neck, "jaw": jaw,
                 "eyes": eyes, "translation": translation, "texture": texture}
        for name, value in given.items():
            if value is not None and (not isinstance(value, torch.Tensor) or value.dim() != 2):
                raise ValueError(f"{name} must be a [B, K] tensor, got "
                                 f"{list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
        batch = _checks.batch_size({k: v.shape[0] for k, v in given.items() if v is not None}) \
            if any(v is not None for v in given.values()) else 1

        if pose is not None and jaw is None and pose.shape[-1] == 6:
            pose, jaw = pose[:, :3], pose[:, 3:]  # DECA / RingNet pose_params: global then jaw
        shape = self._coefficients("shape", shape, self.n_shape, batch, ref)
        expression = self._coefficients("expression", expression, self.n_exp, batch, ref)
        rotations = [self._rotation("pose", pose, 3, batch, ref), self._rotation("neck", neck, 3, batch, ref),
                     self._rotation("jaw", jaw, 3, batch, ref), self._rotation("eyes", eyes, 6, batch, ref)]
        rotations = [r.expand(batch, -1) for r in rotations]
        full_pose = torch.cat(rotations, 1)  # [B, 15]
        betas = torch.cat([shape.expand(batch, -1), expression.expand(batch, -1)], 1)
        vertices, joints = ops.lbs(betas, full_pose, self.v_template, self.shapedirs, self.posedirs,
                                   self.J_regressor, self.parents, self.lbs_weights)

        landmarks2d = landmarks3d = None
        if self.has_landmarks:
            landmarks2d = self._landmarks2d(vertices, full_pose)
            if self.full_lmk_faces_idx is not None:
                landmarks3d = vertices_to_landmarks(vertices, self.faces, self.full_lmk_faces_idx,
                                                    self.full_lmk_bary_coords)
        if translation is not None:
            _checks.floating("translation", translation, ref, "the model's buffers")
            _checks.shape("translation", translation, [None, 3], "[B, 3]")
            offset = translation.unsqueeze(1)
            vertices, joints = vertices + offset, joints + offset
            landmarks2d = None if landmarks2d is None else landmarks2d + offset
            landmarks3d = None if landmarks3d is None else landmarks3d + offset
        albedo = None
        if texture is not None:
            albedo = self.albedo(texture).expand(batch, -1, -1)
        return FLAMEOutput(vertices, joints, landmarks2d, landmarks3d, albedo)

    def contour_rows(self, full_pose: Tensor) -> Tensor:
        """Rows of the dynamic contour table for ``[B, 15]`` poses: the yaw of
        ``R_global @ R_neck`` (:func:`yaw_degrees`) through :func:`contour_row`."""
        batch = full_pose.shape[0]
        chain = self._neck_chain  # [neck, global]
        rotations = ops.rodrigues(full_pose.reshape(batch, self.num_joints, 3)[:, chain].detach())  # [B, len, 3, 3]
        relative = rotations[:, 0]
        for k in range(1, len(chain)):
            relative = rotations[:, k] @ relative
        return contour_row(yaw_degrees(relative))

    def _landmarks2d(self, vertices: Tensor, full_pose: Tensor) -> Tensor:
        rows = self.contour_rows(full_pose)  # [B]
        contour = vertices_to_landmarks(vertices, self.faces, self.dynamic_lmk_faces_idx[rows],
                                        self.dynamic_lmk_bary_coords[rows])
        static = vertices_to_landmarks(vertices, self.faces, self.lmk_faces_idx, self.lmk_bary_coords)
        return torch.cat([contour, static], 1)  # iBUG order: contour 0-16, then 17-67
