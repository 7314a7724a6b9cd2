"""The built-in synthetic head: a closed, outward-facing, deterministic mesh whose
FLAME-layout forward matches an independent numpy evaluation, with 68 landmarks
in iBUG order, working joints and bases, and clear errors on bad input."""
import importlib
import math

import numpy as np
import pytest
import torch

from facegeom.models import FLAME, synthetic_head
from tests.conftest import cuda
from tests.models.numpy_flame import barycentric_points, contour_row_for_yaw, flame_forward

head_module = importlib.import_module("facegeom.models.synthetic_head")


@pytest.fixture(scope="module")
def head():
    return synthetic_head(seed=0, dtype=torch.float64)


def numpy_model(model):
    return {k: getattr(model, k).numpy() for k in ("v_template", "shapedirs", "posedirs", "J_regressor",
                                                    "lbs_weights", "parents", "faces")}


# --------------------------------------------------------------------------- #
# Mesh                                                                        #
# --------------------------------------------------------------------------- #

def test_mesh_is_closed_consistently_wound_and_outward(head):
    faces = head.faces.numpy()
    vertices = head.v_template.numpy()
    assert isinstance(head, FLAME)
    assert 2000 <= vertices.shape[0] <= 5000
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    # Closed and consistently wound: every directed edge once, its reverse once.
    as_set = {tuple(e) for e in directed.tolist()}
    assert len(as_set) == len(directed)
    assert all((b, a) in as_set for a, b in as_set)
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.linalg.norm(cross, axis=1).min() > 1e-9  # no degenerate triangles
    # Outward: positive enclosed volume for the head and for each eyeball
    # (three connected components).
    volume = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    assert 2e-3 < volume < 6e-3  # about 3 litres: head-sized, in m^3
    is_eye = head.lbs_weights.numpy()[:, 3:].sum(1) > 0.5
    for component in (~is_eye, head.lbs_weights.numpy()[:, 3] > 0.5, head.lbs_weights.numpy()[:, 4] > 0.5):
        face_mask = component[faces].all(1)
        assert face_mask.any() and (component[faces].any(1) == face_mask).all()  # separate components
        sub = tri[face_mask]
        assert np.einsum("fi,fi->f", sub[:, 0], np.cross(sub[:, 1], sub[:, 2])).sum() > 0


def test_head_proportions_and_landmark_layout(head):
    out = head()
    lm = out.landmarks3d[0].numpy()
    verts = out.vertices[0].numpy()
    extent = verts.max(0) - verts.min(0)
    assert 0.13 < extent[0] < 0.22 and 0.22 < extent[1] < 0.32 and 0.15 < extent[2] < 0.25
    # iBUG order: subject's right (x < 0) first; eyes above nose above mouth above chin.
    assert lm[0, 0] < 0 < lm[16, 0] and lm[36, 0] < 0 < lm[45, 0] and lm[48, 0] < 0 < lm[54, 0]
    assert lm[8, 1] < lm[57, 1] < lm[51, 1] < lm[33, 1] < lm[30, 1] < lm[27, 1] < lm[19, 1]
    assert np.argmax(lm[:, 2]) == 30  # the nose tip is the most forward landmark
    assert lm[37, 1] > lm[41, 1] and lm[43, 1] > lm[47, 1]  # upper lids above lower lids
    # Mirror symmetry of pairs (the icosphere is symmetric under x -> -x).
    for a, b in ((0, 16), (36, 45), (48, 54), (17, 26), (31, 35)):
        np.testing.assert_allclose(lm[a] * [-1, 1, 1], lm[b], atol=2e-3)
    # Landmarks lie on the surface: embedded barycentrically in real triangles.
    assert (head.full_lmk_bary_coords >= 0).all()
    torch.testing.assert_close(head.full_lmk_bary_coords.sum(1), torch.ones(68, dtype=torch.float64))


def test_deterministic_and_seeded():
    head_module._build.cache_clear()
    a = synthetic_head(seed=3)
    head_module._build.cache_clear()
    b = synthetic_head(seed=3)
    c = synthetic_head(seed=4)
    for name, buffer in a.named_buffers():
        assert torch.equal(buffer, dict(b.named_buffers())[name]), name
    assert torch.equal(a.v_template, c.v_template)  # the mean head does not depend on the seed
    assert not torch.allclose(a.shapedirs, c.shapedirs)
    # Cached: two calls share the arrays' values but not the tensors.
    d = synthetic_head(seed=3)
    assert torch.equal(a.shapedirs, d.shapedirs) and a.shapedirs.data_ptr() != d.shapedirs.data_ptr()


def test_bases_are_orthogonal_and_scaled(head):
    shapedirs = head.shapedirs.reshape(-1, head.n_shape + head.n_exp).numpy()
    gram = shapedirs.T @ shapedirs
    off_diagonal = gram - np.diag(np.diag(gram))
    assert np.abs(off_diagonal[: head.n_shape, : head.n_shape]).max() < 1e-10 * gram.max()
    assert np.abs(off_diagonal[head.n_shape:, head.n_shape:]).max() < 1e-10 * gram.max()
    # N(0, 1) coefficients change the head by millimetres, not centimetres.
    g = torch.Generator().manual_seed(0)
    moved = head(torch.randn(1, head.n_shape, generator=g, dtype=torch.float64)).vertices - head().vertices
    rms = moved.norm(dim=-1).pow(2).mean().sqrt().item()
    assert 2e-3 < rms < 1e-2
    albedo = head.albedo_mean.numpy()
    assert albedo.min() >= 0 and albedo.max() <= 1
    assert head.n_tex == 50 and head.albedo_basis.shape == (50, head.num_vertices, 3)


# --------------------------------------------------------------------------- #
# Forward against the numpy FLAME formula                                     #
# --------------------------------------------------------------------------- #

def test_forward_matches_numpy_flame(head):
    g = torch.Generator().manual_seed(1)
    batch = 3
    shape = torch.randn(batch, 20, generator=g, dtype=torch.float64)  # fewer than n_shape: zero-padded
    expression = torch.randn(batch, head.n_exp, generator=g, dtype=torch.float64)
    pose, neck, jaw = (torch.randn(batch, 3, generator=g, dtype=torch.float64) * 0.3 for _ in range(3))
    eyes = torch.randn(batch, 6, generator=g, dtype=torch.float64) * 0.3
    translation = torch.randn(batch, 3, generator=g, dtype=torch.float64) * 0.1
    out = head(shape, expression, pose, neck, jaw, eyes, translation)
    m = numpy_model(head)
    for b in range(batch):
        betas = np.concatenate([shape[b].numpy(), np.zeros(head.n_shape - 20), expression[b].numpy()])
        full_pose = torch.cat([pose[b], neck[b], jaw[b], eyes[b]]).numpy()
        verts, joints = flame_forward(m["v_template"], m["shapedirs"], m["posedirs"], m["J_regressor"],
                                      m["lbs_weights"], m["parents"], betas, full_pose)
        verts, joints = verts + translation[b].numpy(), joints + translation[b].numpy()
        np.testing.assert_allclose(out.vertices[b].numpy(), verts, atol=1e-9)
        np.testing.assert_allclose(out.joints[b].numpy(), joints, atol=1e-9)
        full = barycentric_points(verts, m["faces"], head.full_lmk_faces_idx.numpy(), head.full_lmk_bary_coords.numpy())
        np.testing.assert_allclose(out.landmarks3d[b].numpy(), full, atol=1e-9)


@pytest.mark.parametrize("global_yaw,neck_yaw", [(0.0, 0.0), (25.2, 0.0), (-25.2, 0.0), (14.0, 12.3),
                                                 (-10.0, -20.6), (60.0, 0.0), (-70.0, 10.0)])
def test_dynamic_contour_follows_yaw(head, global_yaw, neck_yaw):
    pose = torch.tensor([[0.0, math.radians(global_yaw), 0.0]], dtype=torch.float64)
    neck = torch.tensor([[0.0, math.radians(neck_yaw), 0.0]], dtype=torch.float64)
    out = head(pose=pose, neck=neck)
    row = contour_row_for_yaw(global_yaw + neck_yaw)
    m = numpy_model(head)
    verts = out.vertices[0].numpy()
    contour = barycentric_points(verts, m["faces"], head.dynamic_lmk_faces_idx[row].numpy(),
                                 head.dynamic_lmk_bary_coords[row].numpy())
    static = barycentric_points(verts, m["faces"], head.lmk_faces_idx.numpy(), head.lmk_bary_coords.numpy())
    np.testing.assert_allclose(out.landmarks2d[0].numpy(), np.concatenate([contour, static]), atol=1e-12)
    assert head.contour_rows(torch.cat([pose, neck, torch.zeros(1, 9, dtype=torch.float64)], 1)).item() == row


def test_dynamic_contour_hugs_the_silhouette(head):
    # Turning the head towards +x hides the subject's left cheek: the contour
    # points on that side slide forwards (towards the visible outline) while
    # the static landmarks stay where they were on the mesh.
    frontal = head().landmarks2d[0]
    turned_pose = torch.tensor([[0.0, math.radians(35.0), 0.0]], dtype=torch.float64)
    turned = head(pose=turned_pose)
    rest = head()
    rot = torch.linalg.matrix_exp(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]],
                                               dtype=torch.float64) * math.radians(35.0))
    root = rest.joints[0, 0]
    unturned = (turned.landmarks2d[0] - root) @ rot + root  # undo the global rotation
    torch.testing.assert_close(unturned[17:], frontal[17:], atol=1e-9, rtol=0)
    # Contour points beyond 80 - 35 = 45 degrees of azimuth (14-16) move forwards.
    assert (unturned[14:17, 2] > frontal[14:17, 2] + 5e-3).all()
    torch.testing.assert_close(unturned[:14], frontal[:14], atol=1e-9, rtol=0)  # the rest stay


def test_joints_drive_the_right_parts(head):
    rest = head()
    jaw_open = head(jaw=torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64))
    lm_rest, lm_open = rest.landmarks3d[0], jaw_open.landmarks3d[0]
    assert lm_open[57, 1] < lm_rest[57, 1] - 5e-3  # lower lip drops
    assert lm_open[8, 1] < lm_rest[8, 1] - 5e-3  # chin drops
    # brows, nose and eyes stay (up to the micrometre-scale pose correctives)
    torch.testing.assert_close(lm_open[17:48], lm_rest[17:48], atol=2e-5, rtol=0)
    eyes = head(eyes=torch.tensor([[0.0, 0.5, 0.0, 0.0, -0.5, 0.0]], dtype=torch.float64))
    moved = (eyes.vertices - rest.vertices).norm(dim=-1)[0]
    is_eye = head.lbs_weights[:, 3:].sum(1) > 0.5
    assert moved[~is_eye].max() == 0 and moved[is_eye].max() > 5e-3  # only the eyeballs turn
    # Eyeballs rotate about their centres: the joint is the eyeball's centroid.
    for k, joint in ((3, 3), (4, 4)):
        ball = head.lbs_weights[:, k] > 0.5
        torch.testing.assert_close(eyes.vertices[0, ball].mean(0), rest.joints[0, joint], atol=1e-4, rtol=0)
    neck = head(neck=torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64))
    base = head.v_template[:, 1] < head.v_template[:, 1].min() + 1e-3
    # The neck base stays (up to its pose correctives), the whole face moves.
    assert (neck.vertices[0, base] - rest.vertices[0, base]).norm(dim=-1).max() < 4e-3
    assert (neck.landmarks3d - rest.landmarks3d).norm(dim=-1).min() > 1e-2


def test_gradients_reach_every_parameter():
    head = synthetic_head(seed=0, n_shape=10, n_exp=10, n_tex=10)
    params = dict(shape=torch.zeros(2, 10), expression=torch.zeros(2, 10), pose=torch.zeros(2, 3),
                  neck=torch.zeros(2, 3), jaw=torch.zeros(2, 3), eyes=torch.zeros(2, 6),
                  translation=torch.zeros(2, 3), texture=torch.zeros(2, 10))
    for p in params.values():
        p.requires_grad_(True)
    out = head(**params)
    g = torch.Generator().manual_seed(0)
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in
               (out.vertices, out.landmarks2d, out.landmarks3d, out.albedo))
    loss.backward()
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_float32_matches_float64(head):
    head32 = synthetic_head(seed=0)
    assert head32.v_template.dtype == torch.float32
    g = torch.Generator().manual_seed(2)
    shape, expression = torch.randn(2, 50, generator=g), torch.randn(2, 50, generator=g)
    jaw = torch.tensor([[0.2, 0.0, 0.0]])
    out32 = head32(shape, expression, jaw=jaw)
    out64 = head(shape.double(), expression.double(), jaw=jaw.double())
    torch.testing.assert_close(out32.vertices.double(), out64.vertices, atol=1e-6, rtol=0)
    assert head32.double().v_template.dtype == torch.float64


def test_bad_input_raises_naming_the_argument(head):
    with pytest.raises(ValueError, match="shape has 51 components"):
        head(torch.zeros(1, 51, dtype=torch.float64))
    with pytest.raises(ValueError, match="jaw"):
        head(jaw=torch.zeros(1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="eyes"):
        head(eyes=torch.zeros(6, dtype=torch.float64))
    with pytest.raises(TypeError, match="expression"):
        head(expression=torch.zeros(1, 5, dtype=torch.float32))
    with pytest.raises(ValueError, match="batch sizes"):
        head(torch.zeros(2, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="texture has 51"):
        head(texture=torch.zeros(1, 51, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_shape"):
        synthetic_head(n_shape=0)
    with pytest.raises(TypeError, match="seed"):
        synthetic_head(seed=1.5)
    with pytest.raises(IndexError, match="faces"):
        FLAME(head.v_template, head.shapedirs, head.posedirs, head.J_regressor, head.lbs_weights,
              head.faces + head.num_vertices, head.n_shape, head.n_exp)


def test_torch_compile_fullgraph():
    head = synthetic_head(seed=0, n_shape=10, n_exp=10, n_tex=10)

    def decode(shape, expression, pose, jaw, texture):
        out = head(shape, expression, pose=pose, jaw=jaw, texture=texture)
        return out.vertices, out.landmarks2d, out.landmarks3d, out.albedo

    g = torch.Generator().manual_seed(3)
    args = (torch.randn(2, 10, generator=g), torch.randn(2, 10, generator=g), torch.randn(2, 3, generator=g) * 0.3,
            torch.randn(2, 3, generator=g) * 0.2, torch.randn(2, 10, generator=g))
    compiled = torch.compile(decode, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(*args), decode(*args)):
        torch.testing.assert_close(got, want)


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    head = synthetic_head(seed=0, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    args = dict(shape=torch.randn(3, 50, generator=g, dtype=dtype), expression=torch.randn(3, 50, generator=g, dtype=dtype),
                pose=torch.randn(3, 3, generator=g, dtype=dtype) * 0.3, jaw=torch.randn(3, 3, generator=g, dtype=dtype) * 0.2,
                texture=torch.randn(3, 50, generator=g, dtype=dtype))
    cpu = head(**args)
    gpu = head.cuda()(**{k: v.cuda() for k, v in args.items()})
    tol = dict(atol=1e-5, rtol=0) if dtype == torch.float32 else dict(atol=1e-10, rtol=0)
    for name in ("vertices", "joints", "landmarks2d", "landmarks3d", "albedo"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), **tol)


def test_deca_pose_params_and_parents_checks(head):
    g = torch.Generator().manual_seed(5)
    pose_params = torch.randn(2, 6, generator=g, dtype=torch.float64) * 0.2  # DECA: global then jaw
    split = head(pose=pose_params[:, :3], jaw=pose_params[:, 3:])
    torch.testing.assert_close(head(pose=pose_params).vertices, split.vertices)
    with pytest.raises(ValueError, match="pose"):
        head(pose=pose_params, jaw=pose_params[:, 3:])  # both given: pose must be [B, 3]
    with pytest.raises(ValueError, match="parents"):
        FLAME(head.v_template, head.shapedirs, head.posedirs, head.J_regressor, head.lbs_weights, head.faces,
              head.n_shape, head.n_exp, parents=(-1, 0, 3, 1, 1))


def test_empty_batch_and_non_contiguous_inputs():
    head = synthetic_head(seed=0, n_shape=5, n_exp=5, n_tex=5)
    empty = head(torch.zeros(0, 5), pose=torch.zeros(0, 3), texture=torch.zeros(0, 5))
    assert empty.vertices.shape == (0, head.num_vertices, 3) and empty.landmarks2d.shape == (0, 68, 3)
    assert empty.albedo.shape == (0, head.num_vertices, 3)
    g = torch.Generator().manual_seed(6)
    shape = torch.randn(5, 3, generator=g).t()  # [3, 5], not contiguous
    pose = (torch.randn(3, 3, generator=g) * 0.2).t()
    torch.testing.assert_close(head(shape, pose=pose).landmarks2d,
                               head(shape.contiguous(), pose=pose.contiguous()).landmarks2d)


# --------------------------------------------------------------------------- #
# rigid_free and mouth_open                                                   #
# --------------------------------------------------------------------------- #

def _rigid_fraction(fields: np.ndarray, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[K]: the share of each field's weighted squared norm that a rigid motion
    (translation + infinitesimal rotation about the weighted centroid) explains."""
    w = weights / weights.sum()
    r = points - w @ points
    rigid = [np.tile(np.eye(3)[a], (len(points), 1)) for a in range(3)] + [np.cross(np.eye(3)[a], r)
                                                                          for a in range(3)]
    root = np.repeat(np.sqrt(w), 3)[:, None]
    basis = np.stack([f.reshape(-1) for f in rigid], 1) * root
    target = fields.reshape(len(points) * 3, -1) * root
    residual = target - basis @ np.linalg.lstsq(basis, target, rcond=None)[0]
    return 1.0 - (residual ** 2).sum(0) / (target ** 2).sum(0)


@pytest.mark.parametrize("region", ["face", "landmarks"])
def test_rigid_free_bases_hold_no_rigid_motion_of_the_face(region):
    arrays = {flag: head_module._build(0, 20, 10, 10, flag, False) for flag in (False, True)}
    free = arrays[True]
    if region == "face":  # the promise: exactly orthogonal in the face region's weights
        points, weights = free["v_template"], free["face_weights"]
        limit_free, least_plain = 1e-10, 0.05
    else:  # what a landmark loss sees: much less rotation for a fit to trade
        model = synthetic_head(seed=0, n_shape=20, n_exp=10, n_tex=10, dtype=torch.float64)
        kp = _keypoint_indices(model)
        points, weights = free["v_template"][kp], np.ones(len(kp))
        limit_free, least_plain = 0.2, 0.6
    fraction = {}
    for flag in (False, True):
        dirs = arrays[flag]["shapedirs"]
        fraction[flag] = _rigid_fraction(dirs[kp] if region == "landmarks" else dirs, points, weights)
    assert fraction[True][:3].max() < limit_free, fraction[True]  # the leading components
    assert fraction[False][:3].max() > least_plain, fraction[False]  # the plain bases do hold rigid motion
    if region == "face":
        assert fraction[True].max() < limit_free
    else:  # later components too, on average: less than half the plain bases' share
        assert fraction[True].mean() < 0.5 * fraction[False].mean(), (fraction[True].mean(), fraction[False].mean())
    # Same random draws: the pose correctives, albedo, template and landmarks do not change.
    for name in ("v_template", "posedirs", "albedo_basis", "albedo_mean", "full_bary", "dynamic_bary"):
        assert np.array_equal(arrays[False][name], free[name]), name
    assert np.allclose(np.einsum("vck,vcl->kl", free["shapedirs"][..., :20], free["shapedirs"][..., :20]),
                       np.diag(np.einsum("vck,vck->k", free["shapedirs"][..., :20], free["shapedirs"][..., :20])),
                       atol=1e-12)


def _keypoint_indices(model) -> np.ndarray:
    from facegeom.models import BFM

    return BFM.from_flame(model).keypoints.long().numpy()


def test_mouth_open_component_opens_the_mouth():
    def lip_gaps(model, coefficient):
        expression = torch.zeros(1, 10, dtype=torch.float64)
        expression[0, 0] = coefficient
        marks = model(torch.zeros(1, 20, dtype=torch.float64), expression).landmarks2d[0]
        return np.array([float(marks[a, 1] - marks[b, 1]) for a, b in ((61, 67), (62, 66), (63, 65))])

    plain = synthetic_head(seed=0, n_shape=20, n_exp=10, n_tex=10, dtype=torch.float64)
    opened = synthetic_head(seed=0, n_shape=20, n_exp=10, n_tex=10, dtype=torch.float64, mouth_open=True)
    assert lip_gaps(plain, 0.0).mean() < 3e-3  # nearly closed: about 2 mm
    gaps = [lip_gaps(opened, c) for c in (-4.0, -2.0, 0.0, 2.0, 4.0)]
    assert 8e-3 < gaps[2].mean() < 15e-3  # the mean face's lips ~1 cm apart
    assert all((b > a + 3e-3).all() for a, b in zip(gaps, gaps[1:]))  # +1 opens by ~2 mm
    assert (gaps[0] > -1e-3).all()  # the lips still do not cross at -4
    # The plain head's component 0 barely moves the lips (random field); the rest of the
    # expression basis is the same kind of field in both
    assert abs(lip_gaps(plain, 2.0).mean() - lip_gaps(plain, 0.0).mean()) < 1e-3
    assert opened.shapedirs.shape == plain.shapedirs.shape
    assert torch.equal(opened.shapedirs[..., :20], plain.shapedirs[..., :20])  # identity untouched
    # Only the lower face moves with the component: the forehead stays
    forehead = plain.v_template[:, 1] > 0.05
    assert opened.shapedirs[forehead, :, 20].abs().max() < 1e-9
    with pytest.raises(TypeError, match="mouth_open"):
        synthetic_head(mouth_open=1)
    with pytest.raises(TypeError, match="rigid_free"):
        synthetic_head(rigid_free="yes")
