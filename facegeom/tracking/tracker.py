"""The tracker's schedule and optimiser (PIPELINES.md §7.5): ``MT:tracker.py:283-716``, ``MT:util.py:297-367``,
defaults ``MT:configs/config.py:24-63`` and the actor files ``MT:configs/actors/*.yml``.

``MT`` = ``Zielon/metrical-tracker`` at c2a517244759d7eeaa0e84893d6748e75293f81a.

- Gaussian pyramid (:func:`gaussian_pyramid`): levels processed from the **last entry backwards**, each a
  bilinear resize (``align_corners=False``) of the previous, already blurred, image followed by
  torchvision's ``gaussian_blur`` (reflect padding, :func:`gaussian_blur`); iterations
  :func:`round_up_to_odd` (``2 n`` during initialisation).
- Per level (:meth:`Tracker.optimize_color`): a **new Adam** (default betas; :class:`GroupAdam`) over clones
  of the current values with per-group learning rates; the rasterisation is refreshed at iteration 0 and every
  ``raster_update`` iterations; sparse terms + regularisers on every level, the photometric term on levels
  ``k > 0`` (on all levels while initialising); after ``optimizer.step()``, if the loss evaluated before the
  step is the lowest so far, the post-step values are kept (``MT:tracker.py:541-545``).
- Initialisation (:meth:`Tracker.initialize`, ``MT:tracker.py:683-706``): keyframes ``[0, 1]`` visited as
  ``[0, 0, 1]``; on the first visit 1000 camera steps (Adam 0.05 on ``t, R, focal, pp``, ``StepLR(300, 0.1)``)
  then a colour pass (``sh``, ``tex`` only), then the initialisation groups.
- Tracking (:meth:`Tracker.track_frame`, ``MT:tracker.py:636-652``): every frame warm-started from the
  previous result, shape / texture / focal / principal point fixed.

Batching: every parameter has a leading batch ``B`` and every energy is per frame (``facegeom.tracking.energies``),
best-loss keeping is per frame, and Adam is element-wise, so ``B`` frames optimised together follow the
trajectories each would follow alone (the sequential warm start is the only coupling).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from facegeom.tracking import energies
from facegeom.tracking.camera import TrackerCamera, look_at_view_transform
from facegeom.tracking.model import (LEFT_IRIS_MP, MEDIAPIPE_LANDMARK_IDS, MEDIAPIPE_POINTS, RIGHT_IRIS_MP,
                                     TrackerFLAME, identity_6d)
from facegeom.tracking.render import TrackerRenderer
from facegeom.transforms import axis_angle_to_matrix, matrix_to_rotation_6d

Tensor = torch.Tensor

#: ``clone_params_tracking`` (``MT:tracker.py:325-338``); ``R``/``t`` from ``rotation_lr``/``translation_lr``.
TRACKING_LRS = {"exp": 0.025, "eyes": 0.001, "eyelids": 0.001, "R": None, "t": None, "sh": 0.001}
#: ``clone_params_initialization`` (``MT:tracker.py:340-358``); shape / jaw added when optimised.
INITIALIZATION_LRS = {"exp": 0.025, "eyes": 0.001, "eyelids": 0.01, "sh": 0.01, "t": 0.005, "R": 0.005,
                      "principal_point": 0.001, "focal_length": 0.001}
#: ``clone_params_color`` (``MT:tracker.py:360-366``).
COLOR_LRS = {"sh": 0.05, "tex": 0.05}
SHAPE_LR = 0.025
JAW_LR = 0.001
PARAMETER_NAMES = ("shape", "tex", "exp", "sh", "focal_length", "principal_point", "eyes", "jaw", "eyelids", "R", "t")


@dataclass(frozen=True)
class Config:
    """The tracker's settings: ``MT:configs/config.py:24-63`` defaults with the shipped actor files'
    ``optimize_shape: true``, ``optimize_jaw: true``, ``keyframes: [0, 1]`` (``MT:configs/actors/duda.yml``)."""

    pyr_levels: Tuple[Tuple[float, int], ...] = ((1.0, 160), (0.25, 40), (0.5, 40), (1.0, 70))  # config.py:45
    kernel_size: int = 7  # config.py:34
    sigma: float = 9.0  # config.py:35
    keyframes: Tuple[int, ...] = (0, 1)  # actor yml (config.py:36 has [0])
    raster_update: int = 8  # config.py:44
    rotation_lr: float = 0.2  # config.py:42
    translation_lr: float = 0.003  # config.py:43
    optimize_shape: bool = True  # actor yml (config.py:46 has False)
    optimize_jaw: bool = True  # actor yml (config.py:47 has False)
    tex_params: int = 140  # config.py:31 (at most the model's albedo components are used)
    camera_steps: int = 1000  # optimize_camera(steps=1000), tracker.py:376
    camera_lr: float = 0.05  # tracker.py:387
    camera_step_size: int = 300  # StepLR, tracker.py:390
    camera_gamma: float = 0.1
    focal_pixels: float = 5000.0  # focal_length = 5000 / H (NDC), tracker.py:293
    init_iteration_factor: float = 2.0  # round_up_to_odd(steps * 2), tracker.py:695
    w_pho: float = 350.0  # config.py:52-63
    w_lmks: float = 7000.0
    w_lmks_68: float = 1000.0
    w_lmks_lid: float = 1000.0
    w_lmks_mouth: float = 15000.0
    w_lmks_iris: float = 1000.0
    w_lmks_oval: float = 2000.0
    w_exp: float = 0.02
    w_shape: float = 0.3
    w_tex: float = 0.04
    w_jaw: float = 0.05

    def __post_init__(self):
        if not self.pyr_levels:
            raise ValueError("pyr_levels must hold at least one (scale, iterations) level")
        for level in self.pyr_levels:
            if len(level) != 2 or not level[0] > 0 or level[1] < 0:
                raise ValueError(f"pyr_levels entries must be (scale > 0, iterations >= 0), got {level!r}")
        if not self.keyframes:
            raise ValueError("keyframes must not be empty (MT:tracker.py:686-688)")
        if self.raster_update < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("raster_update must be >= 1 and kernel_size a positive odd number")

    @classmethod
    def faithful(cls) -> "Config":
        """The authors' schedule (314 Adam iterations per tracked frame)."""
        return cls()

    @classmethod
    def fast(cls) -> "Config":
        """Fewer iterations and a coarser pyramid: ``[[1.0, 50], [0.5, 10]]`` (62 iterations per frame: 51
        landmark-only, 11 photometric at half size), the authors' initialisation. Chosen by measurement
        (docs/benchmarks.md, ``bench_tracking.py --schedule``) on the synthetic head at 512²: 0.35 s of CPU per
        frame against 2.86 s for :meth:`faithful`, face-region vertex error 3.76 mm against 3.88 mm (head rotation
        1.7° against 3.7°, landmarks 4.2 px against 3.2 px); not yet measured on real FLAME sequences."""
        return cls(pyr_levels=((1.0, 50), (0.5, 10)))

    @classmethod
    def tiny(cls) -> "Config":
        """For tests on 128-pixel frames: a landmark level and one photometric level at full size
        (``[[1.0, 30], [1.0, 20]]``), a short camera stage, the authors' lens (5000 / 512 in NDC,
        ``focal_pixels = 5000 * 128 / 512``) and blur kernel 3 (7 at 512). No half-size level: at 128 pixels
        it is a 64-pixel image blurred twice, on which the true parameters score worse than the tracked ones
        and which pulls the expression away (measured, docs/tracking.md "The tiny preset")."""
        return cls(pyr_levels=((1.0, 30), (1.0, 20)), camera_steps=150, camera_step_size=100,
                   focal_pixels=1250.0, kernel_size=3)

    @classmethod
    def preset(cls, name: str) -> "Config":
        presets = {"faithful": cls.faithful, "fast": cls.fast, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"preset must be one of {tuple(presets)}, got {name!r}")
        return presets[name]()


def round_up_to_odd(f: float) -> int:
    """``int(ceil(f) // 2 * 2 + 1)`` (``MT:util.py:366-367``): 160 -> 161, 320 -> 321."""
    return int(math.ceil(f) // 2 * 2 + 1)


def gaussian_blur(images: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """torchvision's ``gaussian_blur`` on ``[B, C, H, W]``: 1D kernel ``exp(-x² / 2σ²)`` normalised, on
    ``x = linspace(-(k-1)/2, (k-1)/2, k)``, outer product, reflect padding of ``k // 2``, depthwise conv."""
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, dtype=images.dtype, device=images.device)
    pdf = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel1d = pdf / pdf.sum()
    kernel = (kernel1d[:, None] @ kernel1d[None, :]).expand(images.shape[1], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(images, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(padded, kernel, groups=images.shape[1])


class Level(NamedTuple):
    """One pyramid level: ``image [B, 3, h, w]``, ``iterations``, ``size (h, w)`` ints and ``image_size`` the
    float ``(H scale, W scale)`` the tracker hands to the camera and the landmark scaling."""

    image: Tensor
    iterations: int
    size: Tuple[int, int]
    image_size: Tuple[float, float]


def gaussian_pyramid(levels: Sequence[Tuple[float, int]], image: Tensor, kernel_size: int, sigma: float,
                     iteration_factor: float = 1.0) -> List[Level]:
    """``get_gaussian_pyramid`` (``MT:util.py:297-307``) with ``round_up_to_odd(n * factor)`` iterations
    (``MT:tracker.py:641,695``): built from the last level backwards, each level the bilinear resize of the
    previous blurred image, blurred again."""
    height, width = image.shape[-2:]
    pyramid = []
    images = image
    for scale, steps in reversed(list(levels)):
        image_size = (height * scale, width * scale)
        size = (int(image_size[0]), int(image_size[1]))
        images = F.interpolate(images, size, mode="bilinear", align_corners=False)
        images = gaussian_blur(images, kernel_size, sigma)
        pyramid.append(Level(images, round_up_to_odd(steps * iteration_factor), size, image_size))
    return pyramid[::-1]


@dataclass
class FrameData:
    """Inputs of ``B`` frames (``parse_batch``, ``MT:tracker.py:657-675``).

    Attributes:
        image: ``[B, 3, H, W]`` RGB in [0, 1].
        landmarks: ``[B, 68, 2]`` FAN points in pixels (zeros = missing).
        landmarks_dense: ``[B, 478, 2]`` MediaPipe points in pixels (zeros = missing), or None.
        frame_ids: names of the frames (output file stems).
    """

    image: Tensor
    landmarks: Tensor
    landmarks_dense: Optional[Tensor] = None
    frame_ids: List[str] = field(default_factory=list)

    def __post_init__(self):
        if self.image.dim() != 4 or self.image.shape[1] != 3:
            raise ValueError(f"image must be [B, 3, H, W], got {list(self.image.shape)}")
        batch = self.image.shape[0]
        if tuple(self.landmarks.shape) != (batch, 68, 2):
            raise ValueError(f"landmarks must be [B={batch}, 68, 2], got {list(self.landmarks.shape)}")
        if self.landmarks_dense is None:
            self.landmarks_dense = self.landmarks.new_zeros(batch, MEDIAPIPE_POINTS, 2)
        if tuple(self.landmarks_dense.shape) != (batch, MEDIAPIPE_POINTS, 2):
            raise ValueError(f"landmarks_dense must be [B={batch}, {MEDIAPIPE_POINTS}, 2], got "
                             f"{list(self.landmarks_dense.shape)}")
        if not self.frame_ids:
            self.frame_ids = [str(k).zfill(5) for k in range(batch)]

    @property
    def batch(self) -> int:
        return self.image.shape[0]

    def parse(self) -> Dict[str, Tensor]:
        """Targets and masks: all-zero rows are missing (``MT:tracker.py:662-663``)."""
        dense = self.landmarks_dense
        dense_mask = ~(dense.sum(2, keepdim=True) == 0)
        mp_ids = list(MEDIAPIPE_LANDMARK_IDS)
        return {"lmk": self.landmarks, "lmk_mask": ~(self.landmarks.sum(2, keepdim=True) == 0),
                "mp": dense[:, mp_ids], "mp_mask": dense_mask[:, mp_ids],
                "left_iris": dense[:, list(LEFT_IRIS_MP)], "right_iris": dense[:, list(RIGHT_IRIS_MP)],
                "mask_left_iris": dense_mask[:, list(LEFT_IRIS_MP)],
                "mask_right_iris": dense_mask[:, list(RIGHT_IRIS_MP)]}


class Tracker:
    """The metrical tracker over a :class:`~facegeom.tracking.model.TrackerFLAME`.

    Args:
        model: the face model.
        config: :class:`Config` (default: the authors' schedule).
        albedo: ``tex [B, K] -> albedo`` per vertex ``[B, V, 3]`` or a UV texture ``[B, 3, Ht, Wt]``
            (:class:`facegeom.tracking.texture.FlameTexture`); default: the model's per-vertex albedo basis.
        renderer: default :class:`~facegeom.tracking.render.TrackerRenderer` on the model's faces and mask.
        progress: an optional callback ``(stage, level, iteration, losses)`` called after every step.

    The current values live in :attr:`params` (``[B, ...]`` tensors, no grad) with the names of the authors'
    attributes: ``shape, tex, exp, sh, focal_length, principal_point, eyes, jaw, eyelids, R, t``.
    """

    def __init__(self, model: TrackerFLAME, config: Optional[Config] = None,
                 albedo: Optional[Callable[[Tensor], Tensor]] = None, renderer: Optional[TrackerRenderer] = None,
                 progress: Optional[Callable] = None):
        self.model = model
        self.config = Config() if config is None else config
        flame = model.flame
        if albedo is None:
            if flame.n_tex == 0:
                raise ValueError("the model has no albedo basis: pass albedo= (e.g. a FlameTexture)")
            self.n_tex = min(self.config.tex_params, flame.n_tex)
            albedo = flame.albedo
        else:
            self.n_tex = int(getattr(albedo, "n_tex", self.config.tex_params))
        self.albedo = albedo
        self.renderer = TrackerRenderer(model.faces, model.render_mask) if renderer is None else renderer
        self.progress = progress
        self.params: Dict[str, Tensor] = {}
        self.mica_shape: Optional[Tensor] = None
        self.global_step = 0
        self.timings: Dict[str, float] = {}

    # ------------------------------------------------------------------ parameters
    def create_parameters(self, mica_shape: Tensor, image_height: int, batch: int = 1) -> None:
        """``create_parameters`` (``MT:tracker.py:283-297``): camera from ``look_at_view_transform(dist=1)``,
        ``focal = 5000 / H``, everything else zero / identity, ``shape = mica_shape``."""
        ref = self.model.flame.v_template
        dtype, device = ref.dtype, ref.device
        mica_shape = torch.as_tensor(mica_shape, dtype=dtype, device=device)
        if mica_shape.shape[-1] != self.model.n_shape:
            raise ValueError(f"mica_shape has {mica_shape.shape[-1]} coefficients, the model has n_shape = "
                             f"{self.model.n_shape}")
        mica_shape = mica_shape.reshape(-1, self.model.n_shape)
        self.mica_shape = mica_shape.expand(batch, -1).clone()
        R, T = look_at_view_transform(dist=1.0, dtype=dtype, device=device)
        zeros = lambda *shape: torch.zeros(batch, *shape, dtype=dtype, device=device)  # noqa: E731
        self.params = {
            "R": matrix_to_rotation_6d(R).expand(batch, 6).clone(), "t": T.expand(batch, 3).clone(),
            "shape": self.mica_shape.clone(), "tex": zeros(self.n_tex), "exp": zeros(self.model.n_exp),
            "sh": zeros(9, 3), "focal_length": torch.full((batch, 1), self.config.focal_pixels / image_height,
                                                         dtype=dtype, device=device),
            "principal_point": zeros(2), "eyes": torch.cat([identity_6d(batch, dtype, device)] * 2, 1),
            "jaw": identity_6d(batch, dtype, device), "eyelids": zeros(2),
        }

    def camera(self, values: Optional[Dict[str, Tensor]] = None) -> TrackerCamera:
        p = self.params if values is None else values
        return TrackerCamera(p["R"], p["t"], p["focal_length"], p["principal_point"])

    # ------------------------------------------------------------------ stages
    def optimize_camera(self, frame: FrameData, steps: Optional[int] = None) -> None:
        """``optimize_camera`` (``MT:tracker.py:376-427``): Adam (lr 0.05, one group) on ``t, R, focal, pp``
        with ``StepLR(300, 0.1)`` per step; landmark terms only (:func:`energies.camera_terms`)."""
        cfg = self.config
        steps = cfg.camera_steps if steps is None else steps
        p = self.params
        live = {name: p[name].clone().requires_grad_(True) for name in ("t", "R", "focal_length", "principal_point")}
        optimizer = torch.optim.Adam([{"params": list(live.values()), "lr": cfg.camera_lr}])
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.camera_step_size, gamma=cfg.camera_gamma)
        targets = frame.parse()
        size = tuple(frame.image.shape[-2:])
        for k in range(steps):
            camera = self.camera({**p, **live})
            out = self.model(p["shape"], p["exp"], p["jaw"], p["eyes"], camera.R)  # no eyelids (tracker.py:401)
            proj_mp = camera.screen(out.landmarks_mp, size) if out.landmarks_mp is not None else None
            terms = energies.camera_terms(camera.screen(out.landmarks68, size), targets["lmk"], targets["lmk_mask"],
                                          size, live["principal_point"], cfg, proj_mp, targets["mp"],
                                          targets["mp_mask"])
            total = torch.stack(list(terms.values())).sum()
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            scheduler.step()
            if self.progress is not None:
                self.progress("camera", 0, k, terms)
        for name, value in live.items():
            p[name] = value.detach()

    def optimize_color(self, frame: FrameData, pyramid: Sequence[Level], lrs: Dict[str, float],
                       initializing: bool, stage: str = "track") -> Dict[str, Tensor]:
        """``optimize_color`` (``MT:tracker.py:429-547``) over the pyramid; returns the last iteration's terms."""
        cfg = self.config
        targets = frame.parse()
        height = frame.image.shape[-2]
        terms: Dict[str, Tensor] = {}
        for k, level in enumerate(pyramid):
            optimizer = GroupAdam({name: self.params[name] for name in lrs}, lrs)
            scale = level.image_size[0] / height
            flipped = torch.flip(level.image, [2, 3])
            aspect = _aspect_ratio(level.size, level.image.dtype, level.image.device)
            iris_targets = {"target_left": targets["left_iris"] * scale, "target_right": targets["right_iris"] * scale,
                            "mask_left": targets["mask_left_iris"] * scale,  # bool * scale, as tracker.py:464-465
                            "mask_right": targets["mask_right_iris"] * scale}
            lmk68, lmk_mp = targets["lmk"] * scale, targets["mp"] * scale
            self.renderer.reset()
            best = torch.full((frame.batch,), math.inf, dtype=level.image.dtype, device=level.image.device)
            for it in range(level.iterations):
                if it % cfg.raster_update == 0:
                    self.renderer.reset()
                terms = self.energies({**self.params, **optimizer.values()}, targets, lmk68, lmk_mp, iris_targets,
                                      level, photometric=k > 0 or initializing, flipped=flipped, aspect=aspect)
                total = torch.stack(list(terms.values())).sum(0)  # [B]
                per_frame = total.detach()
                optimizer.zero_grad()
                total.sum().backward()
                optimizer.step()
                self.global_step += 1
                improved = per_frame < best  # best-loss keeping: post-step values of the best pre-step loss
                if bool(improved.any()):
                    best = torch.where(improved, per_frame, best)
                    for name, value in optimizer.values(detached=True).items():
                        self.params[name] = value.clone() if bool(improved.all()) else \
                            torch.where(_rows(improved, value), value, self.params[name])
                if self.progress is not None:
                    self.progress(stage, k, it, terms)
        return terms

    def energies(self, values: Dict[str, Tensor], targets: Dict[str, Tensor], lmk68: Tensor, lmk_mp: Tensor,
                 iris_targets: Dict[str, Tensor], level: Level, photometric: bool, flipped: Optional[Tensor] = None,
                 aspect: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Every term of one iteration (``MT:tracker.py:475-526``), ``[B]`` each."""
        cfg = self.config
        model = self.model
        camera = self.camera(values)
        out = model(values["shape"], values["exp"], values["jaw"], values["eyes"], camera.R,
                    values["eyelids"] if model.l_eyelid is not None else None, landmarks_only=not photometric)
        image_size = level.image_size
        # Every landmark set projected in one call: 68, then MediaPipe 105, then the iris vertices (5 + 5).
        points = [out.landmarks68]
        if out.landmarks_mp is not None:
            points.append(out.landmarks_mp)
        if out.iris is not None:
            points.extend(out.iris)
        projected = torch.split(camera.screen(torch.cat(points, 1), image_size), [p.shape[1] for p in points], 1)
        proj_mp = projected[1] if out.landmarks_mp is not None else None
        iris = None
        if out.iris is not None:
            iris = {"left": projected[-2], "right": projected[-1], **iris_targets}
        terms = energies.landmark_terms(projected[0], lmk68, targets["lmk_mask"], image_size, cfg, proj_mp, lmk_mp,
                                        targets["mp_mask"], iris)
        terms.update(energies.reg_terms(values, self.mica_shape, cfg))
        if photometric:  # only the masked pixels contribute to pixel_loss: render those (MT:tracker.py:518-526)
            samples = self.renderer.render_pixels(out.vertices, camera, self.albedo(values["tex"]), values["sh"],
                                                  level.size)
            terms["loss/pho"] = energies.photometric_loss(samples, flipped, aspect) * cfg.w_pho
        return terms

    # ------------------------------------------------------------------ schedule
    def pyramid(self, frame: FrameData, initializing: bool) -> List[Level]:
        cfg = self.config
        factor = cfg.init_iteration_factor if initializing else 1.0
        return gaussian_pyramid(cfg.pyr_levels, frame.image, cfg.kernel_size, cfg.sigma, factor)

    def initialize(self, keyframes: Sequence[FrameData], mica_shape: Tensor) -> None:
        """``initialize_tracking`` (``MT:tracker.py:683-706``): ``keyframes`` are the frames of
        ``config.keyframes``; the first is visited twice (camera + colour, then the initialisation groups)."""
        if not keyframes:
            raise ValueError("keyframes must not be empty")
        start = time.perf_counter()
        cfg = self.config
        visits = [keyframes[0]] + list(keyframes)
        for i, frame in enumerate(visits):
            pyramid = self.pyramid(frame, initializing=True)
            if i == 0:
                self.create_parameters(mica_shape, frame.image.shape[-2], frame.batch)
                self.optimize_camera(frame)
                lrs = dict(COLOR_LRS)
            else:
                lrs = dict(INITIALIZATION_LRS)
                if cfg.optimize_shape:
                    lrs["shape"] = SHAPE_LR
                if cfg.optimize_jaw:
                    lrs["jaw"] = JAW_LR
            self.optimize_color(frame, pyramid, lrs, initializing=True, stage="init")
        self.timings["initialization_s"] = time.perf_counter() - start

    def tracking_lrs(self) -> Dict[str, float]:
        cfg = self.config
        lrs = {name: lr for name, lr in TRACKING_LRS.items()}
        lrs["R"], lrs["t"] = cfg.rotation_lr, cfg.translation_lr
        if cfg.optimize_jaw:
            lrs["jaw"] = JAW_LR
        return lrs

    def track_frame(self, frame: FrameData) -> Dict[str, Tensor]:
        """``optimize_frame`` (``MT:tracker.py:636-643``): the pyramid with the tracking groups, starting from
        the current values (the previous frame's result). Returns the last iteration's terms."""
        if not self.params:
            raise RuntimeError("call initialize() before track_frame()")
        return self.optimize_color(frame, self.pyramid(frame, initializing=False), self.tracking_lrs(),
                                   initializing=False)

    def track_batch(self, frames: FrameData) -> Dict[str, Tensor]:
        """Track ``B`` frames at once (one optimisation over ``[B, ...]`` parameters), each starting from the
        current values of the last tracked frame; afterwards :attr:`params` holds the ``B`` results
        (:meth:`checkpoint` ``index=b``) and the next call starts from the last. Each frame follows the
        trajectory :meth:`track_frame` would give it from that start (per-frame energies and best-loss keeping);
        the difference from the authors' sequential loop is the start: frame ``t`` begins from the previous
        batch's last frame instead of frame ``t - 1``."""
        if not self.params:
            raise RuntimeError("call initialize() before track_batch()")
        batch = frames.batch
        self.params = {name: value[-1:].expand(batch, *value.shape[1:]).clone() for name, value in self.params.items()}
        self.mica_shape = self.mica_shape[-1:].expand(batch, -1).clone()
        return self.track_frame(frames)

    # ------------------------------------------------------------------ outputs
    def vertices(self) -> Tensor:
        """``[B, V, 3]`` current mesh (FLAME frame)."""
        p = self.params
        with torch.no_grad():
            out = self.model(p["shape"], p["exp"], p["jaw"], p["eyes"], self.camera().R,
                             p["eyelids"] if self.model.l_eyelid is not None else None)
        return out.vertices

    def canonical_vertices(self, index: int = 0) -> Tensor:
        """``[V, 3]`` the canonical mesh of ``save_canonical`` (``MT:tracker.py:227-236``): frame ``index``'s
        shape with the jaw opened 12 degrees (axis-angle ``(12°, 0, 0)``), zero expression, eyes at rest, no
        eyelids (FLAME frame, metres)."""
        p = self.params
        shape = p["shape"][index:index + 1].detach()
        jaw = matrix_to_rotation_6d(axis_angle_to_matrix(shape.new_tensor([[math.radians(12.0), 0.0, 0.0]])))
        with torch.no_grad():
            out = self.model(shape, shape.new_zeros(1, self.model.n_exp), jaw, identity_6d(1, shape.dtype,
                             shape.device).repeat(1, 2), self.camera().R[index:index + 1])
        return out.vertices[0]

    def checkpoint(self, image_size: Sequence[int], frame_id: str, index: int = 0) -> dict:
        """Frame ``index``'s values in the authors' ``.frame`` layout (``save_checkpoint``,
        ``MT:tracker.py:183-210``): numpy arrays with a batch of 1."""
        p = {name: value[index:index + 1].detach().cpu() for name, value in self.params.items()}

        def np_(t):
            return t.numpy().copy()

        R, t, K = self.camera(p).to_opencv(tuple(image_size))
        return {
            "flame": {name: np_(p[name]) for name in ("exp", "shape", "tex", "sh", "eyes", "eyelids", "jaw")},
            "camera": {"R": np_(p["R"]), "t": np_(p["t"]), "fl": np_(p["focal_length"]),
                       "pp": np_(p["principal_point"])},
            "opencv": {"R": np_(R), "t": np_(t), "K": np_(K)},
            "img_size": np.array(list(image_size)),
            "frame_id": frame_id,
            "global_step": self.global_step,
        }


class GroupAdam:
    """``torch.optim.Adam`` (default betas (0.9, 0.999), eps 1e-8, no weight decay) with one parameter group per
    named tensor, as the tracker builds it per level (``MT:tracker.py:440``), run as **one** flat tensor
    ``[B, N]`` with a per-element learning rate: the same element-wise update, in a few operations instead of a
    few per group.

    :meth:`step` can leave some groups out, as ``torch.optim.Adam`` skips a parameter whose ``grad`` is None
    (no update of its value, moments or step count): each group keeps its own step count for the bias
    corrections (``facegeom.demo`` fits stage by stage that way).

    Args:
        values: ``{name: [B, ...]}`` starting values (cloned).
        lrs: ``{name: lr}``, the groups.
    """

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, values: Dict[str, Tensor], lrs: Dict[str, float]):
        if not lrs:
            raise ValueError("GroupAdam needs at least one group")
        missing = [n for n in lrs if n not in values]
        if missing:
            raise KeyError(f"GroupAdam: no values for the groups {missing}")
        self.names = list(lrs)
        first = values[self.names[0]]
        self.batch = first.shape[0]
        self.shapes = [tuple(values[n].shape[1:]) for n in self.names]
        self.sizes = [int(np.prod(shape)) for shape in self.shapes]
        self.flat = torch.cat([values[n].detach().reshape(self.batch, -1) for n in self.names], 1).clone()
        self.flat.requires_grad_(True)
        self.lr = torch.cat([torch.full((size,), float(lrs[n]), dtype=first.dtype, device=first.device)
                             for n, size in zip(self.names, self.sizes)])
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.steps = 0  # steps taken with every group
        self.group_steps = {n: 0 for n in self.names}
        self.group_lrs = {n: float(lrs[n]) for n in self.names}

    def values(self, detached: bool = False) -> Dict[str, Tensor]:
        """``{name: [B, ...]}`` views of the flat tensor (differentiable unless ``detached``)."""
        flat = self.flat.detach() if detached else self.flat
        parts = torch.split(flat, self.sizes, 1)
        return {n: part.reshape(self.batch, *shape) for n, part, shape in zip(self.names, parts, self.shapes)}

    def zero_grad(self) -> None:
        self.flat.grad = None

    @torch.no_grad()
    def step(self, groups: Optional[Sequence[str]] = None) -> None:
        """``_single_tensor_adam``: ``m = lerp(m, g, 1 - b1)``, ``v = b2 v + (1 - b2) g²``,
        ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, on every group or only on ``groups``
        (the others untouched, as a parameter without a gradient)."""
        grad = self.flat.grad
        if grad is None:
            return
        beta1, beta2 = self.BETAS
        if groups is None or set(groups) >= set(self.names):
            if len(set(self.group_steps.values())) == 1:  # every group in step: scalar bias corrections
                self.steps += 1
                for n in self.names:
                    self.group_steps[n] = self.steps
                self.exp_avg.lerp_(grad, 1 - beta1)
                self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** self.steps
                bias_correction2_sqrt = math.sqrt(1 - beta2 ** self.steps)
                denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.EPS)
                self.flat.sub_(self.exp_avg / denom * (self.lr / bias_correction1))
                return
            groups = self.names
        unknown = [n for n in groups if n not in self.group_steps]
        if unknown:
            raise KeyError(f"GroupAdam.step: unknown groups {unknown} (groups: {self.names})")
        start = 0
        for name, size in zip(self.names, self.sizes):
            if name in groups:  # the same update on the group's columns, with the group's step count
                self.group_steps[name] += 1
                t = self.group_steps[name]
                columns = slice(start, start + size)
                g, m, v = grad[:, columns], self.exp_avg[:, columns], self.exp_avg_sq[:, columns]
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                # torch's arithmetic to the rounding (_single_tensor_adam): Python-float step size, addcdiv_.
                denom = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(self.EPS)
                self.flat[:, columns].addcdiv_(m, denom, value=-self.group_lrs[name] / (1 - beta1 ** t))
            start += size
        self.steps = min(self.group_steps.values())


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """``[B]`` bool -> broadcastable against ``like [B, ...]``."""
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


def _aspect_ratio(size: Tuple[int, int], dtype, device) -> Tensor:
    """``get_aspect_ratio`` (``MT:util.py:328-335``): ``[1/r, 1]`` if ``r = w/h > 1`` else ``[1, r]``."""
    h, w = size
    ratio = w / h
    values = [1.0 / ratio, 1.0] if ratio > 1.0 else [1.0, ratio]
    return torch.tensor([values], dtype=dtype, device=device)
