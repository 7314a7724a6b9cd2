"""Argument validation for every public entry point of facegeom (ops, cameras,
render, models): clear Python errors that name the argument and what was
expected, before any kernel runs.

Each public function validates its arguments once; internal calls go to the
private ``_impl``-style functions below it, which do not re-validate. Checks
that read tensor values (:func:`indices`) cost a host synchronisation on CUDA,
so they run once per entry point and are skipped while ``torch.compile`` traces.
"""
from __future__ import annotations

from typing import Sequence

import torch


def floating(name: str, t, like: torch.Tensor | None = None, like_name: str = "the other inputs"):
    """Check that ``t`` is a float32/float64 tensor with the dtype and device of ``like``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
    if like is not None and t.dtype != like.dtype:
        raise TypeError(f"{name} must have the dtype of {like_name} ({like.dtype}), got {t.dtype}")
    if like is not None and t.device != like.device:
        raise ValueError(f"{name} must be on the device of {like_name} ({like.device}), got {t.device}")
    return t


def integer(name: str, t, device: torch.device | None = None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device} like the other inputs, got {t.device}")
    return t


def shape(name: str, t: torch.Tensor, expected: Sequence, layout: str | None = None):
    """``expected`` holds ints or None (any size); raises ValueError naming ``name``.
    ``layout`` names the dims (e.g. "[V, 3, K]"); the message is only built on failure."""
    if t.dim() == len(expected) and all(e is None or s == e for s, e in zip(t.shape, expected)):
        return t
    sizes = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
    wanted = f"{layout} = {sizes}" if layout else sizes
    raise ValueError(f"{name} must have shape {wanted}, got {list(t.shape)}")


def batch_size(named_batches: dict) -> int:
    """Common batch size of inputs whose leading dims are given as {name: B}; a
    batch of 1 broadcasts (as in the smplx-style reference)."""
    sizes = {b for b in named_batches.values() if b != 1}
    if len(sizes) > 1:
        detail = ", ".join(f"{n}: {b}" for n, b in named_batches.items())
        raise ValueError(f"batch sizes do not match ({detail}); each must be the same or 1")
    return sizes.pop() if sizes else 1


def indices(name: str, t: torch.Tensor, upper: int, lower: int = 0, what: str = "indices",
            hint: str = "") -> torch.Tensor:
    """Check that every value of the integer tensor ``t`` lies in ``[lower, upper)``
    (one ``aminmax`` pass: a host sync on CUDA); raises IndexError naming ``name``.
    Empty tensors pass; skipped while ``torch.compile`` traces."""
    if t.numel() and not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(t))  # one pass, far faster than min() + max()
        if low < lower or high >= upper:
            raise IndexError(f"{name} holds {what} in [{low}, {high}]; they must lie in [{lower}, {upper})"
                             + (f" ({hint})" if hint else ""))
    return t


def landmark_weights(pred_name: str, pred: torch.Tensor, target_name: str, target: torch.Tensor, weight,
                     default: torch.Tensor) -> torch.Tensor:
    """Check a pair of ``[B, K, 2]`` landmark tensors of one shape and dtype and their per-landmark
    weight (``[K]``, ``[1, K]`` or ``[B, K]``; ``None``: ``default``, which needs K = 68); returns the
    weight as ``[1 or B, K]`` in ``pred``'s dtype and device. Raises ValueError/TypeError naming the
    argument."""
    floating(pred_name, pred)
    floating(target_name, target, pred, pred_name)
    shape(pred_name, pred, [None, None, 2], "[B, K, 2]")
    if target.shape != pred.shape:
        raise ValueError(f"{target_name} must have the shape of {pred_name} {list(pred.shape)}, "
                         f"got {list(target.shape)}")
    count = pred.shape[1]
    if weight is None:
        if count != 68:
            raise ValueError(f"the default landmark weights need 68 landmarks, got {count}: pass weight")
        weight = default
    weight = torch.as_tensor(weight).to(pred)
    if weight.dim() == 1:
        weight = weight[None]
    if weight.dim() != 2 or weight.shape[1] != count or weight.shape[0] not in (1, pred.shape[0]):
        raise ValueError(f"weight must have shape [K], [1, K] or [B, K] with K = {count}, got {list(weight.shape)}")
    return weight


def choice(name: str, value, options: Sequence):
    """Check that ``value`` is one of ``options``; raises ValueError naming ``name``."""
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def boolean(name: str, value):
    """Check that ``value`` is a bool (not an int or a string); raises TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def optional_count(name: str, value):
    """Check a "keep the leading k" field: None (all) or an int >= 0 (0: none); raises
    ValueError naming ``name``. One convention for every smoke-data field
    (:class:`facegeom.data.synthetic.SyntheticConfig` and the pipelines' configs)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be None (all) or an int >= 0 (0: none), got {value!r}")
    return value
