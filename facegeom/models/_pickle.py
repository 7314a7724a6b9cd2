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

Bounded work (hostile files raise ``pickle.UnpicklingError``, never hang or
crash the interpreter):

- before unpickling, the opcode stream is scanned (:mod:`pickletools`, no
  recursion) and a nesting deeper than :data:`MAX_NESTING` is refused: CPython
  hashes a deeply nested tuple key recursively in C and overflows the C stack;
- the conversion walks each object once (memoised by identity), refuses
  reference cycles, nesting deeper than :data:`MAX_DEPTH` and containers whose
  expansion as a tree (what ``np.asarray`` or any walker would see: a list
  that holds the previous list twice, 64 times, is 2^64 elements) exceeds
  :data:`MAX_ELEMENTS`;
- a sparse matrix's structure (dtypes, ``indptr`` length / monotonicity /
  bounds, ``indices`` within the shape) is validated before scipy sees it:
  scipy's ``toarray`` trusts it and reads out of bounds otherwise.
"""
from __future__ import annotations

import ast
import codecs
import collections
import io
import math
import os
import pickle
import pickletools
import struct
from typing import Any, BinaryIO, Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]

# chumpy classes found in the official model pickles: plain ``Ch`` variables.
_CHUMPY = {("chumpy.ch", "Ch"), ("chumpy", "Ch")}
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
#: Deepest nesting of the pickled structure the opcode scan accepts.
MAX_NESTING = 1000
#: Deepest container nesting the conversion accepts (face-model files nest < 10).
MAX_DEPTH = 100
#: Largest tree expansion (container elements, arrays count 1) of the result.
MAX_ELEMENTS = 10_000_000
#: Largest dense size (elements) of a sparse matrix (SMPL-X's J_regressor has 0.6 M).
MAX_SPARSE_DENSE = 100_000_000
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
        try:
            return np.asarray(state["x"])
        except (ValueError, TypeError) as error:
            raise pickle.UnpicklingError(f"{source}: a chumpy object's array 'x' is not an array ({error})") from None


class SparseMatrix:
    """Stand-in for a pickled ``scipy.sparse`` csc/csr matrix."""

    format = ""

    def __setstate__(self, state):
        self.state = state

    def to_scipy(self, source: str = "pickle"):
        """The scipy matrix, after :func:`check_sparse_structure` (never trusts the file)."""
        import scipy.sparse

        state = getattr(self, "state", None)
        shape = None if not isinstance(state, dict) else state.get("_shape", state.get("shape"))
        if shape is None or not all(k in state for k in ("data", "indices", "indptr")):
            raise pickle.UnpicklingError(f"{source}: a scipy.sparse {self.format} matrix lacks data/indices/"
                                         "indptr/shape")
        data, indices, indptr, shape = check_sparse_structure(
            state["data"], state["indices"], state["indptr"], shape, self.format, source)
        cls = scipy.sparse.csc_matrix if self.format == "csc" else scipy.sparse.csr_matrix
        return cls((data, indices, indptr), shape=shape)


def check_sparse_structure(data, indices, indptr, shape, format: str, source: str = "pickle"):
    """Validate a compressed sparse (``csc`` / ``csr``) matrix's arrays before any
    scipy call and return them as ``(data, indices int64, indptr int64, shape)``.

    Checks: ``shape`` two non-negative integers; ``indices`` / ``indptr`` 1-D
    integer arrays, ``data`` a 1-D bool / integer / float / complex array;
    ``indptr`` has ``major + 1`` entries (columns for csc, rows for csr), starts
    at 0, never decreases, and ends at ``nnz <= len(indices) == len(data)``;
    every stored index lies in ``[0, minor)``. Raises ``pickle.UnpicklingError``
    naming ``source``.
    """
    def fail(reason):
        raise pickle.UnpicklingError(f"{source}: corrupt scipy.sparse {format} matrix: {reason}")

    try:
        shape = tuple(shape)
    except TypeError:
        fail(f"shape {shape!r} is not a pair of integers")
    if len(shape) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, (bool, np.bool_))
                                  for n in shape):
        fail(f"shape {shape!r} is not a pair of integers")
    shape = tuple(int(n) for n in shape)
    if min(shape) < 0 or max(shape) > np.iinfo(np.int64).max // 2:
        fail(f"shape {shape} out of range")
    arrays = {}
    for name, value, kinds in (("data", data, "biufc"), ("indices", indices, "iu"), ("indptr", indptr, "iu")):
        if not isinstance(value, np.ndarray):
            fail(f"{name} is a {type(value).__name__}, not a numpy array")
        if value.ndim != 1 or value.dtype.kind not in kinds or value.dtype.hasobject:
            fail(f"{name} must be a 1-D {'numeric' if name == 'data' else 'integer'} array, got "
                 f"{value.dtype} of shape {list(value.shape)}")
        if value.dtype.kind == "u" and value.size and value.max() > np.iinfo(np.int64).max:
            fail(f"{name} holds values beyond int64")
        arrays[name] = value
    major, minor = (shape[1], shape[0]) if format == "csc" else shape
    indptr = arrays["indptr"].astype(np.int64)
    indices = arrays["indices"].astype(np.int64)
    if indptr.size != major + 1:
        fail(f"indptr has {indptr.size} entries, expected {major + 1} for shape {shape}")
    if indptr[0] != 0 or (np.diff(indptr) < 0).any():
        fail("indptr must start at 0 and never decrease")
    nnz = int(indptr[-1])
    if indices.size != arrays["data"].size or nnz > indices.size:
        fail(f"indptr ends at {nnz} but indices / data hold {indices.size} / {arrays['data'].size} entries")
    indices, data = indices[:nnz], arrays["data"][:nnz]
    if nnz and (indices.min() < 0 or indices.max() >= minor):
        fail(f"indices must lie in [0, {minor}), got [{indices.min()}, {indices.max()}]")
    return data, indices, indptr, shape


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


class _Converter:
    """Replace the stand-ins by numpy arrays / scipy matrices: each object once
    (memoised by identity, so shared references stay shared), with cycles,
    nesting deeper than ``MAX_DEPTH`` and tree expansions beyond ``MAX_ELEMENTS``
    refused (see the module docstring)."""

    def __init__(self, source: str):
        self.source = source
        self.memo = {}  # id -> (converted, tree size); the originals stay alive in the unpickled object
        self.active = set()

    def fail(self, reason: str):
        raise pickle.UnpicklingError(f"{self.source}: refusing the pickle: {reason}")

    def __call__(self, obj, depth: int = 0):
        key = id(obj)
        if key in self.memo:
            return self.memo[key]
        if key in self.active:
            self.fail("it holds a reference cycle (a self-referential container)")
        if depth > MAX_DEPTH:
            self.fail(f"it nests containers deeper than {MAX_DEPTH} levels")
        self.active.add(key)
        try:
            result = self._convert(obj, depth)
        finally:
            self.active.discard(key)
        if result[1] > MAX_ELEMENTS:
            self.fail(f"it expands to more than {MAX_ELEMENTS} elements (shared references nested as a bomb)")
        self.memo[key] = result
        return result

    def _items(self, values, depth):
        converted, size = [], 1
        for value in values:
            item, count = self(value, depth + 1)
            converted.append(item)
            size += count
            if size > MAX_ELEMENTS:
                self.fail(f"it expands to more than {MAX_ELEMENTS} elements (shared references nested as a bomb)")
        return converted, size

    def _convert(self, obj, depth):
        if isinstance(obj, (ChumpyArray, SparseMatrix)):
            state = getattr(obj, "state", None)
            if isinstance(state, dict):
                values, size = self._items(state.values(), depth)
                obj.state = dict(zip(state.keys(), values))
            else:
                size = 1
            return (obj.to_numpy(self.source) if isinstance(obj, ChumpyArray) else obj.to_scipy(self.source)), size
        if isinstance(obj, dict):
            values, size = self._items(obj.values(), depth)
            return type(obj)(zip(obj.keys(), values)), size
        if isinstance(obj, (list, tuple)):
            values, size = self._items(obj, depth)
            return (values if type(obj) is list else type(obj)(values)), size
        if isinstance(obj, (set, frozenset)):
            return obj, 1 + len(obj)  # hashable members only: nothing to convert
        if isinstance(obj, np.ndarray) and obj.dtype == object:
            values, size = self._items(obj.reshape(-1), depth)
            converted = np.empty(obj.size, dtype=object)
            converted[:] = values
            return converted.reshape(obj.shape), size
        return obj, 1


def _convert(obj, source: str):
    """Replace the stand-ins by numpy arrays / scipy matrices (bounded, see :class:`_Converter`)."""
    return _Converter(source)(obj)[0]


_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}


def check_nesting(data: bytes, source: str = "pickle", limit: Optional[int] = None) -> int:
    """Scan a pickle's opcodes (no object is built) and return the deepest nesting
    of the structure it builds; raise ``pickle.UnpicklingError`` beyond ``limit``
    (default :data:`MAX_NESTING`) or on a corrupt stream.

    Each stack entry carries the depth of the object it stands for: a leaf is 0,
    an object built from others is one more than the deepest of them, and
    appending / setting items raises a container's depth to cover its items.
    A memoised object keeps the depth it had when memoised (later mutation is
    caught by :class:`_Converter`), which is exact for tuples, the only objects
    CPython hashes recursively.
    """
    limit = MAX_NESTING if limit is None else limit
    stack, marks, memo = [], [], {}

    def pop(count):
        if count > len(stack) - (marks[-1] if marks else 0):
            raise pickle.UnpicklingError(f"{source}: not a readable pickle (stack underflow)")
        taken = stack[len(stack) - count:] if count else []
        del stack[len(stack) - count:]
        return taken

    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in _PUTS:
                if stack:
                    memo[arg] = stack[-1]
                continue
            if name == "MEMOIZE":
                if stack:
                    memo[len(memo)] = stack[-1]
                continue
            if name in _GETS:
                stack.append(memo.get(arg, 0))
                continue
            if name == "MARK":
                marks.append(len(stack))
                continue
            if name in ("PROTO", "FRAME", "STOP"):
                continue
            before = opcode.stack_before
            popped = []
            if pickletools.markobject in before:
                if not marks:
                    raise pickle.UnpicklingError(f"{source}: not a readable pickle (no MARK for {name})")
                start = marks.pop()
                popped = stack[start:]
                del stack[start:]
                head = pop(before.index(pickletools.markobject))
            else:
                head = pop(len(before))
            if name == "DUP":
                stack.extend(head * 2)
                continue
            if name in _MUTATORS:
                container, items = head[0], head[1:] + popped
                depth = max([container] + [d + 1 for d in items])
            else:
                children = head + popped
                depth = 1 + max(children) if children else 0
            if depth > limit:
                raise pickle.UnpicklingError(
                    f"{source}: refusing the pickle: it nests deeper than {limit} levels")
            stack.extend([depth] * len(opcode.stack_after))
    except pickle.UnpicklingError:
        raise
    except Exception as error:  # truncated stream, unknown opcode
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from None
    return max(stack, default=0)


def loads(data: bytes, source: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` and convert the stand-ins."""
    check_nesting(data, source)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source).load()
    except pickle.UnpicklingError as error:
        if str(error).startswith(source):
            raise
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({error})") from error
    except Exception as error:  # truncated or corrupt data
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from error
    try:
        return _convert(obj, source)
    except pickle.UnpicklingError:
        raise
    except Exception as error:  # e.g. MemoryError / ValueError from an array stand-in
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from error


def float_array(value, key: str, source: str) -> np.ndarray:
    """A float64 array of a value read from a model file (``source``), for ``key``.

    Accepts numpy arrays, nested sequences, torch tensors and scipy sparse
    matrices (any key read as a float array may arrive sparse: densified after
    a size check against :data:`MAX_SPARSE_DENSE`). Bool, integer and float
    dtypes convert; complex (the imaginary part would be dropped), datetime,
    object, string and structured values raise ``ValueError`` naming the file
    and the key.
    """
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if hasattr(value, "toarray") and hasattr(value, "shape") and not isinstance(value, np.ndarray):
        try:
            rows, cols = (int(n) for n in value.shape)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: {key} is a sparse matrix with shape {value.shape!r}") from None
        if rows * cols > MAX_SPARSE_DENSE:
            raise ValueError(f"{source}: {key} is a sparse matrix of shape {[rows, cols]}: too large to densify "
                             f"(more than {MAX_SPARSE_DENSE} elements)")
        value = value.toarray()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: {key} is not a numeric array ({error})") from None
    if array.dtype.kind not in "biuf" or array.dtype.fields is not None:
        what = {"c": "complex", "M": "datetime", "m": "timedelta", "O": "Python objects", "U": "strings",
                "S": "bytes", "V": "structured records"}.get(array.dtype.kind, str(array.dtype))
        raise ValueError(f"{source}: {key} must hold real numbers, got {what} (dtype {array.dtype})")
    return array.astype(np.float64)


def integer_array(value, key: str, source: str) -> np.ndarray:
    """An int64 array of indices read from a model file: integer dtypes, or floats
    that are all whole numbers; anything else (complex, datetime, object, strings,
    fractional or non-finite floats, unsigned values beyond int64) raises
    ``ValueError`` naming the file and the key."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: {key} is not an integer array ({error})") from None
    kind = array.dtype.kind
    if kind == "f":
        if not np.isfinite(array).all() or not np.all(array == np.round(array)) or \
                (array.size and np.abs(array).max() >= 2.0 ** 63):
            raise ValueError(f"{source}: {key} must hold integer indices, got non-integer floats")
    elif kind == "u":
        if array.size and array.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{source}: {key} holds indices beyond int64")
    elif kind not in "i" or array.dtype.fields is not None:
        raise ValueError(f"{source}: {key} must hold integer indices, got dtype {array.dtype}")
    return array.astype(np.int64)


class NotAFileError(IsADirectoryError, ValueError):
    """A model path that names a directory: an ``IsADirectoryError`` (an ``OSError``,
    what ``open`` raises) that is also a ``ValueError`` (the house rule for bad input),
    with a message naming the path."""


def read_bytes(path: PathLike, what: str = "model file") -> bytes:
    """The bytes of ``path``; ``FileNotFoundError`` / :class:`NotAFileError` name it."""
    source = os.fspath(path)
    if os.path.isdir(source):
        raise NotAFileError(f"{source}: is a directory, not a {what}")
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such file ({what})")
    with open(source, "rb") as f:
        return f.read()


def load(path: PathLike) -> Any:
    """Read a pickle file (Python 2 pickles decoded as latin1), restricted as above.

    Raises:
        FileNotFoundError: naming the path.
        NotAFileError: the path is a directory (an ``IsADirectoryError`` and a ``ValueError``).
        pickle.UnpicklingError: for a class outside the allow-list, a corrupt file or
            a structure beyond the bounds of the module docstring, naming the file.
    """
    source = os.fspath(path)
    return loads(read_bytes(source, "pickle file"), source)


def load_npy(path: PathLike) -> Any:
    """Read a ``.npy`` file, including object arrays (a pickled dict saved with
    ``np.save``, as DECA's ``landmark_embedding.npy``), without ``allow_pickle``'s
    code execution. A 0-d object array is unwrapped (``arr[()]``).
    """
    source = os.fspath(path)
    data = read_bytes(source, ".npy file")
    if not data.startswith(b"\x93NUMPY"):
        # Some tools pickle directly to a .npy name; read it as a pickle.
        return loads(data, source)
    try:
        major = data[6]
        if major == 1:
            header_len, start = struct.unpack("<H", data[8:10])[0], 10
        elif major in (2, 3):
            header_len, start = struct.unpack("<I", data[8:12])[0], 12
        else:
            raise pickle.UnpicklingError(f"{source}: unsupported .npy format version {major}")
        text = data[start:start + header_len].decode("latin1")
        if len(text) != header_len or len(text) > 65536:
            raise ValueError("truncated or oversized header")
        header = ast.literal_eval(text)
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
            raise ValueError(f"shape {shape!r} is not a tuple of non-negative integers")
        dtype = np.dtype(descr) if descr != "|O" else None
    except pickle.UnpicklingError:
        raise
    except Exception as error:  # IndexError / struct.error / SyntaxError / RecursionError / TypeError ...
        raise pickle.UnpicklingError(f"{source}: corrupt .npy header ({type(error).__name__}: {error})") from None
    body = data[start + header_len:]
    if dtype is None:
        obj = loads(body, source)
        if isinstance(obj, np.ndarray) and obj.shape == ():
            return obj[()]
        return obj
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"{source}: unsupported .npy dtype {descr!r} (plain numeric arrays only)")
    count = math.prod(shape)
    if len(body) < count * dtype.itemsize:
        raise pickle.UnpicklingError(f"{source}: truncated .npy data")
    array = np.frombuffer(body, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C").copy()
