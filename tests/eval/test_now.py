"""NoW protocol: crop, Procrustes, refinement on synthetic scans with known transforms."""
import numpy as np
import pytest
import torch

from facegeom.eval import now
from facegeom import testing as syn


def test_crop_sphere_hand_computed():
    # bridge = mean(lm1, lm2) = (0, 0, 0); nose bottom lm4 = (0, -30, 0)
    lm = np.array([[-40.0, 0, 0], [-10, 0, 0], [10, 0, 0], [40, 0, 0], [0, -30, 0], [-20, -50, 0], [20, -50, 0]])
    centre, radius = now.face_crop_sphere(lm)
    np.testing.assert_allclose(centre.numpy(), [0, -21, 0])  # lm4 + 0.3 (bridge - lm4)
    assert radius == pytest.approx(1.4 * (80 + 30) / 2)  # 77
    _, radius_feng = now.face_crop_sphere(lm, radius_factor=1.2)
    assert radius_feng == pytest.approx(66.0)
    vertices = np.array([[0, -21 + 77, 0], [0, -21 - 77.001, 0], [77 / 3**0.5] * 3, [0, -21, 0], [50, 40, 30]])
    vertices[2] += [0, -21, 0]
    faces = np.array([[0, 3, 2], [0, 1, 3], [3, 4, 0]])
    crop = now.crop_scan(vertices, lm, faces)
    assert crop.indices.tolist() == [0, 2, 3]  # exactly on the sphere is kept (<=), as the official code
    np.testing.assert_array_equal(crop.vertices.numpy(), vertices[[0, 2, 3]])
    assert crop.faces.tolist() == [[0, 2, 1]]  # only the triangle whose corners all survive, re-indexed


def test_procrustes_recovers_similarity_and_matches_official_convention():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(7, 3)) * 0.05
    R = syn.rotation([1, -2, 0.5], 70)
    target = 1234.5 * source @ R.T + [10, -20, 30]
    T = now.procrustes(source, target)
    assert T.scale == pytest.approx(1234.5, rel=1e-12)
    np.testing.assert_allclose(T.rotation.numpy(), R, atol=1e-12)
    np.testing.assert_allclose(T.apply(syn.as_tensor(source)).numpy(), target, atol=1e-9)
    # the official port: d, Z, tform = procrustes(X=target, Y=source); Z = b * Y0 @ T + c
    x0, y0 = target - target.mean(0), source - source.mean(0)
    u, s, vt = np.linalg.svd((x0 / np.linalg.norm(x0)).T @ (y0 / np.linalg.norm(y0)))
    official_T = vt.T @ u.T
    b = s.sum() * np.linalg.norm(x0) / np.linalg.norm(y0)
    np.testing.assert_allclose(T.rotation.numpy(), official_T.T, atol=1e-12)
    assert T.scale == pytest.approx(b, rel=1e-12)
    rigid = now.procrustes(source, target, scale=False)
    assert rigid.scale == 1.0
    np.testing.assert_allclose(rigid.rotation.numpy(), R, atol=1e-12)
    np.testing.assert_allclose(rigid.translation.numpy(), target.mean(0) - R @ source.mean(0), atol=1e-9)


def test_procrustes_reflection_choice():
    rng = np.random.default_rng(2)
    source = rng.normal(size=(7, 3))
    mirrored = source * [-1, 1, 1]
    best = now.procrustes(source, mirrored)  # official reflection='best'
    assert torch.linalg.det(best.rotation) == pytest.approx(-1)
    np.testing.assert_allclose(best.apply(syn.as_tensor(source)).numpy(), mirrored, atol=1e-12)
    proper = now.procrustes(source, mirrored, allow_reflection=False)
    assert torch.linalg.det(proper.rotation) == pytest.approx(1)


def _scene(seed=0, n=12, count=250, scale=1e-3, angle=25.0):
    """A predicted mesh in its own frame (metres), and a scan (mm) sampled on the
    same surface in the scan frame: scan = known similarity applied to the prediction."""
    mesh_v, faces = syn.grid_surface(n)
    lmk = syn.landmarks()
    points, _, normals = syn.sample_surface(mesh_v, faces, count, seed=seed)
    R = syn.rotation([0.3, 1.0, 0.2], angle)
    t = np.array([0.05, -0.03, 0.1])
    pred_v = scale * mesh_v @ R.T + t  # prediction = inverse of the known transform applied to the scan frame
    pred_l = scale * lmk @ R.T + t
    known = now.Similarity(1 / scale, syn.as_tensor(R.T), syn.as_tensor(-R.T @ t / scale))
    return dict(scan=points, scan_normals=normals, scan_l=lmk, pred_v=pred_v, faces=faces, pred_l=pred_l, known=known)


@pytest.mark.parametrize("metrical", [False, True])
def test_zero_noise_scan_recovers_transform_and_zero_distances(metrical):
    s = _scene()
    rng = np.random.default_rng(3)
    noisy_landmarks = s["pred_l"] + rng.normal(0, 3e-3, s["pred_l"].shape)  # 3 mm landmark error
    result = now.now_distances(s["scan"], s["scan_l"], s["pred_v"], s["faces"], noisy_landmarks, metrical=metrical)
    initial = now.now_distances(
        s["scan"], s["scan_l"], s["pred_v"], s["faces"], noisy_landmarks, metrical=metrical, refine=False
    )
    assert initial.distances.mean() > 0.2  # the landmark alignment alone is visibly off
    assert result.distances.max() < 1e-6
    assert result.refinement.converged and result.refinement.iterations <= 10
    A, K = result.alignment, s["known"]
    assert A.scale == pytest.approx(K.scale, rel=1e-9)
    if metrical:
        assert A.scale == 1000.0  # the unit factor, never estimated
    np.testing.assert_allclose(A.rotation.numpy(), K.rotation.numpy(), atol=1e-9)
    np.testing.assert_allclose(A.translation.numpy(), K.translation.numpy(), atol=1e-6)
    assert set(result.timings) == {"crop", "procrustes", "refinement", "distances"}


def test_metrical_and_original_differ_exactly_by_the_scale_step():
    s = _scene(seed=4)
    # a metrically correct prediction: both protocols find the same alignment and distances
    a = now.now_distances(s["scan"], s["scan_l"], s["pred_v"], s["faces"], s["pred_l"], metrical=False)
    b = now.now_distances(s["scan"], s["scan_l"], s["pred_v"], s["faces"], s["pred_l"], metrical=True, unit="m")
    np.testing.assert_allclose(a.distances.numpy(), b.distances.numpy(), atol=1e-6)
    # the same prediction 10 % too large: the original protocol's scale absorbs it, the metrical one does not
    big = s["pred_v"] * 1.1
    big_l = s["pred_l"] * 1.1
    a = now.now_distances(s["scan"], s["scan_l"], big, s["faces"], big_l, metrical=False)
    b = now.now_distances(s["scan"], s["scan_l"], big, s["faces"], big_l, metrical=True, unit="m")
    assert a.distances.max() < 1e-6 and a.alignment.scale == pytest.approx(1000 / 1.1, rel=1e-9)
    assert b.alignment.scale == 1000.0 and b.distances.mean() > 0.5
    # and the metrical result is the original one with the scale held at the unit factor
    held = now.refine_alignment(
        b.distances.new_tensor(s["scan"])[b.scan_indices], big, s["faces"], b.landmark_alignment, with_scale=False
    )[0]
    np.testing.assert_allclose(held.translation.numpy(), b.alignment.translation.numpy(), atol=1e-9)


@pytest.mark.parametrize("unit,factor", [("m", 1000.0), ("cm", 10.0), ("mm", 1.0)])
def test_metrical_units(unit, factor):
    s = _scene(seed=5, scale=1 / factor)
    result = now.now_distances(s["scan"], s["scan_l"], s["pred_v"], s["faces"], s["pred_l"], metrical=True, unit=unit)
    assert result.alignment.scale == factor
    assert result.distances.max() < 1e-6
    with pytest.raises(ValueError, match="unit must be one of"):
        now.now_distances(s["scan"], s["scan_l"], s["pred_v"], s["faces"], s["pred_l"], metrical=True, unit="inch")


def test_known_offset_surface():
    """Points offset by d along the face normals of a regular icosahedron: the metrical
    protocol measures exactly d (no rigid motion helps, by symmetry); the original
    protocol's scale step absorbs the offset: scale (h + d) / h, distances 0."""
    vertices, faces = syn.icosahedron(50.0)
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    bary = np.array([[1 / 3, 1 / 3, 1 / 3], [0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    d = 1.5
    scan = (np.einsum("kc,fcx->fkx", bary, corners) + d * normals[:, None]).reshape(-1, 3)
    lmk = syn.centred_landmarks()
    metrical = now.now_distances(scan, lmk, vertices, faces, lmk, metrical=True, unit="mm")
    assert metrical.distances.numel() == len(scan)
    np.testing.assert_allclose(metrical.distances.numpy(), d, atol=1e-9)
    original = now.now_distances(scan, lmk, vertices, faces, lmk)
    inradius = float(np.abs((normals * corners[:, 0]).sum(1)).mean())
    assert original.alignment.scale == pytest.approx((inradius + d) / inradius, rel=1e-8)
    assert original.distances.max() < 1e-6


def test_noisy_scan_distances_follow_the_noise():
    s = _scene(seed=6, count=400)
    rng = np.random.default_rng(7)
    sigma = 0.3
    scan = s["scan"] + rng.normal(0, sigma, (len(s["scan"]), 1)) * s["scan_normals"]
    result = now.now_distances(scan, s["scan_l"], s["pred_v"], s["faces"], s["pred_l"])
    # |N(0, sigma)| has median 0.674 sigma and mean 0.798 sigma; the fit can only lower them slightly
    summary = now.summarize(result.distances)
    assert 0.55 * sigma < summary["median"] < 0.75 * sigma
    assert 0.65 * sigma < summary["mean"] < 0.85 * sigma
    np.testing.assert_allclose(result.alignment.rotation.numpy(), s["known"].rotation.numpy(), atol=5e-3)
    assert result.alignment.scale == pytest.approx(1000.0, rel=5e-3)


def test_refinement_never_increases_the_cost():
    s = _scene(seed=8)
    initial = now.landmark_alignment(s["pred_l"] + 0.01, s["scan_l"])
    T, info = now.refine_alignment(s["scan"], s["pred_v"], s["faces"], initial)
    assert all(b < a for a, b in zip(info.costs, info.costs[1:]))
    assert info.final_cost == pytest.approx(
        float(now.scan_to_mesh_distances(s["scan"], T.apply(syn.as_tensor(s["pred_v"])), s["faces"]).square().sum()),
        rel=1e-9,
        abs=1e-12,
    )
    same, info0 = now.refine_alignment(s["scan"], s["pred_v"], s["faces"], initial, max_iterations=0)
    assert info0.iterations == 0 and same.scale == initial.scale


def test_bad_input_is_reported_clearly():
    s = _scene()
    args = dict(scan_vertices=s["scan"], scan_landmarks=s["scan_l"], predicted_vertices=s["pred_v"],
                predicted_faces=s["faces"], predicted_landmarks=s["pred_l"])
    with pytest.raises(ValueError, match=r"scan_landmarks must hold exactly 7 points.*got 6"):
        now.now_distances(**{**args, "scan_landmarks": s["scan_l"][:6]})
    with pytest.raises(ValueError, match=r"predicted_landmarks must hold exactly 7"):
        now.now_distances(**{**args, "predicted_landmarks": s["pred_l"][:5]})
    nan_scan = s["scan"].copy()
    nan_scan[3] = np.nan
    with pytest.raises(ValueError, match="vertices: 1 of 250 points have NaN"):
        now.now_distances(**{**args, "scan_vertices": nan_scan})
    nan_pred = s["pred_v"].copy()
    nan_pred[0, 1] = np.inf
    with pytest.raises(ValueError, match="predicted_vertices: 1 of"):
        now.now_distances(**{**args, "predicted_vertices": nan_pred})
    with pytest.raises(IndexError, match="predicted_faces must index vertices"):
        now.now_distances(**{**args, "predicted_faces": s["faces"] + 1})
    with pytest.raises(TypeError, match="predicted_faces must be an integer"):
        now.now_distances(**{**args, "predicted_faces": s["faces"].astype(np.float32)})
    with pytest.raises(ValueError, match=r"predicted_vertices must have shape \[N, 3\]"):
        now.now_distances(**{**args, "predicted_vertices": s["pred_v"][:, :2]})
    with pytest.raises(ValueError, match="no scan vertex lies within the face crop"):
        now.now_distances(**{**args, "scan_vertices": s["scan"] + 1e4})
    with pytest.raises(ValueError, match="all coincide"):
        now.procrustes(np.zeros((7, 3)), s["scan_l"])


def test_summary_and_cumulative_curve():
    per_image = [np.array([1.0, 2.0, 3.0]), torch.tensor([4.0, 5.0])]
    s = now.summarize(per_image)
    assert s == {"median": 3.0, "mean": 3.0, "std": pytest.approx(np.sqrt(2.0)), "count": 5}
    x, y = now.cumulative_error_curve(per_image, thresholds=[0.5, 1.0, 2.5, 5.0])
    np.testing.assert_array_equal(y, [0.0, 20.0, 40.0, 100.0])
    x, y = now.cumulative_error_curve(per_image)
    assert x[0] == 0 and x[-1] == pytest.approx(8.0) and np.all(np.diff(y) >= 0)
    assert np.isnan(now.summarize([])["median"])


def test_refinement_reaches_the_minimum_an_independent_optimiser_finds():
    """scipy's least_squares (trust region, finite differences) on the same objective,
    sum of squared scan-to-mesh distances over (log-scale, rotation vector, translation),
    started from the same landmark alignment, ends no lower than refine_alignment."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    s = _scene(seed=9, count=80)
    rng = np.random.default_rng(10)
    scan = s["scan"] + rng.normal(0, 0.2, (len(s["scan"]), 1)) * s["scan_normals"]
    initial = now.landmark_alignment(s["pred_l"] + rng.normal(0, 2e-3, s["pred_l"].shape), s["scan_l"])
    start = initial.apply(syn.as_tensor(s["pred_v"])).numpy()

    def residuals(x):
        moved = np.exp(x[0]) * start @ Rotation.from_rotvec(x[1:4]).as_matrix().T + x[4:]
        return now.scan_to_mesh_distances(scan, moved, s["faces"]).numpy()

    scipy_fit = least_squares(residuals, np.zeros(7), x_scale=[0.01, 0.01, 0.01, 0.01, 1, 1, 1], xtol=1e-12, ftol=1e-12)
    _, info = now.refine_alignment(scan, s["pred_v"], s["faces"], initial)
    assert info.converged
    assert info.final_cost <= 2 * scipy_fit.cost * (1 + 1e-4)  # scipy's cost is half the sum of squares
    assert info.final_cost < 0.5 * info.initial_cost


def test_float32_tensor_inputs_match_float64_arrays():
    s = _scene(seed=11, count=100)
    as32 = {k: torch.as_tensor(s[k], dtype=torch.float32) for k in ("scan", "scan_l", "pred_v", "pred_l")}
    a = now.now_distances(as32["scan"], as32["scan_l"], as32["pred_v"], torch.as_tensor(s["faces"], dtype=torch.int32),
                          as32["pred_l"][None])
    b = now.now_distances(as32["scan"].double().numpy(), as32["scan_l"].double().numpy(),
                          as32["pred_v"].double().numpy(), s["faces"], as32["pred_l"].double().numpy())
    assert a.distances.dtype == torch.float64
    np.testing.assert_array_equal(a.distances.numpy(), b.distances.numpy())


def test_scale_step_only_helps_on_a_different_shape():
    """A prediction whose shape differs from the scan (deeper, narrower): the original
    protocol optimises over a superset of the metrical one's transforms, so its final
    cost is lower; both converge in a few iterations."""
    mesh_v, faces = syn.grid_surface(12)
    scan, _, _ = syn.sample_surface(mesh_v, faces, 200, seed=12)
    scan_l = syn.landmarks()
    stretch = np.array([0.97, 0.97, 1.08])
    pred_l = scan_l * stretch + np.random.default_rng(13).normal(0, 1.0, scan_l.shape)
    a = now.now_distances(scan, scan_l, mesh_v * stretch, faces, pred_l)
    b = now.now_distances(scan, scan_l, mesh_v * stretch, faces, pred_l, metrical=True, unit="mm")
    assert a.refinement.converged and b.refinement.converged
    assert a.refinement.iterations <= 20 and b.refinement.iterations <= 20
    assert a.refinement.final_cost < b.refinement.final_cost
    assert a.alignment.scale != 1.0 and b.alignment.scale == 1.0
