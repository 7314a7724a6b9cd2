"""facegeom.eval: the benchmark protocols the papers report.

- ``now``: NoW (Sanyal et al. 2019) and metrical NoW (Zielonka et al. 2022):
  crop, landmark alignment, scan-to-mesh refinement, distances, aggregates.
- ``stirling``: Feng et al. 2018 (Stirling/ESRC, FG2018) and its NoW-protocol variant.
- ``nme``: AFLW2000-3D landmark NME (bounding-box normalised, yaw bins).
- ``icp``: MICC-style ICP with isotropic scale + point-to-plane RMSE (Deep3DFaceRecon).
- ``micc``: the MICC Florence protocol on top of it: 95 mm crop with the forehead cut,
  per-mesh and per-sequence (averaged mesh or mean RMSE) errors.
- ``io``: readers for the benchmarks' files (.obj, .ply, MeshLab .pp, .npy/.txt/.lnd).

The command ``facegeom now-eval`` runs the NoW protocol over a dataset folder.
"""
from facegeom.eval.icp import icp_rmse
from facegeom.eval.io import read_landmarks, read_mesh, read_pp
from facegeom.eval.micc import micc_rmse, sequence_rmse
from facegeom.eval.nme import nme, nme_by_yaw
from facegeom.eval.now import (
    NOW_LANDMARKS_68,
    Similarity,
    crop_scan,
    cumulative_error_curve,
    face_crop_sphere,
    landmark_alignment,
    now_distances,
    procrustes,
    refine_alignment,
    scan_to_mesh_distances,
    summarize,
    unit_factor,
)
from facegeom.eval.stirling import stirling_distances

__all__ = [
    "NOW_LANDMARKS_68",
    "Similarity",
    "crop_scan",
    "cumulative_error_curve",
    "face_crop_sphere",
    "icp_rmse",
    "landmark_alignment",
    "micc_rmse",
    "nme",
    "nme_by_yaw",
    "now_distances",
    "procrustes",
    "read_landmarks",
    "read_mesh",
    "read_pp",
    "refine_alignment",
    "scan_to_mesh_distances",
    "sequence_rmse",
    "stirling_distances",
    "summarize",
    "unit_factor",
]
