"""facegeom.eval.nme against transcriptions of 3DDFA's AFLW2000-3D benchmark
(``3DDFA:benchmark_aflw2000.py`` at 3545f355; 2DASL's benchmark script calls the same
``calc_nme`` / ``ana``, ``2DASL:test_codes/benchmark_0resnet50_4chls_FAN2d_18pts_1998.py:28-123``;
PIPELINES.md §9)."""
from math import sqrt

import numpy as np
import pytest

from facegeom.eval.nme import nme, nme_by_yaw


def _calc_nme(pts68_fit_all, pts68_all, roi_boxs):
    """``calc_nme`` (``3DDFA:benchmark_aflw2000.py:67-99``), line by line, with the module
    globals as arguments; inputs are ``[N, 2|3, 68]`` as 3DDFA stores them (crop space)."""
    std_size = 120
    nme_list = []
    for i in range(len(roi_boxs)):
        pts68_fit = pts68_fit_all[i]
        pts68_gt = pts68_all[i]
        sx, sy, ex, ey = roi_boxs[i]
        scale_x = (ex - sx) / std_size
        scale_y = (ey - sy) / std_size
        pts68_fit[0, :] = pts68_fit[0, :] * scale_x + sx
        pts68_fit[1, :] = pts68_fit[1, :] * scale_y + sy
        minx, maxx = np.min(pts68_gt[0, :]), np.max(pts68_gt[0, :])
        miny, maxy = np.min(pts68_gt[1, :]), np.max(pts68_gt[1, :])
        llength = sqrt((maxx - minx) * (maxy - miny))
        dis = pts68_fit - pts68_gt[:2, :]
        dis = np.sqrt(np.sum(np.power(dis, 2), 0))
        dis = np.mean(dis)
        nme_list.append(dis / llength)
    return np.array(nme_list, dtype=np.float32)


def _ana(nme_list, yaws_list):
    """``ana`` (``3DDFA:benchmark_aflw2000.py:21-54``), line by line (without the prints)."""
    yaw_list_abs = np.abs(yaws_list)
    ind_yaw_1 = yaw_list_abs <= 30
    ind_yaw_2 = np.bitwise_and(yaw_list_abs > 30, yaw_list_abs <= 60)
    ind_yaw_3 = yaw_list_abs > 60
    nme_1, nme_2, nme_3 = nme_list[ind_yaw_1], nme_list[ind_yaw_2], nme_list[ind_yaw_3]
    mean_nme_1, mean_nme_2, mean_nme_3 = np.mean(nme_1) * 100, np.mean(nme_2) * 100, np.mean(nme_3) * 100
    std_nme_1, std_nme_2, std_nme_3 = np.std(nme_1) * 100, np.std(nme_2) * 100, np.std(nme_3) * 100
    mean_all = [mean_nme_1, mean_nme_2, mean_nme_3]
    return mean_nme_1, mean_nme_2, mean_nme_3, np.mean(mean_all), np.std(mean_all), (std_nme_1, std_nme_2, std_nme_3)


def _case(n=60, seed=0):
    r = np.random.default_rng(seed)
    roi = np.stack([r.uniform(0, 50, n), r.uniform(0, 50, n)], 1)
    roi = np.concatenate([roi, roi + r.uniform(80, 200, (n, 1))], 1)  # (sx, sy, ex, ey), square boxes
    gt = np.stack([r.uniform(roi[:, :1], roi[:, 2:3], (n, 68)), r.uniform(roi[:, 1:2], roi[:, 3:4], (n, 68)),
                   r.normal(0, 10, (n, 68))], 1)  # [N, 3, 68] in the original image
    fit = r.uniform(0, 120, (n, 2, 68))  # predictions in the 120 crop
    yaws = r.uniform(-95, 95, n)
    yaws[:3] = [30.0, -60.0, 60.0000001]  # bin edges
    return fit, gt, roi, yaws


def test_nme_and_yaw_table_equal_3ddfa_calc_nme_and_ana():
    fit, gt, roi, yaws = _case()
    theirs = _calc_nme(fit.copy(), gt, roi)
    # facegeom: map the crop predictions back with the roi box (as calc_nme does), then nme
    scale = (roi[:, 2:] - roi[:, :2]) / 120.0
    pred = fit.transpose(0, 2, 1) * scale[:, None] + roi[:, None, :2]
    ours = nme(pred, gt[:, :2].transpose(0, 2, 1))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)  # theirs is float32
    m1, m2, m3, mean, std, stds = _ana(theirs, yaws)
    table = nme_by_yaw(theirs, yaws)
    names = ("[0, 30]", "(30, 60]", "(60, 90]")
    np.testing.assert_allclose([table[n] for n in names], [m1, m2, m3], rtol=1e-6)
    assert table["balanced"] == pytest.approx(mean, rel=1e-6)
    assert table["std"] == pytest.approx(std, rel=1e-6)
    np.testing.assert_allclose([table["bin_std"][n] for n in names], stds, rtol=1e-5)
    assert table["std"] > 0


def test_std_of_three_bin_means_hand_computed():
    table = nme_by_yaw([0.01, 0.03, 0.02, 0.06], [0.0, 10.0, 45.0, 80.0])  # bin means 2, 2, 6 (%)
    assert table["balanced"] == pytest.approx(10.0 / 3)
    assert table["std"] == pytest.approx(np.sqrt(((2 - 10 / 3) ** 2 * 2 + (6 - 10 / 3) ** 2) / 3))
    assert table["bin_std"]["[0, 30]"] == pytest.approx(1.0)
