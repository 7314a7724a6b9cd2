"""facegeom.ops.texture / texture_construct_mip: kernel == reference in every
filter and boundary mode (values and gradients), the reference against
transcriptions of nvdiffrast's own functions (NVlabs/nvdiffrast
csrc/common/texture_kernel.cu, csrc/common/texture.cpp), gradcheck, opcheck,
errors."""
from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.ops import reference
ref_texture = importlib.import_module("facegeom.ops.reference.texture")  # the module (the name is the function)
from tests.conftest import cuda, requires_native

FILTERS = ("nearest", "linear", "linear-mipmap-nearest", "linear-mipmap-linear")
BOUNDARIES = ("wrap", "clamp", "zero", "cube")


def make_inputs(dtype, boundary, seed=0, batch=2, tex_batch=1, size=(8, 16), pixels=(5, 6), da_scale=0.3):
    g = torch.Generator().manual_seed(seed)
    h, w = pixels
    if boundary == "cube":
        tex = torch.rand(tex_batch, 6, size[0], size[0], 3, generator=g, dtype=dtype)
        uv = torch.randn(batch, h, w, 3, generator=g, dtype=dtype)
        uv_da = torch.randn(batch, h, w, 6, generator=g, dtype=dtype) * da_scale
    else:
        tex = torch.rand(tex_batch, *size, 3, generator=g, dtype=dtype)
        uv = torch.rand(batch, h, w, 2, generator=g, dtype=dtype) * 1.6 - 0.3
        uv_da = torch.randn(batch, h, w, 4, generator=g, dtype=dtype) * da_scale / 4
    bias = torch.randn(batch, h, w, generator=g, dtype=dtype)
    return tex, uv, uv_da, bias


def run_with_grads(fn, tex, uv, uv_da, bias, **kwargs):
    leaves = [None if t is None else t.clone().requires_grad_(True) for t in (tex, uv, uv_da, bias)]
    out = fn(*leaves, **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    out.backward(grad_out)
    grads = [None if t is None else (t.grad if t.grad is not None else torch.zeros_like(t)) for t in leaves]
    return [out.detach()] + grads


# --------------------------------------------------------------------------- #
# Kernel == reference                                                         #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("filter_mode,boundary_mode", list(itertools.product(FILTERS, BOUNDARIES)))
def test_kernel_matches_reference(dtype, filter_mode, boundary_mode):
    for seed, tex_batch, inputs in [(0, 1, "both"), (1, 2, "both"), (2, 1, "uv_da"), (3, 2, "bias")]:
        tex, uv, uv_da, bias = make_inputs(dtype, boundary_mode, seed=seed, tex_batch=tex_batch)
        if "mipmap" not in filter_mode or inputs == "bias":
            uv_da = None
        if "mipmap" not in filter_mode or inputs == "uv_da":
            bias = None
        kwargs = dict(filter_mode=filter_mode, boundary_mode=boundary_mode)
        got = run_with_grads(fo.texture, tex, uv, uv_da, bias, **kwargs)
        want = run_with_grads(reference.texture, tex, uv, uv_da, bias, **kwargs)
        for name, a, b in zip(("out", "tex", "uv", "uv_da", "bias"), got, want):
            if a is None:
                assert b is None
                continue
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")
        assert got[0].abs().sum() > 0
        if filter_mode == "linear-mipmap-linear" and bias is not None:
            assert got[4].abs().sum() > 0  # the level fraction carries a gradient


@requires_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cube", [False, True])
def test_construct_mip_matches_reference_and_box_filter(dtype, cube):
    shape = (2, 6, 16, 16, 3) if cube else (2, 16, 4, 3)
    tex = torch.rand(shape, dtype=dtype, requires_grad=True)
    got = fo.texture_construct_mip(tex, cube_mode=cube)
    want = reference.texture_construct_mip(tex, cube_mode=cube)
    assert [g.shape for g in got] == [w.shape for w in want]
    weights = [torch.randn(w.shape, dtype=dtype) for w in want]
    (g_got,) = torch.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights)), tex)
    (g_want,) = torch.autograd.grad(sum((g * w).sum() for g, w in zip(want, weights)), tex)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(g_got, g_want, atol=1e-6, rtol=1e-6)
    # Level 1 is avg_pool2d(2) where both sides are > 1.
    planes = tex.detach().reshape(-1, *shape[-3:]).permute(0, 3, 1, 2)
    pooled = torch.nn.functional.avg_pool2d(planes, 2).permute(0, 2, 3, 1).reshape(got[0].shape)
    torch.testing.assert_close(got[0], pooled)


# --------------------------------------------------------------------------- #
# The reference against nvdiffrast's own functions (transcribed)              #
# --------------------------------------------------------------------------- #

# NVlabs/nvdiffrast csrc/common/texture_kernel.cu:31-46 (c_cubeWrapMask1 / 2).
CUBE_WRAP_MASK1 = [
    0x1530a440, 0x1133a550, 0x6103a110, 0x1515aa44, 0x6161aa11, 0x40154a04, 0x44115a05, 0x04611a01,
    0x2630a440, 0x2233a550, 0x5203a110, 0x2626aa44, 0x5252aa11, 0x40264a04, 0x44225a05, 0x04521a01,
    0x32608064, 0x3366a055, 0x13062091, 0x32328866, 0x13132299, 0x50320846, 0x55330a55, 0x05130219,
    0x42508064, 0x4455a055, 0x14052091, 0x42428866, 0x14142299, 0x60420846, 0x66440a55, 0x06140219,
    0x5230a044, 0x5533a055, 0x1503a011, 0x5252aa44, 0x1515aa11, 0x40520a44, 0x44550a55, 0x04150a11,
    0x6130a044, 0x6633a055, 0x2603a011, 0x6161aa44, 0x2626aa11, 0x40610a44, 0x44660a55, 0x04260a11,
]
CUBE_WRAP_MASK2 = [
    0x26, 0x33, 0x11, 0x05, 0x00, 0x09, 0x0c, 0x04, 0x04, 0x00, 0x00, 0x05, 0x00, 0x81, 0xc0, 0x40,
    0x02, 0x03, 0x09, 0x00, 0x0a, 0x00, 0x00, 0x02, 0x64, 0x30, 0x90, 0x55, 0xa0, 0x99, 0xcc, 0x64,
    0x24, 0x30, 0x10, 0x05, 0x00, 0x01, 0x00, 0x00, 0x06, 0x03, 0x01, 0x05, 0x00, 0x89, 0xcc, 0x44,
]


def nvdiffrast_wrap_cube_map(face, ix0, ix1, iy0, iy1, w):
    """Transcription of wrapCubeMap (texture_kernel.cu:48): the four texels
    (face, x, y) of a bilinear quad leaving face `face`; face -1 = the missing corner."""
    cx = 0 if ix0 < 0 else (2 if ix1 >= w else 1)
    cy = 0 if iy0 < 0 else (6 if iy1 >= w else 3)
    c = cx + cy
    if c >= 5:
        c -= 1
    c = (face << 3) + c
    m = CUBE_WRAP_MASK1[c]
    pick = lambda sel, a, b: 0 if sel == 0 else (a if sel == 1 else b)  # noqa: E731
    xs = [pick((m >> 0) & 3, ix0, iy0), pick((m >> 2) & 3, ix1, iy0),
          pick((m >> 4) & 3, ix0, iy1), pick((m >> 6) & 3, ix1, iy1)]
    ys = [pick((m >> 8) & 3, ix0, iy0), pick((m >> 10) & 3, ix1, iy0),
          pick((m >> 12) & 3, ix0, iy1), pick((m >> 14) & 3, ix1, iy1)]
    faces = [((m >> 16) & 15) - 1, ((m >> 20) & 15) - 1, ((m >> 24) & 15) - 1, (m >> 28) - 1]
    f = CUBE_WRAP_MASK2[c]
    for i in range(4):
        if f & (1 << i):
            xs[i] = w - 1 - xs[i]
        if f & (1 << (i + 4)):
            ys[i] = w - 1 - ys[i]
    return [(faces[i], xs[i], ys[i]) for i in range(4)]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_cube_seams_equal_nvdiffrast_wrap_tables(size):
    checked = 0
    for face in range(6):
        for ix0 in range(-1, size):
            for iy0 in range(-1, size):
                ix1, iy1 = ix0 + 1, iy0 + 1
                if 0 <= ix0 and ix1 < size and 0 <= iy0 and iy1 < size:
                    continue  # inside the face: no wrapping
                want = nvdiffrast_wrap_cube_map(face, ix0, ix1, iy0, iy1, size)
                corners = [(ix0, iy0), (ix1, iy0), (ix0, iy1), (ix1, iy1)]
                for (x, y), (wf, wx, wy) in zip(corners, want):
                    f, gx, gy = ref_texture.cube_wrap_texel(torch.tensor(face), torch.tensor(x), torch.tensor(y), size)
                    if wf < 0:
                        assert int(f) == -1, (face, x, y)
                    else:
                        assert (int(f), int(gx), int(gy)) == (wf, wx, wy), (face, x, y, size)
                    checked += 1
    assert checked > 0


def nvdiffrast_index_cube_map(x, y, z):
    """Transcription of indexCubeMap (texture_kernel.cu:99), in float64."""
    ax, ay, az = abs(x), abs(y), abs(z)
    if az > max(ax, ay):
        idx, c = 4, z
    elif ay > ax:
        idx, c, y = 2, y, z
    else:
        idx, c, x = 0, x, z
    if c < 0:
        idx += 1
    m = 0.5 / abs(c)
    m0 = -m if (0x21 >> idx) & 1 else m
    m1 = m if idx == 2 else -m
    s, t = x * m0 + 0.5, y * m1 + 0.5
    return idx, min(max(s, 0.0), 1.0), min(max(t, 0.0), 1.0)


def test_cube_face_selection_equals_nvdiffrast():
    directions = torch.randn(500, 3, dtype=torch.float64)
    directions[:20] = torch.tensor([[1.0, 1.0, 0.5], [1.0, 1.0, 1.0], [-2.0, 0.5, 2.0], [0.0, -3.0, 3.0]] * 5)
    face, s, t, valid = ref_texture._cube_face(directions)
    assert bool(valid.all())
    for d, f, ss, tt in zip(directions.tolist(), face.tolist(), s.tolist(), t.tolist()):
        wf, ws, wt = nvdiffrast_index_cube_map(*d)
        assert f == wf
        assert ss == pytest.approx(ws, abs=1e-12) and tt == pytest.approx(wt, abs=1e-12)


def nvdiffrast_mip_level(uv_da, tex_w, tex_h, bias, max_level):
    """Transcription of calculateMipLevel (texture_kernel.cu:478), 2D, in float64:
    (flevel, d flevel / d uv_da) before the fraction is taken."""
    dsdx, dsdy, dtdx, dtdy = uv_da[0] * tex_w, uv_da[1] * tex_w, uv_da[2] * tex_h, uv_da[3] * tex_h
    A = dsdx * dsdx + dtdx * dtdx
    B = dsdy * dsdy + dtdy * dtdy
    C = dsdx * dsdy + dtdx * dtdy
    l2b = 0.5 * (A + B)
    l2n = 0.25 * (A - B) * (A - B) + C * C
    l2a = math.sqrt(l2n)
    dw = 0.72134752 / (l2n + l2a * l2b)
    AB, Cw, l2aw = dw * 0.5 * (A - B), dw * C, dw * l2a
    grad = [tex_w * (dsdx * (l2aw + AB) + dsdy * Cw), tex_w * (dsdy * (l2aw - AB) + dsdx * Cw),
            tex_h * (dtdx * (l2aw + AB) + dtdy * Cw), tex_h * (dtdy * (l2aw - AB) + dtdx * Cw)]
    flevel = 0.5 * math.log2(l2b + l2a) + bias
    return min(max(flevel, 0.0), max_level), grad


def test_mip_level_and_its_gradient_equal_nvdiffrast():
    tex = torch.zeros(1, 64, 32, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    uv = torch.rand(1, 4, 5, 2, generator=g, dtype=torch.float64)
    uv_da = (torch.randn(1, 4, 5, 4, generator=g, dtype=torch.float64) * 0.05).requires_grad_(True)
    uv_da.data[0, 0, 0] = torch.tensor([0.01, 0.0, 0.0, 0.02])  # isotropic: sqrt's derivative is infinite there
    bias = torch.randn(1, 4, 5, generator=g, dtype=torch.float64)
    flevel = ref_texture._mip_level(tex, uv, uv_da, bias, 6, True)
    (grad,) = torch.autograd.grad(flevel.sum(), uv_da)
    for i, j in itertools.product(range(4), range(5)):
        want, want_grad = nvdiffrast_mip_level(uv_da[0, i, j].tolist(), 32, 64, float(bias[0, i, j]), 6)
        assert float(flevel[0, i, j].detach()) == pytest.approx(want, abs=1e-12)
        if 0 < want < 6:
            assert grad[0, i, j].tolist() == pytest.approx(want_grad, abs=1e-9)


def nvdiffrast_mip_sizes(w, h, limit):
    """Transcription of calculateMipInfo (texture.cpp:69): level sizes, or None on an odd side."""
    if limit == 0:
        return []
    sizes, level = [], 0
    while (w | h) > 1:
        level += 1
        if (w > 1 and (w & 1)) or (h > 1 and (h & 1)):
            return None
        w, h = (w >> 1) if w > 1 else w, (h >> 1) if h > 1 else h
        sizes.append((h, w))
        if limit >= 0 and level == limit:
            break
    return sizes


@pytest.mark.parametrize("h,w", [(1, 1), (1, 8), (16, 2), (64, 64), (12, 8), (6, 6), (8, 3)])
@pytest.mark.parametrize("limit", [None, 0, 1, 3])
def test_mip_level_sizes_equal_nvdiffrast(h, w, limit):
    want = nvdiffrast_mip_sizes(w, h, -1 if limit is None else limit)
    if want is None:
        with pytest.raises(ValueError, match="odd side"):
            fo.texture_construct_mip(torch.zeros(1, h, w, 1), max_mip_level=limit)
        return
    levels = fo.texture_construct_mip(torch.zeros(1, h, w, 1), max_mip_level=limit)
    assert [tuple(level.shape[1:3]) for level in levels] == want


@pytest.mark.parametrize("boundary,padding", [("clamp", "border"), ("zero", "zeros")])
def test_linear_equals_grid_sample(boundary, padding):
    tex, uv, _, _ = make_inputs(torch.float64, boundary, seed=5, batch=2, tex_batch=2)
    out = fo.texture(tex, uv, filter_mode="linear", boundary_mode=boundary)
    want = torch.nn.functional.grid_sample(tex.permute(0, 3, 1, 2), uv * 2 - 1, mode="bilinear",
                                           padding_mode=padding, align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, want)


def test_conventions_nearest_wrap_cube_and_magnification():
    tex = torch.arange(8.0, dtype=torch.float64).reshape(1, 2, 4, 1)  # rows [0 1 2 3], [4 5 6 7]
    uv = torch.tensor([[[[0.1, 0.2], [0.9, 0.8], [1.1, 0.2], [-0.1, -0.1]]]], dtype=torch.float64)
    out = fo.texture(tex, uv, filter_mode="nearest")
    assert out.flatten().tolist() == [0.0, 7.0, 0.0, 7.0]  # wrap
    out = fo.texture(tex, uv, filter_mode="nearest", boundary_mode="zero")
    assert out.flatten().tolist() == [0.0, 7.0, 0.0, 0.0]
    # Texel centres reproduce texels exactly in every filter; a level-0 bias is the base.
    centres = torch.tensor([[[[0.125, 0.25], [0.875, 0.75]]]], dtype=torch.float64)
    for mode in FILTERS:
        bias = torch.full((1, 1, 2), -1.0, dtype=torch.float64) if "mipmap" in mode else None
        assert fo.texture(tex, centres, mip_level_bias=bias, filter_mode=mode).flatten().tolist() == [0.0, 7.0]
    # A bias of exactly one level samples level 1 (the 2x2 means: 2.5, 4.5).
    level1 = fo.texture(tex, centres, mip_level_bias=torch.ones(1, 1, 2, dtype=torch.float64),
                        filter_mode="linear-mipmap-nearest", boundary_mode="clamp")
    assert level1.flatten().tolist() == [2.5, 4.5]
    # Cube map: +x..-z faces filled with their index; axis directions hit their face.
    cube = torch.arange(6.0, dtype=torch.float64).view(1, 6, 1, 1, 1).expand(1, 6, 4, 4, 1).contiguous()
    axes = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [0, 0, 0]],
                        dtype=torch.float64).view(1, 1, 7, 3)
    for mode in ("nearest", "linear"):
        out = fo.texture(cube, axes, filter_mode=mode, boundary_mode="cube")
        assert out.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0]
    # wrap: uv + 1 samples the same as uv
    tex, uv, _, _ = make_inputs(torch.float64, "wrap", seed=8)
    torch.testing.assert_close(fo.texture(tex, uv + 1), fo.texture(tex, uv))


def test_max_mip_level_and_custom_mip_stack():
    tex, uv, uv_da, bias = make_inputs(torch.float64, "wrap", seed=9, size=(16, 16))
    linear = fo.texture(tex, uv, filter_mode="linear")
    torch.testing.assert_close(fo.texture(tex, uv, uv_da, bias, max_mip_level=0), linear)
    # A prebuilt stack gives what the internal one gives, gradients to tex included.
    tex_a, tex_b = tex.clone().requires_grad_(True), tex.clone().requires_grad_(True)
    a = fo.texture(tex_a, uv, uv_da, bias, max_mip_level=2)
    b = fo.texture(tex_b, uv, uv_da, bias, mip=fo.texture_construct_mip(tex_b, max_mip_level=2))
    torch.testing.assert_close(a, b)
    a.square().sum().backward()
    b.square().sum().backward()
    torch.testing.assert_close(tex_a.grad, tex_b.grad)
    # A custom stack: its own tensors get the gradients, tex only its base-level share.
    levels = [torch.rand(1, 8 >> i, 8 >> i, 3, dtype=torch.float64, requires_grad=True) for i in range(4)]
    base = tex.clone().requires_grad_(True)
    out = fo.texture(base, uv, mip_level_bias=bias + 2, mip=levels, filter_mode="linear-mipmap-linear")
    out.sum().backward()
    assert levels[1].grad is not None and levels[1].grad.abs().sum() > 0
    want = reference.texture(tex, uv, None, bias + 2, [l.detach() for l in levels], "linear-mipmap-linear", "wrap")
    torch.testing.assert_close(out.detach(), want)


# --------------------------------------------------------------------------- #
# gradcheck, opcheck, threads                                                 #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("filter_mode,boundary_mode", [
    ("linear", "wrap"), ("linear", "clamp"), ("linear", "zero"), ("linear", "cube"),
    ("linear-mipmap-linear", "wrap"), ("linear-mipmap-linear", "cube"), ("nearest", "wrap"),
])
def test_gradcheck(filter_mode, boundary_mode):
    tex, uv, uv_da, bias = make_inputs(torch.float64, boundary_mode, seed=11, batch=1, pixels=(3, 3),
                                       size=(4, 8), da_scale=0.6)
    mip = "mipmap" in filter_mode
    inputs = (tex.requires_grad_(True), uv.requires_grad_(filter_mode != "nearest"),
              uv_da.requires_grad_(mip), bias.requires_grad_(mip))

    def sample(tex, uv, uv_da, bias):
        return fo.texture(tex, uv, uv_da if mip else None, bias if mip else None,
                          filter_mode=filter_mode, boundary_mode=boundary_mode)

    assert torch.autograd.gradcheck(sample, inputs, eps=1e-7, atol=1e-5, rtol=1e-4)


def _opcheck_cases():
    if not _native.has_op("texture"):
        return []
    ops = torch.ops.facegeom
    cases = []
    for boundary, mode in [("wrap", 3), ("cube", 3), ("clamp", 1), ("zero", 0), ("wrap", 2)]:
        tex, uv, uv_da, bias = make_inputs(torch.float64, boundary, seed=13, size=(8, 8))
        mip = list(ops.texture_construct_mip(tex, -1, boundary == "cube")) if mode >= 2 else []
        b = 0 if boundary == "cube" else ("wrap", "clamp", "zero").index(boundary) + 1
        req = lambda t: t.clone().requires_grad_(True)  # noqa: E731
        cases.append((f"texture_{boundary}_{mode}", ops.texture,
                      (req(tex), req(uv), req(uv_da) if mode >= 2 else None, req(bias) if mode >= 2 else None,
                       [req(m) for m in mip], mode, b)))
        cases.append((f"texture_backward_{boundary}_{mode}", ops.texture_backward,
                      (torch.randn(2, 5, 6, 3, dtype=torch.float64), tex, uv, uv_da if mode >= 2 else None,
                       bias if mode >= 2 else None, mip, mode, b)))
    tex = torch.rand(2, 6, 8, 8, 2, dtype=torch.float64)
    cases.append(("construct_mip", ops.texture_construct_mip, (tex.clone().requires_grad_(True), 2, True)))
    cases.append(("construct_mip_backward", ops.texture_construct_mip_backward,
                  ([torch.randn(2, 6, 4, 4, 2, dtype=torch.float64), torch.randn(2, 6, 2, 2, 2, dtype=torch.float64)],
                   tex, True)))
    return cases


@requires_native
@pytest.mark.parametrize("name,op,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


@requires_native
def test_results_do_not_depend_on_thread_count():
    tex, uv, uv_da, bias = make_inputs(torch.float32, "wrap", seed=17, size=(16, 16), pixels=(20, 20))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(run_with_grads(fo.texture, tex, uv, uv_da, bias))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@requires_native
def test_double_backward_raises_clearly():
    tex, uv, _, _ = make_inputs(torch.float64, "wrap", seed=19)
    uv.requires_grad_(True)
    (grad,) = torch.autograd.grad(fo.texture(tex, uv).square().sum(), uv, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad.sum().backward()


# --------------------------------------------------------------------------- #
# Errors                                                                      #
# --------------------------------------------------------------------------- #

def test_bad_input_names_the_argument():
    tex, uv, uv_da, bias = make_inputs(torch.float32, "wrap")
    cases = [
        (dict(tex=tex[0]), ValueError, "tex must have shape"),
        (dict(tex=tex.double()), TypeError, "uv must have the dtype of tex"),
        (dict(tex=tex.int()), TypeError, "tex must be float32 or float64"),
        (dict(uv=uv[..., :1]), ValueError, "uv must have shape"),
        (dict(uv_da=uv_da[..., :3]), ValueError, "uv_da must have shape"),
        (dict(mip_level_bias=bias[:1]), ValueError, "mip_level_bias must have shape"),
        (dict(tex=torch.rand(3, 8, 16, 3)), ValueError, "N must be 1 or B"),
        (dict(filter_mode="bilinear"), ValueError, "filter_mode must be one of"),
        (dict(boundary_mode="mirror"), ValueError, "boundary_mode must be one of"),
        (dict(boundary_mode="cube"), ValueError, r"tex must have shape \[N, 6"),
        (dict(filter_mode="linear-mipmap-linear", uv_da=None), ValueError, "needs uv_da and/or mip_level_bias"),
        (dict(max_mip_level=-1), ValueError, "max_mip_level must be None or an int >= 0"),
        (dict(mip=[torch.rand(1, 3, 3, 3)]), ValueError, r"mip\[0\] \(level 1\) must have shape"),
        (dict(mip=torch.rand(1, 4, 8, 3)), TypeError, "mip must be a list"),
        (dict(tex=torch.rand(1, 6, 16, 3)), ValueError, "odd side > 1 cannot be halved"),
    ]
    for change, error, match in cases:
        args = dict(tex=tex, uv=uv, uv_da=uv_da, mip_level_bias=None, filter_mode="linear-mipmap-linear")
        args.update(change)
        with pytest.raises(error, match=match):
            fo.texture(**args)
    with pytest.raises(ValueError, match=r"square faces"):
        fo.texture(torch.rand(1, 6, 4, 8, 3), torch.rand(1, 2, 2, 3), boundary_mode="cube")
    with pytest.raises(TypeError, match="cube_mode must be True or False"):
        fo.texture_construct_mip(tex, cube_mode=1)


@requires_native
def test_direct_op_calls_are_checked_in_cpp():
    ops = torch.ops.facegeom
    tex, uv, uv_da, bias = make_inputs(torch.float32, "wrap")
    with pytest.raises(ValueError, match="uv must have shape"):
        ops.texture(tex, uv[..., :1], None, None, [], 1, 1)
    with pytest.raises(ValueError, match="filter_mode must be 0..3"):
        ops.texture(tex, uv, None, None, [], 7, 1)
    with pytest.raises(ValueError, match="mip level 1 must have shape"):
        ops.texture(tex, uv, uv_da, None, [torch.rand(1, 3, 3, 3)], 3, 1)
    with pytest.raises(ValueError, match="odd side"):
        ops.texture_construct_mip(torch.rand(1, 6, 16, 3), -1, False)


# --------------------------------------------------------------------------- #
# CUDA vs CPU                                                                 #
# --------------------------------------------------------------------------- #

@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("filter_mode,boundary_mode", list(itertools.product(FILTERS, BOUNDARIES)))
def test_cuda_matches_cpu(dtype, filter_mode, boundary_mode):
    tex, uv, uv_da, bias = make_inputs(dtype, boundary_mode, seed=23, tex_batch=2, size=(16, 16), pixels=(24, 24))
    if "mipmap" not in filter_mode:
        uv_da = bias = None
    kwargs = dict(filter_mode=filter_mode, boundary_mode=boundary_mode)
    cpu = run_with_grads(fo.texture, tex, uv, uv_da, bias, **kwargs)
    gpu = run_with_grads(fo.texture, *(None if t is None else t.cuda() for t in (tex, uv, uv_da, bias)), **kwargs)
    for a, b in zip(gpu, cpu):
        if b is not None:
            torch.testing.assert_close(a.cpu(), b, atol=1e-4, rtol=1e-4)
    mip_cpu = fo.texture_construct_mip(tex, cube_mode=boundary_mode == "cube")
    mip_gpu = fo.texture_construct_mip(tex.cuda(), cube_mode=boundary_mode == "cube")
    for a, b in zip(mip_gpu, mip_cpu):
        torch.testing.assert_close(a.cpu(), b)


# --------------------------------------------------------------------------- #
# Layouts, empty inputs, fallback                                             #
# --------------------------------------------------------------------------- #

@requires_native
def test_non_contiguous_and_empty_inputs():
    tex, uv, uv_da, bias = make_inputs(torch.float64, "wrap", seed=29, size=(8, 8))
    uv_t = uv.transpose(1, 2).contiguous().transpose(1, 2)  # same values, other strides
    assert not uv_t.is_contiguous()
    torch.testing.assert_close(fo.texture(tex, uv_t, uv_da, bias), fo.texture(tex, uv, uv_da, bias))
    for shape in ((0, 4, 4), (2, 0, 4)):
        empty_uv = torch.zeros(*shape, 2, dtype=torch.float64, requires_grad=True)
        out = fo.texture(tex, empty_uv, torch.zeros(*shape, 4, dtype=torch.float64),
                         torch.zeros(*shape, dtype=torch.float64))
        assert out.shape == (*shape, 3)
        out.sum().backward()
        assert empty_uv.grad.shape == empty_uv.shape


@requires_native
def test_fallback_to_reference_gives_the_same_results(monkeypatch):
    from facegeom import _native

    tex, uv, uv_da, bias = make_inputs(torch.float64, "cube", seed=31, size=(8, 8))
    want = run_with_grads(fo.texture, tex, uv, uv_da, bias, boundary_mode="cube")
    monkeypatch.setattr(_native, "serves", lambda *args, **kwargs: False)
    got = run_with_grads(fo.texture, tex, uv, uv_da, bias, boundary_mode="cube")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert len(fo.texture_construct_mip(tex[:, 0])) == 3


@requires_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("boundary_mode", ["wrap", "clamp", "zero"])
def test_kernel_matches_reference_on_texel_edges_and_centres(dtype, boundary_mode):
    # Coordinates where the floor and clamp decisions flip: texel edges and centres,
    # 0, 1, whole numbers (wrap), just inside / outside the unit square.
    tex = torch.rand(1, 4, 8, 2, generator=torch.Generator().manual_seed(37), dtype=dtype)
    special = torch.tensor([-1.0, -0.5, -1e-7, 0.0, 1e-7, 0.0625, 0.125, 0.25, 0.5, 0.875, 0.9375,
                            1.0 - 1e-7, 1.0, 1.0 + 1e-7, 1.5, 2.0], dtype=dtype)
    u, v = torch.meshgrid(special, special, indexing="ij")
    uv = torch.stack([u, v], -1)[None]
    bias = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0], dtype=dtype).repeat(uv.shape[1] * uv.shape[2] // 6 + 1)
    bias = bias[:uv.shape[1] * uv.shape[2]].view(1, *uv.shape[1:3])
    for filter_mode in FILTERS:
        b = bias if "mipmap" in filter_mode else None
        kwargs = dict(filter_mode=filter_mode, boundary_mode=boundary_mode)
        got = run_with_grads(fo.texture, tex, uv, None, b, **kwargs)
        want = run_with_grads(reference.texture, tex, uv, None, b, **kwargs)
        for a, w in zip(got, want):
            if a is not None:
                torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)


@requires_native
@pytest.mark.parametrize("filter_mode,boundary_mode", [
    ("linear-mipmap-nearest", "clamp"), ("linear-mipmap-linear", "zero"), ("linear-mipmap-linear", "clamp"),
])
def test_gradcheck_more_modes(filter_mode, boundary_mode):
    tex, uv, uv_da, bias = make_inputs(torch.float64, boundary_mode, seed=41, batch=1, pixels=(3, 3),
                                       size=(4, 8), da_scale=0.6)
    trilinear = filter_mode == "linear-mipmap-linear"
    inputs = (tex.requires_grad_(True), uv.requires_grad_(True), uv_da.requires_grad_(trilinear),
              bias.requires_grad_(trilinear))

    def sample(tex, uv, uv_da, bias):
        return fo.texture(tex, uv, uv_da, bias, filter_mode=filter_mode, boundary_mode=boundary_mode)

    assert torch.autograd.gradcheck(sample, inputs, eps=1e-7, atol=1e-5, rtol=1e-4)
