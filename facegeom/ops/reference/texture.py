"""5. Texture sampling with mipmaps, nvdiffrast's ``texture`` / ``texture_construct_mip``.

Sources (semantics transcribed into facegeom's own code, not copied):
NVlabs/nvdiffrast csrc/common/texture.cpp:69 (calculateMipInfo: which levels exist),
csrc/common/texture_kernel.cu:99 (indexCubeMap), :190 (indexCubeMapGradST), :323
(indexTextureNearest), :369 (indexTextureLinear), :478 (calculateMipLevel), :591
(fetchQuad, cube corners), :645 (MipBuildKernel), :710 (forward), :906 (gradients);
nvdiffrast/torch/ops.py:345 (texture: 'auto' filter, max_mip_level=0 -> 'linear').

Shapes: ``tex [N, H, W, C]`` (2D) or ``[N, 6, H, W, C]`` (cube map, H == W), N = 1
broadcasts over the images; ``uv [B, h, w, 2]`` (2D, texture coordinates with
(0, 0) at the first texel's corner) or ``[B, h, w, 3]`` (cube, a direction);
``uv_da [B, h, w, 4]`` = (du/dX, du/dY, dv/dX, dv/dY) or ``[B, h, w, 6]`` =
(dx/dX, dx/dY, dy/dX, dy/dY, dz/dX, dz/dY) for cube maps; ``mip_level_bias
[B, h, w]``; ``out [B, h, w, C]``.

Gradients are PyTorch's autograd of this code, with one exception that matches
nvdiffrast: the mip level's gradient w.r.t. the footprint (``uv_da``) uses
nvdiffrast's closed form (texture_kernel.cu:529), which is finite where the
footprint is isotropic (where ``sqrt`` has no derivative).

Cube maps: the face of a direction is nvdiffrast's (largest |component|, ties to
y over x and z over both); a bilinear footprint that leaves the face reads the
neighbouring face's texel found geometrically (the texel centre extended past the
edge, projected onto the cube) and a footprint at a face corner replaces the one
missing texel by the mean of the other three (nvdiffrast's tables c_cubeWrapMask1/2
encode the same neighbours; tests/ops/test_texture.py checks them against each other).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

from facegeom.ops.reference._common import Tensor

FILTER_MODES = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
BOUNDARY_MODES = ("cube", "wrap", "clamp", "zero")
#: Levels above the base that a texture can have (nvdiffrast's TEX_MAX_MIP_LEVEL): textures
#: are at most 2**16 texels per side.
TEXTURE_MAX_MIP_LEVEL = 16
#: The cube-corner mean multiplies by this float32 constant, as nvdiffrast does (not / 3).
CUBE_CORNER_THIRD = 0.33333333
#: 0.5 / ln(2): d(0.5 * log2(x)) = CONSTANT * dx / x (texture_kernel.cu:531).
HALF_OVER_LN2 = 0.72134752


# --------------------------------------------------------------------------- #
# Mip stack                                                                   #
# --------------------------------------------------------------------------- #

def mip_level_sizes(height: int, width: int, max_mip_level: Optional[int] = None) -> List[Tuple[int, int]]:
    """(h, w) of mip levels 1, 2, ... of a ``height x width`` texture (nvdiffrast's
    calculateMipInfo): each level halves each side that is still > 1, down to 1 x 1 or
    ``max_mip_level`` levels. Raises ValueError where a side > 1 is odd."""
    sizes: List[Tuple[int, int]] = []
    h, w = height, width
    while (h > 1 or w > 1) and (max_mip_level is None or len(sizes) < max_mip_level):
        if (w > 1 and w % 2) or (h > 1 and h % 2):
            raise ValueError(
                f"cannot build mip level {len(sizes) + 1} of a {height} x {width} texture: level "
                f"{len(sizes)} is {h} x {w} and an odd side > 1 cannot be halved. Resize the texture "
                "to powers of two or limit the levels with max_mip_level"
            )
        h, w = max(h // 2, 1), max(w // 2, 1)
        sizes.append((h, w))
    return sizes


def texture_construct_mip(tex: Tensor, max_mip_level: Optional[int] = None, cube_mode: bool = False) -> List[Tensor]:
    """Mip levels 1, 2, ... of ``tex`` (2x2 box filter; 1x2 where one side is already 1),
    each shaped like ``tex`` with halved H, W; differentiable (texture_kernel.cu:645)."""
    planes = tex.reshape(-1, *tex.shape[-3:])  # [P, H, W, C], P = N or 6 N
    levels = []
    for _ in mip_level_sizes(planes.shape[1], planes.shape[2], max_mip_level):
        h, w = planes.shape[1], planes.shape[2]
        if h > 1 and w > 1:
            planes = 0.25 * (planes[:, 0::2, 0::2] + planes[:, 0::2, 1::2] + planes[:, 1::2, 0::2]
                             + planes[:, 1::2, 1::2])
        elif h == 1:
            planes = 0.5 * (planes[:, :, 0::2] + planes[:, :, 1::2])
        else:
            planes = 0.5 * (planes[:, 0::2] + planes[:, 1::2])
        levels.append(planes.reshape(*tex.shape[:-3], *planes.shape[1:]))
    return levels


# --------------------------------------------------------------------------- #
# Cube maps                                                                   #
# --------------------------------------------------------------------------- #

def _cube_face(direction: Tensor):
    """(face [...] int64, s [...], t [...], valid [...]) of directions [..., 3]
    (texture_kernel.cu:99): faces +x, -x, +y, -y, +z, -z = 0..5; (s, t) in [0, 1]."""
    x, y, z = direction.unbind(-1)
    ax, ay, az = x.abs(), y.abs(), z.abs()
    z_major = az > torch.maximum(ax, ay)
    y_major = ~z_major & (ay > ax)
    major = torch.where(z_major, z, torch.where(y_major, y, x))
    face = torch.where(z_major, 4, torch.where(y_major, 2, 0)) + (major < 0).long()
    along_s = torch.where(z_major | y_major, x, z)
    along_t = torch.where(y_major, z, y)
    half = 0.5 / major.abs()
    flip_s = (face == 0) | (face == 5)
    s = along_s * torch.where(flip_s, -half, half) + 0.5
    t = along_t * torch.where(face == 2, half, -half) + 0.5
    valid = torch.isfinite(s) & torch.isfinite(t)
    s = torch.where(valid, s, torch.zeros_like(s)).clamp(0, 1)
    t = torch.where(valid, t, torch.zeros_like(t)).clamp(0, 1)
    return face, s, t, valid


def _cube_direction(face: Tensor, s: Tensor, t: Tensor) -> Tensor:
    """The inverse of :func:`_cube_face` on the face's plane (|major component| = 1),
    for any (s, t), also outside [0, 1]: [..., 3]."""
    a, b = 2 * s - 1, 2 * t - 1  # s = a_s / 2 + 0.5 with a_s the signed in-plane component
    one = torch.ones_like(a)
    by_face = [
        torch.stack([one, -b, -a], -1),   # +x: s = -z/2|x| + .5, t = -y/2|x| + .5
        torch.stack([-one, -b, a], -1),   # -x: s =  z/2|x| + .5, t = -y/2|x| + .5
        torch.stack([a, one, b], -1),     # +y: s =  x/2|y| + .5, t =  z/2|y| + .5
        torch.stack([a, -one, -b], -1),   # -y: s =  x/2|y| + .5, t = -z/2|y| + .5
        torch.stack([a, -b, one], -1),    # +z: s =  x/2|z| + .5, t = -y/2|z| + .5
        torch.stack([-a, -b, -one], -1),  # -z: s = -x/2|z| + .5, t = -y/2|z| + .5
    ]
    out = by_face[0]
    for f in range(1, 6):
        out = torch.where((face == f)[..., None], by_face[f], out)
    return out


def cube_wrap_texel(face: Tensor, ix: Tensor, iy: Tensor, size: int):
    """Where texel (ix, iy) of a ``size x size`` cube face lies when one of them is
    outside [0, size): (face, ix, iy) on the neighbouring face, in float64 geometry;
    (-1, -1, -1) where both are outside (a corner: no texel). Inside texels pass."""
    out_x = (ix < 0) | (ix >= size)
    out_y = (iy < 0) | (iy >= size)
    centre_s = (ix.double() + 0.5) / size
    centre_t = (iy.double() + 0.5) / size
    f2, s2, t2, _ = _cube_face(_cube_direction(face, centre_s, centre_t))
    nx = torch.clamp(torch.floor(s2 * size).long(), 0, size - 1)
    ny = torch.clamp(torch.floor(t2 * size).long(), 0, size - 1)
    corner = out_x & out_y
    moved = out_x ^ out_y
    face_out = torch.where(moved, f2, face)
    ix_out = torch.where(moved, nx, ix)
    iy_out = torch.where(moved, ny, iy)
    minus = torch.full_like(ix, -1)
    return (torch.where(corner, minus, face_out), torch.where(corner, minus, ix_out),
            torch.where(corner, minus, iy_out))


def cube_uv_da_to_face(direction: Tensor, uv_da: Tensor) -> Tensor:
    """(ds/dX, ds/dY, dt/dX, dt/dY) [..., 4] of the face coordinates from a direction's
    screen-space derivatives ``uv_da [..., 6]`` (texture_kernel.cu:190); zeros where
    not finite."""
    x, y, z = direction.unbind(-1)
    dxdX, dxdY, dydX, dydY, dzdX, dzdY = uv_da.unbind(-1)
    ax, ay, az = x.abs(), y.abs(), z.abs()
    z_major = az > torch.maximum(ax, ay)
    y_major = ~z_major & (ay > ax)
    x_major = ~z_major & ~y_major
    major = torch.where(z_major, z, torch.where(y_major, y, x))
    gu = torch.where(x_major, z, x)
    gv = torch.where(y_major, z, y)
    negative = major < 0
    # The -x and +z faces see z mirrored (nvdiffrast's idx & 0x09).
    mirror_z = (x_major & negative) | (z_major & ~negative)
    dzdX = torch.where(mirror_z, -dzdX, dzdX)
    dzdY = torch.where(mirror_z, -dzdY, dzdY)
    m = 1 / major.abs()
    dm = m * 0.5
    mm = m * dm
    # Signs of s and t per face: idx bits 0x34 (s) = -y, +z, -z; 0x2e (t) = -x, +y, -y, -z.
    face = torch.where(z_major, 4, torch.where(y_major, 2, 0)) + negative.long()
    neg_s = (face == 3) | (face == 4) | (face == 5)
    neg_t = (face == 1) | (face == 2) | (face == 3) | (face == 5)
    gu = gu * torch.where(neg_s, -mm, mm)
    gv = gv * torch.where(neg_t, -mm, mm)
    on_x = torch.stack([gu * dxdX + dm * dzdX, gu * dxdY + dm * dzdY,
                        gv * dxdX - dm * dydX, gv * dxdY - dm * dydY], -1)
    on_y = torch.stack([gu * dydX + dm * dxdX, gu * dydY + dm * dxdY,
                        gv * dydX + dm * dzdX, gv * dydY + dm * dzdY], -1)
    signed_dm = torch.copysign(dm, major)
    on_z = torch.stack([gu * dzdX + signed_dm * dxdX, gu * dzdY + signed_dm * dxdY,
                        gv * dzdX - dm * dydX, gv * dzdY - dm * dydY], -1)
    res = torch.where(x_major[..., None], on_x, torch.where(y_major[..., None], on_y, on_z))
    finite = torch.isfinite(res).all(-1, keepdim=True)
    return torch.where(finite, res, torch.zeros_like(res))


# --------------------------------------------------------------------------- #
# Texel lookup                                                                #
# --------------------------------------------------------------------------- #

def _image_index(num_images: int, tex_batch: int, shape: Sequence[int], device) -> Tensor:
    """The texture image of each output pixel: [B, h, w] (0 when tex broadcasts)."""
    index = torch.arange(num_images, device=device).view(-1, 1, 1).expand(*shape)
    return index if tex_batch > 1 else torch.zeros_like(index)


def _nearest(tex: Tensor, uv: Tensor, boundary: str) -> Tensor:
    """Nearest texel of the base level (texture_kernel.cu:323): [B, h, w, C]."""
    cube = boundary == "cube"
    planes = tex.reshape(-1, *tex.shape[-3:])
    h, w = planes.shape[1], planes.shape[2]
    image = _image_index(uv.shape[0], tex.shape[0], uv.shape[:3], uv.device)
    if cube:
        face, u, v, valid = _cube_face(uv)
        plane = 6 * image + face
    else:
        u, v = uv[..., 0], uv[..., 1]
        plane = image
        valid = torch.ones_like(u, dtype=torch.bool)
        if boundary == "wrap":
            u, v = u - torch.floor(u), v - torch.floor(v)
    fu, fv = torch.floor(u * w), torch.floor(v * h)
    if boundary == "zero":
        valid = (fu >= 0) & (fu < w) & (fv >= 0) & (fv < h)
    # Clamp in floating point (inf and huge coordinates too), then index.
    iu = fu.nan_to_num(0).clamp(0, w - 1).long()
    iv = fv.nan_to_num(0).clamp(0, h - 1).long()
    values = planes[plane, iv, iu]
    return torch.where(valid[..., None], values, torch.zeros_like(values))


def _bilinear(level: Tensor, uv: Tensor, boundary: str, tex_batch: int) -> Tensor:
    """Bilinear sample of one mip level [N(, 6), h_l, w_l, C] at every pixel
    (texture_kernel.cu:369 + :591): [B, h, w, C]."""
    cube = boundary == "cube"
    planes = level.reshape(-1, *level.shape[-3:])
    h, w = planes.shape[1], planes.shape[2]
    image = _image_index(uv.shape[0], tex_batch, uv.shape[:3], uv.device)
    valid = None
    if cube:
        face, u, v, valid = _cube_face(uv)
    else:
        u, v = uv[..., 0], uv[..., 1]
        if boundary == "wrap":
            u, v = u - torch.floor(u), v - torch.floor(v)
    u, v = u * w - 0.5, v * h - 0.5
    clamp_u = clamp_v = torch.zeros_like(u, dtype=torch.bool)
    if boundary == "clamp":
        u, v = u.clamp(0, w - 1), v.clamp(0, h - 1)
        # On the edge texel's centre the second texel is the first: zero uv gradient there.
        clamp_u, clamp_v = (u == 0) | (u == w - 1), (v == 0) | (v == h - 1)
    u0, v0 = torch.floor(u), torch.floor(v)
    fu, fv = u - u0, v - v0
    big = float(2 ** 40)  # keeps a wild coordinate's texel index inside int64 (it reads as outside)
    iu0, iv0 = u0.nan_to_num(-1).clamp(-big, big).long(), v0.nan_to_num(-1).clamp(-big, big).long()
    iu1, iv1 = iu0 + (~clamp_u).long(), iv0 + (~clamp_v).long()
    corners = [(iu0, iv0), (iu1, iv0), (iu0, iv1), (iu1, iv1)]  # a00, a10, a01, a11
    values, present = [], []
    for iu, iv in corners:
        if cube:
            f, iu, iv = cube_wrap_texel(face, iu, iv, w)
            ok = valid & (f >= 0)
            plane = 6 * image + f.clamp(min=0)
        else:
            if boundary == "wrap":
                iu = torch.where(iu < 0, iu + w, torch.where(iu >= w, iu - w, iu))
                iv = torch.where(iv < 0, iv + h, torch.where(iv >= h, iv - h, iv))
            ok = (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
            plane = image
        value = planes[plane, iv.clamp(0, h - 1), iu.clamp(0, w - 1)]
        values.append(torch.where(ok[..., None], value, torch.zeros_like(value)))
        present.append(ok)
    if cube:
        # A face corner: the missing texel is the mean of the other three (an invalid
        # direction has none present and reads zeros).
        missing = ~(present[0] & present[1] & present[2] & present[3])
        total = values[0] + values[1] + values[2] + values[3]
        mean = total * CUBE_CORNER_THIRD
        values = [torch.where((missing & ~ok & valid)[..., None], mean, value)
                  for value, ok in zip(values, present)]
    a00, a10, a01, a11 = values
    fu, fv = fu[..., None], fv[..., None]
    top = a00 + fu * (a10 - a00)
    bottom = a01 + fu * (a11 - a01)
    return top + fv * (bottom - top)


def _mip_level(tex: Tensor, uv: Tensor, uv_da: Optional[Tensor], mip_level_bias: Optional[Tensor],
               max_level: int, with_gradient: bool) -> Tensor:
    """The continuous mip level per pixel [B, h, w], clamped to [0, max_level]
    (texture_kernel.cu:478). Its gradient w.r.t. the footprint is nvdiffrast's
    closed form when ``with_gradient``, else it carries none (but the bias's)."""
    height, width = tex.shape[-3], tex.shape[-2]
    flevel = uv.new_zeros(uv.shape[:3])
    if uv_da is not None:
        if uv.shape[-1] == 3:
            face_da = cube_uv_da_to_face(uv, uv_da)
        else:
            face_da = uv_da
        dsdx, dsdy = face_da[..., 0] * width, face_da[..., 1] * width
        dtdx, dtdy = face_da[..., 2] * height, face_da[..., 3] * height
        a = dsdx * dsdx + dtdx * dtdx
        b = dsdy * dsdy + dtdy * dtdy
        c = dsdx * dsdy + dtdx * dtdy
        l2b = 0.5 * (a + b)
        l2n = 0.25 * (a - b) * (a - b) + c * c
        l2a = torch.sqrt(l2n)
        value = (0.5 * torch.log2(l2b + l2a)).detach()
        if with_gradient:
            dw = HALF_OVER_LN2 / (l2n + l2a * l2b)
            ab, cw, l2aw = dw * 0.5 * (a - b), dw * c, dw * l2a
            d_level = torch.stack([
                width * (dsdx * (l2aw + ab) + dsdy * cw), width * (dsdy * (l2aw - ab) + dsdx * cw),
                height * (dtdx * (l2aw + ab) + dtdy * cw), height * (dtdy * (l2aw - ab) + dtdx * cw),
            ], -1).detach()
            d_level = torch.where(torch.isfinite(d_level).all(-1, keepdim=True), d_level,
                                  torch.zeros_like(d_level))
            linear = (d_level * face_da).sum(-1)
            value = value + (linear - linear.detach())
        flevel = value
    if mip_level_bias is not None:
        flevel = flevel + (mip_level_bias if with_gradient else mip_level_bias.detach())
    # fminf(fmaxf(level, 0), max): NaN reads as 0.
    flevel = torch.where(torch.isnan(flevel), torch.zeros_like(flevel), flevel)
    return flevel.clamp(0, max_level)


# --------------------------------------------------------------------------- #
# The op                                                                      #
# --------------------------------------------------------------------------- #

def texture(
    tex: Tensor,
    uv: Tensor,
    uv_da: Optional[Tensor] = None,
    mip_level_bias: Optional[Tensor] = None,
    mip: Optional[Sequence[Tensor]] = None,
    filter_mode: str = "auto",
    boundary_mode: str = "wrap",
    max_mip_level: Optional[int] = None,
) -> Tensor:
    """Sample ``tex`` at ``uv``: facegeom.ops.texture's specification (nvdiffrast's
    ``texture``). ``mip`` is None (built here from ``tex``, differentiably, when the
    filter needs it) or the list of levels 1, 2, ... (a custom stack: gradients go to
    those tensors, not to ``tex``). Returns ``[B, h, w, C]``."""
    if filter_mode == "auto":
        filter_mode = "linear" if uv_da is None and mip_level_bias is None else "linear-mipmap-linear"
    if max_mip_level == 0 and "mipmap" in filter_mode:
        filter_mode = "linear"
    if filter_mode == "nearest":
        return _nearest(tex, uv, boundary_mode)
    levels = [tex]
    if "mipmap" in filter_mode:
        if mip is None:
            mip = texture_construct_mip(tex, max_mip_level, boundary_mode == "cube")
        levels += list(mip)
    max_level = len(levels) - 1
    trilinear = filter_mode == "linear-mipmap-linear"
    if max_level == 0:
        return _bilinear(tex, uv, boundary_mode, tex.shape[0])
    flevel = _mip_level(tex, uv, uv_da, mip_level_bias, max_level, trilinear)
    level0 = torch.floor(flevel.detach()).long()
    samples = torch.stack([_bilinear(level, uv, boundary_mode, tex.shape[0]) for level in levels])  # [L+1, B, h, w, C]

    def pick(index: Tensor) -> Tensor:
        return torch.gather(samples, 0, index[None, ..., None].expand(1, *samples.shape[1:]))[0]

    a = pick(level0)
    if not trilinear:
        return a
    # The second level counts only where the fraction is > 0 (nvdiffrast: magnified,
    # clamped to the last level, or exactly on a level: no gradient to the level either).
    raw_fraction = flevel - level0
    second = raw_fraction.detach() > 0
    level1 = torch.where(second, torch.clamp(level0 + 1, max=max_level), level0)
    fraction = torch.where(second, raw_fraction, torch.zeros_like(raw_fraction))
    b = pick(level1)
    return a + fraction[..., None] * (b - a)
