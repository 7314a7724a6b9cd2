"""Property tests (issue 17, "Keep it"): every op against its reference on random
shapes (empty ones included), float32/float64, non-contiguous strides, random index
tensors and injected NaN/+-inf values, with hypothesis. Where the input is finite
(float64) the gradients are compared too.

Budget: the "ci" profile (tests/conftest.py: 20 examples per test, derandomised) keeps
this file to a few seconds; ``FACEGEOM_HYPOTHESIS=thorough`` runs 1000 examples per
test (CONTRIBUTING.md). The non-finite policy being tested is docs/ops.md
"Non-finite values": NaN in -> NaN out where the output depends on it, +-inf in ->
NaN or +-inf there (never a finite value), kernel and reference alike.
"""
from __future__ import annotations

import pytest
import torch

from facegeom import ops
from facegeom.ops import reference
from tests.conftest import requires_native
from tests.ops.op_cases import clip_pos, outputs

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, strategies as st  # noqa: E402

pytestmark = requires_native

DTYPES = st.sampled_from([torch.float32, torch.float64])
SPECIALS = [float("nan"), float("inf"), -float("inf")]
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}


class Draw:
    """Tensors drawn from one hypothesis ``data``: seeded values, optionally laid out
    non-contiguously, optionally with NaN/+-inf injected (recorded in ``injected``)."""

    def __init__(self, data, dtype):
        self.data, self.dtype = data, dtype
        self.gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
        self.injected = []  # the special values put into inputs

    def int(self, low, high, label=None):
        return self.data.draw(st.integers(low, high), label=label)

    def flag(self, label=None):
        return self.data.draw(st.booleans(), label=label)

    def layout(self, t: torch.Tensor) -> torch.Tensor:
        """Same values, maybe a non-contiguous view (every other element of a wider buffer)."""
        if t.dim() == 0 or not self.flag("non-contiguous"):
            return t
        wide = t.new_zeros(*t.shape, 2)
        wide[..., 0] = t
        return wide[..., 0]

    def float(self, *shape, scale=1.0, offset=0.0, positive=False, special=True):
        t = torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale + offset
        if positive:
            t = t.abs() + 0.05
        t = t.to(self.dtype)
        if special and t.numel() and self.data.draw(st.integers(0, 4), label="inject") == 0:
            value = self.data.draw(st.sampled_from(SPECIALS), label="special")
            t.view(-1)[self.int(0, t.numel() - 1, "at")] = value
            self.injected.append(value)
        return self.layout(t)

    def index(self, shape, upper, dtype=torch.int64):
        return self.layout(torch.randint(0, upper, shape, generator=self.gen, dtype=dtype))

    def parents(self, num_joints):
        return torch.tensor([-1] + [self.int(0, j - 1, "parent") for j in range(1, num_joints)])

    @property
    def nan_only(self):
        return all(v != v for v in self.injected)


def assert_matches(got, want, draw: Draw, int_pattern_only=False, tol=None):
    """Kernel ``got`` vs reference ``want``: the same non-finite entries (the same NaN
    entries when only NaN was injected), finite entries close. NaN in (and nothing
    else) never gives +-inf."""
    tol = tol or TOL[draw.dtype]
    for g, w in zip(outputs(got), outputs(want)):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if not g.dtype.is_floating_point:
            if int_pattern_only:
                assert torch.equal(g < 0, w < 0)
            else:
                assert torch.equal(g, w)
            continue
        assert torch.equal(torch.isfinite(g), torch.isfinite(w)), "non-finite entries differ"
        if draw.nan_only:
            assert torch.equal(torch.isnan(g), torch.isnan(w)), "NaN entries differ"
            if draw.injected:
                assert not torch.isinf(g).any(), "NaN in gave inf out"
        finite = torch.isfinite(g)
        torch.testing.assert_close(g[finite].double(), w[finite].double(), **tol)


def compare(draw, op, ref, args, grad_args=(), int_pattern_only=False, grad_tol=None, tol=None):
    """Forward outputs, and (float64, finite input) gradients of a random weighting of
    the float outputs w.r.t. ``args[i]`` for i in ``grad_args``."""
    with torch.no_grad():
        assert_matches(op(*args), ref(*args), draw, int_pattern_only, tol)
    if draw.dtype != torch.float64 or draw.injected or not grad_args:
        return
    grads = []
    weights = None
    for fn in (op, ref):
        leaves = [args[i].detach().clone().requires_grad_(True) for i in grad_args]
        call = list(args)
        for i, leaf in zip(grad_args, leaves):
            call[i] = leaf
        outs = [o for o in outputs(fn(*call)) if o.dtype.is_floating_point and o.requires_grad]
        if weights is None:
            weights = [torch.randn(o.shape, generator=draw.gen, dtype=o.dtype) for o in outs]
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        grads.append(torch.autograd.grad(loss, leaves, allow_unused=True) if loss is not 0 else [None] * len(leaves))
    for g, w in zip(*grads):
        if g is None or w is None:
            assert (g is None or not g.any()) and (w is None or not w.any())
            continue
        torch.testing.assert_close(g, w, **(grad_tol or dict(rtol=1e-7, atol=1e-9)))


# --------------------------------------------------------------------------- #
# 1. Blendshapes and skinning
# --------------------------------------------------------------------------- #

@given(data=st.data(), dtype=DTYPES)
def test_blendshapes(data, dtype):
    d = Draw(data, dtype)
    batch, num_coeffs, num_vertices = d.int(0, 3), d.int(0, 4), d.int(0, 6)
    base = data.draw(st.sampled_from(["none", "shared", "batched"]))
    args = (d.float(batch, num_coeffs), d.float(num_coeffs, num_vertices, 3),
            None if base == "none" else d.float(*([batch] if base == "batched" else []), num_vertices, 3))
    compare(d, ops.blendshapes, reference.blendshapes, args, (0, 1) if base == "none" else (0, 1, 2))


@given(data=st.data(), dtype=DTYPES)
def test_rodrigues(data, dtype):
    d = Draw(data, dtype)
    count = d.int(0, 6)
    scale = data.draw(st.sampled_from([1e-9, 1e-4, 1.0, 10.0, 1e3]))
    x = d.float(count, 3, scale=scale)
    if count and d.flag("minus eps"):  # smplx's NaN point and its neighbourhood
        x.view(-1)[: 3 * d.int(1, count)] = -1e-8
    # sin/cos of angles ~1e3 rad: float32 rounding of the angle is amplified ~1e3 times
    tol = dict(rtol=0, atol=max(1.0, scale) * TOL[dtype]["atol"] * 10)
    compare(d, ops.rodrigues, reference.rodrigues, (x,), (0,), tol=tol)
    if not d.injected:
        assert torch.isfinite(ops.rodrigues(x)).all()


@given(data=st.data(), dtype=DTYPES)
def test_rigid_transform(data, dtype):
    d = Draw(data, dtype)
    num_joints, batch = d.int(1, 5), d.int(1, 3)
    rot_batch, joint_batch = data.draw(st.sampled_from([(batch, batch), (1, batch), (batch, 1)]))
    rot = ops.rodrigues(torch.randn(rot_batch, num_joints, 3, generator=d.gen, dtype=dtype))
    if d.flag("special rotation"):
        rot = rot + d.float(rot_batch, num_joints, 3, 3, scale=0.0)  # only the injection
    args = (d.layout(rot), d.float(joint_batch, num_joints, 3), d.parents(num_joints))
    compare(d, ops.rigid_transform, reference.rigid_transform, args, (0, 1))


@given(data=st.data(), dtype=DTYPES)
def test_skin(data, dtype):
    d = Draw(data, dtype)
    num_vertices, num_joints, batch = d.int(0, 6), d.int(1, 4), d.int(1, 3)
    transforms = torch.cat([d.float(batch, num_joints, 3, 4).contiguous(),
                            torch.tensor([0.0, 0, 0, 1], dtype=dtype).expand(batch, num_joints, 1, 4)], -2)
    weights = d.float(*([batch] if d.flag("batched weights") else []), num_vertices, num_joints, positive=True)
    args = (d.float(batch, num_vertices, 3), d.layout(transforms), weights)
    compare(d, ops.skin, reference.skin, args, (0, 1, 2))


@given(data=st.data(), dtype=DTYPES)
def test_lbs(data, dtype):
    d = Draw(data, dtype)
    num_vertices, num_betas, num_joints, batch = d.int(1, 6), d.int(1, 4), d.int(1, 4), d.int(1, 3)
    pose2rot = d.flag("pose2rot")
    pose = d.float(batch, 3 * num_joints, scale=0.3) if pose2rot else \
        ops.rodrigues(torch.randn(batch, num_joints, 3, generator=d.gen, dtype=dtype))
    regressor = torch.rand(num_joints, num_vertices, generator=d.gen, dtype=dtype)
    args = (d.float(batch, num_betas), pose, d.float(num_vertices, 3),
            d.float(num_vertices, 3, num_betas, scale=0.01),
            d.float(9 * (num_joints - 1), 3 * num_vertices, scale=0.01),
            d.layout(regressor / regressor.sum(1, keepdim=True)), d.parents(num_joints),
            d.float(num_vertices, num_joints, positive=True), pose2rot)
    compare(d, ops.lbs, reference.lbs, args, (0, 1, 2, 3, 4, 5, 7), grad_tol=dict(rtol=1e-6, atol=1e-8))


# --------------------------------------------------------------------------- #
# 2. Rasterization and antialias (low resolution)
# --------------------------------------------------------------------------- #

def scene(d: Draw):
    """Random triangles in front of the camera: pos [B, V, 4], tri [F, 3] int32 (some
    degenerate: repeated indices happen), resolution (H, W)."""
    batch, num_vertices, num_triangles = d.int(1, 2), d.int(3, 8), d.int(0, 6)
    pos = clip_pos(d.float(batch, num_vertices, 3, scale=0.7, special=False).contiguous())
    if d.flag("perspective"):
        pos = pos * (torch.rand(batch, num_vertices, 1, generator=d.gen, dtype=d.dtype) + 0.5)
    if d.flag("special pos"):
        pos = pos + d.float(batch, num_vertices, 4, scale=0.0).contiguous()
    tri = d.index((num_triangles, 3), num_vertices, torch.int32)
    return d.layout(pos), tri, (d.int(1, 6), d.int(1, 6))


@given(data=st.data(), dtype=DTYPES)
def test_rasterize(data, dtype):
    d = Draw(data, dtype)
    pos, tri, resolution = scene(d)
    grad_db = d.flag("grad_db")
    got = ops.rasterize(pos, tri, resolution, grad_db=grad_db)
    want = reference.rasterize(pos.double(), tri, resolution, grad_db=grad_db)
    assert torch.equal(got[0][..., 3].double(), want[0][..., 3]), "pixels pick different triangles"
    for g, w in zip(outputs(got), outputs(want)):  # coverage decided in float64 by both
        torch.testing.assert_close(g.double(), w, **TOL[dtype], equal_nan=True)


@given(data=st.data(), dtype=DTYPES)
def test_interpolate(data, dtype):
    d = Draw(data, dtype)
    pos, tri, resolution = scene(d)
    d.injected.clear()  # pos only decides rast; the injections that count are attr's
    rast, rast_db = ops.rasterize(pos.contiguous(), tri, resolution, grad_db=True)
    num_vertices, channels = pos.shape[1], d.int(1, 3)
    attr = d.float(*([pos.shape[0]] if d.flag("batched attr") else []), num_vertices, channels)
    diff_attrs = data.draw(st.sampled_from([None, "all", [0], [channels - 1, 0]]))
    args = (attr, d.layout(rast), tri, rast_db if diff_attrs else None, diff_attrs)
    compare(d, ops.interpolate, reference.interpolate, args, (0, 1, 3) if diff_attrs else (0, 1))


@given(data=st.data(), dtype=DTYPES)
def test_antialias(data, dtype):
    d = Draw(data, dtype)
    pos, tri, resolution = scene(d)
    d.injected.clear()
    rast, _ = ops.rasterize(pos.contiguous(), tri, resolution)
    color = d.float(pos.shape[0], *resolution, d.int(1, 3))
    compare(d, ops.antialias, reference.antialias, (color, d.layout(rast), pos, tri), (0, 2),
            grad_tol=dict(rtol=1e-7, atol=1e-9))


# --------------------------------------------------------------------------- #
# 3. Shading
# --------------------------------------------------------------------------- #

@given(data=st.data(), dtype=DTYPES)
def test_vertex_normals(data, dtype):
    d = Draw(data, dtype)
    num_vertices, num_faces, batch = d.int(1, 7), d.int(0, 8), d.int(1, 2)
    scale = data.draw(st.sampled_from([1e-3, 1.0, 1e3]))
    args = (d.float(batch, num_vertices, 3, scale=scale), d.index((num_faces, 3), num_vertices))
    # Two faces on one vertex set (a triangle and its reverse) cancel up to rounding: the
    # normal is then the direction of a rounding residue, different in every implementation.
    assume(len({tuple(sorted(f)) for f in args[1].tolist()}) == num_faces)
    compare(d, ops.vertex_normals, reference.vertex_normals, args, (0,), grad_tol=dict(rtol=1e-6, atol=1e-8))


@given(data=st.data(), dtype=DTYPES, convention=st.sampled_from(["deep3d", "deca", "irradiance"]))
def test_sh_basis_and_shading(data, dtype, convention):
    d = Draw(data, dtype)
    batch, count = d.int(0, 2), d.int(0, 5)
    normals = torch.nn.functional.normalize(d.float(batch, count, 3, special=False), dim=-1)
    if d.flag("special normals"):
        normals = normals + d.float(batch, count, 3, scale=0.0)
    normals = d.layout(normals)
    compare(d, lambda n: ops.sh_basis(n, convention), lambda n: reference.sh_basis(n, convention), (normals,), (0,))
    coeffs = d.float(*([batch] if d.flag("batched coeffs") else []), 9, 3)
    args = (normals, d.float(batch, count, 3, positive=True), coeffs)
    compare(d, lambda *a: ops.sh_shading(*a, convention), lambda *a: reference.sh_shading(*a, convention),
            args, (0, 1, 2))


@given(data=st.data(), dtype=DTYPES)
def test_blinn_phong(data, dtype):
    d = Draw(data, dtype)
    batch, count = d.int(1, 2), d.int(0, 5)
    normals = torch.nn.functional.normalize(d.float(batch, count, 3, special=False), dim=-1)
    shininess = d.float(batch, positive=True, scale=10.0) if d.flag("tensor shininess") else 12.0
    args = (d.layout(normals), d.float(batch, count, 3), d.float(batch, 3, offset=3.0), d.float(batch, 3, offset=3.0),
            d.float(batch, count, data.draw(st.sampled_from([1, 3])), positive=True), shininess)
    compare(d, ops.blinn_phong, reference.blinn_phong, args,
            (0, 1, 2, 3, 4, 5) if isinstance(shininess, torch.Tensor) else (0, 1, 2, 3, 4),
            grad_tol=dict(rtol=1e-6, atol=1e-8))


# --------------------------------------------------------------------------- #
# 4. Point-to-surface
# --------------------------------------------------------------------------- #

@given(data=st.data(), dtype=DTYPES)
def test_point_to_surface(data, dtype):
    d = Draw(data, dtype)
    batch, num_points, num_vertices, num_faces = d.int(1, 2), d.int(0, 6), d.int(1, 7), d.int(1, 8)
    mesh_batch = data.draw(st.sampled_from([1, batch]))
    points, vertices = d.float(batch, num_points, 3), d.float(mesh_batch, num_vertices, 3)
    faces = d.index((num_faces, 3), num_vertices)
    # ties may pick different faces: compare distances, the -1 / NaN pattern and the closest points
    compare(d, lambda *a: ops.point_to_surface(*a)[:2], lambda *a: reference.point_to_surface(*a)[:2],
            (points, vertices, faces), (0, 1), int_pattern_only=True, grad_tol=dict(rtol=1e-7, atol=1e-9))
    closest = [ops.closest_points(points, vertices, faces)[0]]
    _, face, bary = reference.point_to_surface(points, vertices, faces)
    corners = vertices.expand(batch, -1, -1)[torch.arange(batch)[:, None, None], faces[face.clamp(min=0)]]
    closest.append((bary[..., None] * corners).sum(-2))
    assert_matches(closest[0], closest[1], d)
