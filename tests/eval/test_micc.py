"""MICC-style evaluation (facegeom.eval.micc): crop with the forehead cut, ICP with isotropic
scale, point-to-plane RMSE per mesh and per sequence, on synthetic meshes with known answers."""
import numpy as np
import pytest
import torch

from facegeom import testing as syn
from facegeom.eval import micc, now
from facegeom.eval.icp import icp_rmse


def _scene(seed=0, count=400):
    """The face-like grid (mm, y up, z towards the viewer), points sampled on it, and a
    similarity placing the prediction (metres, rotated) onto them."""
    mesh_v, faces = syn.grid_surface(14)
    tip = np.array([0.0, 5.0, syn.height(0.0, 5.0)])
    scan, _, _ = syn.sample_surface(mesh_v, faces, count, seed=seed)
    R = syn.rotation([0.3, 1.0, 0.1], 12)
    pred = (mesh_v @ R.T) * 1e-3 + np.array([0.01, -0.02, 0.03])
    start = now.procrustes(syn.landmarks() @ R.T * 1e-3 + np.array([0.01, -0.02, 0.03]), syn.landmarks())
    return mesh_v, faces, tip, scan, pred, start


def test_crop_is_sphere_and_plane():
    _, _, tip, scan, _, _ = _scene()
    d = scan - tip
    expected = np.nonzero((np.linalg.norm(d, axis=1) <= 95.0) & (d[:, 1] <= micc.FOREHEAD_CUT_MM))[0]
    np.testing.assert_array_equal(micc.micc_crop(scan, tip).numpy(), expected)
    assert micc.FOREHEAD_CUT_MM == 60.0
    sphere = micc.micc_crop(scan, tip, forehead_cut=None)
    assert sphere.numel() > expected.size  # the cut removes the upper forehead
    np.testing.assert_array_equal(sphere.numpy(), np.nonzero(np.linalg.norm(d, axis=1) <= 95.0)[0])
    # the cut follows the scan's up axis, not the coordinate axes
    R = syn.rotation([1.0, 0.0, 0.5], 40)
    rotated = micc.micc_crop(scan @ R.T, R @ tip, up=R @ np.array([0.0, 2.0, 0.0]))
    np.testing.assert_array_equal(rotated.numpy(), expected)
    low = micc.micc_crop(scan, tip, forehead_cut=-20.0)
    assert (d[low.numpy(), 1] <= -20.0).all()
    with pytest.raises(ValueError, match="up must be"):
        micc.micc_crop(scan, tip, up=(0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="below the forehead cut"):
        micc.micc_crop(scan, tip, forehead_cut=-500.0)
    with pytest.raises(ValueError, match="crop_radius"):
        micc.micc_crop(scan, tip, crop_radius=0.0)


def test_forehead_cut_removes_a_displaced_forehead():
    """Scan = the prediction's surface under a similarity, except a 'hair' layer 6 mm off the
    surface above 60 mm: with the cut the error is zero and the scale (1000) is recovered;
    without it the forehead counts."""
    _, faces, tip, scan, pred, start = _scene()
    hair = (scan[:, 1] - tip[1]) > 60.0
    assert 10 < hair.sum() < len(scan) // 3
    scan = scan.copy()
    scan[hair, 2] += 6.0
    cut = micc.micc_rmse(pred, faces, scan, tip, initial=start)
    assert cut.rmse < 1e-6
    assert cut.alignment.scale == pytest.approx(1000.0, rel=1e-7)
    np.testing.assert_array_equal(cut.indices.numpy(), micc.micc_crop(scan, tip).numpy())
    full = micc.micc_rmse(pred, faces, scan, tip, initial=start, forehead_cut=None)
    assert full.rmse > 0.5
    plain = icp_rmse(pred, faces, scan, tip, initial=start)  # icp_rmse's default: no cut
    assert plain.rmse == pytest.approx(full.rmse, rel=1e-9)


def _bump(vertices, amplitude):
    """A smooth bump along z on the left cheek."""
    v = vertices.copy()
    v[:, 2] += amplitude * np.exp(-(((v[:, 0] + 40.0) / 15.0) ** 2 + ((v[:, 1] + 10.0) / 15.0) ** 2))
    return v


def test_sequence_modes():
    mesh_v, faces, tip, scan, _, _ = _scene(seed=1)
    frames = [_bump(mesh_v, 4.0), _bump(mesh_v, -4.0)]  # averages to the scan's surface exactly
    mean_mesh = micc.sequence_rmse(frames, faces, scan, tip)
    assert mean_mesh.mode == "mean_mesh" and mean_mesh.rmse < 1e-6 and mean_mesh.per_frame is None
    np.testing.assert_allclose(micc.average_mesh(frames).numpy(), mesh_v, atol=1e-12)
    per_frame = micc.sequence_rmse(np.stack(frames), faces, scan, tip, mode="mean_rmse")
    singles = [micc.micc_rmse(f, faces, scan, tip).rmse for f in frames]
    assert per_frame.per_frame == pytest.approx(singles, rel=1e-12)
    assert per_frame.rmse == pytest.approx(np.mean(singles), rel=1e-12) and per_frame.rmse > 0.1
    same = [mesh_v * 1.01, mesh_v * 1.01]
    a = micc.sequence_rmse(same, faces, scan, tip)
    b = micc.sequence_rmse(same, faces, scan, tip, mode="mean_rmse")
    assert a.rmse == pytest.approx(b.rmse, abs=1e-9)
    with pytest.raises(ValueError, match="mode must be"):
        micc.sequence_rmse(frames, faces, scan, tip, mode="median")
    with pytest.raises(ValueError, match="one topology"):
        micc.average_mesh([mesh_v, mesh_v[:-1]])
    with pytest.raises(ValueError, match="2 frames"):
        micc.sequence_rmse(frames, faces, scan, tip, initial=[None], mode="mean_rmse")
    with pytest.raises(ValueError, match="NaN"):
        micc.average_mesh(np.full((2, 3, 3), np.nan))
    with pytest.raises(ValueError, match="one initial"):
        micc.sequence_rmse(frames, faces, scan, tip, initial=[None, None])
