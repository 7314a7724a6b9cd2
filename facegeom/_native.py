"""Loads the compiled kernels (facegeom._C) and decides, per call, whether they serve.

If the extension is missing, or was built without CUDA and a CUDA tensor
arrives, ops fall back to their pure-PyTorch reference with a one-time warning.
"""
from __future__ import annotations

import warnings

import torch

try:
    from facegeom import _C  # noqa: F401  (loading it registers the torch.ops.facegeom ops)

    AVAILABLE = True
    WITH_CUDA = bool(_C.WITH_CUDA)
    WITH_OPENMP = bool(_C.WITH_OPENMP)
    IMPORT_ERROR: str | None = None
except ImportError as error:  # a source checkout that was never built
    AVAILABLE = False
    WITH_CUDA = False
    WITH_OPENMP = False
    IMPORT_ERROR = str(error)

_warned: set[str] = set()


def serves(op_name: str, device: torch.device) -> bool:
    """True when the compiled kernel handles tensors on ``device``; otherwise
    warns once per (op, reason) that the reference implementation is used."""
    if AVAILABLE and (device.type == "cpu" or (device.type == "cuda" and WITH_CUDA)):
        return True
    reason = (
        f"facegeom._C is not built ({IMPORT_ERROR})"
        if not AVAILABLE
        else f"facegeom._C was built without {device.type} support"
    )
    key = f"{op_name}:{reason}"
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"facegeom.ops.{op_name}: {reason}; using the slower pure-PyTorch reference. "
            "Build the extension with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False
