"""Blendshapes and skinning: kernels vs the smplx-style reference, gradients,
custom-op registration, torch.compile, and bad input."""
import warnings

import pytest
import torch

import facegeom.ops as fo
from facegeom import _native
from facegeom.ops import reference
from tests.conftest import FLAME_PARENTS, SMPL_PARENTS, cuda, make_model, make_params, requires_native

TOL = {torch.float64: dict(atol=1e-10, rtol=0), torch.float32: dict(atol=1e-5, rtol=0)}
ops = torch.ops.facegeom if _native.AVAILABLE else None


def lbs_args(model, betas, pose):
    return (betas, pose, model["v_template"], model["shapedirs"], model["posedirs"],
            model["J_regressor"], model["parents"], model["lbs_weights"])


# --------------------------------------------------------------------------- #
# Kernel vs reference                                                         #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "name,num_vertices,num_betas,parents,batch",
    [
        ("flame", 5023, 400, FLAME_PARENTS, 1),
        ("flame", 5023, 400, FLAME_PARENTS, 3),
        ("flame", 5023, 400, FLAME_PARENTS, 12),  # large-batch (BLAS) path
        ("smpl", 6890, 10, SMPL_PARENTS, 2),
        ("smpl", 6890, 10, SMPL_PARENTS, 9),
    ],
)
def test_lbs_matches_reference(dtype, name, num_vertices, num_betas, parents, batch):
    model = make_model(num_vertices, num_betas, parents, dtype)
    betas, pose = make_params(batch, num_betas, len(parents), dtype)
    verts, joints = fo.lbs(*lbs_args(model, betas, pose))
    ref_verts, ref_joints = reference.lbs(*lbs_args(model, betas, pose))
    assert verts.shape == (batch, num_vertices, 3) and joints.shape == (batch, len(parents), 3)
    torch.testing.assert_close(verts, ref_verts, **TOL[dtype])
    torch.testing.assert_close(joints, ref_joints, **TOL[dtype])


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch", [1, 3, 12])
def test_lbs_matches_smplx(dtype, batch):
    smplx_lbs = pytest.importorskip("smplx.lbs")
    model = make_model(5023, 400, FLAME_PARENTS, dtype)
    betas, pose = make_params(batch, 400, 5, dtype)
    verts, joints = fo.lbs(*lbs_args(model, betas, pose))
    ref_verts, ref_joints = smplx_lbs.lbs(*lbs_args(model, betas, pose))
    torch.testing.assert_close(verts, ref_verts, **TOL[dtype])
    torch.testing.assert_close(joints, ref_joints, **TOL[dtype])
    rot = fo.rodrigues(pose.view(-1, 3))
    torch.testing.assert_close(rot, smplx_lbs.batch_rodrigues(pose.view(-1, 3)), **TOL[dtype])


@requires_native
@pytest.mark.parametrize("batch", [2, 11])
def test_lbs_pose2rot_false_and_batched_inputs(batch):
    model = make_model(300, 8, FLAME_PARENTS)
    betas, pose = make_params(batch, 8, 5)
    rot = reference.rodrigues(pose.view(batch, 5, 3))
    model["v_template"] = model["v_template"] + torch.randn(batch, 300, 3, dtype=torch.float64) * 0.01
    model["lbs_weights"] = model["lbs_weights"].expand(batch, -1, -1).clone()
    got = fo.lbs(*lbs_args(model, betas, rot), pose2rot=False)
    want = reference.lbs(*lbs_args(model, betas, rot), pose2rot=False)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[torch.float64])
    # the rotations may also come flattened as [B, J*9]
    flat = fo.lbs(*lbs_args(model, betas, rot.reshape(batch, 45)), pose2rot=False)
    torch.testing.assert_close(flat[0], want[0], **TOL[torch.float64])


@requires_native
def test_lbs_broadcasts_a_batch_of_one():
    model = make_model(200, 6, FLAME_PARENTS)
    betas, pose = make_params(4, 6, 5)
    verts, _ = fo.lbs(*lbs_args(model, betas[:1], pose))
    want, _ = reference.lbs(*lbs_args(model, betas[:1].expand(4, -1), pose))
    torch.testing.assert_close(verts, want, **TOL[torch.float64])


@requires_native
def test_lbs_non_contiguous_inputs():
    model = make_model(150, 6, FLAME_PARENTS)
    betas, pose = make_params(3, 12, 5)
    betas = betas[:, ::2]  # non-contiguous [3, 6]
    model["shapedirs"] = torch.randn(6, 150, 3, dtype=torch.float64).permute(1, 2, 0) * 1e-3
    got = fo.lbs(*lbs_args(model, betas, pose))
    want = reference.lbs(*lbs_args(model, betas.contiguous(), pose))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[torch.float64])


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rodrigues_matches_reference_and_known_values(dtype):
    axis_angle = torch.randn(2, 7, 3, dtype=dtype) * 2
    torch.testing.assert_close(fo.rodrigues(axis_angle), reference.rodrigues(axis_angle), **TOL[dtype])
    quarter = torch.tensor([0.0, 0.0, torch.pi / 2], dtype=dtype)
    want = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    torch.testing.assert_close(fo.rodrigues(quarter), want, atol=1e-6, rtol=0)
    # smplx's epsilon: the zero vector gives exactly the identity, with a finite gradient
    zero = torch.zeros(1, 3, dtype=dtype, requires_grad=True)
    rot = fo.rodrigues(zero)
    torch.testing.assert_close(rot[0], torch.eye(3, dtype=dtype), atol=1e-7, rtol=0)
    rot.sum().backward()
    assert torch.isfinite(zero.grad).all()
    assert fo.rodrigues(torch.zeros(0, 3, dtype=dtype)).shape == (0, 3, 3)


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batched_weights", [False, True])
def test_skin_matches_reference(dtype, batched_weights):
    g = torch.Generator().manual_seed(3)
    vertices = torch.randn(3, 1000, 3, generator=g, dtype=dtype)
    transforms = torch.randn(3, 7, 4, 4, generator=g, dtype=dtype)
    weights = torch.rand(3 if batched_weights else 1, 1000, 7, generator=g, dtype=dtype)
    weights = weights if batched_weights else weights[0]
    torch.testing.assert_close(
        fo.skin(vertices, transforms, weights), reference.skin(vertices, transforms, weights), **TOL[dtype]
    )
    # unbatched inputs give an unbatched result
    one = fo.skin(vertices[0], transforms[0], weights if not batched_weights else weights[0])
    assert one.shape == (1000, 3)


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rigid_transform_matches_reference(dtype):
    rot = reference.rodrigues(torch.randn(4, 24, 3, dtype=dtype))
    joints = torch.randn(4, 24, 3, dtype=dtype)
    parents = torch.tensor(SMPL_PARENTS)
    got = fo.rigid_transform(rot, joints, parents)
    want = reference.rigid_transform(rot, joints, parents)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])


@requires_native
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_blendshapes_matches_reference(dtype):
    coeffs = torch.randn(5, 40, dtype=dtype)
    basis = torch.randn(40, 300, 3, dtype=dtype)
    for base in (None, torch.randn(300, 3, dtype=dtype), torch.randn(5, 300, 3, dtype=dtype)):
        torch.testing.assert_close(
            fo.blendshapes(coeffs, basis, base), reference.blendshapes(coeffs, basis, base), **TOL[dtype]
        )
    assert fo.blendshapes(coeffs[0], basis).shape == (300, 3)


@requires_native
def test_results_do_not_depend_on_thread_count():
    model = make_model(3000, 20, FLAME_PARENTS, torch.float32)
    betas, pose = make_params(2, 20, 5, torch.float32)
    betas.requires_grad_(True)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            verts, joints = fo.lbs(*lbs_args(model, betas, pose))
            (grad,) = torch.autograd.grad(verts.square().sum() + joints.sum(), betas)
            results.append((verts, joints, grad))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- #
# Gradients                                                                   #
# --------------------------------------------------------------------------- #

@requires_native
@pytest.mark.parametrize("batch", [2, 10])  # streaming and BLAS paths
@pytest.mark.parametrize("batched", [False, True])
def test_lbs_gradcheck_every_input(batch, batched):
    model = make_model(6, 3, [-1, 0, 1, 1])
    betas, pose = make_params(batch, 3, 4)
    if batched:
        model["v_template"] = model["v_template"].expand(batch, -1, -1).clone()
        model["lbs_weights"] = model["lbs_weights"].expand(batch, -1, -1).clone()
    names = ["v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights"]
    inputs = [betas, pose] + [model[n] * 10 if n in ("shapedirs", "posedirs") else model[n] for n in names]
    inputs = [t.detach().requires_grad_(True) for t in inputs]

    def fn(betas, pose, v_template, shapedirs, posedirs, J_regressor, lbs_weights):
        return fo.lbs(betas, pose, v_template, shapedirs, posedirs, J_regressor, model["parents"], lbs_weights)

    assert torch.autograd.gradcheck(fn, inputs)


@requires_native
def test_lbs_gradcheck_pose2rot_false():
    model = make_model(5, 3, [-1, 0, 0])
    betas, pose = make_params(2, 3, 3)
    rot = reference.rodrigues(pose.view(2, 3, 3)).requires_grad_(True)
    fn = lambda r: fo.lbs(betas, r, *[model[k] for k in ("v_template", "shapedirs", "posedirs",
                                                      "J_regressor", "parents", "lbs_weights")], pose2rot=False)
    assert torch.autograd.gradcheck(fn, (rot,))


@requires_native
@pytest.mark.parametrize("batched_weights", [False, True])
def test_skin_gradcheck(batched_weights):
    vertices = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    transforms = torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(*((2,) if batched_weights else ()), 9, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fo.skin, (vertices, transforms, weights))


@requires_native
def test_rodrigues_and_rigid_transform_gradcheck():
    axis_angle = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fo.rodrigues, (axis_angle,))
    rot = torch.randn(2, 5, 3, 3, dtype=torch.float64, requires_grad=True)  # not orthogonal on purpose
    joints = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    parents = torch.tensor([-1, 0, 1, 1, 0])
    assert torch.autograd.gradcheck(lambda r, j: fo.rigid_transform(r, j, parents), (rot, joints))


@requires_native
@pytest.mark.parametrize("base_shape", [None, (7, 3), (3, 7, 3)])
def test_blendshapes_gradcheck(base_shape):
    coeffs = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    basis = torch.randn(4, 7, 3, dtype=torch.float64, requires_grad=True)
    base = None if base_shape is None else torch.randn(*base_shape, dtype=torch.float64, requires_grad=True)
    inputs = (coeffs, basis) if base is None else (coeffs, basis, base)
    assert torch.autograd.gradcheck(fo.blendshapes, inputs)


# --------------------------------------------------------------------------- #
# Custom-op registration                                                      #
# --------------------------------------------------------------------------- #

def _opcheck_cases():
    if not _native.AVAILABLE:
        return []
    f64 = dict(dtype=torch.float64)
    rg = lambda *s: torch.randn(*s, **f64).requires_grad_(True)
    rn = lambda *s: torch.randn(*s, **f64)  # backward ops are first-order: no grad inputs
    parents = torch.tensor([-1, 0, 1, 1])
    cases = [
        ("rodrigues", ops.rodrigues, (rg(5, 3),)),
        ("rigid_transform", ops.rigid_transform, (rg(2, 4, 3, 3), rg(2, 4, 3), parents)),
        ("skin", ops.skin, (rg(2, 9, 3), rg(2, 4, 4, 4), rg(9, 4))),
        ("skin_batched", ops.skin, (rg(2, 9, 3), rg(2, 4, 4, 4), rg(2, 9, 4))),
        ("blendshapes", ops.blendshapes, (rg(2, 4), rg(4, 7, 3), rg(7, 3))),
        ("rodrigues_backward", ops.rodrigues_backward, (rn(5, 3, 3), rn(5, 3))),
        ("rigid_transform_backward", ops.rigid_transform_backward,
         (rn(2, 4, 3), rn(2, 4, 4, 4), rn(2, 4, 3, 3), rn(2, 4, 3), parents)),
        ("skin_backward", ops.skin_backward, (rn(2, 9, 3), rn(2, 9, 3), rn(2, 4, 4, 4), rn(9, 4), [True, True, True])),
    ]
    for batch in (2, 10):
        blend = (rg(batch, 3), rg(batch, 4, 3, 3), rg(7, 3), rg(7, 3, 3), rg(27, 21), rg(4, 7))
        cases.append((f"shape_pose_blend_b{batch}", ops.lbs_shape_pose_blend, blend))
        grads = (rn(batch, 7, 3), rn(batch, 7, 3), rn(batch, 4, 3))
        plain = tuple(t.detach() for t in blend)
        cases.append((f"shape_pose_blend_backward_b{batch}", ops.lbs_shape_pose_blend_backward,
                      grads + plain + (rn(batch, 7, 3), [True] * 6)))
    cases.append(("shape_pose_blend_backward_no_vshaped_grad", ops.lbs_shape_pose_blend_backward,
                  (None,) + cases[-1][2][1:-1] + ([True, False, True, False, True, False],)))
    return cases


@requires_native
@pytest.mark.parametrize("name,op,args", _opcheck_cases(), ids=[c[0] for c in _opcheck_cases()])
def test_opcheck(name, op, args):
    torch.library.opcheck(op, args)


@requires_native
def test_double_backward_raises_clearly():
    pose = torch.randn(2, 15, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(fo.rodrigues(pose.view(-1, 3)).square().sum(), pose, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        grad.sum().backward()


@requires_native
def test_torch_compile_fullgraph():
    model = make_model(100, 5, FLAME_PARENTS, torch.float32)
    betas, pose = make_params(2, 5, 5, torch.float32)

    def forward(betas, pose):
        verts, joints = fo.lbs(*lbs_args(model, betas, pose))
        return verts.mean(1) + joints[:, :1]

    compiled = torch.compile(forward, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(betas, pose), forward(betas, pose))


# --------------------------------------------------------------------------- #
# Bad input, edge cases, fallback                                             #
# --------------------------------------------------------------------------- #

def test_lbs_bad_shapes_dtypes_devices_name_the_argument():
    model = make_model(50, 4, FLAME_PARENTS)
    betas, pose = make_params(2, 4, 5)
    with pytest.raises(ValueError, match="shapedirs"):
        fo.lbs(*lbs_args(model, torch.randn(2, 5, dtype=torch.float64), pose))
    with pytest.raises(ValueError, match="pose"):
        fo.lbs(*lbs_args(model, betas, pose[:, :12]))
    with pytest.raises(TypeError, match="betas"):
        fo.lbs(*lbs_args(model, betas.float(), pose))
    with pytest.raises(TypeError, match="pose"):
        fo.lbs(*lbs_args(model, betas, pose.long()))
    with pytest.raises(ValueError, match="posedirs"):
        fo.lbs(*lbs_args(dict(model, posedirs=model["posedirs"][:-1]), betas, pose))
    with pytest.raises(ValueError, match="lbs_weights"):
        fo.lbs(*lbs_args(dict(model, lbs_weights=model["lbs_weights"][:, :4]), betas, pose))
    with pytest.raises(ValueError, match="batch sizes"):
        fo.lbs(*lbs_args(model, betas, torch.zeros(3, 15, dtype=torch.float64)))
    with pytest.raises(ValueError, match="v_template.*meta"):
        fo.lbs(*lbs_args(dict(model, v_template=model["v_template"].to("meta")), betas, pose))
    with pytest.raises(TypeError, match="parents"):
        fo.lbs(*lbs_args(dict(model, parents=model["parents"].double()), betas, pose))


@pytest.mark.parametrize(
    "parents,message",
    [([0, 0, 1, 1, 1], "parents\\[0\\] must be -1"), ([-1, 0, 3, 1, 1], "topologically"),
     ([-1, 0, 1, 1, 9], "topologically"), ([-1, -1, 1, 1, 1], "topologically")],
)
def test_lbs_rejects_bad_parents(parents, message):
    model = make_model(20, 4, FLAME_PARENTS)
    betas, pose = make_params(1, 4, 5)
    with pytest.raises(ValueError, match=message):
        fo.lbs(*lbs_args(dict(model, parents=torch.tensor(parents)), betas, pose))


@requires_native
def test_direct_op_calls_are_checked_in_cpp():
    # torch.ops.facegeom bypasses the Python checks; the C++ checks must still raise.
    with pytest.raises(ValueError, match="parents"):
        ops.rigid_transform(torch.eye(3).expand(1, 3, 3, 3), torch.zeros(1, 3, 3), torch.tensor([-1, 2, 0]))
    with pytest.raises(ValueError, match="weights"):
        ops.skin(torch.zeros(1, 4, 3), torch.zeros(1, 2, 4, 4), torch.zeros(5, 2))
    with pytest.raises(TypeError, match="float32 or float64"):
        ops.rodrigues(torch.zeros(2, 3, dtype=torch.int32))


def test_skin_and_blendshapes_bad_input():
    with pytest.raises(ValueError, match="weights"):
        fo.skin(torch.zeros(2, 4, 3), torch.zeros(2, 2, 4, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="transforms"):
        fo.skin(torch.zeros(2, 4, 3), torch.zeros(2, 2, 3, 4), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="basis"):
        fo.blendshapes(torch.zeros(2, 3), torch.zeros(4, 5, 3))
    with pytest.raises(TypeError, match="coeffs"):
        fo.blendshapes([1.0, 2.0], torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="axis_angle"):
        fo.rodrigues(torch.zeros(4, 2))


def test_lbs_nan_passes_through_and_empty_batch():
    model = make_model(30, 4, FLAME_PARENTS)
    betas, pose = make_params(2, 4, 5)
    betas[1, 0] = float("nan")
    verts, joints = fo.lbs(*lbs_args(model, betas, pose))
    assert torch.isnan(verts[1]).any() and torch.isnan(joints[1]).any()
    assert torch.isfinite(verts[0]).all() and torch.isfinite(joints[0]).all()
    verts, joints = fo.lbs(*lbs_args(model, betas[:0], pose[:0]))
    assert verts.shape == (0, 30, 3) and joints.shape == (0, 5, 3)


def test_fallback_to_reference_warns_once(monkeypatch):
    monkeypatch.setattr(_native, "AVAILABLE", False)
    monkeypatch.setattr(_native, "IMPORT_ERROR", "simulated")
    monkeypatch.setattr(_native, "_warned", set())
    model = make_model(40, 4, FLAME_PARENTS)
    betas, pose = make_params(2, 4, 5)
    with pytest.warns(RuntimeWarning, match="reference"):
        verts, _ = fo.lbs(*lbs_args(model, betas, pose))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fo.lbs(*lbs_args(model, betas, pose))  # the warning is given once
    torch.testing.assert_close(verts, reference.lbs(*lbs_args(model, betas, pose))[0])


# --------------------------------------------------------------------------- #
# CUDA vs CPU                                                                 #
# --------------------------------------------------------------------------- #

@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name,num_vertices,num_betas,parents,batch,pose2rot,batched", [
    ("flame", 5023, 400, FLAME_PARENTS, 3, True, False),
    ("flame", 5023, 400, FLAME_PARENTS, 12, True, True),  # large batch; per-batch template and weights
    ("smpl", 6890, 10, SMPL_PARENTS, 2, False, False),   # rotation-matrix pose
])
def test_cuda_matches_cpu(dtype, name, num_vertices, num_betas, parents, batch, pose2rot, batched):
    """Forward and backward (to every differentiable input) of the CUDA kernels
    (rodrigues, lbs_shape_pose_blend, rigid_transform, skin) against the CPU kernels."""
    model = make_model(num_vertices, num_betas, parents, dtype=dtype)
    betas, pose = make_params(batch, num_betas, len(parents), dtype=dtype)
    if not pose2rot:
        pose = reference.rodrigues(pose.view(-1, 3)).view(batch, len(parents), 3, 3)
    if batched:
        model["v_template"] = model["v_template"] + 0.01 * torch.randn(batch, num_vertices, 3, dtype=dtype)
        model["lbs_weights"] = model["lbs_weights"].expand(batch, -1, -1).contiguous()
    g = torch.Generator().manual_seed(3)
    grad_verts = torch.randn(batch, num_vertices, 3, generator=g, dtype=dtype)
    grad_joints = torch.randn(batch, len(parents), 3, generator=g, dtype=dtype)

    def run(device):
        args = [t.to(device) for t in lbs_args(model, betas, pose)]
        inputs = [a.requires_grad_(True) for i, a in enumerate(args) if i != 6]  # all but parents
        verts, joints = fo.lbs(*args, pose2rot=pose2rot)
        grads = torch.autograd.grad([verts, joints], inputs, [grad_verts.to(device), grad_joints.to(device)])
        return [verts.detach().cpu(), joints.detach().cpu()] + [g.cpu() for g in grads]

    tol = dict(atol=1e-9, rtol=1e-9) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    names = ["vertices", "joints", "grad betas", "grad pose", "grad v_template", "grad shapedirs",
             "grad posedirs", "grad J_regressor", "grad lbs_weights"]
    for label, a, b in zip(names, run("cpu"), run("cuda")):
        torch.testing.assert_close(b, a, **tol, msg=lambda m, label=label: f"{label}: {m}")
