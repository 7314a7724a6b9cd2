"""Deterministic synthetic training samples rendered from the built-in head.

:class:`SyntheticFaces` is a map-style :class:`torch.utils.data.Dataset` whose
sample ``i`` is a face image rendered from :func:`facegeom.models.synthetic_head`
through :class:`facegeom.render.MeshRenderer` and a :class:`facegeom.cameras.Pinhole`
camera, together with its 68 landmarks, Deep3D's 5 keypoints, an identity label,
the ground-truth parameters and the posed mesh. It is the embedded default data
of every pipeline in tests and of ``facegeom train --data synthetic`` (API.md §6,
issue 11 item 4).

Determinism: sample ``i`` depends on ``(config, i)`` only. Identity parameters
(shape, texture) come from a NumPy generator seeded with
``(seed, 0, i // images_per_identity)``, per-image parameters (expression, pose,
jaw, light, camera, background) from ``(seed, 1, i)``, and each hook gets its own
generator ``(seed, 2 + k, i)``; nothing depends on the worker, the rank, the
order of access or earlier samples. Samples are rendered lazily in
``__getitem__``; the head and the renderer are built once per process and are not
pickled (so the dataset goes to ``DataLoader`` workers cheaply).

Conventions of a sample (``ds[i]``, a dict; the default collate stacks it):

- ``"image"``: ``[3, H, W]`` float32 RGB in [0, 1], row 0 at the top.
- ``"landmarks"``: ``[68, 2]`` float32 iBUG landmarks in pixels, x right, y down,
  **integer coordinates at pixel centres** (pixel ``(c, r)`` covers
  ``[c - 0.5, c + 0.5] x [r - 0.5, r + 0.5]``; :mod:`facegeom.cameras`' convention).
  The 17 contour points follow the head's yaw (FLAME's dynamic contour, as a 2D
  detector sees the cheek outline); the others are fixed surface points.
- ``"keypoints5"``: ``[5, 2]`` Deep3D's 5 points from the 68 (:func:`extract_5p`).
- ``"identity"``: int64 scalar, ``i // images_per_identity``; ``"index"``: int64 scalar ``i``.
- ``"mask"``: ``[1, H, W]`` float32, the rendered coverage (``mask="alpha"``,
  fractional at antialiased silhouettes) or the skin region (``mask="skin"``:
  face skin without eyes, brows, lips and hair; 0/1); absent when ``mask=None``.
- ``"vertices"``: ``[V, 3]`` float32 posed vertices in the head's model frame
  (FLAME's: metres, y up, the face looks along +z). Camera frame:
  ``vertices @ R.T + t`` (OpenCV: y down, looking along +z).
- ``"params"``: dict of float32 tensors: ``shape [n_shape]``, ``expression [n_exp]``,
  ``texture [n_tex]`` (FLAME-layout coefficients, N(0, 1) priors scaled by the
  config's standard deviations), ``rotation [3]`` (global axis-angle, FLAME's
  ``pose``), ``jaw [3]`` (axis-angle), ``light [9, 3]`` (SH coefficients, Deep3D's
  convention, in the model frame), ``K [3, 3]``, ``R [3, 3]``, ``t [3]`` (the
  OpenCV pinhole camera, ``x_pix ~ K (R X + t)``), ``background [3]`` (RGB).

Extending: pipelines add fields with *hooks*, picklable callables
``hook(sample: dict, context: SampleContext) -> None`` listed in
:attr:`SyntheticConfig.hooks` that add keys to ``sample`` (e.g. Deep3D's skin
attention mask, FLAME-like region labels, UV maps); ``context`` carries the head,
its output, the rendering, the camera and a generator private to the hook.

The 5-point extraction is Deep3DFaceRecon's ``extract_5p``
(``D3D:util/preprocess.py:167-172``, PIPELINES.md §2.1).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from facegeom import _checks

__all__ = ["SyntheticConfig", "SyntheticFaces", "SampleContext", "extract_5p", "skin_faces"]

Tensor = torch.Tensor

#: 0-based iBUG indices of Deep3D's extract_5p: eye centres are means of the eye
#: corners (37, 40) and (43, 46), then nose tip 31, mouth corners 49, 55 (1-based).
_EYE_CORNERS = ((36, 39), (42, 45))
_NOSE_MOUTH = (30, 48, 54)
_SKIN_RGB = np.array([0.80, 0.60, 0.50])  # the synthetic head's base skin colour
MASK_KINDS = ("alpha", "skin", None)


def extract_5p(landmarks: Tensor) -> Tensor:
    """Deep3D's 5 keypoints from 68 iBUG landmarks (``D3D:util/preprocess.py:167-172``).

    Order: image-left eye centre (mean of 1-based points 37, 40), image-right eye
    centre (mean of 43, 46), nose tip (31), image-left mouth corner (49),
    image-right mouth corner (55).

    Args:
        landmarks: ``[..., 68, D]`` (any float dtype; D = 2 or 3).

    Returns:
        ``[..., 5, D]`` in the same dtype and coordinates.
    """
    if not isinstance(landmarks, torch.Tensor):
        raise TypeError(f"landmarks must be a torch.Tensor, got {type(landmarks).__name__}")
    if landmarks.dim() < 2 or landmarks.shape[-2] != 68:
        raise ValueError(f"landmarks must be [..., 68, D], got {list(landmarks.shape)}")
    eyes = [(landmarks[..., a, :] + landmarks[..., b, :]) / 2 for a, b in _EYE_CORNERS]
    rest = [landmarks[..., k, :] for k in _NOSE_MOUTH]
    return torch.stack(eyes + rest, -2)


@dataclass(frozen=True)
class SampleContext:
    """What a hook sees besides the sample dict.

    Attributes:
        index: the sample's global index; ``identity`` its identity label.
        config: the dataset's :class:`SyntheticConfig`.
        head: the :class:`facegeom.models.FLAME` module (the synthetic head).
        output: the head's :class:`~facegeom.models.flame.FLAMEOutput` for this
            sample (batch of 1, model frame, float32).
        rendering: the :class:`facegeom.render.mesh_renderer.Rendering` (batch of 1).
        camera: the :class:`facegeom.cameras.Pinhole` camera used.
        rng: a ``numpy.random.Generator`` private to this hook and sample.
    """

    index: int
    identity: int
    config: "SyntheticConfig"
    head: Any
    output: Any
    rendering: Any
    camera: Any
    rng: np.random.Generator


Hook = Callable[[Dict[str, Any], SampleContext], None]


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that defines a :class:`SyntheticFaces` dataset (frozen, picklable).

    Distributions (all per image unless marked per identity):

    - shape, texture (per identity): ``N(0, shape_std^2)``, ``N(0, texture_std^2)``;
      expression ``N(0, expression_std^2)``. ``shape_components`` /
      ``expression_components`` / ``texture_components`` (None: all) keep only that many
      leading coefficients and set the others to 0: a low-dimensional space, for smoke
      trainings whose small networks must see each component at a low resolution. The
      full vectors are drawn first, so the kept coefficients equal those of the
      unrestricted dataset with the same seed.
    - rotation (axis-angle, radians): ``N(0, rotation_std^2)`` per axis
      (pitch, yaw, roll about x, y, z), clipped to 2.5 standard deviations.
    - jaw opening about x: uniform in ``[0, max_jaw]`` radians.
    - light: ambient ``light_ambient + N(0, 0.05^2)`` per channel, the 8 higher SH
      bands ``N(0, 0.15^2)`` (white) ``+ N(0, 0.02^2)`` (tint).
    - camera: focal ``focal * min(H, W)`` pixels, principal point at the image
      centre ``((W - 1) / 2, (H - 1) / 2)``; the face centre (mean of the neutral
      head's 68 landmarks) at a distance chosen so the face height is
      ``face_fraction * min(H, W)`` pixels, times ``exp(N(0, scale_std^2))``,
      shifted by ``(shift_offset + N(0, shift_std^2)) * min(H, W)`` pixels in x and y
      (``shift_offset`` default (0, 0): the face centre at the image centre).
    - background: ``background`` if given (grey level or RGB), else uniform in
      [0.05, 0.95] per channel.
    """

    num_samples: int = 1000
    image_size: Union[int, Tuple[int, int]] = 224
    images_per_identity: int = 4
    seed: int = 0
    head_seed: int = 0  # synthetic_head(seed=...): the bases, shared by every sample
    rigid_free: bool = False  # synthetic_head(rigid_free=...): bases without rigid motion of the face
    mouth_open: bool = False  # synthetic_head(mouth_open=...): an open mean mouth, expression 0 opens it
    n_shape: int = 50
    n_exp: int = 50
    n_tex: int = 50
    shape_std: float = 1.0
    expression_std: float = 1.0
    texture_std: float = 1.0
    shape_components: Optional[int] = None
    expression_components: Optional[int] = None
    texture_components: Optional[int] = None
    rotation_std: Tuple[float, float, float] = (0.12, 0.30, 0.06)
    max_jaw: float = 0.2
    light_ambient: float = 0.8
    focal: float = 1015.0 / 224.0  # Deep3D's focal length in units of the image size
    face_fraction: float = 0.55
    scale_std: float = 0.05
    shift_std: float = 0.03
    shift_offset: Tuple[float, float] = (0.0, 0.0)
    background: Optional[Union[float, Tuple[float, float, float]]] = None
    mask: Optional[str] = "alpha"
    antialias: bool = True
    shading: str = "vertex"
    hooks: Tuple[Hook, ...] = field(default=())

    def __post_init__(self):
        for name in ("num_samples", "images_per_identity", "n_shape", "n_exp", "n_tex"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("shape_components", "expression_components", "texture_components"):
            _checks.optional_count(name, getattr(self, name))
        for name in ("seed", "head_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        for name in ("rigid_free", "mouth_open"):
            _checks.boolean(name, getattr(self, name))
        size = self.image_size
        size = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 8 for s in size):
            raise ValueError(f"image_size must be an int >= 8 or an (H, W) pair of them, got {self.image_size!r}")
        object.__setattr__(self, "image_size", size)
        if self.mask not in MASK_KINDS:
            raise ValueError(f"mask must be one of {MASK_KINDS}, got {self.mask!r}")
        for name in ("shape_std", "expression_std", "texture_std", "max_jaw", "scale_std", "shift_std"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if len(tuple(self.shift_offset)) != 2 or not all(math.isfinite(float(x)) for x in self.shift_offset):
            raise ValueError(f"shift_offset must be 2 finite floats, got {self.shift_offset!r}")
        object.__setattr__(self, "shift_offset", tuple(float(x) for x in self.shift_offset))
        if len(self.rotation_std) != 3 or any(not s >= 0 for s in self.rotation_std):
            raise ValueError(f"rotation_std must be 3 non-negative floats, got {self.rotation_std!r}")
        if not (self.focal > 0 and 0 < self.face_fraction <= 2):
            raise ValueError(f"need focal > 0 and 0 < face_fraction <= 2, got {self.focal}, {self.face_fraction}")
        hooks = tuple(self.hooks)
        for hook in hooks:
            if not callable(hook):
                raise TypeError(f"hooks must be callables hook(sample, context), got {type(hook).__name__}")
        object.__setattr__(self, "hooks", hooks)


def skin_faces(head) -> Tensor:
    """``[F]`` bool: the head's triangles in the skin region of the face.

    A vertex is skin when it lies on the face (azimuth within 65 degrees of the
    front, elevation between -55 and +25 degrees, seen from the model origin),
    is not an eyeball, and its mean albedo is within 0.08 (max over RGB) of the
    base skin colour (excludes lips, brows and hair); a triangle is skin when its
    three vertices are.
    """
    template = head.v_template.detach().double().cpu().numpy()
    albedo = head.albedo_mean.detach().double().cpu().numpy() if getattr(head, "albedo_mean", None) is not None \
        else np.tile(_SKIN_RGB, (len(template), 1))
    radius = np.linalg.norm(template, axis=1)
    azimuth = np.degrees(np.arctan2(template[:, 0], template[:, 2]))
    elevation = np.degrees(np.arcsin(np.clip(template[:, 1] / np.maximum(radius, 1e-12), -1, 1)))
    on_face = (np.abs(azimuth) < 65) & (elevation > -55) & (elevation < 25)
    skin_colour = np.abs(albedo - _SKIN_RGB).max(1) < 0.08
    faces = head.faces.long().cpu().numpy()
    is_skin = on_face & skin_colour  # eyeballs are white / iris-coloured: not skin
    return torch.from_numpy(is_skin[faces].all(1))


class _Renderer:
    """Per-process cache: the head, its renderer and constants (never pickled)."""

    def __init__(self, config: SyntheticConfig):
        from facegeom.models import synthetic_head
        from facegeom.render import MeshRenderer

        self.head = synthetic_head(seed=config.head_seed, n_shape=config.n_shape, n_exp=config.n_exp,
                                   n_tex=config.n_tex, dtype=torch.float32, rigid_free=config.rigid_free,
                                   mouth_open=config.mouth_open)
        self.head.requires_grad_(False)
        self.renderer = MeshRenderer(self.head.faces, config.image_size, sh_convention="deep3d",
                                     shading=config.shading, antialias=config.antialias)
        with torch.no_grad():
            neutral = self.head()
            landmarks = neutral.landmarks2d[0].double()
        self.centre = landmarks.mean(0)  # face centre in the model frame
        self.face_height = float(landmarks[:, 1].max() - landmarks[:, 1].min())
        self.skin = skin_faces(self.head) if config.mask == "skin" else None


class SyntheticFaces(Dataset):
    """Rendered synthetic faces, deterministic from ``(config, index)`` (see the module docstring).

    Args:
        config: a :class:`SyntheticConfig`; or leave it None and pass its fields as
            keyword arguments (``SyntheticFaces(num_samples=8, image_size=64)``).

    Example:
        >>> ds = SyntheticFaces(num_samples=8, image_size=64, images_per_identity=4, seed=0)
        >>> s = ds[5]
        >>> s["image"].shape, s["landmarks"].shape, int(s["identity"])
        (torch.Size([3, 64, 64]), torch.Size([68, 2]), 1)
    """

    def __init__(self, config: Optional[SyntheticConfig] = None, **kwargs):
        if config is None:
            config = SyntheticConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        if not isinstance(config, SyntheticConfig):
            raise TypeError(f"config must be a SyntheticConfig, got {type(config).__name__}")
        self.config = config
        self._cache: Optional[_Renderer] = None

    def __len__(self) -> int:
        return self.config.num_samples

    def __getstate__(self):
        return {"config": self.config, "_cache": None}

    @property
    def head(self):
        """The synthetic head (built on first use in each process)."""
        return self._state().head

    @property
    def faces(self) -> Tensor:
        """``[F, 3]`` int64 triangles of the ``"vertices"`` of every sample."""
        return self._state().head.faces.long()

    def _state(self) -> _Renderer:
        if self._cache is None:
            self._cache = _Renderer(self.config)
        return self._cache

    def identity_of(self, index: int) -> int:
        return index // self.config.images_per_identity

    def sample_params(self, index: int) -> Dict[str, Tensor]:
        """The ground-truth parameters of sample ``index`` (float64), without rendering."""
        cfg = self.config
        index = self._check_index(index)
        state = self._state()
        ident = np.random.default_rng([cfg.seed, 0, self.identity_of(index)])
        image = np.random.default_rng([cfg.seed, 1, index])
        shape = ident.standard_normal(cfg.n_shape) * cfg.shape_std
        texture = ident.standard_normal(cfg.n_tex) * cfg.texture_std
        expression = image.standard_normal(cfg.n_exp) * cfg.expression_std
        for values, keep in ((shape, cfg.shape_components), (texture, cfg.texture_components),
                             (expression, cfg.expression_components)):
            if keep is not None:
                values[keep:] = 0.0
        rotation = np.clip(image.standard_normal(3), -2.5, 2.5) * np.asarray(cfg.rotation_std)
        jaw = np.array([image.uniform(0.0, cfg.max_jaw), 0.0, 0.0])
        light = 0.15 * image.standard_normal((9, 1)) + 0.02 * image.standard_normal((9, 3))
        light[0] = cfg.light_ambient + 0.05 * image.standard_normal(3)
        height, width = cfg.image_size
        side = min(height, width)
        focal = cfg.focal * side
        distance = focal * state.face_height / (cfg.face_fraction * side)
        distance *= math.exp(cfg.scale_std * image.standard_normal())
        shift = cfg.shift_std * side * image.standard_normal(2) + np.asarray(cfg.shift_offset) * side  # pixels
        background = (np.full(3, float(cfg.background)) if isinstance(cfg.background, (int, float))
                      else np.asarray(cfg.background, dtype=np.float64) if cfg.background is not None
                      else image.uniform(0.05, 0.95, 3))
        R = np.diag([1.0, -1.0, -1.0])  # model frame (y up, face towards +z) -> OpenCV camera frame
        # The face centre lands at the image centre plus the shift, `distance` away.
        centre = state.centre.numpy()
        t = -R @ centre + np.array([shift[0] * distance / focal, shift[1] * distance / focal, distance])
        K = np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
        arrays = dict(shape=shape, expression=expression, texture=texture, rotation=rotation, jaw=jaw,
                      light=light, K=K, R=R, t=t, background=background)
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in arrays.items()}

    def _check_index(self, index) -> int:
        if isinstance(index, torch.Tensor) and index.dim() == 0:
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for SyntheticFaces of {len(self)} samples")
        return index

    @torch.no_grad()
    def __getitem__(self, index) -> Dict[str, Any]:
        from facegeom.cameras import Pinhole

        cfg = self.config
        index = self._check_index(index)
        state = self._state()
        params64 = self.sample_params(index)
        p = {k: v.to(torch.float32) for k, v in params64.items()}
        output = state.head(shape=p["shape"][None], expression=p["expression"][None], pose=p["rotation"][None],
                            jaw=p["jaw"][None], texture=p["texture"][None])
        camera = Pinhole.from_K(p["K"], p["R"], p["t"], image_size=cfg.image_size)
        albedo = output.albedo.clamp(0.0, 1.0)
        rendering = state.renderer(output.vertices, albedo, p["light"][None], camera=camera,
                                   background=p["background"])
        landmarks = camera.project(output.landmarks2d)[0]
        sample: Dict[str, Any] = {
            "image": rendering.image[0].clamp(0.0, 1.0).permute(2, 0, 1).contiguous(),
            "landmarks": landmarks,
            "keypoints5": extract_5p(landmarks),
            "identity": torch.tensor(self.identity_of(index), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "vertices": output.vertices[0],
            "params": p,
        }
        if cfg.mask == "alpha":
            sample["mask"] = rendering.alpha[0].permute(2, 0, 1).contiguous()
        elif cfg.mask == "skin":
            tri = rendering.triangle_id[0]
            skin = state.skin[tri.clamp(min=0)] & (tri >= 0)
            sample["mask"] = skin.to(torch.float32)[None]
        for k, hook in enumerate(cfg.hooks):
            context = SampleContext(index, self.identity_of(index), cfg, state.head, output, rendering, camera,
                                    np.random.default_rng([cfg.seed, 2 + k, index]))
            hook(sample, context)
        return sample
