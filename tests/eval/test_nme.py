"""AFLW2000-3D NME on hand-computed cases."""
import numpy as np
import pytest

from facegeom.eval.nme import nme, nme_by_yaw


def test_nme_2d_hand_computed():
    gt = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 9.0], [0.0, 9.0]])  # bbox 4 x 9 -> sqrt = 6
    pred = gt + [3.0, 4.0]  # every landmark 5 px off
    np.testing.assert_allclose(nme(pred, gt), [5.0 / 6.0])
    pred2 = gt.copy()
    pred2[0] += [0.0, 6.0]  # one landmark 6 px off, the rest exact: mean 1.5 px
    np.testing.assert_allclose(nme(np.stack([pred, pred2]), np.stack([gt, gt])), [5 / 6, 1.5 / 6])


def test_nme_3d_shifts_z_and_uses_the_2d_box():
    gt = np.array([[0.0, 0.0, 10.0], [4.0, 0.0, 11.0], [4.0, 9.0, 12.0], [0.0, 9.0, 13.0]])
    pred = gt.copy()
    pred[:, 2] -= 100.0  # a pure z offset is not an error (z only defined up to an offset)
    np.testing.assert_allclose(nme(pred, gt, dim=3), [0.0], atol=1e-15)
    pred[3, 2] += 12.0  # one landmark 12 deeper: mean error 3 -> 3 / 6
    np.testing.assert_allclose(nme(pred, gt, dim=3), [0.5])
    np.testing.assert_allclose(nme(pred, gt, dim=2), [0.0])
    with pytest.raises(ValueError, match="dim=3 needs x, y, z"):
        nme(pred[:, :2], gt[:, :2], dim=3)


def test_yaw_bins_hand_computed():
    errors = [0.01, 0.02, 0.03, 0.04, 0.05]
    yaws = [10.0, -45.0, 75.0, 30.0, -95.0]  # 30 belongs to the first bin; |yaw| > 90 to the last
    table = nme_by_yaw(errors, yaws)
    assert table["[0, 30]"] == pytest.approx(2.5)
    assert table["(30, 60]"] == pytest.approx(2.0)
    assert table["(60, 90]"] == pytest.approx(4.0)
    assert table["balanced"] == pytest.approx((2.5 + 2.0 + 4.0) / 3)
    assert table["all"] == pytest.approx(3.0)
    assert table["counts"] == {"[0, 30]": 2, "(30, 60]": 1, "(60, 90]": 2}
    assert np.isnan(nme_by_yaw([0.1], [5.0])["(30, 60]"])


def test_nme_bad_input():
    gt = np.zeros((2, 68, 2))
    with pytest.raises(ValueError, match="degenerate"):
        nme(gt, gt)
    with pytest.raises(ValueError, match=r"same \[N, K\]"):
        nme(np.zeros((2, 67, 2)), gt)
    with pytest.raises(ValueError, match="NaN"):
        nme(np.full((68, 2), np.nan), np.ones((68, 2)))
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        nme(gt, gt, dim=4)
    with pytest.raises(ValueError, match=r"shape \[N, K, 2\]"):
        nme(np.zeros((68,)), np.zeros((68,)))
    with pytest.raises(ValueError, match="same length"):
        nme_by_yaw([0.1, 0.2], [3.0])
