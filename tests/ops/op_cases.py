"""One small call of every facegeom op, with its reference: the cases that the
policy tests (test_policies.py) and the property tests (test_properties.py) share.

Each case's arguments are in the op's own (batched) layout, so the public function
``facegeom.ops.<name>`` and ``facegeom.ops.reference.<name>`` take the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from facegeom import ops
from facegeom.ops import reference
from facegeom.testing import FLAME_PARENTS, lbs_case


@dataclass
class OpCase:
    name: str
    op: Callable
    ref: Callable
    args: tuple
    # indices of the float tensor arguments that are differentiable inputs
    float_args: Sequence[int]


def quad_mesh(dtype=torch.float64, batch: int = 2, seed: int = 0):
    """A 3 x 3 grid of vertices (8 triangles) in z ~ 0, per batch element jittered: [B, 9, 3], faces [8, 3]."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-0.8, 0.8, 3), torch.linspace(-0.8, 0.8, 3), indexing="ij")
    grid = torch.stack([xs, ys, torch.zeros_like(xs)], -1).reshape(9, 3).to(dtype)
    vertices = grid + 0.05 * torch.randn(batch, 9, 3, generator=g, dtype=dtype)
    faces = []
    for r in range(2):
        for c in range(2):
            a, b, d, e = 3 * r + c, 3 * r + c + 1, 3 * (r + 1) + c, 3 * (r + 1) + c + 1
            faces += [[a, b, e], [a, e, d]]
    return vertices, torch.tensor(faces, dtype=torch.int64)


def clip_pos(vertices: torch.Tensor) -> torch.Tensor:
    """[B, V, 3] in [-1, 1]^2 -> clip space [B, V, 4] (z = 0.5 + z / 4, w = 1)."""
    ones = torch.ones_like(vertices[..., :1])
    return torch.cat([vertices[..., :2], 0.5 + vertices[..., 2:] / 4, ones], -1)


def cases(dtype=torch.float64, seed: int = 0, resolution=(8, 8)) -> list:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    vertices, faces = quad_mesh(dtype, seed=seed)
    tri = faces.to(torch.int32)
    pos = clip_pos(vertices)
    rast, _ = ops.rasterize(pos, tri, resolution)
    transforms = torch.cat([randn(2, 3, 3, 4), torch.tensor([0.0, 0, 0, 1], dtype=dtype).expand(2, 3, 1, 4)], -2)
    weights = torch.rand(9, 3, generator=g, dtype=dtype)
    lbs_args = lbs_case(2, dtype, seed=seed, num_vertices=9, num_betas=4, parents=FLAME_PARENTS)
    normals = torch.nn.functional.normalize(randn(2, 9, 3), dim=-1)
    topology = ops.antialias_topology(tri)
    out = [
        OpCase("blendshapes", ops.blendshapes, reference.blendshapes, (randn(2, 4), randn(4, 9, 3), randn(9, 3)),
               (0, 1, 2)),
        OpCase("rodrigues", ops.rodrigues, reference.rodrigues, (randn(5, 3),), (0,)),
        OpCase("rigid_transform", ops.rigid_transform, reference.rigid_transform,
               (ops.rodrigues(randn(2, 3, 3)), randn(2, 3, 3), torch.tensor([-1, 0, 1])), (0, 1)),
        OpCase("skin", ops.skin, reference.skin, (vertices, transforms, weights), (0, 1, 2)),
        OpCase("lbs", ops.lbs, reference.lbs, tuple(lbs_args.values()), (0, 1, 2, 3, 4, 5, 7)),
        OpCase("rasterize", ops.rasterize, lambda p, t, res: reference.rasterize(p, t, res),
               (pos, tri, resolution), (0,)),
        OpCase("interpolate", ops.interpolate, reference.interpolate, (randn(9, 2), rast, tri), (0, 1)),
        OpCase("antialias", ops.antialias, lambda c, r, p, t: reference.antialias(c, r, p, t, topology),
               (randn(2, *resolution, 2), rast, pos, tri), (0, 2)),
        OpCase("vertex_normals", ops.vertex_normals, reference.vertex_normals, (vertices, faces), (0,)),
        OpCase("sh_basis", ops.sh_basis, reference.sh_basis, (normals[0], "deca"), (0,)),
        OpCase("sh_shading", ops.sh_shading, reference.sh_shading, (normals, torch.rand(2, 9, 3, generator=g,
               dtype=dtype), randn(2, 9, 3)), (0, 1, 2)),
        OpCase("blinn_phong", ops.blinn_phong, reference.blinn_phong,
               (normals, vertices, randn(2, 3) + 3, randn(2, 3) + 3, torch.rand(2, 9, 3, generator=g, dtype=dtype),
                torch.full((2,), 8.0, dtype=dtype)), (0, 1, 2, 3, 4, 5)),
        OpCase("point_to_surface", ops.point_to_surface, reference.point_to_surface,
               (randn(2, 6, 3), vertices, faces), (0, 1)),
        OpCase("texture", ops.texture, reference.texture,
               (torch.rand(2, 8, 8, 3, generator=g, dtype=dtype), torch.rand(2, 4, 4, 2, generator=g, dtype=dtype) * 1.4 - 0.2),
               (0, 1)),
    ]
    return out


NAMES = [c.name for c in cases()]


def case(name: str, dtype=torch.float64, seed: int = 0) -> OpCase:
    return next(c for c in cases(dtype, seed) if c.name == name)


def outputs(result) -> tuple:
    """An op's result as a tuple of tensors (None outputs dropped)."""
    result = result if isinstance(result, tuple) else (result,)
    return tuple(r for r in result if r is not None)


def with_arg(args: tuple, index: int, value) -> tuple:
    return args[:index] + (value,) + args[index + 1:]


def registered_ops() -> list:
    """Every ``facegeom::`` custom op the loaded extension defines (backward ops included)."""
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("facegeom::"))
