"""Reading the face models' pickles safely, without chumpy.

The official FLAME ``generic_model.pkl`` (and SMPL-family files) are Python 2
pickles holding numpy arrays, ``chumpy.ch.Ch`` objects and ``scipy.sparse``
matrices; DECA / MICA's ``landmark_embedding.npy`` is a pickled dict that may
hold torch tensors; ``FLAME_masks.pkl`` and 3DDFA's ``bfm_noneck_v3.pkl`` hold
numpy arrays. ``pickle.load`` on such a file would run any code the file names,
and chumpy no longer imports on current numpy / Python.

:class:`RestrictedUnpickler` resolves only the few classes these files use:

- ``chumpy.ch.Ch`` -> a stand-in that keeps the array in the object's ``x``;
- numpy array / dtype / scalar reconstruction;
- ``scipy.sparse`` csc / csr matrices -> a stand-in keeping data / indices /
  indptr / shape, rebuilt with scipy's constructor (independent of the scipy
  version that wrote the file);
- torch tensors as pickled by ``pickle`` (``torch._utils._rebuild_tensor_v2``
  on storages that ``torch.load(..., weights_only=True)`` decodes);
- ``collections.OrderedDict``, ``set``, ``frozenset`` (chumpy's bookkeeping
  state has sets), ``copyreg._reconstructor`` for the stand-ins,
  ``_codecs.encode`` and ``bytes()`` (how protocol 2 stores bytes).

Anything else raises ``pickle.UnpicklingError`` naming the file and the class.
:func:`load` returns the unpickled object with the stand-ins converted to numpy
arrays and scipy sparse matrices.
"""
from __future__ import annotations

import ast
import codecs
import collections
import io
import os
import pickle
import struct
from typing import Any, BinaryIO, Union

import numpy as np

PathLike = Union[str, os.PathLike]

# chumpy classes found in the official model pickles: plain ``Ch`` variables.
_CHUMPY = {("chumpy.ch", "Ch"), ("chumpy", "Ch")}
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_SPARSE_MODULES = {"scipy.sparse", "scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr",
                   "scipy.sparse._csr", "scipy.sparse.compressed", "scipy.sparse._compressed"}


class ChumpyArray:
    """Stand-in for a pickled ``chumpy.ch.Ch``: keeps its state, exposes the array."""

    def __setstate__(self, state):
        self.state = state

    def to_numpy(self, source: str = "pickle") -> np.ndarray:
        state = getattr(self, "state", None)
        if not isinstance(state, dict) or "x" not in state:
            raise pickle.UnpicklingError(
                f"{source}: a chumpy object has no array 'x' (a derived chumpy expression?); "
                "only plain chumpy.ch.Ch variables can be read without chumpy")
        return np.asarray(state["x"])


class SparseMatrix:
    """Stand-in for a pickled ``scipy.sparse`` csc/csr matrix."""

    format = ""

    def __setstate__(self, state):
        self.state = state

    def to_scipy(self, source: str = "pickle"):
        import scipy.sparse

        state = getattr(self, "state", None)
        shape = None if not isinstance(state, dict) else state.get("_shape", state.get("shape"))
        if shape is None or not all(k in state for k in ("data", "indices", "indptr")):
            raise pickle.UnpicklingError(f"{source}: a scipy.sparse {self.format} matrix lacks data/indices/"
                                         "indptr/shape")
        cls = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
        return cls((np.asarray(state["data"]), np.asarray(state["indices"]), np.asarray(state["indptr"])),
                   shape=tuple(int(s) for s in shape))


class _CscMatrix(SparseMatrix):
    format = "csc"


class _CsrMatrix(SparseMatrix):
    format = "csr"


_STAND_INS = (ChumpyArray, _CscMatrix, _CsrMatrix)


def _reconstructor(cls, base, state):
    # copyreg._reconstructor restricted to the stand-ins (how protocol 0/1
    # pickles plain objects).
    if cls not in _STAND_INS or base is not object or state is not None:
        raise pickle.UnpicklingError(f"copyreg._reconstructor is only allowed for plain objects, got {cls!r}")
    return object.__new__(cls)


def _storage_from_bytes(data: bytes):
    # torch pickles a storage as torch.storage._load_from_bytes(bytes), which
    # calls an unrestricted torch.load; decode it with the weights-only loader.
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    import torch

    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a tensor's storage must be a torch storage, got {type(storage).__name__}")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                           collections.OrderedDict())


def _bytes(*args):
    # Protocol 2 writes empty bytes as a call to bytes(); nothing else is needed.
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not allowed")
    return b""


def _encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, encoding)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the classes listed in the module
    docstring; ``source`` names the file in error messages."""

    def __init__(self, file: BinaryIO, source: str = "pickle", encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CHUMPY:
            return ChumpyArray
        if module in _NUMPY_MODULES and name in ("_reconstruct", "scalar"):
            return getattr(np.core.multiarray if not hasattr(np, "_core") else np._core.multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in _SPARSE_MODULES and name in ("csc_matrix", "csr_matrix"):
            return _CscMatrix if name == "csc_matrix" else _CsrMatrix
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _reconstructor
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset"):
            return {"object": object, "set": set, "frozenset": frozenset}[name]
        if module in ("__builtin__", "builtins") and name == "bytes":
            return _bytes
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "_codecs" and name == "encode":
            return _encode
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch.storage" and name == "_load_from_bytes":
            return _storage_from_bytes
        raise pickle.UnpicklingError(
            f"{self.source}: refusing to unpickle {module}.{name}: face-model files only hold arrays, "
            "and facegeom does not run code named by a file")


def _convert(obj, source: str):
    """Replace the stand-ins by numpy arrays / scipy matrices, recursively."""
    if isinstance(obj, ChumpyArray):
        return obj.to_numpy(source)
    if isinstance(obj, SparseMatrix):
        return obj.to_scipy(source)
    if isinstance(obj, dict):
        return type(obj)((k, _convert(v, source)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_convert(v, source) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        converted = np.empty(obj.shape, dtype=object)
        for index, value in np.ndenumerate(obj):
            converted[index] = _convert(value, source)
        return converted
    return obj


def loads(data: bytes, source: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` and convert the stand-ins."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source).load()
    except pickle.UnpicklingError as error:
        if str(error).startswith(source):
            raise
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({error})") from error
    except Exception as error:  # truncated or corrupt data
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from error
    return _convert(obj, source)


def load(path: PathLike) -> Any:
    """Read a pickle file (Python 2 pickles decoded as latin1), restricted as above.

    Raises:
        FileNotFoundError: naming the path.
        pickle.UnpicklingError: for a class outside the allow-list or a corrupt file,
            naming the file.
    """
    source = os.fspath(path)
    with open(source, "rb") as f:
        return loads(f.read(), source)


def load_npy(path: PathLike) -> Any:
    """Read a ``.npy`` file, including object arrays (a pickled dict saved with
    ``np.save``, as DECA's ``landmark_embedding.npy``), without ``allow_pickle``'s
    code execution. A 0-d object array is unwrapped (``arr[()]``).
    """
    source = os.fspath(path)
    with open(source, "rb") as f:
        data = f.read()
    if not data.startswith(b"\x93NUMPY"):
        # Some tools pickle directly to a .npy name; read it as a pickle.
        return loads(data, source)
    major = data[6]
    if major == 1:
        header_len, start = struct.unpack("<H", data[8:10])[0], 10
    elif major in (2, 3):
        header_len, start = struct.unpack("<I", data[8:12])[0], 12
    else:
        raise pickle.UnpicklingError(f"{source}: unsupported .npy format version {major}")
    try:
        header = ast.literal_eval(data[start:start + header_len].decode("latin1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError) as error:
        raise pickle.UnpicklingError(f"{source}: corrupt .npy header ({error})") from error
    body = data[start + header_len:]
    if descr == "|O":
        obj = loads(body, source)
        if isinstance(obj, np.ndarray) and obj.shape == ():
            return obj[()]
        return obj
    dtype = np.dtype(descr)
    count = int(np.prod(shape)) if shape else 1
    if len(body) < count * dtype.itemsize:
        raise pickle.UnpicklingError(f"{source}: truncated .npy data")
    array = np.frombuffer(body, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C").copy()
