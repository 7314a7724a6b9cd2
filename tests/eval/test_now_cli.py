"""`facegeom now-eval` on a tiny synthetic dataset in the NoW layout."""
import json

import numpy as np
import trimesh

from facegeom import cli
from facegeom.eval import now
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


def test_now_eval_end_to_end(tmp_path, capsys):
    dataset, predictions, (scan, lmk, pred_v, faces, pred_l) = make_dataset(tmp_path)
    out = tmp_path / "out"
    code = cli.main(["now-eval", "--predictions", str(predictions), "--dataset", str(dataset), "--out", str(out),
                     "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_listed"] == 6 and summary["images_evaluated"] == 2
    assert summary["num_missing_files"] == 2 and summary["num_failed"] == 2
    assert {m["image"] for m in summary["missing"]} == {"A/multiview_expressions/IMG_0003", "C/multiview_occlusions/IMG_0005"}
    failed = {f["image"]: f["error"] for f in summary["failed"]}
    assert "NaN" in failed["A/selfie/IMG_0002"] and "no scan .obj" in failed["B/selfie/IMG_0004"]
    per_image = np.load(out / "distances" / "A" / "multiview_neutral" / "IMG_0001.npy")
    direct = now.now_distances(scan, lmk, pred_v, faces, pred_l).distances.numpy()
    np.testing.assert_allclose(per_image, direct, rtol=1e-9, atol=1e-12)
    assert per_image.max() < 1e-6
    official = np.load(out / "facegeom_computed_distances.npy", allow_pickle=True).item()
    assert official["num_missing_files"] == 2 and len(official["computed_distances"]) == 2
    assert summary["challenges"]["multiview_neutral"]["count"] == per_image.size
    from_ply = np.load(out / "distances" / "A" / "multiview_occlusions" / "IMG_0006.npy")
    assert from_ply.size == per_image.size and from_ply.max() < 1e-4  # float32 PLY rounding only
    assert summary["all"]["count"] == 2 * per_image.size
    assert (out / "cumulative_error.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "multiview_neutral" in text and "missing: C/multiview_occlusions/IMG_0005" in text
    assert (out / "summary.txt").read_text().strip() == text.strip()


def test_now_eval_metrical_and_challenge_filter(tmp_path):
    dataset, predictions, _ = make_dataset(tmp_path)
    out = tmp_path / "metrical"
    code = cli.main(["now-eval", "--predictions", str(predictions), "--dataset", str(dataset), "--out", str(out),
                     "--metrical", "--unit", "m", "--challenge", "multiview_neutral", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"] == "metrical" and summary["images_listed"] == 1
    assert list(summary["challenges"]) == ["multiview_neutral"] and summary["all"]["median"] < 1e-6
    assert (out / "facegeom_metrical_computed_distances_multiview_neutral.npy").exists()


def test_now_eval_nothing_evaluable_and_bad_folders(tmp_path, capsys):
    dataset, predictions, _ = make_dataset(tmp_path)
    code = cli.main(["now-eval", "--predictions", str(predictions), "--dataset", str(dataset),
                     "--challenge", "selfie", "--no-progress"])
    assert code == 1  # two failed images: both reported, nothing evaluated
    assert (predictions / "results" / "summary.json").exists()  # the official default output folder
    assert cli.main(["now-eval", "--predictions", str(tmp_path / "nope"), "--dataset", str(dataset)]) == 2
    assert "predictions folder not found" in capsys.readouterr().err
