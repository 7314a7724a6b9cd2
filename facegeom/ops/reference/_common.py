"""Helpers shared by the reference families."""
from __future__ import annotations

import torch

Tensor = torch.Tensor


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]
