"""NoW evaluation timing (pytest-benchmark): one full protocol run (crop, Procrustes,
scan-to-mesh refinement, final distances) on a 50k-vertex scan against a
FLAME-sized (5041-vertex, 9800-face) prediction, and the final distance query
alone against its brute-force reference and trimesh, all on the same data.

    python -m pytest benchmarks/test_bench_eval.py -q --benchmark-columns=min,median,rounds

Set FACEGEOM_NOW_SCAN (.obj), FACEGEOM_NOW_SCAN_LMK (.pp), FACEGEOM_NOW_PRED
(.obj/.ply) and FACEGEOM_NOW_PRED_LMK (.npy/.txt) to time your own files.
The per-stage breakdown is stored in each benchmark's extra_info.
"""
import os

import numpy as np
import pytest
import torch

from facegeom.eval import io, now
from facegeom.ops.point_to_surface import KERNEL_AVAILABLE
from facegeom.ops import reference
from facegeom import testing as syn

try:
    import trimesh
except ImportError:  # a peer, not needed by the protocol
    trimesh = None


def now_case():
    """(scan_vertices, scan_landmarks, pred_vertices, pred_faces, pred_landmarks)."""
    paths = [os.environ.get(k) for k in ("FACEGEOM_NOW_SCAN", "FACEGEOM_NOW_SCAN_LMK", "FACEGEOM_NOW_PRED", "FACEGEOM_NOW_PRED_LMK")]
    if all(paths):
        scan_v, _ = io.read_mesh(paths[0])
        pred_v, pred_f = io.read_mesh(paths[2])
        return scan_v, io.read_landmarks(paths[1], 7), pred_v, pred_f, io.read_landmarks(paths[3], 7)
    # scan: 224 x 224 = 50176 vertices (mm) with 0.2 mm noise along z; prediction: a
    # 71 x 71 grid (5041 vertices, 9800 faces, FLAME-sized) of the same face in metres,
    # rotated, with 2 mm landmark error
    scan_v, _ = syn.grid_surface(224, jitter=0.3, seed=1)
    rng = np.random.default_rng(0)
    scan_v[:, 2] += rng.normal(0, 0.2, len(scan_v))
    pred_v, pred_f = syn.grid_surface(71)
    lmk = syn.landmarks()
    R = syn.rotation([0.2, 1.0, 0.1], 20)
    pred = 1e-3 * pred_v @ R.T + [0.01, 0.02, -0.03]
    pred_l = 1e-3 * (lmk + rng.normal(0, 2.0, lmk.shape)) @ R.T + [0.01, 0.02, -0.03]
    return scan_v, lmk, pred, pred_f, pred_l


@pytest.fixture(scope="module")
def case():
    return now_case()


def _require_kernel():
    if not KERNEL_AVAILABLE:
        pytest.skip("facegeom._C has no point_to_surface kernel: the brute-force reference would take minutes")


@pytest.mark.parametrize("metrical", [False, True], ids=["original", "metrical"])
def test_now_full_protocol(benchmark, case, metrical):
    _require_kernel()
    benchmark.group = "NoW one image, full protocol"
    result = benchmark.pedantic(
        lambda: now.now_distances(*case, metrical=metrical, unit="m"), rounds=3, iterations=1, warmup_rounds=1
    )
    benchmark.extra_info.update({f"{k}_s": round(v, 4) for k, v in result.timings.items()})
    benchmark.extra_info["scan_points_after_crop"] = int(result.distances.numel())
    benchmark.extra_info["iterations"] = result.refinement.iterations
    benchmark.extra_info["closest_point_queries"] = result.refinement.evaluations  # the last one gives the distances
    benchmark.extra_info["median_mm"] = float(result.distances.median())


@pytest.mark.parametrize("impl", ["facegeom", "reference", "trimesh"])
def test_final_distances(benchmark, case, impl):
    """The final scan-to-mesh query of the protocol; the brute-force reference runs on
    the first 200 points and trimesh on the first 2000 only (full_count_scale in
    extra_info converts to the full count)."""
    scan_v, scan_l, pred_v, pred_f, pred_l = case
    crop = now.crop_scan(scan_v, scan_l)
    aligned = now.procrustes(pred_l, scan_l).apply(torch.as_tensor(pred_v, dtype=torch.float64))
    faces = torch.as_tensor(pred_f)
    points = crop.vertices
    benchmark.group = "NoW final distances"
    if impl == "facegeom":
        _require_kernel()
        benchmark(lambda: now.scan_to_mesh_distances(points, aligned, faces))
        return
    subset = points[: 200 if impl == "reference" else 2000]
    benchmark.extra_info["points_timed"] = len(subset)
    benchmark.extra_info["full_count_scale"] = round(points.shape[0] / len(subset), 3)
    if impl == "reference":
        benchmark.pedantic(lambda: reference.point_to_surface(subset[None], aligned[None], faces), rounds=1, iterations=1)
    else:
        if trimesh is None:
            pytest.skip("trimesh is not installed")
        mesh = trimesh.Trimesh(aligned.numpy(), pred_f, process=False)
        benchmark.pedantic(lambda: trimesh.proximity.closest_point(mesh, subset.numpy()), rounds=1, iterations=1)
