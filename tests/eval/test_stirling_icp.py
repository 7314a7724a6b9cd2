"""Stirling (Feng et al. 2018 and NoW-protocol variant) and MICC ICP point-to-plane RMSE."""
import numpy as np
import pytest
import torch

from facegeom.eval import now, stirling
from facegeom.eval.icp import icp_rmse
from facegeom import testing as syn


def _scene(seed=0, count=200):
    mesh_v, faces = syn.grid_surface(12)
    lmk = syn.landmarks()
    points, _, normals = syn.sample_surface(mesh_v, faces, count, seed=seed)
    R = syn.rotation([1.0, 0.2, -0.4], 15)
    t = np.array([3.0, -2.0, 5.0])
    return mesh_v @ R.T * 0.01 + t, faces, lmk @ R.T * 0.01 + t, points, normals, lmk


def test_feng2018_is_landmark_alignment_crop_1_2_and_no_refinement():
    pred_v, faces, pred_l, scan, _, scan_l = _scene()
    rng = np.random.default_rng(1)
    noisy = pred_l + rng.normal(0, 0.02, pred_l.shape)
    result = stirling.stirling_distances(scan, scan_l, pred_v, faces, noisy)
    assert result.refinement is None
    centre, radius = now.face_crop_sphere(scan_l, radius_factor=1.2)
    kept = np.linalg.norm(scan - centre.numpy(), axis=1) <= radius
    np.testing.assert_array_equal(result.scan_indices.numpy(), np.nonzero(kept)[0])
    T = now.procrustes(noisy, scan_l)
    expected = now.scan_to_mesh_distances(scan[kept], T.apply(syn.as_tensor(pred_v)), faces)
    np.testing.assert_allclose(result.distances.numpy(), expected.numpy(), rtol=1e-12)
    assert result.distances.mean() > 0.1  # landmark noise is not refined away
    now_protocol = stirling.stirling_distances(scan, scan_l, pred_v, faces, noisy, protocol="now")
    assert now_protocol.distances.max() < 1e-6 and now_protocol.distances.numel() >= result.distances.numel()
    with pytest.raises(ValueError, match="protocol must be"):
        stirling.stirling_distances(scan, scan_l, pred_v, faces, noisy, protocol="fg")


def test_rmse_hand_computed():
    assert stirling.rmse([3.0, 4.0]) == pytest.approx(np.sqrt(12.5))
    assert stirling.rmse(torch.tensor([2.0])) == 2.0
    with pytest.raises(ValueError, match="no distances"):
        stirling.rmse([])


def test_icp_recovers_similarity_from_a_rough_start():
    pred_v, faces, pred_l, scan, _, scan_l = _scene(seed=2)
    rng = np.random.default_rng(3)
    start = now.procrustes(pred_l + rng.normal(0, 0.03, pred_l.shape), scan_l)
    nose_tip = scan_l[4]
    result = icp_rmse(pred_v, faces, scan, nose_tip, initial=start)
    assert result.rmse < 1e-6
    assert result.alignment.scale == pytest.approx(100.0, rel=1e-8)
    np.testing.assert_allclose(result.alignment.apply(syn.as_tensor(pred_l)).numpy(), scan_l, atol=1e-6)
    kept = np.linalg.norm(scan - nose_tip, axis=1) <= 95.0
    np.testing.assert_array_equal(result.indices.numpy(), np.nonzero(kept)[0])
    small = icp_rmse(pred_v, faces, scan, nose_tip, initial=start, crop_radius=30.0)
    assert small.indices.numel() == int((np.linalg.norm(scan - nose_tip, axis=1) <= 30).sum())


def test_icp_point_to_plane_offset():
    """On a regular icosahedron, points offset by d along the face normals: rigid ICP
    keeps the offset (RMSE = d), ICP with isotropic scale absorbs it."""
    vertices, faces = syn.icosahedron(50.0)
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    bary = np.array([[1 / 3, 1 / 3, 1 / 3], [0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    scan = (np.einsum("kc,fcx->fkx", bary, corners) + 2.0 * normals[:, None]).reshape(-1, 3)
    rigid = icp_rmse(vertices, faces, scan, np.zeros(3), with_scale=False)
    assert rigid.rmse == pytest.approx(2.0, abs=1e-9)
    scaled = icp_rmse(vertices, faces, scan, np.zeros(3))
    assert scaled.rmse < 1e-6 and scaled.alignment.scale > 1.0


def test_icp_bad_input():
    pred_v, faces, _, scan, _, scan_l = _scene()
    with pytest.raises(ValueError, match="only 0 vertices lie within"):
        icp_rmse(pred_v, faces, scan, scan_l[4] + 1e4)
    with pytest.raises(ValueError, match="crop_radius must be > 0"):
        icp_rmse(pred_v, faces, scan, scan_l[4], crop_radius=0)
    with pytest.raises(ValueError, match="gt_nose_tip"):
        icp_rmse(pred_v, faces, scan, [0.0, np.nan, 0.0])
    with pytest.raises(IndexError, match="predicted_faces"):
        icp_rmse(pred_v, faces + 500, scan, scan_l[4])


def test_feng2018_metrical_uses_the_unit_factor():
    pred_v, faces, pred_l, scan, _, scan_l = _scene(seed=5)  # the prediction is the scan surface / 100 (dm-like)
    as_cm = stirling.stirling_distances(scan, scan_l, pred_v * 10, faces, pred_l * 10, metrical=True, unit="cm")
    assert as_cm.alignment.scale == 10.0 and as_cm.distances.max() < 1e-6
    wrong_unit = stirling.stirling_distances(scan, scan_l, pred_v * 10, faces, pred_l * 10, metrical=True, unit="mm")
    assert wrong_unit.alignment.scale == 1.0 and wrong_unit.distances.mean() > 1.0
    aligned = as_cm.aligned_vertices(pred_v * 10)
    np.testing.assert_allclose(as_cm.alignment.apply(syn.as_tensor(pred_l * 10)).numpy(), scan_l, atol=1e-9)
    assert aligned.shape == (len(pred_v), 3)
