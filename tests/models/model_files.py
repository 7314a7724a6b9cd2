"""Writers of small synthetic model files in the official formats, for the loader
tests. Pickles that must reference chumpy / old scipy classes are assembled from
raw opcodes (chumpy is never imported)."""
import io
import pickle

import numpy as np
import scipy.sparse


class ChumpyVariable:
    """Written as a ``chumpy.ch.Ch`` whose state dict holds the array in ``x``
    (what chumpy's ``__getstate__`` produces), via NEWOBJ + BUILD."""

    def __init__(self, x, **extra_state):
        self.state = {"x": x, **extra_state}


class OldScipySparse:
    """Written as ``scipy.sparse.csc.csc_matrix`` built by ``copy_reg._reconstructor``
    (the protocol-0/1 form Python 2 pickles have), state = the matrix ``__dict__``."""

    def __init__(self, matrix):
        matrix = scipy.sparse.csc_matrix(matrix)
        self.state = {"_shape": matrix.shape, "data": matrix.data, "indices": matrix.indices,
                      "indptr": matrix.indptr, "maxprint": 50, "format": "csc"}


class RawOpcodes:
    """Bytes inserted verbatim (for malicious payloads)."""

    def __init__(self, data: bytes):
        self.data = data


def _fragment(value) -> bytes:
    # A plain value pickled without memo (so fragments can be concatenated),
    # minus the PROTO header and the STOP opcode.
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.fast = True
    pickler.dump(value)
    data = buffer.getvalue()
    assert data[:2] == b"\x80\x02" and data[-1:] == b"."
    return data[2:-1]


def dumps(obj) -> bytes:
    out = bytearray(b"\x80\x02")

    def emit(value):
        if isinstance(value, ChumpyVariable):
            out.extend(b"cchumpy.ch\nCh\n)\x81")  # GLOBAL chumpy.ch Ch, EMPTY_TUPLE, NEWOBJ
            emit(value.state)
            out.extend(b"b")  # BUILD
        elif isinstance(value, OldScipySparse):
            out.extend(b"ccopy_reg\n_reconstructor\n(cscipy.sparse.csc\ncsc_matrix\nc__builtin__\nobject\nNtR")
            emit(value.state)
            out.extend(b"b")
        elif isinstance(value, RawOpcodes):
            out.extend(value.data)
        elif isinstance(value, dict):
            out.extend(b"}(")  # EMPTY_DICT, MARK
            for key, item in value.items():
                emit(key)
                emit(item)
            out.extend(b"u")  # SETITEMS
        else:
            out.extend(_fragment(value))

    emit(obj)
    out.extend(b".")
    return bytes(out)


def icosphere_1():
    """A 42-vertex sphere (80 faces), radius 0.1."""
    p = (1.0 + 5.0 ** 0.5) / 2.0
    verts = np.array([(-1, p, 0), (1, p, 0), (-1, -p, 0), (1, -p, 0), (0, -1, p), (0, 1, p), (0, -1, -p),
                      (0, 1, -p), (p, 0, -1), (p, 0, 1), (-p, 0, -1), (-p, 0, 1)], dtype=np.float64)
    faces = np.array([(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
                      (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
                      (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)])
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    mids = verts[unique].mean(1)
    mids /= np.linalg.norm(mids, axis=1, keepdims=True)
    mid = len(verts) + inverse.reshape(-1, 3)
    a, b, c = faces.T
    ab, bc, ca = mid.T
    faces = np.concatenate([np.stack(f, 1) for f in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    return np.concatenate([verts, mids]) * 0.1, faces


def flame_arrays(seed=0, num_expression=20):
    """Arrays of a small FLAME-layout model as the official file stores them."""
    rng = np.random.default_rng(seed)
    v_template, faces = icosphere_1()
    num_vertices = len(v_template)
    regressor = rng.random((5, num_vertices)) * (rng.random((5, num_vertices)) < 0.3)
    regressor /= regressor.sum(1, keepdims=True)
    weights = rng.random((num_vertices, 5)) ** 3
    weights /= weights.sum(1, keepdims=True)
    return {
        "v_template": v_template,
        "shapedirs": rng.standard_normal((num_vertices, 3, 300 + num_expression)) * 1e-3,
        "posedirs": rng.standard_normal((num_vertices, 3, 36)) * 1e-3,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "f": faces.astype(np.uint32),
    }


def write_generic_model(path, arrays, drop=(), extra=None):
    """``generic_model.pkl`` as distributed: shapedirs and v_template as chumpy
    variables, J_regressor as an old-scipy csc matrix, the rest numpy (plus the
    bookkeeping entries the official file has)."""
    content = {}
    for key, value in arrays.items():
        if key in drop:
            continue
        if key in ("shapedirs", "v_template"):
            content[key] = ChumpyVariable(value, _dirty_vars=set(), label=None)
        elif key == "J_regressor":
            content[key] = OldScipySparse(value)
        else:
            content[key] = value
    content["bs_style"] = "lbs"
    content["bs_type"] = "lrotmin"
    if np.shape(arrays["J_regressor"])[1] == len(arrays["v_template"]):  # rest joints, as the file has
        content["J"] = np.asarray(arrays["J_regressor"]) @ arrays["v_template"]
    content.update(extra or {})
    with open(path, "wb") as f:
        f.write(dumps(content))


def landmark_arrays(num_faces, seed=1):
    rng = np.random.default_rng(seed)

    def bary(*shape):
        b = rng.random((*shape, 3)) + 0.05
        return b / b.sum(-1, keepdims=True)

    return {
        "static_lmk_faces_idx": rng.integers(0, num_faces, 51),
        "static_lmk_bary_coords": bary(51),
        "dynamic_lmk_faces_idx": rng.integers(0, num_faces, (79, 17)),
        "dynamic_lmk_bary_coords": bary(79, 17),
        "full_lmk_faces_idx": rng.integers(0, num_faces, (1, 68)),
        "full_lmk_bary_coords": bary(1, 68),
    }
