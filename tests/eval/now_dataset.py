"""A tiny synthetic dataset in the NoW layout (scans, picked points, image list,
predictions), shared by tests/eval/test_now_cli.py and tests/hostile/test_hardening.py."""
import numpy as np
import trimesh

from facegeom import testing as syn
from tests.eval.test_io import write_pp


def write_obj(path, vertices, faces=None):
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in np.asarray(vertices, dtype=float).tolist()]
    if faces is not None:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces).tolist()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_dataset(root):
    """Subject A: scan + landmarks, three images: one good prediction (metres, rotated),
    one with a NaN vertex (fails), one without landmarks (missing). Subject B: no scan
    (fails). Subject C: no prediction at all (missing)."""
    mesh_v, faces = syn.grid_surface(10)
    lmk = syn.landmarks()
    scan, _, _ = syn.sample_surface(mesh_v, faces, 150, seed=0)
    dataset, predictions = root / "now", root / "pred"
    write_obj(dataset / "scans" / "A" / "natural_head_rotation.000001.obj", scan)
    (dataset / "scans_lmks_onlypp" / "A").mkdir(parents=True)
    write_pp(dataset / "scans_lmks_onlypp" / "A" / "natural_head_rotation.000001_picked_points.pp", lmk)
    (dataset / "imagepathsvalidation.txt").write_text(
        "A/multiview_neutral/IMG_0001.jpg\nA/selfie/IMG_0002.jpg\nA/multiview_expressions/IMG_0003.jpg\n"
        "B/selfie/IMG_0004.jpg\nC/multiview_occlusions/IMG_0005.jpg\nA/multiview_occlusions/IMG_0006.jpg\n"
    )
    R = syn.rotation([0, 1, 0], 20)
    pred_v, pred_l = 1e-3 * mesh_v @ R.T, 1e-3 * lmk @ R.T
    write_obj(predictions / "A" / "multiview_neutral" / "IMG_0001.obj", pred_v, faces)
    np.save(predictions / "A" / "multiview_neutral" / "IMG_0001.npy", pred_l[None])
    bad = pred_v.copy()
    bad[5, 0] = np.nan
    write_obj(predictions / "A" / "selfie" / "IMG_0002.obj", bad, faces)
    (predictions / "A" / "selfie" / "IMG_0002.txt").write_text("\n".join(" ".join(map(repr, r)) for r in pred_l.tolist()))
    write_obj(predictions / "A" / "multiview_expressions" / "IMG_0003.obj", pred_v, faces)
    # a .ply mesh (binary, float32 as many exporters write) with .txt landmarks, in centimetres
    ply = trimesh.Trimesh(100 * pred_v, faces, process=False).export(file_type="ply")
    (predictions / "A" / "multiview_occlusions").mkdir(parents=True)
    (predictions / "A" / "multiview_occlusions" / "IMG_0006.ply").write_bytes(ply)
    (predictions / "A" / "multiview_occlusions" / "IMG_0006.txt").write_text(
        "\n".join(" ".join(map(repr, r)) for r in (100 * pred_l).tolist())
    )
    write_obj(predictions / "B" / "selfie" / "IMG_0004.obj", pred_v, faces)
    np.save(predictions / "B" / "selfie" / "IMG_0004.npy", pred_l)
    return dataset, predictions, (scan, lmk, pred_v, faces, pred_l)
