"""Procedural meshes and query sets for the point-to-surface benchmarks and tests."""
from __future__ import annotations

import math

import torch

NUM_QUERIES = 100_000


def head_mesh(num_faces: int = 9976, dtype=torch.float32):
    """A closed UV-sphere-like surface deformed into a head-sized bumpy shape
    (~0.2 m), with exactly ``num_faces`` faces when it is 2 * rows * columns."""
    rows = int(round(math.sqrt(num_faces / 2 / 1.5)))
    columns = num_faces // (2 * rows)
    theta = torch.linspace(0, math.pi, rows + 2, dtype=torch.float64)[1:-1]  # rows rings
    phi = torch.arange(columns, dtype=torch.float64) * (2 * math.pi / columns)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    radius = 1 + 0.08 * torch.sin(3 * t) * torch.cos(2 * p) + 0.03 * torch.sin(7 * p) * torch.sin(t) ** 2
    ring = torch.stack([0.08 * radius * torch.sin(t) * torch.cos(p), 0.1 * radius * torch.cos(t),
                        0.09 * radius * torch.sin(t) * torch.sin(p)], -1).reshape(-1, 3)
    vertices = torch.cat([ring, torch.tensor([[0, 0.1, 0], [0, -0.1, 0]], dtype=torch.float64)])
    r, c = torch.meshgrid(torch.arange(rows - 1), torch.arange(columns), indexing="ij")
    a = r * columns + c
    b = r * columns + (c + 1) % columns
    quads = [torch.stack([a, a + columns, b], -1), torch.stack([b, a + columns, b + columns], -1)]
    top, bottom = rows * columns, rows * columns + 1
    cols = torch.arange(columns)
    caps = [torch.stack([torch.full_like(cols, top), cols, (cols + 1) % columns], -1),
            torch.stack([torch.full_like(cols, bottom), (rows - 1) * columns + (cols + 1) % columns,
                         (rows - 1) * columns + cols], -1)]
    faces = torch.cat([q.reshape(-1, 3) for q in quads] + caps)
    return vertices.to(dtype), faces


def queries(vertices: torch.Tensor, faces: torch.Tensor, kind: str, count: int = NUM_QUERIES,
            seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = vertices.double()
    lo, hi = v.min(0).values, v.max(0).values
    if kind == "uniform":
        return (lo + (hi - lo) * torch.rand(count, 3, generator=g, dtype=torch.float64)).to(vertices.dtype)
    tri = v[faces]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1)
    face = torch.multinomial(area, count, replacement=True, generator=g)
    u = torch.rand(count, 2, generator=g, dtype=torch.float64)
    flip = u.sum(1) > 1
    u[flip] = 1 - u[flip]
    w = torch.stack([1 - u.sum(1), u[:, 0], u[:, 1]], 1)
    surface = (w[:, :, None] * tri[face]).sum(1)
    noise = torch.randn(count, 3, generator=g, dtype=torch.float64) * 0.01 * (hi - lo).norm()
    return (surface + noise).to(vertices.dtype)
