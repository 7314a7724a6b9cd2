"""`facegeom now-eval` on a tiny synthetic dataset in the NoW layout."""
import json

import numpy as np

from facegeom import cli
from facegeom.eval import now
from tests.eval.now_dataset import make_dataset


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
