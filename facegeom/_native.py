"""Loads the compiled kernels (facegeom._C) and decides, per call, whether they serve.

If the extension is missing, was built without CUDA and a CUDA tensor arrives,
or is a stale build that lacks an op, the op falls back to its pure-PyTorch
reference with a one-time warning. This module is the one place that decides
it: op modules register their fake/autograd kernels under
``if _native.has_op(name)`` and dispatch with ``if _native.serves(name, device)``.

``BUILD`` is ``facegeom/_build.json``, written by setup.py beside the library: the
torch version (and CUDA settings) it was compiled against. A C++ extension is tied
to the torch it was built with; when the running torch differs, importing warns
(or, if the library then fails to load, ``IMPORT_ERROR`` says why).
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Optional

import torch

BUILD_INFO_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build.json")


def read_build_info(path: str = BUILD_INFO_PATH) -> dict:
    """setup.py's record of the build (``{"torch": "2.13.0+cpu", ...}``); ``{}`` when
    absent or unreadable (a library built by other means)."""
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def torch_mismatch(info: dict, running: str = torch.__version__) -> Optional[str]:
    """A message when the extension was built against another torch than ``running``
    (exact version strings, local tag included: ``2.13.0+cpu`` and ``2.13.0+cu126`` are
    different builds), else None."""
    built = info.get("torch")
    if not built or built == running:
        return None
    return (f"facegeom._C was built against torch {built} but torch {running} is running; "
            "the compiled kernels may fail to load or misbehave. Rebuild facegeom against this torch: "
            "`pip install --no-build-isolation --force-reinstall --no-deps .` "
            "(or `python setup.py build_ext --inplace` in a source checkout).")


BUILD = read_build_info()
TORCH_MISMATCH = torch_mismatch(BUILD)
if TORCH_MISMATCH:
    warnings.warn(TORCH_MISMATCH, RuntimeWarning, stacklevel=2)

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
    IMPORT_ERROR = str(error) + (f" ({TORCH_MISMATCH})" if TORCH_MISMATCH else "")

_warned: set[str] = set()


def has_op(kernel: str) -> bool:
    """True when ``torch.ops.facegeom.<kernel>`` exists: ``_C`` is loaded and was
    built with that op (a stale build of an older source lacks newer ops)."""
    return AVAILABLE and hasattr(torch.ops.facegeom, kernel)


def serves(op_name: str, device: torch.device, kernel: Optional[str] = None) -> bool:
    """True when the compiled ``kernel`` (default: ``op_name``) handles tensors on
    ``device``; otherwise warns once per (op, reason) that the reference
    implementation of ``facegeom.ops.<op_name>`` is used."""
    kernel = op_name if kernel is None else kernel
    if not AVAILABLE:
        reason = f"facegeom._C is not built ({IMPORT_ERROR})"
    elif not has_op(kernel):
        reason = f"facegeom._C was built without the {kernel} op (a stale build)"
    elif device.type == "cpu" or (device.type == "cuda" and WITH_CUDA):
        return True
    else:
        reason = f"facegeom._C was built without {device.type} support"
    key = f"{op_name}:{reason}"
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"facegeom.ops.{op_name}: {reason}; using the slower pure-PyTorch reference. "
            "Build the extension with `pip install --no-build-isolation -e .`.",
            RuntimeWarning,
            stacklevel=4,  # the caller of the public op (public -> _impl -> serves)
        )
    return False
