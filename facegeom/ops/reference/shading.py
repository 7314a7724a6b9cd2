"""3. Shading: vertex normals, spherical harmonics, Blinn-Phong (API.md §3).

Shapes: B batch, V vertices (or H x W pixels), F faces.
"""
from __future__ import annotations

import math

import torch

from facegeom.ops.reference._common import Tensor, _cross

SH_CONVENTIONS = ("deep3d", "deca", "irradiance")


def _safe_normalize(x: Tensor) -> Tensor:
    """x / |x| along the last dim; zero (with zero gradient) where |x|^2 is zero."""
    len2 = (x * x).sum(-1, keepdim=True)
    nonzero = len2 > 0
    inv_len = torch.where(nonzero, torch.rsqrt(torch.where(nonzero, len2, torch.ones_like(len2))), 0.0)
    return x * inv_len


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals.

    vertices [B, V, 3] or [V, 3], faces [F, 3] integer -> [B, V, 3] or [V, 3].
    Each face adds (p1 - p0) x (p2 - p0) (twice its area times its unit normal)
    to its three vertices; the sums are normalised, zero where they vanish, NaN where
    a sum is not finite (a NaN/Inf corner, or an overflow: docs/ops.md "Non-finite values").
    """
    faces = faces.long()
    p0 = vertices[..., faces[:, 0], :]  # [B, F, 3]
    p1 = vertices[..., faces[:, 1], :]
    p2 = vertices[..., faces[:, 2], :]
    face_normals = _cross(p1 - p0, p2 - p0)  # [B, F, 3]
    sums = torch.zeros_like(vertices)
    for corner in range(3):
        sums = sums.index_add(-2, faces[:, corner], face_normals)  # [B, V, 3]
    # Divide out the largest component first so that tiny or huge meshes do not
    # under/overflow the squared length; below the smallest normal number -> zero.
    largest = sums.abs().amax(-1, keepdim=True)  # [B, V, 1]
    usable = largest >= torch.finfo(sums.dtype).tiny
    unit = _safe_normalize(sums / torch.where(usable, largest, torch.ones_like(largest)))
    finite = torch.isfinite(sums).all(-1, keepdim=True)  # NaN in (or overflow) -> NaN out
    return torch.where(finite, torch.where(usable, unit, 0.0), float("nan"))


def sh_basis(normals: Tensor, convention: str = "deep3d") -> Tensor:
    """Order-2 SH basis of unit normals [..., 3] -> [..., 9] in one of SH_CONVENTIONS."""
    x, y, z = normals.unbind(-1)
    one = torch.ones_like(x)
    pi = math.pi
    if convention == "deep3d":  # Deep3DFaceRecon: SH.a, SH.c and compute_color's Y
        a = [pi, 2 * pi / math.sqrt(3.0), 2 * pi / math.sqrt(8.0)]
        c = [1 / math.sqrt(4 * pi), math.sqrt(3.0) / math.sqrt(4 * pi), 3 * math.sqrt(5.0) / math.sqrt(12 * pi)]
        b1, b2 = a[1] * c[1], a[2] * c[2]
        terms = [a[0] * c[0] * one, -b1 * y, b1 * z, -b1 * x, b2 * x * y, -b2 * y * z,
                 0.5 * b2 / math.sqrt(3.0) * (3 * z * z - 1), -b2 * x * z, 0.5 * b2 * (x * x - y * y)]
    elif convention == "deca":  # DECA add_SHlight: monomials times constant_factor
        factors = [1 / math.sqrt(4 * pi)] + [(2 * pi / 3) * math.sqrt(3 / (4 * pi))] * 3 \
            + [(pi / 4) * 3 * math.sqrt(5 / (12 * pi))] * 3 \
            + [(pi / 4) * 1.5 * math.sqrt(5 / (12 * pi)), (pi / 4) * 0.5 * math.sqrt(5 / (4 * pi))]
        monomials = [one, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1]
        terms = [f * m for f, m in zip(factors, monomials)]
    elif convention == "irradiance":  # Ramamoorthi-Hanrahan, Kaolin's constants
        b0, b1, b2 = pi, 2 * pi / 3, pi / 4
        terms = [0.282095 * b0 * one, -0.488603 * b1 * y, 0.488603 * b1 * z, -0.488603 * b1 * x,
                 1.092548 * b2 * x * y, -1.092548 * b2 * y * z, 0.315392 * b2 * (3 * z * z - 1),
                 -1.092548 * b2 * x * z, 0.546274 * b2 * (x * x - y * y)]
    else:
        raise ValueError(f"convention must be one of {SH_CONVENTIONS}, got {convention!r}")
    return torch.stack(terms, dim=-1)  # [..., 9]


def sh_shading(normals: Tensor, albedo: Tensor, sh_coeffs: Tensor, convention: str = "deep3d") -> Tensor:
    """albedo * (sh_basis(normals) @ sh_coeffs), per colour channel.

    sh_coeffs [B, 9, 3]: normals and albedo [B, ..., 3] (batches of 1 broadcast);
    sh_coeffs [9, 3]: normals and albedo any [..., 3].
    """
    basis = sh_basis(normals, convention)  # [B, ..., 9]
    if sh_coeffs.dim() == 2:
        return albedo * (basis @ sh_coeffs)
    flat = basis.reshape(basis.shape[0], math.prod(basis.shape[1:-1]), 9)  # [B, M, 9] (explicit: B may be 0)
    radiance = torch.matmul(flat, sh_coeffs)  # [B, M, 3]
    return albedo * radiance.reshape(radiance.shape[0], *basis.shape[1:-1], 3)


def blinn_phong(normals: Tensor, points: Tensor, light_pos: Tensor, camera_pos: Tensor,
                specular_albedo: Tensor, shininess) -> Tensor:
    """Blinn-Phong specular: specular_albedo * max(n . h, 0) ** shininess.

    normals, points [B, ..., 3] (or [N, 3]); light_pos, camera_pos [B, 3] or [3];
    specular_albedo [B, ..., 3] or [B, ..., 1]; shininess float or Tensor [B].
    h = normalize(normalize(camera - p) + normalize(light - p)); a zero vector
    normalises to zero, and the lobe is 0 (zero gradient) where n . h <= 0.
    """
    middle = [1] * (points.dim() - 2)
    if light_pos.dim() == 2:
        light_pos = light_pos.view(light_pos.shape[0], *middle, 3)
    if camera_pos.dim() == 2:
        camera_pos = camera_pos.view(camera_pos.shape[0], *middle, 3)
    if isinstance(shininess, Tensor) and shininess.dim() == 1:
        shininess = shininess.view(shininess.shape[0], *middle, 1)
    to_light = _safe_normalize(light_pos - points)
    to_camera = _safe_normalize(camera_pos - points)
    half = _safe_normalize(to_light + to_camera)
    cos = (normals * half).sum(-1, keepdim=True)  # [B, ..., 1]
    lit = cos > 0
    lobe = torch.where(lit, torch.where(lit, cos, torch.ones_like(cos)) ** shininess, 0.0)
    lobe = torch.where(torch.isnan(cos), cos, lobe)  # NaN/Inf input -> NaN (docs/ops.md), not 0
    return specular_albedo * lobe.expand(*lobe.shape[:-1], 3)  # [B, ..., 3] also for 1-channel albedo
