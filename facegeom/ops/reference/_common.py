"""Helpers shared by the reference families."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _cross(a: Tensor, b: Tensor) -> Tensor:
    """a x b over the last dim (3), written out as the kernels do: separate products and
    differences, so a x a is exactly 0 (torch.linalg.cross may fuse a multiply-add on the
    CPU, leaving a rounding residue that makes a degenerate triangle look non-degenerate)."""
    return torch.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
                        a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                        a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], -1)
