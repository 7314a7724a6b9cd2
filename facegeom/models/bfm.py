"""Basel Face Model variants, read from the files the papers' code uses.

:class:`BFM` is a ``torch.nn.Module``: a linear shape model (mean + identity and
expression bases) with an optional diffuse texture / albedo model and an
optional specular albedo model (AlbedoMM), decoded with
:func:`facegeom.ops.blendshapes`. Constructors:

- :meth:`BFM.from_deep3d`: Deep3DFaceRecon's ``BFM_model_front.mat`` (35,709
  vertices, 80 identity, 64 expression, 80 texture components).
- :meth:`BFM.from_3ddfa`: 3DDFA / 2DASL's ``bfm_noneck_v3.pkl`` + ``tri.pkl``.
- :meth:`BFM.from_basel2009`: ``01_MorphableModel.mat`` with expression bases
  supplied separately (e.g. ``Exp_Pca.bin``).
- :meth:`BFM.from_basel2017`: the 2017 h5 model, optionally with AlbedoMM's h5
  (diffuse and specular albedo), as the specular-albedo method uses.

Conventions: vertices ``[N, 3]`` (files that interleave x, y, z per vertex are
de-interleaved), bases coefficient-major ``[K, N, 3]``, faces ``[F, 3]`` int64
0-based (1-based MATLAB indices are converted), units as stored in the file
unless a ``scale`` is given.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from facegeom import ops, transforms
from facegeom.models import _pickle
from facegeom import _checks

Tensor = torch.Tensor


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated; use {new} (one face-model language, API.md section 6)",
                  DeprecationWarning, stacklevel=3)


@dataclass
class BFMOutput:
    """What :meth:`BFM.forward` returns: the fields of every facegeom face model
    (:class:`~facegeom.models.FLAMEOutput` has the same ones plus ``joints``).

    Attributes:
        vertices: ``[B, N, 3]`` shape (mean + identity + expression), posed by
            ``pose`` / ``rotation`` and ``translation`` when given.
        albedo: ``[B, N, 3]`` per-vertex colour / diffuse albedo (in [0, 1] for
            the supported files) or ``None`` for a model without texture.
        specular: ``[B, N, 3]`` specular albedo (AlbedoMM) or ``None``.
        landmarks2d: ``[B, 68, 3]`` the 68 landmark vertices (``keypoints``), or
            ``None``. A BFM has no dynamic contour: the points a 2D detector's
            landmarks are compared with are these fixed vertices (Deep3DFaceRecon
            ``D3D:models/bfm.py:290-300``), so this is the same tensor as ``landmarks3d``.
        landmarks3d: ``[B, 68, 3]`` the same 68 vertices, or ``None``.

    The pre-0.2 names ``texture`` and ``landmarks`` still read ``albedo`` and
    ``landmarks3d`` with a DeprecationWarning.
    """

    vertices: Tensor
    albedo: Optional[Tensor] = None
    specular: Optional[Tensor] = None
    landmarks2d: Optional[Tensor] = None
    landmarks3d: Optional[Tensor] = None

    @property
    def texture(self) -> Optional[Tensor]:
        """Deprecated name of :attr:`albedo`."""
        _deprecated("BFMOutput.texture", "BFMOutput.albedo")
        return self.albedo

    @property
    def landmarks(self) -> Optional[Tensor]:
        """Deprecated name of :attr:`landmarks3d` (equal to :attr:`landmarks2d`)."""
        _deprecated("BFMOutput.landmarks", "BFMOutput.landmarks3d (or landmarks2d)")
        return self.landmarks3d


def _missing(source: str, key: str, keys) -> ValueError:
    return ValueError(f"{source}: missing key {key!r} (the file has {', '.join(sorted(map(str, keys)))})")


def _get(data, key: str, source: str):
    if key not in data:
        raise _missing(source, key, [k for k in data if not str(k).startswith("__")])
    return data[key]


def _vector(flat, source: str, key: str, num_vertices: Optional[int] = None) -> np.ndarray:
    """``[3N]``, ``[3N, 1]`` or ``[1, 3N]`` with x, y, z interleaved per vertex -> ``[N, 3]``."""
    array = _pickle.float_array(flat, key, source)
    if array.ndim > 2 or (array.ndim == 2 and 1 not in array.shape):
        raise ValueError(f"{source}: {key} must be a vector of 3N values, got shape {list(array.shape)}")
    array = array.reshape(-1)
    if array.size % 3 or (num_vertices is not None and array.size != 3 * num_vertices):
        wanted = "3N" if num_vertices is None else f"3N = {3 * num_vertices}"
        raise ValueError(f"{source}: {key} must hold {wanted} values, got {array.size}")
    return array.reshape(-1, 3)


def _basis(flat, source: str, key: str, num_vertices: int) -> np.ndarray:
    """``[3N, K]`` with x, y, z interleaved per vertex -> coefficient-major ``[K, N, 3]``."""
    array = _pickle.float_array(flat, key, source)
    if array.ndim != 2 or array.shape[0] != 3 * num_vertices:
        raise ValueError(f"{source}: {key} must have shape [3N = {3 * num_vertices}, K], got {list(array.shape)}")
    return np.ascontiguousarray(array.T.reshape(array.shape[1], num_vertices, 3))


def _indices(value, source: str, key: str, upper: int, one_based: bool) -> np.ndarray:
    array = _pickle.integer_array(value, key, source) - (1 if one_based else 0)
    if array.size and (array.min() < 0 or array.max() >= upper):
        base = 1 if one_based else 0
        raise IndexError(f"{source}: {key} must hold {base}-based indices in [{base}, {upper + base}), got range "
                         f"[{array.min() + base}, {array.max() + base}]")
    return array


def _faces(value, source: str, key: str, num_vertices: int, one_based: bool) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[0] == 3 and array.shape[1] != 3:
        array = array.T  # stored as [3, F]
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{source}: {key} must have shape [F, 3] or [3, F], got {list(array.shape)}")
    return _indices(array, source, key, num_vertices, one_based)


def _point_buf(value, source: str, num_vertices: int, num_faces: int) -> np.ndarray:
    """Deep3DFaceRecon's ``point_buf`` ``[N, K]`` (1-based face indices around each
    vertex, padded with ``F + 1`` in the official file or with ``0``) -> 0-based,
    padded with ``F`` (the slot of the appended zero normal, D3D:models/bfm.py:53,133)."""
    array = _pickle.integer_array(value, "point_buf", source)
    if array.ndim != 2 or array.shape[0] != num_vertices:
        raise ValueError(f"{source}: point_buf must have shape [N = {num_vertices}, K], got {list(array.shape)}")
    if array.size and (array.min() < 0 or array.max() > num_faces + 1):
        raise IndexError(f"{source}: point_buf must hold 1-based face indices in [1, {num_faces}] padded with "
                         f"0 or {num_faces + 1}, got range [{array.min()}, {array.max()}]")
    array = array - 1
    array[array < 0] = num_faces  # 0-padding -> the zero-normal slot, as F + 1 padding
    return array


def point_buf_from_faces(faces: Tensor, num_vertices: int, slots: Optional[int] = None) -> Tensor:
    """A Deep3D-style ``point_buf`` ``[N, slots]`` for any mesh: the faces around each vertex
    in increasing order, padded with ``F`` (the zero-normal slot of
    :func:`deep3d_vertex_normals`). ``slots`` defaults to the largest vertex valence (every
    face counts; Deep3D's file has 8 slots). A vertex with more faces than ``slots`` keeps
    its first ``slots``.

    Example:
        >>> point_buf_from_faces(torch.tensor([[0, 1, 2], [0, 2, 3]]), 4)
        tensor([[0, 1],
                [0, 2],
                [0, 1],
                [1, 2]])
    """
    _checks.integer("faces", faces)
    _checks.shape("faces", faces, [None, 3], "[F, 3]")
    faces = faces.long()
    num_faces = faces.shape[0]
    if num_faces and (int(faces.min()) < 0 or int(faces.max()) >= num_vertices):
        raise IndexError(f"faces must index vertices in [0, {num_vertices})")
    vertex = faces.reshape(-1)
    face = torch.arange(num_faces, device=faces.device).repeat_interleave(3)
    order = torch.argsort(vertex * (num_faces + 1) + face)  # by vertex, then face
    vertex, face = vertex[order], face[order]
    counts = torch.bincount(vertex, minlength=num_vertices)
    width = int(counts.max()) if slots is None and counts.numel() else (slots or 0)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(vertex.numel(), device=faces.device) - starts[vertex]
    buf = torch.full((num_vertices, width), num_faces, dtype=torch.int64, device=faces.device)
    keep = rank < width
    buf[vertex[keep], rank[keep]] = face[keep]
    return buf


def deep3d_vertex_normals(vertices: Tensor, faces: Tensor, point_buf: Tensor) -> Tensor:
    """Deep3DFaceRecon's vertex normals (``ParametricFaceModel.compute_norm``,
    D3D:models/bfm.py:117-137; PIPELINES.md §1.5).

    Face normal ``n_f = normalize(cross(v0 - v1, v1 - v2))`` (unit length: every
    face counts the same, **not** area-weighted as :func:`facegeom.ops.vertex_normals`);
    a zero normal is appended as face ``F``; vertex normal
    ``normalize(sum_k n_{point_buf[v, k]})`` over the fixed slots of ``point_buf``
    (only the faces listed there count). ``F.normalize`` semantics: a zero sum
    stays zero (eps 1e-12). Deep3D computes them on the unrotated shape and then
    rotates them (``face_norm @ rotation``, D3D:models/bfm.py:295-296).

    Args:
        vertices: ``[B, N, 3]`` or ``[N, 3]`` float (differentiable).
        faces: ``[F, 3]`` int64 0-based.
        point_buf: ``[N, K]`` int64 face indices in ``[0, F]`` (``F`` = padding),
            as ``BFM.from_deep3d`` stores ``masks["point_buf"]``.

    Returns:
        ``[B, N, 3]`` (``[N, 3]`` for unbatched input) unit normals.

    Example:
        >>> v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> deep3d_vertex_normals(v, torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1], [0, 1], [0, 1]]))[0]
        tensor([0., 0., 1.])
    """
    _checks.floating("vertices", vertices)
    _checks.integer("faces", faces, vertices.device)
    _checks.integer("point_buf", point_buf, vertices.device)
    unbatched = vertices.dim() == 2
    if unbatched:
        vertices = vertices.unsqueeze(0)
    _checks.shape("vertices", vertices, [None, None, 3], "[B, N, 3] or [N, 3]")
    _checks.shape("faces", faces, [None, 3], "[F, 3]")
    _checks.shape("point_buf", point_buf, [vertices.shape[1], None], "[N, K]")
    num_faces = faces.shape[0]
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[1]):
        raise IndexError(f"faces must index vertices in [0, {vertices.shape[1]})")
    if point_buf.numel() and (int(point_buf.min()) < 0 or int(point_buf.max()) > num_faces):
        raise IndexError(f"point_buf must hold face indices in [0, F = {num_faces}] (F = padding)")
    faces = faces.long()
    v0, v1, v2 = vertices[:, faces[:, 0]], vertices[:, faces[:, 1]], vertices[:, faces[:, 2]]
    face_normals = torch.nn.functional.normalize(torch.linalg.cross(v0 - v1, v1 - v2, dim=-1), dim=-1, p=2)
    face_normals = torch.cat([face_normals, face_normals.new_zeros(face_normals.shape[0], 1, 3)], 1)
    normals = torch.nn.functional.normalize(face_normals[:, point_buf.long()].sum(2), dim=-1, p=2)
    return normals[0] if unbatched else normals


def _loadmat(path, what: str):
    import scipy.io

    source = os.fspath(path)
    if os.path.isdir(source):
        raise _pickle.NotAFileError(f"{source}: is a directory, not a {what}")
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such file ({what})")
    try:
        return scipy.io.loadmat(source), source
    except Exception as error:  # scipy raises several types for a corrupt file
        raise ValueError(f"{source}: not a readable .mat file ({what}): {error}") from error


#: Largest h5 dataset read (elements); the BFM 2017 basis has 32 M.
MAX_H5_ELEMENTS = 2 ** 28


def _h5_dataset(h5py, f, path: str, source: str) -> np.ndarray:
    """Read dataset ``path`` of the open h5 file ``f``; every failure (missing,
    a group, a soft-link loop, a broken external link, an oversized or unreadable
    dataset) is a ``ValueError`` naming the file and the path."""
    try:
        node = f[path]
    except KeyError as error:
        raise ValueError(f"{source}: missing dataset {path} ({error})") from None
    except (RuntimeError, OSError, ValueError) as error:  # h5py: RuntimeError for a soft-link loop
        raise ValueError(f"{source}: cannot open {path} (a link loop or a broken link?): {error}") from None
    if not isinstance(node, h5py.Dataset):
        raise ValueError(f"{source}: {path} must be a dataset, got a {type(node).__name__}")
    if node.size is None or node.size > MAX_H5_ELEMENTS:
        raise ValueError(f"{source}: {path} has shape {node.shape}: not a face-model array "
                         f"(more than {MAX_H5_ELEMENTS} elements)")
    try:
        return node[()]
    except (RuntimeError, OSError, TypeError, ValueError) as error:
        raise ValueError(f"{source}: cannot read {path} ({type(error).__name__}: {error})") from None


def _h5py():
    try:
        import h5py
    except ImportError as error:
        raise ImportError("reading the Basel Face Model 2017 / AlbedoMM .h5 files needs h5py: "
                          "pip install h5py (or pip install facegeom[models])") from error
    return h5py


class BFM(nn.Module):
    """A Basel Face Model variant (see the module docstring for the constructors).

    Buffers: ``mean_shape`` ``[N, 3]``; ``shape_basis`` ``[n_shape + n_exp, N, 3]``
    (identity components, then expression components); ``faces`` ``[F, 3]``
    int64; optional ``mean_texture`` / ``texture_basis`` ``[n_tex, N, 3]``,
    ``mean_specular`` / ``specular_basis`` ``[n_spec, N, 3]``, ``keypoints`` ``[68]``
    (vertex indices of the 68 landmarks), and named vertex / face index sets in
    :attr:`masks` (e.g. Deep3DFaceRecon's ``front_mask``, ``skin_mask``,
    ``point_buf``).

    Example:
        >>> bfm = BFM.from_deep3d("BFM/BFM_model_front.mat")             # doctest: +SKIP
        >>> out = bfm(shape=torch.zeros(1, 80), expression=torch.zeros(1, 64), texture=torch.zeros(1, 80))  # doctest: +SKIP
        >>> out.vertices.shape, out.albedo.shape, out.landmarks2d.shape  # doctest: +SKIP
        (torch.Size([1, 35709, 3]), torch.Size([1, 35709, 3]), torch.Size([1, 68, 3]))
    """

    def __init__(self, mean_shape, id_basis, exp_basis, faces, mean_texture=None, texture_basis=None,
                 mean_specular=None, specular_basis=None, keypoints=None,
                 masks: Optional[Dict[str, np.ndarray]] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")

        def floats(value):
            return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype).contiguous()

        mean_shape = floats(mean_shape)
        _checks.shape("mean_shape", mean_shape, [None, 3], "[N, 3]")
        num_vertices = mean_shape.shape[0]
        id_basis = floats(id_basis)
        _checks.shape("id_basis", id_basis, [None, num_vertices, 3], "[K, N, 3]")
        exp_basis = floats(exp_basis) if exp_basis is not None else id_basis.new_zeros(0, num_vertices, 3)
        _checks.shape("exp_basis", exp_basis, [None, num_vertices, 3], "[K, N, 3]")
        self.n_shape, self.n_exp = id_basis.shape[0], exp_basis.shape[0]
        self.register_buffer("mean_shape", mean_shape)
        self.register_buffer("shape_basis", torch.cat([id_basis, exp_basis]).contiguous())
        faces = torch.as_tensor(np.asarray(faces), dtype=torch.int64).contiguous()
        _checks.shape("faces", faces, [None, 3], "[F, 3]")
        _checks.indices("faces", faces, num_vertices, what="vertex indices")
        self.register_buffer("faces", faces)
        for prefix, mean, basis in (("texture", mean_texture, texture_basis),
                                    ("specular", mean_specular, specular_basis)):
            if (mean is None) != (basis is None):
                raise ValueError(f"mean_{prefix} and {prefix}_basis must be given together")
            if mean is not None:
                mean, basis = floats(mean), floats(basis)
                _checks.shape(f"mean_{prefix}", mean, [num_vertices, 3], "[N, 3]")
                _checks.shape(f"{prefix}_basis", basis, [None, num_vertices, 3], "[K, N, 3]")
            self.register_buffer(f"mean_{prefix}", mean)
            self.register_buffer(f"{prefix}_basis", basis)
        if keypoints is not None:
            keypoints = torch.as_tensor(np.asarray(keypoints).reshape(-1), dtype=torch.int64)
            _checks.indices("keypoints", keypoints, num_vertices, what="vertex indices")
        self.register_buffer("keypoints", keypoints)
        self._mask_names = []
        for name, value in (masks or {}).items():
            array = np.asarray(value)
            tensor = torch.as_tensor(array, dtype=torch.int64 if array.dtype.kind in "iub" else dtype)
            self.register_buffer(f"mask_{name}", tensor)  # buffers: they follow .to(device)
            self._mask_names.append(name)

    @property
    def masks(self) -> Dict[str, Tensor]:
        """Named index sets / per-vertex weights from the file (see the constructors)."""
        return {name: getattr(self, f"mask_{name}") for name in self._mask_names}

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def n_id(self) -> int:
        """Deprecated name of :attr:`n_shape` (identity components)."""
        _deprecated("BFM.n_id", "BFM.n_shape")
        return self.n_shape

    @property
    def n_tex(self) -> int:
        return 0 if self.texture_basis is None else self.texture_basis.shape[0]

    @property
    def n_spec(self) -> int:
        return 0 if self.specular_basis is None else self.specular_basis.shape[0]

    def deep3d_normals(self, vertices: Tensor) -> Tensor:
        """Deep3DFaceRecon's unit-face-normal vertex normals of ``vertices``
        ``[B, N, 3]`` over this model's ``point_buf`` (see :func:`deep3d_vertex_normals`);
        a model without one (other files, :meth:`from_flame`) uses every incident face
        (:func:`point_buf_from_faces`)."""
        if "point_buf" in self._mask_names:
            point_buf = self.mask_point_buf
        else:  # every incident face, unit-weighted (same formula, no 8-slot cap)
            cached = getattr(self, "_point_buf_cache", None)
            if cached is None or cached.device != self.faces.device:
                cached = self._point_buf_cache = point_buf_from_faces(self.faces, self.num_vertices)
            point_buf = cached
        return deep3d_vertex_normals(vertices, self.faces, point_buf)

    # ------------------------------------------------------------------ #
    # Forward                                                            #
    # ------------------------------------------------------------------ #
    def _coefficients(self, name, value, size, batch):
        if value is None:
            return self.mean_shape.new_zeros(batch, size)
        _checks.floating(name, value, self.mean_shape, "the model's buffers")
        _checks.shape(name, value, [None, None], f"[B, K<={size}]")
        if value.shape[1] > size:
            raise ValueError(f"{name} has {value.shape[1]} components, the model has {size}")
        if value.shape[1] < size:
            value = torch.cat([value, value.new_zeros(value.shape[0], size - value.shape[1])], 1)
        return value.expand(batch, -1)

    def forward(self, shape: Optional[Tensor] = None, expression: Optional[Tensor] = None,
                texture: Optional[Tensor] = None, specular: Optional[Tensor] = None, pose: Optional[Tensor] = None,
                rotation: Optional[Tensor] = None, translation: Optional[Tensor] = None, **deprecated) -> BFMOutput:
        """Decode coefficients (all differentiable; ``None`` = zeros, i.e. the mean).

        The argument names are those of every facegeom face model (FLAME, the synthetic
        head): ``shape``, ``expression``, ``texture``, pose arguments.

        Args:
            shape: ``[B, <= n_shape]`` identity coefficients (missing trailing ones are zero).
            expression: ``[B, <= n_exp]`` expression coefficients.
            texture: ``[B, <= n_tex]`` texture / diffuse albedo coefficients; the
                albedo is returned whenever the model has one (the mean for None).
            specular: ``[B, <= n_spec]`` specular albedo coefficients (AlbedoMM).
            pose: ``[B, 3]`` axis-angle rotation about the model origin (as FLAME's
                global ``pose``, but a BFM has no joints).
            rotation: ``[B, 3, 3]`` rotation matrix instead of ``pose``, e.g.
                Deep3DFaceRecon's ``facegeom.transforms.euler_to_matrix(angles)``
                (``D3D:models/bfm.py:229-239``: ``p' = R p + t``).
            translation: ``[B, 3]`` added after the rotation.

        Deprecated keyword names (DeprecationWarning): ``id`` -> ``shape``, ``exp`` ->
        ``expression``, ``tex`` -> ``texture``, ``spec`` -> ``specular``.

        Returns:
            :class:`BFMOutput` (``albedo`` / ``specular`` not clamped).
        """
        values = {"shape": shape, "expression": expression, "texture": texture, "specular": specular}
        for old, new in (("id", "shape"), ("exp", "expression"), ("tex", "texture"), ("spec", "specular")):
            if old in deprecated:
                _deprecated(f"BFM(..., {old}=)", f"{new}=")
                if values[new] is not None:
                    raise TypeError(f"got both {new} and its deprecated name {old}")
                values[new] = deprecated.pop(old)
        if deprecated:
            raise TypeError(f"unexpected keyword argument(s) {sorted(deprecated)}")
        given = dict(values, pose=pose, translation=translation)
        for name, value in given.items():
            if value is not None and (not isinstance(value, torch.Tensor) or value.dim() != 2):
                raise ValueError(f"{name} must be a [B, K] tensor, got "
                                 f"{list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
        if rotation is not None:
            if pose is not None:
                raise ValueError("pass pose (axis-angle) or rotation (matrix), not both")
            if not isinstance(rotation, torch.Tensor):
                raise TypeError(f"rotation must be a torch.Tensor, got {type(rotation).__name__}")
            _checks.floating("rotation", rotation, self.mean_shape, "the model's buffers")
            _checks.shape("rotation", rotation, [None, 3, 3], "[B, 3, 3]")
        present = {k: v.shape[0] for k, v in given.items() if v is not None}
        if rotation is not None:
            present["rotation"] = rotation.shape[0]
        batch = _checks.batch_size(present) if present else 1
        coeffs = torch.cat([self._coefficients("shape", values["shape"], self.n_shape, batch),
                            self._coefficients("expression", values["expression"], self.n_exp, batch)], 1)
        vertices = ops.blendshapes(coeffs, self.shape_basis, self.mean_shape)
        albedo = spec_albedo = None
        if self.texture_basis is not None:
            albedo = ops.blendshapes(self._coefficients("texture", values["texture"], self.n_tex, batch),
                                     self.texture_basis, self.mean_texture)
        elif values["texture"] is not None:
            raise ValueError("texture was given but this model has no texture basis")
        if self.specular_basis is not None:
            spec_albedo = ops.blendshapes(self._coefficients("specular", values["specular"], self.n_spec, batch),
                                          self.specular_basis, self.mean_specular)
        elif values["specular"] is not None:
            raise ValueError("specular was given but this model has no specular albedo basis")
        if pose is not None:
            _checks.floating("pose", pose, self.mean_shape, "the model's buffers")
            _checks.shape("pose", pose, [None, 3], "[B, 3] axis-angle")
            rotation = transforms.axis_angle_to_matrix(pose)
        if rotation is not None:
            vertices = vertices @ rotation.transpose(1, 2)
        if translation is not None:
            _checks.floating("translation", translation, self.mean_shape, "the model's buffers")
            _checks.shape("translation", translation, [None, 3], "[B, 3]")
            vertices = vertices + translation.unsqueeze(1)
        landmarks = None if self.keypoints is None else vertices[:, self.keypoints]
        return BFMOutput(vertices, albedo, spec_albedo, landmarks, landmarks)

    # ------------------------------------------------------------------ #
    # Files                                                              #
    # ------------------------------------------------------------------ #
    @classmethod
    def from_flame(cls, model) -> "BFM":
        """The linear part of a FLAME-layout model (e.g. :func:`synthetic_head`) as a
        BFM, for pipelines written against :class:`BFM`: mean = ``v_template``,
        identity / expression bases = its shape / expression components, texture =
        its albedo model (if any), ``keypoints`` = for each of the 68 fixed 3D
        landmarks, the corner vertex with the largest barycentric weight. Pose
        (skinning) is dropped: a BFM is posed by the camera's rotation.

        Example:
            >>> from facegeom.models import synthetic_head
            >>> bfm = BFM.from_flame(synthetic_head())
            >>> bfm(torch.zeros(1, 50)).vertices.shape
            torch.Size([1, 2886, 3])
        """
        shapedirs = model.shapedirs.detach().cpu().permute(2, 0, 1)  # [K, V, 3]
        keypoints = None
        if model.full_lmk_faces_idx is not None:
            corners = model.faces[model.full_lmk_faces_idx].cpu()  # [68, 3]
            keypoints = corners.gather(1, model.full_lmk_bary_coords.cpu().argmax(1, keepdim=True)).squeeze(1)
        texture = {}
        if model.albedo_basis is not None:
            texture = dict(mean_texture=model.albedo_mean.cpu().numpy(),
                           texture_basis=model.albedo_basis.cpu().numpy())
        return cls(model.v_template.cpu().numpy(), shapedirs[: model.n_shape].numpy(),
                   shapedirs[model.n_shape:].numpy(), model.faces.cpu().numpy(), keypoints=keypoints,
                   dtype=model.v_template.dtype, **texture)

    @classmethod
    def from_deep3d(cls, path, recenter: bool = True, dtype: Optional[torch.dtype] = None) -> "BFM":
        """Deep3DFaceRecon's ``BFM_model_front.mat``.

        Keys: ``meanshape`` [1, 3N], ``idBase`` [3N, 80], ``exBase`` [3N, 64],
        ``meantex`` [1, 3N] (0-255), ``texBase`` [3N, 80], ``tri`` [F, 3],
        ``keypoints`` [1, 68], and optionally ``point_buf`` [N, 8], ``frontmask2_idx``,
        ``tri_mask2``, ``skinmask`` (all indices 1-based in the file).

        As ``ParametricFaceModel``: the mean shape is re-centred (``recenter``),
        the texture is divided by 255, indices become 0-based. ``masks`` gets
        ``point_buf`` (``[N, 8]``: faces around each vertex, 0-based, padded with
        ``F``), ``front_mask``, ``front_faces`` and ``skin_mask`` when present.

        ``point_buf`` padding: the official file (built by ``transferBFM09``) pads
        with ``F + 1`` (1-based index of one face past the end), which
        ``ParametricFaceModel`` turns into ``F``, the zero normal it appends
        (``D3D:models/bfm.py:53,133``); files padded with ``0`` become ``-1``
        there, which indexes the same appended zero normal. Both are accepted
        and stored as ``F``. :meth:`deep3d_normals` uses it.
        """
        data, source = _loadmat(path, "Deep3DFaceRecon BFM_model_front.mat")
        mean = _vector(_get(data, "meanshape", source), source, "meanshape")
        num_vertices = mean.shape[0]
        if recenter:
            mean = mean - mean.mean(0, keepdims=True)
        id_basis = _basis(_get(data, "idBase", source), source, "idBase", num_vertices)
        exp_basis = _basis(_get(data, "exBase", source), source, "exBase", num_vertices)
        mean_tex = _vector(_get(data, "meantex", source), source, "meantex", num_vertices) / 255.0
        tex_basis = _basis(_get(data, "texBase", source), source, "texBase", num_vertices) / 255.0
        faces = _faces(_get(data, "tri", source), source, "tri", num_vertices, one_based=True)
        keypoints = _indices(np.asarray(_get(data, "keypoints", source)).reshape(-1), source, "keypoints",
                             num_vertices, one_based=True)
        masks = {}
        if "point_buf" in data:
            masks["point_buf"] = _point_buf(data["point_buf"], source, num_vertices, len(faces))
        if "frontmask2_idx" in data:
            masks["front_mask"] = _indices(np.asarray(data["frontmask2_idx"]).reshape(-1), source,
                                           "frontmask2_idx", num_vertices, one_based=True)
        if "tri_mask2" in data:
            masks["front_faces"] = _faces(data["tri_mask2"], source, "tri_mask2", num_vertices, one_based=True)
        if "skinmask" in data:
            skin = _pickle.float_array(data["skinmask"], "skinmask", source).reshape(-1)
            if skin.size != num_vertices:
                raise ValueError(f"{source}: skinmask must have N = {num_vertices} entries, got {skin.size}")
            masks["skin_mask"] = skin
        return cls(mean, id_basis, exp_basis, faces, mean_tex, tex_basis, keypoints=keypoints, masks=masks,
                   dtype=dtype)

    @classmethod
    def from_3ddfa(cls, path, tri_path=None, n_shape: int = 40, n_exp: int = 10,
                   dtype: Optional[torch.dtype] = None) -> "BFM":
        """3DDFA / 2DASL's ``bfm_noneck_v3.pkl`` (+ ``tri.pkl``), read safely.

        Keys: ``u`` [3N, 1], ``w_shp`` [3N, 199], ``w_exp`` [3N, 29] (x, y, z
        interleaved per vertex: 3DDFA reshapes with ``order='F'`` to [3, N]),
        ``keypoints`` [204] (indices into the flat array: x, y, z of the 68
        landmark vertices); triangles from ``tri_path`` (3DDFA_V2's ``tri.pkl``,
        [3, F] 0-based) or the file's own ``tri``. 3DDFA uses 40 shape and 10
        expression components (``n_shape``, ``n_exp``). No texture.
        """
        source = os.fspath(path)
        data = _pickle.load(source)
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a pickled dict (3DDFA bfm_noneck_v3.pkl)")
        mean = _vector(_get(data, "u", source), source, "u")
        num_vertices = mean.shape[0]
        w_shp = _pickle.float_array(_get(data, "w_shp", source), "w_shp", source)
        w_exp = _pickle.float_array(_get(data, "w_exp", source), "w_exp", source)
        for key, basis, wanted in (("w_shp", w_shp, n_shape), ("w_exp", w_exp, n_exp)):
            if basis.ndim != 2 or not 0 <= wanted <= basis.shape[1]:
                raise ValueError(f"{source}: {key} has shape {list(basis.shape)}; cannot take {wanted} components")
        id_basis = _basis(w_shp[:, :n_shape], source, "w_shp", num_vertices)
        exp_basis = _basis(w_exp[:, :n_exp], source, "w_exp", num_vertices)
        flat_keypoints = _indices(np.asarray(_get(data, "keypoints", source)).reshape(-1), source, "keypoints",
                                  3 * num_vertices, one_based=False)
        if flat_keypoints.size % 3 or not (np.array_equal(flat_keypoints[1::3], flat_keypoints[::3] + 1)
                                           and np.array_equal(flat_keypoints[2::3], flat_keypoints[::3] + 2)
                                           and (flat_keypoints[::3] % 3 == 0).all()):
            raise ValueError(f"{source}: keypoints must list (x, y, z) flat indices of whole vertices")
        keypoints = flat_keypoints[::3] // 3
        if tri_path is not None:
            tri_source = os.fspath(tri_path)
            tri = _pickle.load(tri_source)
        elif "tri" in data:
            tri_source, tri = source, data["tri"]
        else:
            raise ValueError(f"{source}: no 'tri' in the file; pass tri_path (3DDFA_V2's configs/tri.pkl)")
        faces = _faces(tri, tri_source, "tri", num_vertices, one_based=False)
        return cls(mean, id_basis, exp_basis, faces, keypoints=keypoints, dtype=dtype)

    @classmethod
    def from_basel2009(cls, path, expression=None, expression_vertices=None, n_shape: Optional[int] = None,
                       n_tex: Optional[int] = None, n_exp: Optional[int] = None, scale: float = 1.0,
                       dtype: Optional[torch.dtype] = None) -> "BFM":
        """The 2009 Basel Face Model ``01_MorphableModel.mat``, plus expressions.

        Keys: ``shapeMU`` [3N, 1], ``shapePC`` [3N, 199], ``shapeEV`` [199, 1]
        (standard deviations), ``texMU``, ``texPC``, ``texEV`` (colours 0-255),
        ``tl`` [F, 3] (1-based). Bases are multiplied by their standard
        deviations (coefficients ~ N(0, 1), as Deep3DFaceRecon builds its model),
        shapes by ``scale`` (the file is in micrometres: ``scale=1e-6`` gives
        metres); textures are divided by 255.

        Args:
            expression: the expression model, which BFM 2009 lacks: the path of an
                ``Exp_Pca.bin`` (int32 K, then float32 mean [3M] and basis [K, 3M],
                as Deep3DFaceRecon / 3DDFA distribute it; the mean is not used) or a
                ``[3M, K]`` array, already scaled to the model's units per unit
                coefficient (scale it by its standard deviations, e.g.
                ``std_exp.txt``, before passing it). None: no expressions.
            expression_vertices: ``[M]`` 0-based BFM vertex indices the expression
                basis covers when ``M`` is not the model's vertex count (the
                53,215-vertex ``Exp_Pca.bin`` covers the BFM without its neck);
                other vertices get no expression displacement.
            n_shape, n_tex, n_exp: components to keep (None: all, 199 shape and
                texture components in the official file).
        """
        data, source = _loadmat(path, "Basel Face Model 2009 01_MorphableModel.mat")
        mean = _vector(_get(data, "shapeMU", source), source, "shapeMU") * scale
        num_vertices = mean.shape[0]

        def scaled_basis(pc_key, ev_key, count, factor):
            pc = _pickle.float_array(_get(data, pc_key, source), pc_key, source)
            ev = _pickle.float_array(_get(data, ev_key, source), ev_key, source).reshape(-1)
            count = ev.size if count is None else count
            if pc.ndim != 2 or ev.size != pc.shape[1] or not 0 <= count <= pc.shape[1]:
                raise ValueError(f"{source}: {pc_key} {list(pc.shape)} / {ev_key} {list(ev.shape)} do not match "
                                 f"or hold fewer than {count} components")
            return _basis(pc[:, :count] * ev[:count] * factor, source, pc_key, num_vertices)

        id_basis = scaled_basis("shapePC", "shapeEV", n_shape, scale)
        mean_tex = _vector(_get(data, "texMU", source), source, "texMU", num_vertices) / 255.0
        tex_basis = scaled_basis("texPC", "texEV", n_tex, 1.0 / 255.0)
        faces = _faces(_get(data, "tl", source), source, "tl", num_vertices, one_based=True)
        exp_basis = None
        if expression is not None:
            exp_basis = _expression_basis(expression, expression_vertices, num_vertices, n_exp, scale)
        return cls(mean, id_basis, exp_basis, faces, mean_tex, tex_basis, dtype=dtype)

    @classmethod
    def from_basel2017(cls, h5, albedo_h5=None, n_shape: Optional[int] = None, n_exp: Optional[int] = None,
                       n_tex: Optional[int] = None, scale: float = 1.0,
                       dtype: Optional[torch.dtype] = None) -> "BFM":
        """The 2017 Basel Face Model (statismo h5), optionally with AlbedoMM.

        Reads ``shape/model/{mean, pcaBasis, pcaVariance}``,
        ``expression/model/...`` (when present), ``color/model/...`` and the
        triangles ``shape/representer/cells`` [3, F] (0-based). Bases are
        ``pcaBasis * sqrt(pcaVariance)`` (coefficients ~ N(0, 1)); shapes are
        multiplied by ``scale`` (the file is in millimetres). With ``albedo_h5``
        (AlbedoMM, same topology), the texture is its ``diffuseAlbedo`` model and
        the ``specularAlbedo`` model is added; otherwise the texture is the
        ``color`` model. Vectors are x, y, z interleaved per vertex. ``n_*``: keep
        that many components (None: all; ``n_tex`` also limits the specular model).
        """
        h5py = _h5py()
        source = os.fspath(h5)
        if os.path.isdir(source):
            raise _pickle.NotAFileError(f"{source}: is a directory, not a Basel Face Model 2017 h5")
        if not os.path.exists(source):
            raise FileNotFoundError(f"{source}: no such file (Basel Face Model 2017 h5)")

        def read_model(f, group, file_source, count, num_vertices, factor):
            mean, basis, variance = (
                _pickle.float_array(_h5_dataset(h5py, f, f"{group}/model/{name}", file_source),
                                    f"{group}/model/{name}", file_source)
                for name in ("mean", "pcaBasis", "pcaVariance"))
            variance = variance.reshape(-1)
            if basis.ndim != 2 or basis.shape[1] != variance.size:
                raise ValueError(f"{file_source}: {group}/model/pcaBasis {list(basis.shape)} does not match "
                                 f"pcaVariance [{variance.size}]")
            count = basis.shape[1] if count is None else count
            if not 0 <= count <= basis.shape[1]:
                raise ValueError(f"{file_source}: {group} has {basis.shape[1]} components, asked for {count}")
            mean = _vector(mean, file_source, f"{group}/model/mean", num_vertices) * factor
            scaled = basis[:, :count] * np.sqrt(np.maximum(variance[:count], 0.0)) * factor
            return mean, _basis(scaled, file_source, f"{group}/model/pcaBasis", mean.shape[0])

        try:
            handle = h5py.File(source, "r")
        except OSError as error:
            raise ValueError(f"{source}: not a readable h5 file ({error})") from error
        with handle as f:
            if "shape" not in f:
                raise _missing(source, "shape", list(f.keys()))
            mean, id_basis = read_model(f, "shape", source, n_shape, None, scale)
            num_vertices = mean.shape[0]
            exp_basis = None
            if "expression" in f:
                _, exp_basis = read_model(f, "expression", source, n_exp, num_vertices, scale)
            elif n_exp:
                raise ValueError(f"{source}: n_exp={n_exp} but the file has no expression model")
            if "shape/representer/cells" not in f:
                raise _missing(source, "shape/representer/cells", list(f.keys()))
            faces = _faces(_h5_dataset(h5py, f, "shape/representer/cells", source), source, "shape/representer/cells", num_vertices,
                           one_based=False)
            mean_tex = tex_basis = None
            if albedo_h5 is None and "color" in f:
                mean_tex, tex_basis = read_model(f, "color", source, n_tex, num_vertices, 1.0)
        mean_spec = spec_basis = None
        if albedo_h5 is not None:
            albedo_source = os.fspath(albedo_h5)
            if os.path.isdir(albedo_source):
                raise _pickle.NotAFileError(f"{albedo_source}: is a directory, not an AlbedoMM h5")
            if not os.path.exists(albedo_source):
                raise FileNotFoundError(f"{albedo_source}: no such file (AlbedoMM h5)")
            try:
                handle = h5py.File(albedo_source, "r")
            except OSError as error:
                raise ValueError(f"{albedo_source}: not a readable h5 file ({error})") from error
            with handle as f:
                for group in ("diffuseAlbedo", "specularAlbedo"):
                    if group not in f:
                        raise _missing(albedo_source, group, list(f.keys()))
                mean_tex, tex_basis = read_model(f, "diffuseAlbedo", albedo_source, n_tex, num_vertices, 1.0)
                mean_spec, spec_basis = read_model(f, "specularAlbedo", albedo_source, n_tex, num_vertices, 1.0)
        return cls(mean, id_basis, exp_basis, faces, mean_tex, tex_basis, mean_spec, spec_basis, dtype=dtype)


def _expression_basis(expression, expression_vertices, num_vertices, n_exp, scale) -> np.ndarray:
    if isinstance(expression, (str, os.PathLike)):
        source = os.fspath(expression)
        raw = np.frombuffer(_pickle.read_bytes(source, "Exp_Pca.bin"), dtype=np.uint8)
        if raw.size < 4:
            raise ValueError(f"{source}: too short for an Exp_Pca.bin (int32 K, float32 mean [3M], basis [K, 3M])")
        count = int(np.frombuffer(raw[:4].tobytes(), dtype="<i4")[0])
        floats = raw[4:]
        if count <= 0 or floats.size % 4 or (floats.size // 4) % (count + 1):
            raise ValueError(f"{source}: size does not fit int32 K = {count}, float32 mean [3M], basis [K, 3M]")
        values = np.frombuffer(floats.tobytes(), dtype="<f4").astype(np.float64)
        length = values.size // (count + 1)
        basis = values[length:].reshape(count, length).T  # [3M, K]
    else:
        source = "expression"
        basis = np.asarray(expression, dtype=np.float64)
        if basis.ndim != 2:
            raise ValueError(f"expression must be a [3M, K] array, got shape {list(basis.shape)}")
    if n_exp is not None:
        if not 0 <= n_exp <= basis.shape[1]:
            raise ValueError(f"{source}: has {basis.shape[1]} expression components, asked for {n_exp}")
        basis = basis[:, :n_exp]
    if basis.shape[0] % 3:
        raise ValueError(f"{source}: the expression basis has {basis.shape[0]} rows, not a multiple of 3")
    covered = _basis(basis, source, "expression basis", basis.shape[0] // 3) * scale  # [K, M, 3]
    if expression_vertices is None:
        if covered.shape[1] != num_vertices:
            raise ValueError(f"{source}: the expression basis covers {covered.shape[1]} vertices, the model has "
                             f"{num_vertices}; pass expression_vertices (the BFM indices it covers)")
        return covered
    index = _indices(np.asarray(expression_vertices).reshape(-1), source, "expression_vertices", num_vertices,
                     one_based=False)
    if index.size != covered.shape[1]:
        raise ValueError(f"{source}: expression_vertices has {index.size} entries, the basis covers "
                         f"{covered.shape[1]} vertices")
    full = np.zeros((covered.shape[0], num_vertices, 3))
    full[:, index] = covered
    return full
