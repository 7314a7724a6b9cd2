"""The demo's convergence criterion, and a quick real fit that meets it."""
import json

import pytest
import torch

from facegeom import demo

# A smaller, shorter run than `facegeom demo` (224 px, 300 iterations) that
# still has to meet the same thresholds.
QUICK = dict(iterations=300, image_size=112, seed=0, progress=False)


def passing_metrics():
    return {"photometric_rmse": 0.5 * demo.CONVERGED_PHOTOMETRIC_RMSE,
            "landmark_error_px": 0.5 * demo.CONVERGED_LANDMARK_ERROR_PX,
            "rotation_error_deg": 0.5 * demo.CONVERGED_ROTATION_ERROR_DEG,
            "vertex_rmse_relative": 0.5 * demo.CONVERGED_VERTEX_RMSE_RELATIVE}


def test_thresholds_are_named_and_each_one_decides():
    thresholds = {"photometric_rmse": demo.CONVERGED_PHOTOMETRIC_RMSE,
                  "landmark_error_px": demo.CONVERGED_LANDMARK_ERROR_PX,
                  "rotation_error_deg": demo.CONVERGED_ROTATION_ERROR_DEG,
                  "vertex_rmse_relative": demo.CONVERGED_VERTEX_RMSE_RELATIVE}
    assert all(0 < value < float("inf") for value in thresholds.values())
    assert all(demo.converged(passing_metrics()).values())
    for name, limit in thresholds.items():
        for value in (limit, 2 * limit, float("nan")):
            metrics = passing_metrics()
            metrics[name] = value
            checks = demo.converged(metrics)
            assert checks[name] is False, (name, value)
            assert all(ok for other, ok in checks.items() if other != name)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    return out, demo.run(out_dir=str(out), **QUICK)


def test_quick_fit_converges(quick_run):
    out, report = quick_run
    assert report["photometric_rmse"] < demo.CONVERGED_PHOTOMETRIC_RMSE
    assert report["landmark_error_px"] < demo.CONVERGED_LANDMARK_ERROR_PX
    assert report["rotation_error_deg"] < demo.CONVERGED_ROTATION_ERROR_DEG
    assert report["vertex_rmse_relative"] < demo.CONVERGED_VERTEX_RMSE_RELATIVE
    assert report["converged"] is True and all(report["checks"].values())
    # The fit did work: it started far from the target.
    assert report["initial_photometric_rmse"] > 3 * report["photometric_rmse"]
    assert report["final_loss"] < 0.1 * report["initial_loss"]
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))


def test_outputs_and_report_keys(quick_run):
    out, report = quick_run
    for name in ("target", "initial", "final", "overlay", "loss"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    for key in ("model", "iterations", "ms_per_iteration", "parameter_errors", "backend", "thresholds", "stages"):
        assert key in report, key
    assert report["iterations"] == QUICK["iterations"]
    assert set(report["parameter_errors"]) >= {"shape_coefficient_rmse", "expression_coefficient_rmse",
                                               "rotation_deg", "jaw_deg", "sh_coefficient_rmse"}
    assert [s.name for s in demo.STAGES] == list(report["stages"])


def test_target_landmarks_lie_on_the_rendered_face():
    """Camera pixels and rendered rows agree: every landmark of a frontal head
    projects onto a pixel the renderer covered (alpha > 0)."""
    subject = demo.synthetic_subject()
    params = demo.initial_guess(subject, torch.float32)
    from facegeom.render import MeshRenderer

    renderer = MeshRenderer(subject.faces, 64, antialias=False)
    with torch.no_grad():
        rendering, pixels, _ = demo.forward(subject, renderer, params, 64)
    columns, rows = pixels[0].round().long().unbind(-1)
    assert bool((rendering.alpha[0, rows, columns, 0] > 0).all())
    # ...and a pixel above the head (row 0 is the top of the image) is background.
    assert float(rendering.alpha[0, 0, 32, 0]) == 0.0


def test_missing_model_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="landmark_embedding.npy"):
        demo.run(out_dir=str(tmp_path), flame=str(tmp_path / "generic_model.pkl"), progress=False)
    with pytest.raises(ValueError, match="at most one"):
        demo.run(out_dir=str(tmp_path), flame="a.pkl", bfm="b.mat", progress=False)


def test_flame_file_runs(tmp_path):
    """--flame: the synthetic head written as an official generic_model.pkl (with
    chumpy-style objects) plus DECA's landmark_embedding.npy runs the demo; a
    short run at low resolution must already improve the fit."""
    import numpy as np

    from facegeom import models
    from tests.models import model_files

    head = models.synthetic_head(n_shape=demo.NUM_SHAPE, n_exp=demo.NUM_EXPRESSION, dtype=torch.float64)
    num_vertices = head.num_vertices
    shapedirs = torch.zeros(num_vertices, 3, 300 + demo.NUM_EXPRESSION, dtype=torch.float64)
    shapedirs[..., :demo.NUM_SHAPE] = head.shapedirs[..., :demo.NUM_SHAPE]
    shapedirs[..., 300:] = head.shapedirs[..., demo.NUM_SHAPE:]
    model_files.write_generic_model(tmp_path / "generic_model.pkl", {
        "v_template": head.v_template.numpy(),
        "shapedirs": shapedirs.numpy(),
        "posedirs": head.posedirs.reshape(36, num_vertices, 3).permute(1, 2, 0).numpy(),
        "J_regressor": head.J_regressor.numpy(),
        "weights": head.lbs_weights.numpy(),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "f": head.faces.numpy().astype(np.uint32),
    })
    np.save(tmp_path / "landmark_embedding.npy", {
        "static_lmk_faces_idx": head.lmk_faces_idx.numpy(),
        "static_lmk_bary_coords": head.lmk_bary_coords.numpy(),
        "dynamic_lmk_faces_idx": head.dynamic_lmk_faces_idx,  # DECA ships these two as tensors
        "dynamic_lmk_bary_coords": head.dynamic_lmk_bary_coords.float(),
        "full_lmk_faces_idx": head.full_lmk_faces_idx.numpy()[None],
        "full_lmk_bary_coords": head.full_lmk_bary_coords.numpy()[None],
    }, allow_pickle=True)
    report = demo.run(out_dir=str(tmp_path / "out"), iterations=40, image_size=48,
                      flame=str(tmp_path / "generic_model.pkl"), progress=False)
    assert report["model"].startswith("FLAME")
    assert report["landmark_error_px"] < 0.5 * report["initial_landmark_error_px"]
    assert report["photometric_rmse"] < report["initial_photometric_rmse"]


def test_bfm_file_runs(tmp_path):
    """--bfm: the synthetic head written as Deep3DFaceRecon's BFM_model_front.mat
    (interleaved xyz bases, 1-based indices, texture in 0-255) runs the demo as a
    rigid head; a short run at low resolution must already improve the fit."""
    import scipy.io

    from facegeom import models

    head = models.synthetic_head(n_shape=demo.NUM_SHAPE, n_exp=demo.NUM_EXPRESSION, dtype=torch.float64)
    num_vertices = head.num_vertices

    def basis(components, count):
        out = torch.zeros(3 * num_vertices, count, dtype=torch.float64)
        out[:, : components.shape[-1]] = components.reshape(3 * num_vertices, -1)  # x0, y0, z0, x1, ...
        return out.numpy()

    out = head(texture=torch.zeros(1, head.n_tex, dtype=torch.float64))
    keypoints = torch.cdist(out.landmarks3d[0], head.v_template).argmin(1)  # nearest vertices
    scipy.io.savemat(tmp_path / "BFM_model_front.mat", {
        "meanshape": head.v_template.reshape(1, -1).numpy(),
        "idBase": basis(head.shapedirs[..., :demo.NUM_SHAPE], 80),
        "exBase": basis(head.shapedirs[..., demo.NUM_SHAPE:], 64),
        "meantex": (out.albedo[0].clamp(0, 1) * 255).reshape(1, -1).numpy(),
        "texBase": basis(torch.zeros(num_vertices, 3, 1, dtype=torch.float64), 80),
        "tri": (head.faces + 1).double().numpy(),
        "keypoints": (keypoints + 1).double()[None].numpy(),
    })
    report = demo.run(out_dir=str(tmp_path / "out"), iterations=40, image_size=48,
                      bfm=str(tmp_path / "BFM_model_front.mat"), progress=False)
    assert report["model"].startswith("BFM") and "jaw_deg" not in report["parameter_errors"]
    assert report["landmark_error_px"] < 0.5 * report["initial_landmark_error_px"]
    assert report["photometric_rmse"] < report["initial_photometric_rmse"]
