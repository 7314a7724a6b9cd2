"""Every script in examples/ runs (few iterations) and does what its docstring says."""
import importlib.util
import json
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    scripts = {path.stem for path in EXAMPLES.glob("*.py")}
    assert scripts == {"fit_face", "now_eval_synthetic"}, "add a test for the new example"
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"{name}.py" in readme for name in scripts)


def test_fit_face_improves_the_fit(tmp_path):
    report = load("fit_face").main(["--iterations", "45", "--image-size", "48", "--out", str(tmp_path)])
    assert report["photometric_rmse"] < 0.6 * report["initial_photometric_rmse"]
    assert report["landmark_error_px"] < 0.5 * report["initial_landmark_error_px"]
    assert report["final_loss"] < 0.3 * report["initial_loss"]
    assert json.loads((tmp_path / "report.json").read_text()) == pytest.approx(report)
    assert (tmp_path / "target.png").stat().st_size > 500 and (tmp_path / "fit.png").stat().st_size > 500


def test_now_eval_on_synthetic_data(tmp_path):
    summary = load("now_eval_synthetic").main(["--out", str(tmp_path), "--images-per-challenge", "1"])
    assert summary["images_listed"] == summary["images_evaluated"] == 4
    assert summary["num_missing_files"] == summary["num_failed"] == 0
    # identity noise grows with the challenge index: errors are millimetres, not metres or zero
    assert 0.05 < summary["all"]["median"] < 5.0
    assert (tmp_path / "results" / "cumulative_error.png").stat().st_size > 1000
    assert (tmp_path / "results" / "facegeom_computed_distances.npy").is_file()
