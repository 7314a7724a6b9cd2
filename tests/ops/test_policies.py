"""Issue 17, op-level half: the policies every op follows (docs/ops.md "Non-finite
values", "Autocast", "Forward-mode AD") and the op findings of the hostile sweep
(argument validation, blendshapes with V = 0, rodrigues near -1e-8, rigid_transform
broadcasting). Kernel vs reference per op, on the cases of op_cases.py."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from facegeom import ops
from facegeom.ops import reference
from tests.conftest import requires_native
from tests.ops import op_cases
from tests.ops.op_cases import NAMES, case, outputs, with_arg

pytestmark = requires_native


def assert_same(actual, expected, rtol=1e-7, atol=1e-9, nan_pattern=True):
    """Same non-finite entries, finite values close; with ``nan_pattern`` the same NaN
    entries too (an inf input may give inf in one and NaN in the other: IEEE order)."""
    for a, e in zip(outputs(actual), outputs(expected)):
        assert a.shape == e.shape and a.dtype == e.dtype
        if not a.dtype.is_floating_point:
            assert torch.equal(a < 0, e < 0)  # point_to_surface: face -1; ties may pick other faces
            continue
        assert torch.equal(torch.isfinite(a), torch.isfinite(e)), (a, e)
        if nan_pattern:
            assert torch.equal(torch.isnan(a), torch.isnan(e)), (a, e)
        finite = torch.isfinite(a)
        torch.testing.assert_close(a[finite], e[finite], rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- #
# Non-finite values: NaN in -> NaN out for the affected entries, kernel == reference
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_gives_the_reference_non_finite_pattern(name, value):
    c = case(name)
    for index in c.float_args:
        arg = c.args[index].clone()
        arg.view(-1)[arg.numel() // 2] = value
        args = with_arg(c.args, index, arg)
        if name == "interpolate" and index == 1:
            continue  # rast's uv channels: checked below; its id channel must be valid
        got, want = c.op(*args), c.ref(*args)
        if name == "point_to_surface":  # ties: compare distances, and only the pattern of face / bary
            got, want = (got[0], got[1], torch.isnan(got[2])), (want[0], want[1], torch.isnan(want[2]))
        assert_same(got, want, nan_pattern=value != value)
        if name in ("rasterize", "antialias"):
            continue  # not drawn / pos only read at silhouette edges: docs/ops.md
        affected = torch.cat([~torch.isfinite(o).flatten() for o in outputs(got) if o.dtype.is_floating_point])
        if value != value:  # NaN in -> every affected entry is NaN, never inf or finite
            assert affected.any(), f"{name}: a NaN in argument {index} changed no output"
            for o in outputs(got):
                if o.dtype.is_floating_point:
                    assert not torch.isinf(o).any()


def test_point_to_surface_non_finite_mesh_vertex_makes_every_distance_nan():
    """The kernel used to skip a face with a NaN/Inf corner (finite distances)."""
    points, vertices, faces = case("point_to_surface").args
    for value in (float("nan"), float("inf")):
        bad = vertices.clone()
        bad[1, 4, 2] = value
        dist2, face, bary = ops.point_to_surface(points, bad, faces)
        assert torch.isfinite(dist2[0]).all() and torch.isnan(dist2[1]).all()
        assert (face[1] == -1).all() and torch.isnan(bary[1]).all()
        ref_dist2, ref_face, _ = reference.point_to_surface(points, bad, faces)
        assert_same((dist2, face), (ref_dist2, ref_face))
        assert torch.isnan(ops.mesh_to_mesh_distance(points, None, bad, faces)[1]).all()
        assert torch.isnan(ops.closest_points(points, bad, faces)[0][1]).all()
        assert torch.isnan(ops.point_to_plane_distance(points, bad, faces)[0][1]).all()
    # an unused non-finite vertex does not touch the surface
    extra = torch.cat([vertices, torch.full((2, 1, 3), float("nan"), dtype=vertices.dtype)], 1)
    assert torch.isfinite(ops.point_to_surface(points, extra, faces)[0]).all()


def test_point_to_plane_distance_float32_overflow_is_nan_not_zero():
    vertices = torch.tensor([[0.0, 0, 0], [1e30, 0, 0], [0, 1e30, 0]])
    faces = torch.tensor([[0, 1, 2]])
    distance, face = ops.point_to_plane_distance(torch.tensor([[0.2, 0.2, 0.5]]), vertices, faces)
    assert torch.isnan(distance).all() and (face == -1).all()
    # float64 holds it: the exact answer
    distance, _ = ops.point_to_plane_distance(torch.tensor([[0.2, 0.2, 0.5]], dtype=torch.float64),
                                              vertices.double(), faces)
    torch.testing.assert_close(distance, torch.tensor([0.5], dtype=torch.float64))


def test_vertex_normals_nan_vertex_gives_nan_normals_like_the_reference():
    vertices, faces = case("vertex_normals").args
    bad = vertices.clone()
    bad[0, 4, 0] = float("nan")  # the centre vertex: every face touches it or a neighbour
    got = ops.vertex_normals(bad, faces)
    assert torch.isnan(got[0, 4]).all() and torch.isfinite(got[1]).all()
    assert_same(got, reference.vertex_normals(bad, faces))


def test_rigid_transform_and_skin_on_inf_keep_the_constant_bottom_row():
    rot, joints, parents = case("rigid_transform").args
    for target, index in ((0, (0, 1, 0, 0)), (1, (0, 1, 0))):
        args = [rot.clone(), joints.clone()]
        args[target][index] = float("inf")
        posed, rel = ops.rigid_transform(*args, parents)
        ref_posed, ref_rel = reference.rigid_transform(*args, parents)
        assert_same((posed, rel), (ref_posed, ref_rel), nan_pattern=False)
        assert torch.equal(rel[..., 3, :], torch.tensor([0.0, 0, 0, 1], dtype=rel.dtype).expand(2, 3, 4))
        assert torch.isfinite(rel[1]).all() and torch.isfinite(rel[0, 0]).all()
        assert not torch.isfinite(rel[0, 2, :3]).all()  # the child of the bad joint


# --------------------------------------------------------------------------- #
# rodrigues: smplx's results wherever smplx is finite, never NaN from finite input
# --------------------------------------------------------------------------- #

def smplx_batch_rodrigues(rot_vecs):
    """Transcription of smplx/lbs.py batch_rodrigues (vchoutas/smplx, lbs.py:347-377)."""
    batch_size = rot_vecs.shape[0]
    angle = torch.norm(rot_vecs + 1e-8, dim=1, keepdim=True)
    rot_dir = rot_vecs / angle
    cos = torch.unsqueeze(torch.cos(angle), dim=1)
    sin = torch.unsqueeze(torch.sin(angle), dim=1)
    rx, ry, rz = torch.split(rot_dir, 1, dim=1)
    zeros = torch.zeros((batch_size, 1), dtype=rot_vecs.dtype)
    K = torch.cat([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view((batch_size, 3, 3))
    ident = torch.eye(3, dtype=rot_vecs.dtype).unsqueeze(dim=0)
    return ident + sin * K + (1 - cos) * torch.bmm(K, K)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rodrigues_never_nan_from_finite_input_and_smplx_elsewhere(dtype):
    eps = torch.tensor(1e-8, dtype=dtype)
    special = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype) * eps
    huge = torch.tensor([[3e19, -1e19, 2e19], [1e200, 0.0, 0.0] if dtype == torch.float64 else [1e38, 1e38, 0]],
                        dtype=dtype)
    ordinary = torch.cat([torch.randn(64, 3, dtype=dtype), torch.randn(8, 3, dtype=dtype) * 1e-6,
                          torch.tensor([[3.14159265, 0, 0], [0, 0, 1e-9]], dtype=dtype)])
    for inputs in (special, huge, ordinary):
        x = inputs.clone().requires_grad_(True)
        got = ops.rodrigues(x)
        assert torch.isfinite(got).all(), inputs
        torch.testing.assert_close(got, reference.rodrigues(inputs))
        # a rotation: R R^T = I
        torch.testing.assert_close(got @ got.transpose(1, 2), torch.eye(3, dtype=dtype).expand_as(got),
                                   atol=1e-5, rtol=0)
        got.sum().backward()
        assert torch.isfinite(x.grad).all()
    smplx = smplx_batch_rodrigues(ordinary)
    assert torch.isfinite(smplx).all()
    torch.testing.assert_close(ops.rodrigues(ordinary), smplx)
    torch.testing.assert_close(reference.rodrigues(ordinary), smplx, rtol=0, atol=0)
    assert torch.isnan(smplx_batch_rodrigues(special[:1])).all()  # what smplx gives instead
    lib = pytest.importorskip("smplx.lbs")
    torch.testing.assert_close(lib.batch_rodrigues(ordinary), smplx, rtol=0, atol=0)
    # the true rotation of r = -1e-8 (1, 1, 1): I + [r]x to first order
    r = special[0]
    skew = torch.tensor([[0, -r[2], r[1]], [r[2], 0, -r[0]], [-r[1], r[0], 0]], dtype=dtype)
    torch.testing.assert_close(ops.rodrigues(r), torch.eye(3, dtype=dtype) + skew, atol=1e-15, rtol=0)


def test_rodrigues_gradient_at_the_fixed_points():
    """smplx's map is discontinuous at r = -1e-8 (1, 1, 1) (no finite differences there):
    the kernel's formula is compared with autograd through the reference."""
    assert torch.autograd.gradcheck(ops.rodrigues, (torch.tensor([[0.3, -0.2, 0.1], [3.0, 1.0, -2.0]],
                                                                 dtype=torch.float64, requires_grad=True),))
    x = torch.tensor([[-1e-8, -1e-8, -1e-8], [1e200, 2e199, 0.0], [0.3, -0.2, 0.1]], dtype=torch.float64,
                     requires_grad=True)
    grad_kernel = torch.autograd.grad(ops.rodrigues(x).sum(), x)[0]
    grad_ref = torch.autograd.grad(reference.rodrigues(x).sum(), x)[0]
    torch.testing.assert_close(grad_kernel, grad_ref)


# --------------------------------------------------------------------------- #
# rigid_transform broadcasting; blendshapes with V = 0
# --------------------------------------------------------------------------- #

def test_rigid_transform_batch_of_one_broadcasts_with_summed_gradients():
    rot, joints, parents = case("rigid_transform").args
    rot1 = rot[:1].clone().requires_grad_(True)
    joints3 = torch.cat([joints, joints[:1] + 1]).requires_grad_(True)
    got = ops.rigid_transform(rot1, joints3, parents)
    want = reference.rigid_transform(rot1, joints3, parents)
    expanded = ops.rigid_transform(rot1.expand(3, -1, -1, -1), joints3, parents)
    for g, w, e in zip(got, want, expanded):
        assert g.shape[0] == 3
        torch.testing.assert_close(g, w)
        torch.testing.assert_close(g, e)
    grads = torch.autograd.grad(sum(o.sum() for o in got), (rot1, joints3))
    ref_grads = torch.autograd.grad(sum(o.sum() for o in want), (rot1, joints3))
    assert grads[0].shape == rot1.shape
    for g, w in zip(grads, ref_grads):
        torch.testing.assert_close(g, w)
    joints1 = joints[:1].clone().requires_grad_(True)
    posed, rel = ops.rigid_transform(rot, joints1, parents)
    torch.testing.assert_close(posed, reference.rigid_transform(rot, joints1, parents)[0])
    with pytest.raises(ValueError, match="batch sizes do not match"):
        ops.rigid_transform(rot, torch.cat([joints, joints[:1]]), parents)


def test_blendshapes_with_no_vertices():
    coeffs = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    basis = torch.randn(3, 0, 3, dtype=torch.float64, requires_grad=True)
    for base in (torch.randn(0, 3, dtype=torch.float64, requires_grad=True),
                 torch.randn(2, 0, 3, dtype=torch.float64, requires_grad=True), None):
        out = ops.blendshapes(coeffs, basis, base)
        assert out.shape == (2, 0, 3)
        assert out.shape == reference.blendshapes(coeffs, basis, base).shape
        inputs = (coeffs, basis) + (() if base is None else (base,))
        grads = torch.autograd.grad(out.sum(), inputs)
        assert torch.equal(grads[0], torch.zeros_like(coeffs))
        assert all(g.shape == t.shape for g, t in zip(grads, inputs))
        compiled = torch.ops.facegeom.blendshapes(coeffs.detach(), basis.detach(),
                                                 None if base is None else base.detach())
        assert compiled.shape == (2, 0, 3)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        fake = torch.ops.facegeom.blendshapes(torch.empty(2, 3), torch.empty(3, 0, 3), torch.empty(0, 3))
        assert fake.shape == (2, 0, 3)


# --------------------------------------------------------------------------- #
# Argument validation findings
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("bad", [-5.0, -float("inf"), -1e30, -2.0 ** 31, float("nan"), float("inf"), 9.0])
def test_interpolate_and_antialias_reject_bad_ids_in_rast(bad):
    attr, rast, tri = case("interpolate").args
    color, _, pos, _ = case("antialias").args
    broken = rast.clone()
    broken[1, 3, 2, 3] = bad
    with pytest.raises(IndexError, match=r"rast\[\.\.\., 3\]"):
        ops.interpolate(attr, broken, tri)
    with pytest.raises(IndexError, match=r"rast\[\.\.\., 3\]"):
        ops.antialias(color, broken, pos, tri)


def test_interpolate_diff_attrs_must_be_ints():
    attr, rast, tri = case("interpolate").args
    pos = case("antialias").args[2]
    rast, rast_db = ops.rasterize(pos, tri, (8, 8), grad_db=True)
    for bad in ([0.7], [1.0], [True], ["0"], 0.7, "some"):
        with pytest.raises(TypeError, match="diff_attrs"):
            ops.interpolate(attr, rast, tri, rast_db, diff_attrs=bad)
    out, out_da = ops.interpolate(attr, rast, tri, rast_db, diff_attrs=[torch.tensor(1), 0])
    assert out_da.shape[-1] == 4


def test_rasterize_grad_db_must_be_a_bool():
    pos, tri, resolution = case("rasterize").args
    for bad in ("no", 0, 1, None, 1.0):
        with pytest.raises(TypeError, match="grad_db"):
            ops.rasterize(pos, tri, resolution, grad_db=bad)


def test_mesh_to_mesh_distance_names_bad_vertices():
    faces = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match="a_vertices"):
        ops.mesh_to_mesh_distance(torch.randn(3), None, torch.randn(3, 3), faces)
    with pytest.raises(ValueError, match="b_vertices"):
        ops.mesh_to_mesh_distance(torch.randn(4, 3), None, torch.randn(9), faces)


# --------------------------------------------------------------------------- #
# Forward-mode AD: a clear error naming the op, never zero tangents
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_raises_naming_the_op(name):
    c = case(name)
    index = c.float_args[0]
    x = c.args[index]

    def f(t):
        return outputs(c.op(*with_arg(c.args, index, t)))[0]

    with pytest.raises(NotImplementedError, match=f"facegeom.ops.{name} does not support forward-mode AD"):
        torch.func.jvp(f, (x,), (torch.ones_like(x),))
    with pytest.raises(NotImplementedError, match=name):
        torch.func.jacfwd(f)(x)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NotImplementedError, match=name):
            f(dual)
        f(x)  # no tangent: fine inside a dual level
    # reverse mode is unaffected
    leaf = x.detach().requires_grad_(True)
    torch.autograd.grad(f(leaf).sum(), leaf)


def test_forward_mode_through_the_reference_and_the_fixed_correspondence_functions():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64)
    u = torch.randn(4, 3, 3, dtype=torch.float64)
    _, tangent = torch.func.jvp(reference.rodrigues, (x.detach(),), (t,))
    (vjp,) = torch.autograd.grad((ops.rodrigues(x) * u).sum(), x)
    torch.testing.assert_close((tangent * u).sum(), (t * vjp).sum())  # <J t, u> == <t, J^T u>
    points, vertices, faces = case("point_to_surface").args
    # point_to_plane_distance: plain PyTorch around non-differentiable kernel outputs
    probe = torch.randn(2, 6, dtype=torch.float64)
    _, got = torch.func.jvp(lambda v: ops.point_to_plane_distance(points, v, faces)[0], (vertices,),
                            (torch.ones_like(vertices),))
    leaf = vertices.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad((ops.point_to_plane_distance(points, leaf, faces)[0] * probe).sum(), leaf)
    torch.testing.assert_close((got * probe).sum(), vjp.sum())


# --------------------------------------------------------------------------- #
# Autocast: float16/bfloat16 upcast to float32, result == the float32 op
# --------------------------------------------------------------------------- #

def _low(args, dtype):
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.dtype == torch.float32 else a for a in args)


@pytest.mark.parametrize("name", NAMES)
def test_autocast_upcasts_to_float32(name):
    c = case(name, dtype=torch.float32)
    args = _low(c.args, torch.bfloat16)
    if name in ("interpolate", "antialias"):  # rast from rasterize stays float32 (ids exact), as AMP code has it
        args = with_arg(args, 1, c.args[1])
    rounded = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 else a for a in args)
    want = c.op(*rounded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = c.op(*args)
    for g, w in zip(outputs(got), outputs(want)):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
    # outside autocast, half precision is still refused clearly
    with pytest.raises(TypeError, match="float32 or float64"):
        c.op(*_low(c.args, torch.float16))


def test_direct_custom_op_calls_follow_the_autocast_policy():
    x = torch.randn(6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.ops.facegeom.rodrigues(x.bfloat16())
        linear = torch.nn.functional.linear(x, torch.eye(3))  # bf16 under autocast
        assert linear.dtype == torch.bfloat16
        chained = ops.rodrigues(linear)
    assert got.dtype == torch.float32 and chained.dtype == torch.float32
    torch.testing.assert_close(got, torch.ops.facegeom.rodrigues(x.bfloat16().float()), rtol=0, atol=0)
    assert ops.SUPPORTS_AUTOCAST is True
    names = op_cases.registered_ops()
    assert {"rasterize", "interpolate", "antialias", "point_to_surface", "skin", "rodrigues"} <= set(names)
    for name in names:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"facegeom::{name}", "AutocastCPU"), name


@pytest.mark.parametrize("method", ["landmarks", "tests.ops.amp_method:OpsLandmarks"])
def test_training_with_amp_on_cpu_bfloat16(tmp_path, method):
    """facegeom.train's AMP option (bfloat16 autocast on the CPU) now runs, also when a
    step feeds the network's bfloat16 output to the ops; the loss matches float32 training
    to bfloat16 accuracy."""
    import json

    from facegeom import train as training
    from facegeom.train import LandmarksConfig, TrainConfig
    from tests.ops.amp_method import OpsLandmarks

    losses = {}
    for amp in (False, True):
        out = tmp_path / f"amp{amp}"
        training.train(method, TrainConfig(steps=2, batch_size=2, seed=0, out=str(out), progress=False, amp=amp),
                       LandmarksConfig.tiny())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[amp] = [row["loss/total"] for row in rows]
    assert all(torch.isfinite(torch.tensor(v)).all() for v in losses.values())
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=0.05, atol=1e-3)
    if method != "landmarks":
        assert torch.bfloat16 in OpsLandmarks.seen_dtypes


def test_forward_mode_through_the_renderer_raises_too():
    """facegeom.render calls the ops' unchecked implementations: they refuse as well."""
    from facegeom.render import MeshRenderer
    from tests.ops.op_cases import quad_mesh

    vertices, faces = quad_mesh(torch.float64, batch=1)
    albedo = torch.full_like(vertices, 0.5)
    sh_coeffs = torch.zeros(1, 9, 3, dtype=torch.float64)
    sh_coeffs[:, 0] = 1.0
    renderer = MeshRenderer(faces, (8, 8))
    pos = op_cases.clip_pos(vertices)

    def image(v):
        return renderer(v, albedo, sh_coeffs, pos=op_cases.clip_pos(v))[0]

    assert torch.isfinite(image(vertices)).all()
    with pytest.raises(NotImplementedError, match="does not support forward-mode AD"):
        torch.func.jvp(image, (vertices,), (torch.ones_like(vertices),))
    with pytest.raises(NotImplementedError, match="facegeom.ops.rasterize"):
        torch.func.jvp(lambda p: renderer(vertices, albedo, sh_coeffs, pos=p)[0], (pos,), (torch.ones_like(pos),))
