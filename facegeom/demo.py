"""``facegeom demo``: analysis-by-synthesis face fitting with the differentiable renderer.

The main job of the README, end to end on the compiled kernels:

1. build a morphable head: the built-in :func:`facegeom.models.synthetic_head`
   (default), or a real FLAME / BFM file (``--flame PATH`` / ``--bfm PATH``);
2. draw random ground-truth parameters (identity shape, expression, head
   rotation, jaw opening, weak-perspective camera, SH light) and render the
   target image with :class:`facegeom.render.MeshRenderer`, together with its
   68 projected landmarks;
3. recover every parameter from the image and its landmarks alone by
   analysis-by-synthesis: Adam over shape, expression, pose, camera and light,
   minimising landmark + photometric + regularisation energies, coarse to fine
   (:data:`STAGES`: landmarks only, rigid pose first, then renders at half and
   full resolution against an average-pooled copy of the target), with the
   tracker's optimiser (:class:`facegeom.tracking.tracker.GroupAdam`, stepping
   the groups each stage fits; bit-identical to the ``torch.optim.Adam`` the
   demo used before);
4. write ``demo_out/``: ``target.png``, ``initial.png``, ``final.png``,
   ``overlay.png`` (fit blended over the target, with both landmark sets),
   ``loss.png`` and ``report.json``.

The fit counts as converged when every ``CONVERGED_*`` threshold below holds;
``facegeom demo`` exits with status 1 otherwise.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from facegeom import _native
from facegeom.tracking.tracker import GroupAdam

# ---- convergence thresholds (the report's "converged" is all of them) ------ #
#: Photometric RMSE of the final render against the target, colours in [0, 1],
#: over the whole image (background included, where both are 0).
CONVERGED_PHOTOMETRIC_RMSE = 0.02
#: Mean distance between fitted and target landmarks, in pixels of the full image.
CONVERGED_LANDMARK_ERROR_PX = 1.0
#: Geodesic angle between fitted and true head rotation, degrees.
CONVERGED_ROTATION_ERROR_DEG = 1.5
#: RMSE between the fitted and the true posed mesh in the model frame (before
#: the camera), as a fraction of the mesh's height: 1% is 2.5 mm on the
#: synthetic head (0.25 m tall with its neck).
CONVERGED_VERTEX_RMSE_RELATIVE = 0.01

IMAGE_SIZE = 224
SH_CONVENTION = "deep3d"
#: Ambient light of Deep3DFaceRecon's ``init_lit`` (coefficient 0 of each channel).
AMBIENT_LIGHT = 0.8
#: Components fitted (the synthetic head is built with exactly these).
NUM_SHAPE = 20
NUM_EXPRESSION = 10


@dataclass(frozen=True)
class Stage:
    """One level of the coarse-to-fine schedule."""

    name: str
    downsample: int  # 0: landmarks only, no rendering; else render at image_size / downsample
    fraction: float  # share of the iteration budget
    fitted: Tuple[str, ...]  # the parameters this stage moves


RIGID = ("rotation", "log_scale", "translation")
GEOMETRY = RIGID + ("shape", "expression", "jaw")
ALL = GEOMETRY + ("sh",)
# Landmarks fix the rigid pose first, then shape and expression (they cannot
# separate head rotation from shape: several degrees stay ambiguous); the
# renders then resolve that through shading and silhouette, at half and full
# resolution against an average-pooled copy of the target.
STAGES = (
    Stage("rigid, landmarks", 0, 0.15, RIGID),
    Stage("landmarks", 0, 0.20, GEOMETRY),
    Stage("1/2 resolution", 2, 0.40, ALL),
    Stage("full resolution", 1, 0.25, ALL),
)
DEFAULT_ITERATIONS = 300
LANDMARK_WEIGHT = 1.0  # on the squared landmark error in units of the image width
PHOTOMETRIC_WEIGHT = 1.0  # on the mean squared colour error (colours in [0, 1])
# Priors: weak, since the target is noise-free; they only hold directions the
# image does not constrain. A 1 px landmark error costs (1 / 224)^2 = 2e-5.
SHAPE_PRIOR_WEIGHT = 1e-7  # on squared coefficients (the bases have unit variance)
EXPRESSION_PRIOR_WEIGHT = 1e-7
LIGHT_PRIOR_WEIGHT = 1e-7  # on the non-ambient SH coefficients


# --------------------------------------------------------------------------- #
# The model being fitted, behind one interface                                 #
# --------------------------------------------------------------------------- #
class Subject:
    """A morphable head decoded to posed vertices and 68 landmarks.

    ``decode(shape, expression, rotation, jaw)`` -> ``vertices [B, V, 3]``,
    ``landmarks [B, 68, 3]``; rotations are axis-angle ``[B, 3]``.
    """

    def __init__(self, name: str, module, faces, albedo, num_shape: int, num_expression: int, has_jaw: bool):
        self.name, self.module, self.faces, self.albedo = name, module, faces, albedo
        self.num_shape, self.num_expression, self.has_jaw = num_shape, num_expression, has_jaw
        with torch.no_grad():
            template, _ = self.decode(*self.zeros(1))
        low, high = template[0].min(0).values, template[0].max(0).values
        self.centre = (low + high) / 2
        self.height = float(high[1] - low[1])

    def zeros(self, batch: int) -> Tuple[torch.Tensor, ...]:
        z = self.albedo.new_zeros
        return z(batch, self.num_shape), z(batch, self.num_expression), z(batch, 3), z(batch, 3)

    def decode(self, shape, expression, rotation, jaw):
        # FLAME, the synthetic head and BFM share argument and output names; a BFM
        # has no jaw joint and rotates about its origin.
        joints = {"jaw": jaw} if self.has_jaw else {}
        out = self.module(shape=shape, expression=expression, pose=rotation, **joints)
        return out.vertices, out.landmarks2d


def synthetic_subject(seed: int = 0, dtype=torch.float32) -> Subject:
    from facegeom import models

    head = models.synthetic_head(seed=seed, n_shape=NUM_SHAPE, n_exp=NUM_EXPRESSION, dtype=dtype)
    albedo = head.albedo(head.albedo_basis.new_zeros(1, head.n_tex))[0]
    return Subject(f"synthetic_head(seed={seed})", head, head.faces, albedo.clamp(0, 1), NUM_SHAPE,
                   NUM_EXPRESSION, True)


def _skin_albedo(num_vertices: int, dtype) -> torch.Tensor:
    return torch.tensor([0.72, 0.55, 0.45], dtype=dtype).expand(num_vertices, 3).contiguous()


def flame_subject(path: str, dtype=torch.float32) -> Subject:
    """FLAME ``generic_model.pkl``; the landmark embedding is read from
    ``landmark_embedding.npy`` beside it (DECA's layout), which the fit needs."""
    from facegeom import models

    embedding = os.path.join(os.path.dirname(os.path.abspath(path)), "landmark_embedding.npy")
    if not os.path.exists(embedding):
        raise FileNotFoundError(f"--flame {path}: the fit needs the 68-landmark embedding; put DECA's "
                                f"landmark_embedding.npy beside it ({embedding} is missing)")
    model = models.FLAME.from_file(path, n_shape=NUM_SHAPE, n_exp=NUM_EXPRESSION, landmark_embedding=embedding,
                                   dtype=dtype)
    albedo = _skin_albedo(model.num_vertices, dtype)
    return Subject(f"FLAME ({path})", model, model.faces, albedo, NUM_SHAPE, NUM_EXPRESSION, True)


def bfm_subject(path: str, dtype=torch.float32) -> Subject:
    """Deep3DFaceRecon's ``BFM_model_front.mat`` (rigid head, no jaw joint; its
    mean texture as the albedo)."""
    from facegeom import models

    model = models.BFM.from_deep3d(path, dtype=dtype)
    if model.keypoints is None:
        raise ValueError(f"--bfm {path}: the model has no 68 keypoints, which the fit needs")
    albedo = model.mean_texture.clamp(0, 1) if model.mean_texture is not None else \
        _skin_albedo(model.num_vertices, dtype)
    return Subject(f"BFM ({path})", model, model.faces, albedo, NUM_SHAPE, NUM_EXPRESSION, False)


# --------------------------------------------------------------------------- #
# Parameters                                                                   #
# --------------------------------------------------------------------------- #
def _camera(params: Dict[str, torch.Tensor], image_size: int):
    """DECA's weak perspective ``(s, tx, ty)``; the scale is fitted in log units."""
    from facegeom.cameras import WeakPerspective

    cam = torch.cat([params["log_scale"].exp()[:, None], params["translation"]], 1)
    return WeakPerspective(cam, image_size)


def ground_truth(subject: Subject, generator: torch.Generator, dtype) -> Dict[str, torch.Tensor]:
    """Random ground truth: coefficients ~ N(0, 1), a head turned by up to ~25
    degrees, a jaw opened by up to ~9 degrees, the head filling ~70% of the image
    (shifted a little), and a light with a random directional part."""

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64).to(dtype)

    rotation = randn(1, 3) * torch.tensor([0.12, 0.25, 0.06], dtype=dtype)  # pitch, yaw, roll (rad)
    jaw = torch.zeros(1, 3, dtype=dtype)
    if subject.has_jaw:
        jaw[0, 0] = 0.05 + 0.1 * rand(1)
    # A white directional light with a slight tint, as in a photograph.
    sh = 0.15 * randn(1, 9, 1) + 0.02 * randn(1, 9, 3)
    sh[:, 0] = AMBIENT_LIGHT + 0.05 * randn(1, 3)
    return {
        "shape": randn(1, subject.num_shape),
        "expression": randn(1, subject.num_expression),
        "rotation": rotation,
        "jaw": jaw,
        "log_scale": torch.full((1,), math.log(1.4 / subject.height), dtype=dtype) + 0.05 * randn(1),
        "translation": -subject.centre[:2][None].to(dtype) + 0.04 * subject.height * randn(1, 2),
        "sh": sh,
    }


def initial_guess(subject: Subject, dtype) -> Dict[str, torch.Tensor]:
    """Mean shape, neutral expression, frontal pose, centred head of the average
    size, ambient light."""
    sh = torch.zeros(1, 9, 3, dtype=dtype)
    sh[:, 0] = AMBIENT_LIGHT
    shape, expression, rotation, jaw = subject.zeros(1)
    return {"shape": shape, "expression": expression, "rotation": rotation, "jaw": jaw,
            "log_scale": torch.full((1,), math.log(1.4 / subject.height), dtype=dtype),
            "translation": -subject.centre[:2][None].to(dtype).clone(), "sh": sh}


#: Adam step sizes per parameter (scales in log units; translation in heights).
LEARNING_RATES = {"shape": 0.1, "expression": 0.1, "rotation": 0.02, "jaw": 0.005, "log_scale": 0.01,
                  "translation": 0.005, "sh": 0.01}


def forward(subject: Subject, renderer, params: Dict[str, torch.Tensor], image_size: int):
    """Decode and render: (rendering or None, landmark pixels at ``image_size``, posed vertices)."""
    vertices, landmarks = subject.decode(params["shape"], params["expression"], params["rotation"], params["jaw"])
    camera = _camera(params, image_size)
    pixels = camera.project(landmarks)  # x right, y down, pixel centres at integers
    rendering = None
    if renderer is not None:
        albedo = subject.albedo[None]
        rendering = renderer(vertices, albedo, params["sh"], camera=camera)
    return rendering, pixels, vertices


def _downsample(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool an ``[B, H, W, C]`` image by an integer factor."""
    if factor == 1:
        return image
    pooled = torch.nn.functional.avg_pool2d(image.permute(0, 3, 1, 2), factor)
    return pooled.permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------- #
# Metrics                                                                      #
# --------------------------------------------------------------------------- #
def _rotation_error_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    from facegeom import ops

    relative = ops.rodrigues(a.double()) @ ops.rodrigues(b.double()).transpose(-1, -2)
    cos = ((relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return float(torch.rad2deg(torch.acos(cos)).max())


def converged(metrics: Dict[str, float]) -> Dict[str, bool]:
    """Which of the convergence thresholds ``metrics`` (the report's keys) meet."""
    return {
        "photometric_rmse": metrics["photometric_rmse"] < CONVERGED_PHOTOMETRIC_RMSE,
        "landmark_error_px": metrics["landmark_error_px"] < CONVERGED_LANDMARK_ERROR_PX,
        "rotation_error_deg": metrics["rotation_error_deg"] < CONVERGED_ROTATION_ERROR_DEG,
        "vertex_rmse_relative": metrics["vertex_rmse_relative"] < CONVERGED_VERTEX_RMSE_RELATIVE,
    }


#: The op the demo calls -> the compiled op whose presence means its kernel serves it.
KERNEL_OPS = {"lbs": "lbs_shape_pose_blend", "rasterize": "rasterize", "interpolate": "interpolate",
              "antialias": "antialias", "vertex_normals": "vertex_normals", "sh_shading": "sh_shading"}


def backends() -> Dict[str, str]:
    """Which implementation serves each op the demo runs (on CPU)."""
    return {name: ("compiled kernel (cpu)" if _native.has_op(kernel) else "pure-PyTorch reference")
            for name, kernel in KERNEL_OPS.items()}


# --------------------------------------------------------------------------- #
# The job                                                                      #
# --------------------------------------------------------------------------- #
def run(out_dir: str = "demo_out", iterations: int = DEFAULT_ITERATIONS, seed: int = 0,
        flame: Optional[str] = None, bfm: Optional[str] = None, progress: bool = True,
        image_size: int = IMAGE_SIZE) -> Dict[str, object]:
    """Run the demo and write ``out_dir``; returns the report (also ``report.json``).

    Args:
        out_dir: output folder (created).
        iterations: total Adam iterations, split over :data:`STAGES`.
        seed: seeds the ground truth (and the synthetic head's bases).
        flame, bfm: fit a real model file instead of the synthetic head.
        progress: show a tqdm progress bar.
        image_size: side of the target image (even).
    """
    if flame and bfm:
        raise ValueError("pass at most one of --flame and --bfm")
    factors = [s.downsample for s in STAGES if s.downsample]
    if image_size < 8 or any(image_size % f for f in factors):
        raise ValueError(f"image_size must be >= 8 and divisible by {max(factors)} (the coarse stages), "
                         f"got {image_size}")
    from tqdm import tqdm

    from facegeom.render import MeshRenderer

    dtype = torch.float32
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    subject = flame_subject(flame, dtype) if flame else bfm_subject(bfm, dtype) if bfm else \
        synthetic_subject(seed, dtype)
    renderers = {s.downsample: MeshRenderer(subject.faces, image_size // s.downsample, SH_CONVENTION)
                 for s in STAGES if s.downsample}
    full_renderer = renderers[1]

    truth = ground_truth(subject, generator, dtype)
    with torch.no_grad():
        target, target_landmarks, target_vertices = forward(subject, full_renderer, truth, image_size)
    target_image = target.image
    pyramid = {factor: _downsample(target_image, factor) for factor in renderers}

    start_values = initial_guess(subject, dtype)
    with torch.no_grad():
        initial, initial_landmarks, initial_vertices = forward(subject, full_renderer, start_values, image_size)

    losses: List[float] = []
    stage_starts: List[Tuple[str, int]] = []
    stage_seconds: Dict[str, Dict[str, float]] = {}
    budget = [max(1, round(iterations * s.fraction)) for s in STAGES]
    bar = tqdm(total=sum(budget), desc="facegeom demo", unit="it", disable=not progress)
    # One optimiser for the whole schedule (a fresh Adam per stage would restart
    # with full-size steps and undo part of the previous stage): the tracker's
    # GroupAdam (one flat tensor, a learning rate per group), stepping only the
    # groups a stage fits, as torch.optim.Adam skips parameters without a
    # gradient. Constant step sizes: decaying them slowed the photometric stages
    # more than it smoothed them.
    optimizer = GroupAdam(start_values, {k: LEARNING_RATES[k] * (subject.height if k == "translation" else 1.0)
                                         for k in start_values})
    start = time.perf_counter()
    for stage, count in zip(STAGES, budget):
        stage_starts.append((stage.name, len(losses)))
        renderer = renderers.get(stage.downsample)
        stage_start = time.perf_counter()
        for _ in range(count):
            optimizer.zero_grad()
            params = optimizer.values()
            rendering, landmarks, _ = forward(subject, renderer, params, image_size)
            landmark_term = ((landmarks - target_landmarks) / image_size).square().sum(-1).mean()
            loss = LANDMARK_WEIGHT * landmark_term
            if rendering is not None:
                loss = loss + PHOTOMETRIC_WEIGHT * (rendering.image - pyramid[stage.downsample]).square().mean()
            loss = loss + SHAPE_PRIOR_WEIGHT * params["shape"].square().sum() \
                + EXPRESSION_PRIOR_WEIGHT * params["expression"].square().sum() \
                + LIGHT_PRIOR_WEIGHT * params["sh"][:, 1:].square().sum()
            loss.backward()
            optimizer.step(stage.fitted)
            losses.append(loss.item())
            bar.set_postfix(stage=stage.name, loss=f"{losses[-1]:.3e}")
            bar.update()
        seconds = time.perf_counter() - stage_start
        stage_seconds[stage.name] = {"iterations": count, "ms_per_iteration": seconds / count * 1e3}
    fit_seconds = time.perf_counter() - start
    bar.close()
    params = optimizer.values(detached=True)

    with torch.no_grad():
        final, final_landmarks, final_vertices = forward(subject, full_renderer, params, image_size)
    metrics = {
        "photometric_rmse": float((final.image - target_image).square().mean().sqrt()),
        "landmark_error_px": float((final_landmarks - target_landmarks).norm(dim=-1).mean()),
        "rotation_error_deg": _rotation_error_deg(params["rotation"].detach(), truth["rotation"]),
        "vertex_rmse_relative": float((final_vertices - target_vertices).square().sum(-1).mean().sqrt())
        / subject.height,
    }
    checks = converged(metrics)
    report = {
        "task": "recover shape, expression, pose, camera and SH light from a rendered image and its 68 landmarks",
        "model": subject.name,
        "image_size": image_size,
        "iterations": len(losses),
        **metrics,
        "parameter_errors": _parameter_errors(params, truth, subject),
        "initial_photometric_rmse": float((initial.image - target_image).square().mean().sqrt()),
        "initial_landmark_error_px": float((initial_landmarks - target_landmarks).norm(dim=-1).mean()),
        "initial_vertex_rmse_relative": float((initial_vertices - target_vertices).square().sum(-1).mean().sqrt())
        / subject.height,
        "initial_loss": losses[0],
        "final_loss": losses[-1],
        "ms_per_iteration": fit_seconds / len(losses) * 1e3,
        "fit_seconds": fit_seconds,
        "stages": stage_seconds,
        "backend": backends(),
        "threads": torch.get_num_threads(),
        "thresholds": {"photometric_rmse": CONVERGED_PHOTOMETRIC_RMSE,
                       "landmark_error_px": CONVERGED_LANDMARK_ERROR_PX,
                       "rotation_error_deg": CONVERGED_ROTATION_ERROR_DEG,
                       "vertex_rmse_relative": CONVERGED_VERTEX_RMSE_RELATIVE},
        "checks": checks,
        "converged": all(checks.values()),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    _write_images(out_dir, target_image, initial.image, final.image, target_landmarks, final_landmarks)
    _plot_losses(losses, stage_starts, os.path.join(out_dir, "loss.png"))
    return report


def _parameter_errors(params, truth, subject) -> Dict[str, float]:
    def rms(name):
        return float((params[name].detach() - truth[name]).square().mean().sqrt())

    errors = {"shape_coefficient_rmse": rms("shape"), "expression_coefficient_rmse": rms("expression"),
              "rotation_deg": _rotation_error_deg(params["rotation"].detach(), truth["rotation"]),
              "scale_relative": float((params["log_scale"].detach() - truth["log_scale"]).abs().exp() - 1),
              "translation_relative": float((params["translation"].detach() - truth["translation"]).norm())
              / subject.height,
              "sh_coefficient_rmse": rms("sh")}
    if subject.has_jaw:
        errors["jaw_deg"] = _rotation_error_deg(params["jaw"].detach(), truth["jaw"])
    return errors


def _to_uint8(image: torch.Tensor):
    return (image[0].detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _write_images(out_dir, target, initial, final, target_landmarks, final_landmarks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, image in (("target", target), ("initial", initial), ("final", final)):
        plt.imsave(os.path.join(out_dir, f"{name}.png"), _to_uint8(image))
    size = target.shape[1]
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(_to_uint8(0.5 * target + 0.5 * final), extent=(0, size, size, 0))  # pixel edges
    for points, colour, label in ((target_landmarks, "lime", "target"), (final_landmarks, "red", "fit")):
        xy = points[0].detach().cpu()
        ax.scatter(xy[:, 0], xy[:, 1], s=6, c=colour, label=label)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_axis_off()
    ax.set_title("fit (50%) over target, landmarks", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "overlay.png"))
    plt.close(fig)


def _plot_losses(losses, stage_starts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.semilogy(losses)
    for name, first in stage_starts:
        ax.axvline(first, color="grey", lw=0.5)
        ax.text(first, max(losses), f" {name}", fontsize=6, va="top", rotation=90)
    ax.set_xlabel("Adam iteration")
    ax.set_ylabel("energy (landmark + photometric + prior)")
    ax.set_title("facegeom demo: analysis-by-synthesis fit")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
