"""Readers for the files the benchmark protocols consume.

Everything is read into float64 NumPy arrays, validated (shape, finite values,
face indices in range), and errors name the file. Formats:

- meshes: Wavefront ``.obj`` (read like psbody-mesh: the ``v`` lines in order,
  polygons fan-triangulated, ``v/vt/vn`` and negative indices accepted) and
  ``.ply`` (ASCII or binary, through trimesh without any processing, so vertex
  order and count are kept);
- MeshLab picked points ``.pp`` (XML ``<point x= y= z= .../>`` elements, in file
  order), as in NoW's ``scans_lmks_onlypp``;
- landmark arrays: ``.npy`` (shape (N, 3) or (1, N, 3)), ``.txt`` (one ``x y z``
  line per point) and Stirling/FG2018 ``.lnd`` (one ``index x y z`` line per point).
"""
from __future__ import annotations

import os
import re
import warnings
import xml.etree.ElementTree as ET
from typing import Optional, Tuple

import numpy as np

def _finite(name: str, array: np.ndarray, path) -> np.ndarray:
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=-1).sum()) if array.ndim > 1 else int((~np.isfinite(array)).sum())
        raise ValueError(f"{path}: {bad} {name} have NaN or infinite coordinates")
    return array


def _exists(path) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    return path


def _read_obj_by_line(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """The general OBJ path: polygons, ``v/vt/vn`` corners, negative indices, and
    errors that name the offending line."""
    vertices, faces = [], []
    with open(path, "r", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("v "):
                parts = line.split()
                if len(parts) < 4:
                    raise ValueError(f"{path}:{number}: a vertex line needs 3 coordinates: {line.strip()!r}")
                vertices.append(parts[1:4])
            elif line.startswith("f "):
                try:
                    corners = [int(c.split("/", 1)[0]) for c in line.split()[1:]]
                except ValueError:
                    raise ValueError(f"{path}:{number}: non-integer face index: {line.strip()!r}") from None
                if len(corners) < 3:
                    raise ValueError(f"{path}:{number}: a face needs at least 3 corners: {line.strip()!r}")
                if any(not -(2 ** 62) < c < 2 ** 62 for c in corners):
                    raise ValueError(f"{path}:{number}: face index out of range: {line.strip()[:200]!r}")
                # OBJ indices are 1-based; negative ones count back from the vertices read so far
                corners = [c - 1 if c > 0 else len(vertices) + c for c in corners]
                faces.extend((corners[0], corners[k], corners[k + 1]) for k in range(1, len(corners) - 1))
    try:
        v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    except ValueError as error:
        raise ValueError(f"{path}: unreadable vertex coordinates ({error})") from None
    return v, np.asarray(faces, dtype=np.int64).reshape(-1, 3)


def _read_obj(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Vectorised fast path for the common case (``v x y z`` lines, triangles with
    positive indices, with or without ``/vt/vn``); anything else goes line by line."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.splitlines()
    v_rows = [line[2:] for line in lines if line[:2] == b"v "]
    f_rows = [line[2:] for line in lines if line[:2] == b"f "]
    if f_rows and b"/" in f_rows[0]:
        f_rows = [re.sub(rb"/\S*", b"", row) for row in f_rows]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty list of rows warns; the shape check below handles it
            vertices = np.loadtxt(v_rows, dtype=np.float64, ndmin=2).reshape(len(v_rows), -1)
            faces = np.loadtxt(f_rows, dtype=np.int64, ndmin=2).reshape(len(f_rows), -1)
        if vertices.shape[1] != 3 or (f_rows and (faces.shape[1] != 3 or faces.min() < 1)):
            raise ValueError("not the plain layout")
        return vertices, faces.reshape(-1, 3) - 1
    except ValueError:
        return _read_obj_by_line(path)


def _read_ply(path: str) -> Tuple[np.ndarray, np.ndarray]:
    import trimesh

    try:
        mesh = trimesh.load(path, file_type="ply", process=False, force="mesh")
    except Exception as error:  # trimesh raises many types for malformed files
        raise ValueError(f"{path}: not a readable PLY mesh ({error})") from None
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)


def read_mesh(path) -> Tuple[np.ndarray, np.ndarray]:
    """Read a triangle mesh from ``.obj`` or ``.ply``.

    Returns ``(vertices, faces)``: float64 ``[V, 3]`` and int64 ``[F, 3]``
    (0-based; polygons are fan-triangulated). A file with no faces is
    accepted (a point cloud) and gives ``faces`` of shape ``[0, 3]``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an
    unknown extension, NaN/inf coordinates, no vertices, or face indices out
    of range.

    Example::

        vertices, faces = read_mesh("scans/FaMoS_180424_03335_TA/natural_head_rotation.000001.obj")
    """
    path = _exists(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".obj":
        vertices, faces = _read_obj(path)
    elif ext == ".ply":
        vertices, faces = _read_ply(path)
    else:
        raise ValueError(f"{path}: unsupported mesh format {ext!r} (expected .obj or .ply)")
    if len(vertices) == 0:
        raise ValueError(f"{path}: the mesh has no vertices")
    _finite("vertices", vertices, path)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(
            f"{path}: face indices must lie in [0, {len(vertices) - 1}], got [{faces.min()}, {faces.max()}]"
        )
    return vertices, faces


def read_pp(path) -> np.ndarray:
    """Read a MeshLab picked-points ``.pp`` file: float64 ``[N, 3]`` in file order.

    The NoW scan landmarks (``scans_lmks_onlypp/<subject>/*.pp``) are such files
    with 7 points: right eye outer corner, right eye inner corner, left eye inner
    corner, left eye outer corner, nose bottom, right and left mouth corners.

    Example::

        landmarks = read_pp("scans_lmks_onlypp/FaMoS_180424_03335_TA/natural_head_rotation.000001_picked_points.pp")
    """
    path = _exists(path)
    with open(path, "rb") as f:
        data = f.read()
    if b"<!ENTITY" in data:  # MeshLab never writes entities; refuse entity-expansion bombs outright
        raise ValueError(f"{path}: not a MeshLab picked-points file (XML entity declarations are not allowed)")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise ValueError(f"{path}: not a MeshLab picked-points XML file ({error})") from None
    points = []
    for element in root.iter("point"):
        try:
            points.append([float(element.attrib[axis]) for axis in ("x", "y", "z")])
        except (KeyError, ValueError):
            raise ValueError(f"{path}: a <point> element needs numeric x, y and z attributes: {element.attrib}") from None
    if not points:
        raise ValueError(f"{path}: no <point> elements found")
    return _finite("points", np.asarray(points, dtype=np.float64), path)


def read_landmarks(path, expected: Optional[int] = None) -> np.ndarray:
    """Read 3D landmarks from ``.npy``, ``.txt``, ``.lnd`` or ``.pp``: float64 ``[N, 3]``.

    ``.npy`` may hold ``(N, 3)`` or ``(1, N, 3)`` (as predictions for NoW often
    are); ``.txt`` holds one ``x y z`` line per point (commas or spaces);
    ``.lnd`` (Stirling/FG2018 annotations) one ``index x y z`` line per point.
    With ``expected`` set, a different number of points raises ``ValueError``.

    Example::

        lmk7 = read_landmarks("predictions/subject/selfie/IMG_0001.npy", expected=7)
    """
    path = _exists(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise ValueError(f"{path}: not a plain numeric .npy array ({error})") from None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "iuf" or array.dtype.fields is not None:
            raise ValueError(f"{path}: landmarks must be a real-valued numeric array, got dtype "
                             f"{getattr(array, 'dtype', type(array).__name__)}")
        array = np.asarray(array, dtype=np.float64)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
    elif ext in (".txt", ".lnd"):
        rows = []
        with open(path, "r", errors="replace") as f:
            for number, line in enumerate(f, 1):
                fields = line.replace(",", " ").split()
                if not fields:
                    continue
                if ext == ".lnd":
                    fields = fields[1:]
                if len(fields) != 3:
                    what = "index x y z" if ext == ".lnd" else "x y z"
                    raise ValueError(f"{path}:{number}: expected '{what}', got {line.strip()!r}")
                try:
                    rows.append([float(v) for v in fields])
                except ValueError:
                    raise ValueError(f"{path}:{number}: non-numeric coordinates {line.strip()!r}") from None
        array = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    elif ext == ".pp":
        array = read_pp(path)
    else:
        raise ValueError(f"{path}: unsupported landmark format {ext!r} (expected .npy, .txt, .lnd or .pp)")
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{path}: landmarks must have shape (N, 3) or (1, N, 3), got {tuple(array.shape)}")
    if expected is not None and array.shape[0] != expected:
        raise ValueError(f"{path}: expected {expected} landmarks, got {array.shape[0]}")
    return _finite("landmarks", array, path)
