"""Albedo in FLAME's UV space, as the tracker builds it: ``FLAMETex`` (``MT:flame/FLAME.py:277-316``,
PIPELINES.md §7.2), and the UV layout of the head template .obj (``MT:renderer.py:61-64``).

``MT`` = ``Zielon/metrical-tracker`` at c2a517244759d7eeaa0e84893d6748e75293f81a.
"""
from __future__ import annotations

import math
import os
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class FlameTexture(nn.Module):
    """``texture = mean + Σ_k tex_k basis_k`` -> ``[B, 3, S, S]`` UV image (``S = 512`` for FLAME's files)
    -> bilinear resize to ``image_size`` -> channels reversed (BGR -> RGB) -> ``/ 255``.

    Args:
        mean: ``[S*S*3]`` texture mean (0-255 scale); basis: ``[S*S*3, K]`` components.
        image_size: ``(H, W)`` of the frames (``config.image_size``, the size the tracker resizes to).
    """

    def __init__(self, mean, basis, image_size: Sequence[int]):
        super().__init__()
        mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(1, -1)
        basis = torch.as_tensor(np.asarray(basis), dtype=torch.float32)
        if basis.dim() != 2 or basis.shape[0] != mean.shape[1]:
            raise ValueError(f"basis must be [N={mean.shape[1]}, K], got {list(basis.shape)}")
        side = int(round(math.sqrt(mean.shape[1] / 3)))
        if side * side * 3 != mean.shape[1]:
            raise ValueError(f"the texture mean must hold S*S*3 values, got {mean.shape[1]}")
        self.side = side
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.register_buffer("texture_mean", mean)
        self.register_buffer("texture_basis", basis)

    @property
    def n_tex(self) -> int:
        return self.texture_basis.shape[1]

    @classmethod
    def from_file(cls, path, image_size: Sequence[int], n_tex: int = 140) -> "FlameTexture":
        """Read FLAME's ``FLAME_texture.npz`` (``mean``, ``tex_dir``, 200 components, scale 1) or the BFM->FLAME
        conversion (``MU``, ``PC``, 199 components, scale 255), keeping the first ``n_tex`` components
        (``MT:flame/FLAME.py:280-297``)."""
        source = os.fspath(path)
        data = np.load(source)
        if "tex_dir" in data.files:
            mu_key, pc_key, n_pc, scale = "mean", "tex_dir", 200, 1.0
        elif "MU" in data.files and "PC" in data.files:
            mu_key, pc_key, n_pc, scale = "MU", "PC", 199, 255.0
        else:
            raise ValueError(f"{source}: expected FLAME's texture space (mean, tex_dir) or BFM->FLAME (MU, PC), "
                             f"found keys {data.files}")
        mean = data[mu_key].reshape(1, -1)
        basis = data[pc_key].reshape(-1, n_pc)
        if not 0 < n_tex <= n_pc:
            raise ValueError(f"n_tex must be in [1, {n_pc}] for {source}, got {n_tex}")
        return cls(mean * scale, basis[:, :n_tex] * scale, image_size)

    def forward(self, tex: Tensor) -> Tensor:
        """``tex [B, K]`` -> ``[B, 3, H, W]`` RGB albedo in [0, 1] scale (differentiable)."""
        if tex.dim() != 2 or tex.shape[1] != self.n_tex:
            raise ValueError(f"tex must be [B, {self.n_tex}], got {list(tex.shape)}")
        texture = self.texture_mean.to(tex.dtype) + tex @ self.texture_basis.to(tex.dtype).T
        texture = texture.reshape(tex.shape[0], self.side, self.side, 3).permute(0, 3, 1, 2)
        texture = F.interpolate(texture, self.image_size, mode="bilinear", align_corners=False)
        return texture[:, [2, 1, 0]] / 255.0


def load_obj_uv(path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(uv [T, 2], uv_faces [F, 3], faces [F, 3])`` from a Wavefront .obj with ``vt`` lines and ``f v/vt ...``
    triangles (FLAME's ``head_template_mesh.obj``), 0-based; what PyTorch3D's ``load_obj`` returns as
    ``aux.verts_uvs``, ``faces.textures_idx`` and ``faces.verts_idx``."""
    source = os.fspath(path)
    uv, faces, uv_faces = [], [], []
    with open(source) as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "vt":
                uv.append([float(parts[1]), float(parts[2])])
            elif parts[0] == "f":
                corners = [p.split("/") for p in parts[1:]]
                if len(corners) != 3 or any(len(c) < 2 or not c[1] for c in corners):
                    raise ValueError(f"{source}:{number}: expected a triangle 'f v/vt v/vt v/vt', got {line.strip()!r}")
                faces.append([int(c[0]) - 1 for c in corners])
                uv_faces.append([int(c[1]) - 1 for c in corners])
    if not uv or not faces:
        raise ValueError(f"{source}: no texture coordinates (vt) or faces (f) found")
    return np.array(uv, dtype=np.float32), np.array(uv_faces, dtype=np.int64), np.array(faces, dtype=np.int64)
