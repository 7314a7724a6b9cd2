"""Deng, Jin, Le, Deng (ACM MM 2022): single-image face reconstruction with diffuse and
specular albedo (``specular-albedo-deng2022.txt``; PIPELINES.md §5). No code or weights
were released: every value below is the paper's, and every choice it leaves open is
marked [INFERRED] here and listed in ``docs/specular.md``.

- Face model (paper §3, eq. 1-2; PIPELINES.md §5.3): BFM 2017 (199 shape, 100
  expression components) with AlbedoMM's diffuse and specular albedo (145 each), **one
  shared coefficient vector** ``c_t`` driving both (``AMM:scala/src/main/scala/faces/lib/
  AlbedoMoMo.scala`` ``instance``): :func:`load_face_model` (statismo h5 files as published,
  read by :meth:`facegeom.models.BFM.from_basel2017`), :func:`synthetic_model` for tests.
- :class:`SpecularNet`: a ResNet-50 (paper §4; ResNet-18 in :meth:`Config.tiny`) with one
  zero-initialised 1x1-conv head per parameter group, as Deep3D's R-Net
  (:class:`facegeom.pipelines.deep3d.ReconNet`): shape 199, expression 100, albedo 145,
  Euler angles 3, translation 3, log-scale 1, SH 27, light position 3, log-shininess 1
  (:data:`COEFF_SIZES`, 482 outputs).
- :func:`decode`: eq. 3 pose ``f R S + t`` with Deep3D's fixed pinhole camera
  (:meth:`facegeom.cameras.Pinhole.deep3d`), eq. 4-5 shading in linear space
  ``c = c_d + c_s`` (SH diffuse, Blinn-Phong specular from the predicted point light and
  shininess) as shaders on :class:`facegeom.render.MeshRenderer`'s rasterize -> shader ->
  composite split (:class:`GammaShader` over :class:`facegeom.render.SHShader`, which calls
  :func:`facegeom.ops.sh_shading` and :func:`facegeom.ops.blinn_phong`), gamma ``x^(1/2.2)``
  on the shaded colour; two renders (diffuse only; diffuse + specular) and the antialiased
  inner-mouth area (:func:`facegeom.ops.antialias`).
- :func:`losses`: eq. 6-13 (:mod:`facegeom.losses.specular`).
- :class:`SpecularMethod`: ``facegeom train --method specular``;
  :func:`reconstructor`: ``facegeom reconstruct --method specular``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from facegeom import _checks, ops
from facegeom.cameras import Pinhole
from facegeom.losses import specular as L
from facegeom.models.bfm import BFM
from facegeom.nets import resnet18, resnet50
from facegeom.render import MeshRenderer, SHShader, ShadingInputs, UnlitShader
from facegeom.transforms import axis_angle_to_matrix, euler_to_matrix

Tensor = torch.Tensor

__all__ = ["COEFF_SIZES", "Config", "GammaShader", "SpecularMethod", "SpecularNet", "SpecularOutput",
           "SyntheticSpecularHook", "decode", "inner_mouth_faces", "load_checkpoint", "load_face_model", "losses",
           "reconstructor", "split_coeff", "synthetic_model", "albedo_gain_error", "matched_framing"]

INNER_LIP = tuple(range(60, 68))
"""iBUG 0-based indices of the 8 inner-lip landmarks, in contour order."""


def coeff_sizes(n_shape: int = 199, n_exp: int = 100, n_albedo: int = 145) -> Dict[str, int]:
    """The output layout, in order (head order of :class:`SpecularNet`)."""
    return {"shape": n_shape, "expression": n_exp, "albedo": n_albedo, "angle": 3, "translation": 3, "scale": 1,
            "sh": 27, "light": 3, "shininess": 1}


COEFF_SIZES = coeff_sizes()
"""Layout of the 482 outputs of the full model (paper §4, Fig. 2: shape ``c_i`` 199,
expression ``c_e`` 100, albedo ``c_t`` 145, pose 7 = Euler ``(alpha, beta, gamma)``,
``(t_x, t_y, t_z)``, ``f``; SH 27 (3 bands, RGB); light position ``p_l`` 3; shininess
``phi`` 1). Order and the log parameterisation of ``f`` and ``phi`` are [INFERRED]."""


@dataclass(frozen=True)
class Config:
    """The method's settings: the paper's values (§4.1-4.2) and facegeom's choices for what
    it leaves open (marked [INFERRED]; PIPELINES.md §5).

    Face model: ``n_shape`` 199, ``n_exp`` 100, ``n_albedo`` 145 (BFM 2017 + AlbedoMM).
    Camera [INFERRED: "fixed position and direction", FOV not given]: Deep3D's
    (``focal`` 1015 px, ``center`` 112, camera at ``camera_d`` 10 on +z looking down -z,
    ``z_near`` 5, ``z_far`` 15; the face model in decimetres, re-centred).
    Shading: Deep3D's SH convention with ``init_lit`` 0.8 added to each channel's first
    coefficient [INFERRED]; the light position is ``light_init + p`` (``p`` predicted;
    default: at the camera) and the shininess ``shininess_init * exp(s)`` [INFERRED]; the
    pose scale ``f = exp(s_f)`` [INFERRED]; ``gamma`` 2.2 (eq. 2).
    Loss weights (eq. 6): ``w_id`` 0.2, ``w_photo`` 1.92, ``w_lmk`` 1.8e-3, ``w_mouth`` 1.3e-3,
    ``w_reg`` 5e-4, ``w_uniform`` 5.0; ``eta`` (eq. 8, "user-specified", no value given) 1.0
    [INFERRED]; the inner-mouth loss from step ``mouth_start`` (50k, §4.1.4).
    Optimisation (§4.2): Adam, ``lr`` 5e-5, batch 32, 200k iterations.
    Synthetic data (``--data synthetic``, facegeom's): ``num_samples`` / ``val_samples``
    images, ``images_per_identity``; ``shape_components`` / ``expression_components`` /
    ``albedo_components`` keep only the leading k coefficients of the samples (the others
    0; None: all, 0: none), a low-dimensional space for smoke trainings; the network still predicts
    ``n_shape`` / ``n_exp`` / ``n_albedo``. ``pose_scale`` multiplies the synthetic pose
    spreads (:class:`facegeom.data.synthetic.SyntheticConfig`'s ``rotation_std`` (0.12, 0.30,
    0.06) rad, ``shift_std`` 0.03, ``scale_std`` 0.05): below 1, nearer-frontal, centred
    faces, so a short smoke training reaches the landmark accuracy at which the sub-pixel
    effects of shape and expression become visible. ``shape_std`` / ``expression_std`` /
    ``albedo_std``: the samples' coefficient spreads (default 1, the prior). Framing (facegeom's choice for the
    smoke data; the decoder's camera is the authors' and stays): ``face_fraction`` (face height
    / image side) and ``shift_x`` / ``shift_y`` (the face centre's offset from the image
    centre, in image sides) of the samples at zero pose; None (default): matched to the
    decoder's zero-coefficient face (:func:`matched_framing`), so the zero-initialised network
    starts on the data's mean face instead of ~7 px away; 0.55 / 0 / 0 give the earlier,
    unmatched data. ``rigid_free`` (default True) / ``mouth_open`` (default False): the
    synthetic head of both the data and :func:`synthetic_model` is
    ``synthetic_head(rigid_free=..., mouth_open=...)``: bases without rigid motion of the face
    (the plain ones trade identity for head rotation) and an opening expression component 0
    with an open mean mouth (docs/specular.md, "Rigid motion in the synthetic bases").
    """

    net: str = "resnet50"
    n_shape: int = 199
    n_exp: int = 100
    n_albedo: int = 145
    focal: float = 1015.0
    center: float = 112.0            # image size = 2 * center
    camera_d: float = 10.0
    z_near: float = 5.0
    z_far: float = 15.0
    init_lit: float = 0.8
    light_init: Tuple[float, float, float] = (0.0, 0.0, 10.0)
    shininess_init: float = 20.0
    gamma: float = 2.2
    w_id: float = 0.2
    w_photo: float = 1.92
    w_lmk: float = 1.8e-3
    w_mouth: float = 1.3e-3
    w_reg: float = 5e-4
    w_uniform: float = 5.0
    eta: float = 1.0
    mouth_start: int = 50_000
    lr: float = 5e-5
    batch_size: int = 32
    steps: int = 200_000
    recog_input_size: int = 112
    recog_weights: str = ""          # a state dict for facegeom.nets.iresnet50 ("" and w_id > 0: random, tests only)
    bfm_path: str = ""               # BFM 2017 h5 (model2017-1_face12_nomouth.h5); "": synthetic_model
    albedo_path: str = ""            # AlbedoMM h5 (albedoModel2020_face12_albedoPart.h5)
    keypoints_path: str = ""         # [68] int vertex indices of the iBUG landmarks on the BFM 2017 mesh
    head_seed: int = 0
    num_samples: int = 20000
    val_samples: int = 64
    images_per_identity: int = 4
    shape_components: Optional[int] = None       # synthetic data: keep the leading k shape coefficients, the rest 0
    expression_components: Optional[int] = None  # the same for expression (None: all; 0: none, the mean)
    albedo_components: Optional[int] = None      # the same for albedo
    pose_scale: float = 1.0          # synthetic data: x the default rotation, shift and distance spreads
    shape_std: float = 1.0           # synthetic data: std of the shape coefficients
    expression_std: float = 1.0      # synthetic data: std of the expression coefficients
    albedo_std: float = 1.0          # synthetic data: std of the albedo coefficients
    face_fraction: Optional[float] = None  # synthetic data framing (None: matched to the decoder, matched_framing)
    shift_x: Optional[float] = None        # the same: face centre offset in x, in image sides
    shift_y: Optional[float] = None        # ... and in y
    rigid_free: bool = True          # synthetic data and model: synthetic_head(rigid_free=...)
    mouth_open: bool = False         # synthetic data and model: synthetic_head(mouth_open=...)

    def __post_init__(self):
        _checks.choice("net", self.net, ("resnet50", "resnet18"))
        for name in ("n_shape", "n_exp", "n_albedo", "num_samples", "val_samples", "images_per_identity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("mouth_start", "head_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        for name in ("shape_components", "expression_components", "albedo_components"):
            _checks.optional_count(name, getattr(self, name))
        if not (self.focal > 0 and self.center > 0 and 0 < self.z_near < self.z_far):
            raise ValueError("need focal > 0, center > 0 and 0 < z_near < z_far")
        if not (self.gamma > 0 and self.shininess_init > 0 and self.eta >= 0):
            raise ValueError(f"need gamma > 0, shininess_init > 0, eta >= 0; got {self.gamma}, "
                             f"{self.shininess_init}, {self.eta}")
        if not self.pose_scale >= 0:
            raise ValueError(f"pose_scale must be >= 0, got {self.pose_scale!r}")
        if not (self.shape_std >= 0 and self.expression_std >= 0 and self.albedo_std >= 0):
            raise ValueError(f"need shape_std, expression_std, albedo_std >= 0, got {self.shape_std!r}, "
                             f"{self.expression_std!r}, {self.albedo_std!r}")
        if self.face_fraction is not None and not 0 < self.face_fraction <= 2:
            raise ValueError(f"face_fraction must be None or in (0, 2], got {self.face_fraction!r}")
        for name in ("shift_x", "shift_y"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be None or finite, got {value!r}")
        for name in ("rigid_free", "mouth_open"):
            _checks.boolean(name, getattr(self, name))
        if len(tuple(self.light_init)) != 3:
            raise ValueError(f"light_init must be 3 floats, got {self.light_init!r}")

    @property
    def image_size(self) -> int:
        return int(2 * self.center)

    @property
    def sizes(self) -> Dict[str, int]:
        return coeff_sizes(self.n_shape, self.n_exp, self.n_albedo)

    @classmethod
    def tiny(cls, **overrides) -> "Config":
        """Small and fast for tests and smoke runs: ResNet-18, 64 x 64 (focal scaled with the
        centre: same field of view), 20 / 10 / 10 components, no recognition net
        (``w_id = 0``), the mouth loss from step 0, 64 synthetic samples. The two terms
        measured in pixels keep their balance with the others at the smaller image: ``w_lmk``
        (a distance in pixels) x 224 / 64 and ``w_mouth`` (a sum over pixels) x (224 / 64)^2."""
        factor = 224.0 / 64.0
        settings = dict(net="resnet18", center=32.0, focal=1015.0 * 32.0 / 112.0, n_shape=20, n_exp=10,
                        n_albedo=10, w_id=0.0, mouth_start=0, num_samples=64, val_samples=8, batch_size=4,
                        w_lmk=1.8e-3 * factor, w_mouth=1.3e-3 * factor ** 2)
        settings.update(overrides)
        return cls(**settings)

    def replace(self, **changes) -> "Config":
        return replace(self, **changes)


# ---------------------------------------------------------------------------------------- #
# Network                                                                                  #
# ---------------------------------------------------------------------------------------- #

class SpecularNet(nn.Module):
    """The regressor (paper §4, Fig. 2): a torchvision-layout ResNet-50 (or -18) without
    ``fc``, then one zero-initialised ``Conv2d(C, k, 1)`` head per group of
    :func:`coeff_sizes` (``heads.<name>``), as Deep3D's ``final_layers``
    (``D3D:models/networks.py:84-104``) [INFERRED: the paper gives no head layout]. An
    untrained net outputs zeros: the mean face, frontal, unit scale, the initial light.

    Input ``[B, 3, H, W]`` RGB in [0, 1]; output ``[B, sum(sizes)]``.

    Example:
        >>> net = SpecularNet(Config.tiny())
        >>> net(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 78])
    """

    def __init__(self, config: Config = Config()):
        super().__init__()
        self.backbone = (resnet50 if config.net == "resnet50" else resnet18)(num_classes=None)
        channels = self.backbone.num_features
        self.sizes = config.sizes
        self.heads = nn.ModuleDict({name: nn.Conv2d(channels, k, kernel_size=1) for name, k in self.sizes.items()})
        for head in self.heads.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)  # [B, C, 1, 1]
        return torch.flatten(torch.cat([head(features) for head in self.heads.values()], 1), 1)


def split_coeff(params: Tensor, config: Config = Config()) -> Dict[str, Tensor]:
    """``[B, P]`` -> ``{name: [B, k]}`` views in the order of :attr:`Config.sizes`."""
    sizes = config.sizes
    _checks.floating("params", params)
    _checks.shape("params", params, [None, sum(sizes.values())], f"[B, {sum(sizes.values())}]")
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = params[:, start:start + size]
        start += size
    return out


# ---------------------------------------------------------------------------------------- #
# Face model                                                                               #
# ---------------------------------------------------------------------------------------- #

def inner_mouth_faces(keypoints: Tensor) -> Tensor:
    """The inner-mouth proxy (paper Fig. 1c: "several geometry faces enclose the inner
    mouth"; the authors' face list is not published): ``[6, 3]`` int64 triangles over the
    vertices of the 8 inner-lip landmarks (iBUG 60-67) [INFERRED], a strip that zips the
    upper inner lip (60, 61, 62, 63, 64) to the lower one (60, 67, 66, 65, 64), each triangle
    spanning the opening between the two lips, as the mesh faces that close a mouth do:
    ``(60, 61, 67) (61, 66, 67) (61, 62, 66) (62, 65, 66) (62, 63, 65) (63, 64, 65)``.

    Its projection is the polygon of the projected inner-lip contour, the region a labeller
    traces (:func:`polygon_mask`), whenever each quad between opposite lip points is convex.
    A fan from the corner 60 is not: a closed or nearly closed mouth's contour is not convex,
    and the fan's triangles then cover pixels outside it (on 64 held-out synthetic samples at
    64 x 64, a fan covered 8.2 pixels where the labelled masks have 6.0, 2.2 pixels wrong per
    image, the strip 0.02: ``docs/specular.md``; asserted on 16 samples by
    ``tests/pipelines/test_specular.py``)."""
    keypoints = torch.as_tensor(keypoints).reshape(-1)
    if keypoints.numel() != 68:
        raise ValueError(f"keypoints must hold the 68 iBUG landmark vertices, got {keypoints.numel()}")
    ring = keypoints[list(INNER_LIP)]
    return ring[torch.tensor(INNER_MOUTH_STRIP)].long()


INNER_MOUTH_STRIP = ((0, 1, 7), (1, 6, 7), (1, 2, 6), (2, 5, 6), (2, 3, 5), (3, 4, 5))
"""The triangles of :func:`inner_mouth_faces` as positions in :data:`INNER_LIP`."""


def load_face_model(bfm_path, albedo_path, keypoints_path, n_shape: int = 199, n_exp: int = 100,
                    n_albedo: int = 145, dtype: Optional[torch.dtype] = torch.float32) -> BFM:
    """BFM 2017 + AlbedoMM as published (statismo h5; PIPELINES.md §5.3):

    - ``bfm_path``: ``model2017-1_face12_nomouth.h5`` (the frontal-face crop the paper uses,
      Fig. 1b): ``shape/model/{mean,pcaBasis,pcaVariance}``, ``expression/model/...``,
      ``shape/representer/cells``;
    - ``albedo_path``: AlbedoMM's ``albedoModel2020_face12_albedoPart.h5`` (same topology):
      ``diffuseAlbedo/model/...`` and ``specularAlbedo/model/...`` (``AMM:README.md``; linear
      sRGB);
    - ``keypoints_path``: ``.npy`` / ``.txt`` with the 68 vertex indices of the iBUG landmarks
      (not part of either file).

    Read by :meth:`facegeom.models.BFM.from_basel2017` (bases times ``sqrt(pcaVariance)``),
    converted from millimetres to decimetres (``scale = 0.01``, the units of Deep3D's camera)
    and re-centred on the mean shape's centroid [INFERRED]."""
    model = BFM.from_basel2017(bfm_path, albedo_path, n_shape=n_shape, n_exp=n_exp, n_tex=n_albedo, scale=0.01,
                               dtype=torch.float64)
    source = os.fspath(keypoints_path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"keypoints_path: {source} does not exist (68 landmark vertex indices)")
    keypoints = np.load(source) if source.endswith(".npy") else np.loadtxt(source)
    keypoints = np.asarray(keypoints).reshape(-1)
    if keypoints.size != 68 or not np.all(np.mod(keypoints, 1) == 0):
        raise ValueError(f"{source}: expected 68 integer vertex indices, got {keypoints.size} values")
    return _assemble(model, model.mean_shape, model.shape_basis, model.faces, keypoints.astype(np.int64), {},
                     dtype)


def _assemble(model: BFM, mean_shape: Tensor, shape_basis: Tensor, faces, keypoints, masks, dtype) -> BFM:
    mean = mean_shape - mean_shape.mean(0, keepdim=True)
    n = model.n_shape
    return BFM(mean.double().numpy(), shape_basis[:n].double().numpy(), shape_basis[n:].double().numpy(), faces,
               model.mean_texture.double().numpy(), model.texture_basis.double().numpy(),
               model.mean_specular.double().numpy(), model.specular_basis.double().numpy(), keypoints=keypoints,
               masks=masks, dtype=dtype)


SYNTHETIC_SCALE = 10.0
"""The synthetic head's metres -> decimetres (Deep3D's camera units)."""


def synthetic_specular(head) -> Tuple[Tensor, Tensor]:
    """The synthetic head's specular albedo model (there is no measured one): mean 0.04
    (a dielectric's reflectance) and, per texture component, ``0.3 x`` the luminance of
    the diffuse basis on every channel, so the same coefficients drive both (AlbedoMM's
    design). Returns ``(mean [V, 3], basis [n_tex, V, 3])`` float32."""
    if getattr(head, "albedo_basis", None) is None:
        raise ValueError("the synthetic head has no albedo model")
    diffuse = head.albedo_basis.detach().cpu().float()  # [K, V, 3]
    luminance = diffuse @ torch.tensor([0.2126, 0.7152, 0.0722])
    return torch.full_like(diffuse[0], 0.04), 0.3 * luminance[..., None].expand_as(diffuse).contiguous()


def synthetic_model(config: Config = Config.tiny()) -> BFM:
    """The face model of ``--data synthetic`` / ``--assets synthetic``: :meth:`BFM.from_flame`
    of :func:`facegeom.models.synthetic_head` (``n_shape`` / ``n_exp`` / ``n_albedo``
    components) in decimetres, re-centred, its diffuse albedo model, the specular model of
    :func:`synthetic_specular` and the skin vertices of
    :func:`facegeom.data.synthetic.skin_faces` (``masks['skin']``, the region of the uniform
    loss)."""
    from facegeom.data.synthetic import skin_faces
    from facegeom.models import synthetic_head

    head = synthetic_head(seed=config.head_seed, n_shape=config.n_shape, n_exp=config.n_exp, n_tex=config.n_albedo,
                          dtype=torch.float32, rigid_free=config.rigid_free,
                          mouth_open=config.mouth_open)
    base = BFM.from_flame(head)
    mean_spec, spec_basis = synthetic_specular(head)
    base = BFM(base.mean_shape, base.shape_basis[:base.n_shape], base.shape_basis[base.n_shape:], base.faces,
               base.mean_texture, base.texture_basis, mean_spec, spec_basis, keypoints=base.keypoints,
               dtype=torch.float64)
    skin = np.zeros(base.num_vertices, dtype=np.float64)
    skin[head.faces.long()[skin_faces(head)].reshape(-1).numpy()] = 1.0
    return _assemble(base, base.mean_shape * SYNTHETIC_SCALE, base.shape_basis * SYNTHETIC_SCALE, base.faces,
                     base.keypoints.numpy(), {"skin": skin}, torch.float32)


# ---------------------------------------------------------------------------------------- #
# Rendering and decoding                                                                   #
# ---------------------------------------------------------------------------------------- #

class GammaShader(nn.Module):
    """A linear-space shader followed by the display gamma: ``clamp(x, 1e-6)^(1 / gamma)``
    per pixel (eq. 2's ``^(1/2.2)``, applied to the shaded colour: PIPELINES.md §5.3). The
    clamp keeps the power's gradient finite; negative SH shading maps to black.

    Args:
        shader: the linear shader (default :class:`facegeom.render.SHShader` in Deep3D's
            SH convention, per-vertex shading: eq. 4 + eq. 5 when the inputs carry a
            specular albedo).
        gamma: 2.2.
    """

    def __init__(self, shader: Optional[nn.Module] = None, gamma: float = 2.2):
        super().__init__()
        self.shader = SHShader("deep3d") if shader is None else shader
        self.gamma = float(gamma)

    def forward(self, fragments, inputs: ShadingInputs) -> Tensor:
        linear = self.shader(fragments, inputs)
        return torch.where(fragments.covered, linear.clamp(min=1e-6) ** (1.0 / self.gamma), linear)


@dataclass
class SpecularOutput:
    """What :func:`decode` returns.

    Attributes:
        coeffs: :func:`split_coeff` of the parameters.
        vertices: ``[B, N, 3]`` posed ``f R S + t`` (model frame: y up, the camera at
            ``(0, 0, camera_d)`` looking down -z).
        diffuse_albedo, specular_albedo: ``[B, N, 3]`` ``t_d``, ``t_s`` (linear, one ``c_t``).
        normals: ``[B, N, 3]`` unit vertex normals of ``vertices``.
        sh: ``[B, 9, 3]`` SH coefficients with ``init_lit``; light ``[B, 3]``; shininess ``[B]``.
        lit_diffuse: ``[B, N, 3]`` ``c_d`` (eq. 4, linear); specular: ``[B, N, 3]`` ``c_s`` (eq. 5).
        color: ``[B, N, 3]`` ``(c_d + c_s)^(1/gamma)`` (vertex colours for export).
        landmarks: ``[B, 68, 2]`` projected landmarks, pixels, y down.
        render_diffuse, render_full: ``[B, 3, H, W]`` sRGB renders of ``c_d`` and ``c_d + c_s``
            (black background).
        alpha: ``[B, 1, H, W]`` rendered face region (not antialiased).
        mouth: ``[B, 1, H, W]`` antialiased coverage of the inner-mouth proxy (``A^p``).
    """

    coeffs: Dict[str, Tensor]
    vertices: Tensor
    diffuse_albedo: Tensor
    specular_albedo: Tensor
    normals: Tensor
    sh: Tensor
    light: Tensor
    shininess: Tensor
    lit_diffuse: Tensor
    specular: Tensor
    color: Tensor
    landmarks: Tensor
    render_diffuse: Optional[Tensor] = None
    render_full: Optional[Tensor] = None
    alpha: Optional[Tensor] = None
    mouth: Optional[Tensor] = None


class SpecularRenderer(nn.Module):
    """The two renders and the mouth area: one rasterisation of the face
    (:meth:`MeshRenderer.rasterize`), two shader passes (:class:`GammaShader`: diffuse
    inputs, then diffuse + specular inputs) composited without antialiasing (as Deep3D's
    photo loss), and the inner-mouth proxy faces through a second, antialiased
    :class:`MeshRenderer` with :class:`facegeom.render.UnlitShader` (silhouette gradients)."""

    def __init__(self, model: BFM, config: Config):
        super().__init__()
        size = config.image_size
        self.face = MeshRenderer(model.faces, size, antialias=False, shader=GammaShader(gamma=config.gamma))
        self.mouth = MeshRenderer(inner_mouth_faces(model.keypoints), size, antialias=True, shader=UnlitShader())
        self.config = config

    def camera(self, batch: int, like: Tensor) -> Pinhole:
        c = self.config
        return Pinhole.deep3d(batch, like.dtype, like.device, focal=c.focal, center=c.center,
                              camera_distance=c.camera_d, image_size=c.image_size, near=c.z_near, far=c.z_far)

    def forward(self, out: SpecularOutput, camera: Pinhole):
        vertices = out.vertices
        pos = camera.to_clip(vertices, self.face.image_size)
        fragments = self.face.rasterize(vertices, pos)
        eye = vertices.new_tensor([0.0, 0.0, self.config.camera_d]).expand(vertices.shape[0], 3)
        diffuse = ShadingInputs(out.diffuse_albedo, out.sh)
        full = ShadingInputs(out.diffuse_albedo, out.sh, out.specular_albedo, out.light, eye, out.shininess)
        r_diffuse = self.face.composite(fragments, self.face.shader(fragments, diffuse), 0.0)
        r_full = self.face.composite(fragments, self.face.shader(fragments, full), 0.0)
        ones = torch.ones_like(vertices)
        mouth = self.mouth(vertices, ones, pos=pos, background=0.0)
        return (r_diffuse.image.permute(0, 3, 1, 2), r_full.image.permute(0, 3, 1, 2),
                r_full.alpha.permute(0, 3, 1, 2), mouth.alpha.permute(0, 3, 1, 2))


def decode(params: Tensor, model: BFM, config: Config = Config(), renderer: Optional[SpecularRenderer] = None,
           render: bool = True) -> SpecularOutput:
    """Network output ``[B, P]`` -> :class:`SpecularOutput` (paper §3, eq. 1-5):

    1. ``S = S_mean + M_i c_i + M_e c_e``; ``t_d = T_d + M_d c_t``, ``t_s = T_s + M_s c_t``
       (one ``c_t``);
    2. eq. 3: ``v = f R S + t`` with ``R = Rz Ry Rx`` of the Euler angles
       (:func:`facegeom.transforms.euler_to_matrix`, Deep3D's convention) and
       ``f = exp(scale)``; projected by Deep3D's camera (landmarks in pixels, y down);
    3. eq. 4: ``c_d = t_d * sum_b lambda_b Y_b(n)`` (Deep3D SH, ``sh.reshape(B, 3, 9)`` +
       ``init_lit``), eq. 5: ``c_s = t_s * max(n . h, 0)^phi`` with ``h`` the half vector of
       the directions to the camera and to the light ``light_init + p_l``; colour
       ``(c_d + c_s)^(1/gamma)``;
    4. with ``render``: :class:`SpecularRenderer` (built from ``model`` and ``config`` if not given).
    """
    coeffs = split_coeff(params, config)
    _checks.floating("params", params, model.mean_shape, "the model's buffers")
    if model.keypoints is None or model.texture_basis is None or model.specular_basis is None:
        raise ValueError("model needs keypoints, a diffuse and a specular albedo model (load_face_model)")
    albedo = coeffs["albedo"]
    decoded = model(shape=coeffs["shape"], expression=coeffs["expression"], texture=albedo, specular=albedo)
    rotation = euler_to_matrix(coeffs["angle"], convention="deep3d")
    scale = torch.exp(coeffs["scale"])[:, :, None]
    vertices = scale * decoded.vertices @ rotation.transpose(1, 2) + coeffs["translation"][:, None]
    batch = params.shape[0]
    camera = Pinhole.deep3d(batch, params.dtype, params.device, focal=config.focal, center=config.center,
                            camera_distance=config.camera_d, image_size=config.image_size, near=config.z_near,
                            far=config.z_far)
    landmarks = camera.project(vertices[:, model.keypoints])
    normals = ops.vertex_normals(vertices, model.faces)
    sh = coeffs["sh"].reshape(batch, 3, 9)
    sh = torch.cat([sh[..., :1] + config.init_lit, sh[..., 1:]], -1).transpose(1, 2).contiguous()  # [B, 9, 3]
    light = coeffs["light"] + vertices.new_tensor(config.light_init)
    shininess = config.shininess_init * torch.exp(coeffs["shininess"][:, 0])
    eye = vertices.new_tensor([0.0, 0.0, config.camera_d])
    lit = ops.sh_shading(normals, decoded.albedo, sh, convention="deep3d")
    spec = ops.blinn_phong(normals, vertices, light, eye, decoded.specular, shininess)
    color = (lit + spec).clamp(min=1e-6) ** (1.0 / config.gamma)
    out = SpecularOutput(coeffs, vertices, decoded.albedo, decoded.specular, normals, sh, light, shininess, lit, spec,
                         color, landmarks)
    if render:
        renderer = SpecularRenderer(model, config).to(params.device) if renderer is None else renderer
        out.render_diffuse, out.render_full, out.alpha, out.mouth = renderer(out, camera)
    return out


# ---------------------------------------------------------------------------------------- #
# Losses                                                                                   #
# ---------------------------------------------------------------------------------------- #

def recognition_features(recog_net: Callable[[Tensor], Tensor], image: Tensor, size: int = 112) -> Tensor:
    """``F(I)`` of eq. 7: ``recog_net(2 x - 1)`` on the whole image resized to ``size``
    (bilinear) [INFERRED: FaceNet's own alignment is not described]."""
    x = torch.nn.functional.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    return recog_net(2 * x - 1)


def losses(output: SpecularOutput, batch: Dict[str, Tensor], config: Config = Config(),
           recog_net: Optional[Callable[[Tensor], Tensor]] = None, step: Optional[int] = None,
           skin_mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Eq. 6: the weighted terms and ``total``.

    Args:
        output: :func:`decode` output (rendered).
        batch: ``'image'`` ``[B, 3, H, W]`` sRGB [0, 1]; ``'landmarks'`` ``[B, 68, 2]`` pixels,
            y down; ``'skin'`` ``[B, 1, H, W]`` skin probability (default 1); ``'face'``
            ``[B, 1, H, W]`` face segmentation ``I_face`` (default 1); ``'mouth'``
            ``[B, 1, H, W]`` labelled inner-mouth mask (needed once the mouth term is on).
        config: weights, ``eta``, ``mouth_start``.
        recog_net: the frozen recognition net (``F``); without it ``id`` is omitted.
        step: the training step (the mouth term is added when ``step >= mouth_start``;
            None: always when ``'mouth'`` is in the batch).
        skin_mask: ``[N]`` vertex weights of the uniform loss's region (default all vertices).

    The uniform term's lit diffuse colours use detached normals: the paper applies it to "the
    diffuse albedo and SH lighting parameters" (§4.1.6), not to the geometry [INFERRED].

    Returns:
        ``{'id'?, 'photo', 'lmk', 'mouth'?, 'reg', 'uniform', 'total'}`` scalar tensors.
    """
    for key in ("image", "landmarks"):
        if key not in batch:
            raise ValueError(f"batch must hold {key!r} (keys: {sorted(batch)})")
    if output.render_full is None:
        raise ValueError("output has no render: decode(..., render=True)")
    image = batch["image"]
    ones = torch.ones_like(image[:, :1])
    face = batch.get("face", ones) * output.alpha.detach()  # M = I_face ∩ I_project
    terms = {}
    if recog_net is not None and config.w_id > 0:
        f_in = recognition_features(recog_net, image, config.recog_input_size)
        f_r = recognition_features(recog_net, output.render_full, config.recog_input_size)
        terms["id"] = config.w_id * L.identity_loss(f_in, f_r)
    terms["photo"] = config.w_photo * L.photo_loss(image, output.render_diffuse, output.render_full, face,
                                                   batch.get("skin", ones), config.eta)
    terms["lmk"] = config.w_lmk * L.landmark_loss(output.landmarks, batch["landmarks"].to(output.landmarks))
    mouth_on = step is None or step >= config.mouth_start
    if mouth_on and "mouth" in batch:
        terms["mouth"] = config.w_mouth * L.mouth_loss(batch["mouth"].to(output.mouth), output.mouth)
    elif mouth_on and step is not None:
        raise ValueError(f"step {step} >= mouth_start {config.mouth_start}: the batch needs 'mouth'")
    c = output.coeffs
    terms["reg"] = config.w_reg * L.reg_loss(c["shape"], c["albedo"], c["expression"])
    # eq. 13 acts "on the 3D face diffuse albedo and SH lighting parameters" (§4.1.6): the lit
    # colours are recomputed with the normals detached, so the term does not reshape the face
    lit = ops.sh_shading(output.normals.detach(), output.diffuse_albedo, output.sh, convention="deep3d")
    terms["uniform"] = config.w_uniform * L.uniform_loss(lit, output.sh, skin_mask)
    terms["total"] = sum(terms.values())
    return terms


# ---------------------------------------------------------------------------------------- #
# Synthetic data (facegeom.data.synthetic)                                                 #
# ---------------------------------------------------------------------------------------- #

def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[H, W]`` float32: 1 at the pixels whose centre (integer coordinates, y down) lies
    inside the polygon ``points [K, 2]``; the labelled inner-mouth area of a sample."""
    from matplotlib.path import Path

    ys, xs = np.mgrid[0:height, 0:width]
    inside = Path(np.asarray(points, dtype=np.float64)).contains_points(np.stack([xs.ravel(), ys.ravel()], 1))
    return inside.reshape(height, width).astype(np.float32)


_HOOK_RENDERERS: Dict[tuple, MeshRenderer] = {}
_HOOK_KEYPOINTS: Dict[int, Tensor] = {}


def _keypoint_vertices(head) -> Tensor:
    """The 68 vertex indices :meth:`BFM.from_flame` gives ``head`` (those of
    :func:`synthetic_model`), cached per head."""
    if id(head) not in _HOOK_KEYPOINTS:
        _HOOK_KEYPOINTS[id(head)] = BFM.from_flame(head).keypoints.long().cpu()
    return _HOOK_KEYPOINTS[id(head)]


@dataclass(frozen=True)
class SyntheticSpecularHook:
    """A :class:`facegeom.data.synthetic.SyntheticFaces` hook that makes a sample of this
    method's image formation (the synthetic renderer has no specular lobe and no gamma):

    - ``"image"``: the head re-rendered with the same SH light plus a Blinn-Phong lobe of
      :func:`synthetic_specular` albedo (the sample's texture coefficients: one ``c_t``), a
      point light at the camera plus ``N(0, light_std^2)`` x the camera distance in each
      axis and a shininess ``U(shininess)``, in linear space, then ``x^(1/gamma)``;
    - ``"skin"``: the GMM skin probability of that image (:func:`facegeom.data.skin.skin_probability`);
    - ``"face"``: the face segmentation ``I_face`` (the dataset's ``mask="skin"`` region);
    - ``"mouth"``: the labelled inner-mouth mask, the polygon of the 8 projected inner-lip
      landmarks (:func:`polygon_mask`);
    - ``params["light_position"]`` (camera frame, metres) and ``params["shininess"]``;
    - with ``model_landmarks`` (default): ``"landmarks"`` (and ``"keypoints5"``) replaced by
      the projections of the face model's 68 keypoint *vertices* (:func:`synthetic_model`'s
      ``keypoints``, the landmark definition :func:`decode` uses, as BFM 2017's
      ``keypoints.npy``), instead of the synthetic head's barycentric landmarks. The two
      definitions differ by 1.7 mm per landmark on average (4.2 mm at most) on the neutral
      head, a systematic offset as large as one standard deviation of a shape or expression
      component moves the landmarks; a regressor then learns constant coefficient offsets
      that absorb it (measured in ``docs/specular.md``).
    """

    gamma: float = 2.2
    light_std: float = 0.3
    shininess: Tuple[float, float] = (10.0, 40.0)
    model_landmarks: bool = True

    def __call__(self, sample, context) -> None:
        from facegeom.data.skin import skin_probability

        cfg, head, out, camera = context.config, context.head, context.output, context.camera
        key = (id(head), tuple(cfg.image_size), cfg.antialias)
        if key not in _HOOK_RENDERERS:
            _HOOK_RENDERERS[key] = MeshRenderer(head.faces, cfg.image_size, antialias=cfg.antialias)
        renderer = _HOOK_RENDERERS[key]
        p = sample["params"]
        mean_spec, basis = synthetic_specular(head)
        spec = mean_spec + torch.einsum("k,kvc->vc", p["texture"], basis)
        eye = -(camera.R[0].T @ camera.t[0])  # camera centre, model frame
        distance = float(camera.t[0].norm())
        offset = torch.as_tensor(context.rng.normal(0.0, self.light_std, 3), dtype=eye.dtype) * distance
        light = eye + offset
        shininess = float(context.rng.uniform(*self.shininess))
        rendering = renderer(out.vertices, out.albedo.clamp(0.0, 1.0), p["light"][None], camera=camera,
                             specular_albedo=spec[None], light_position=light, camera_position=eye,
                             shininess=shininess, background=p["background"].clamp(min=0) ** self.gamma)
        image = rendering.image[0].clamp(1e-6, 1.0) ** (1.0 / self.gamma)
        sample["image"] = image.permute(2, 0, 1).contiguous()
        sample["skin"] = skin_probability((image * 255).round()).float()[None]
        height, width = cfg.image_size
        if self.model_landmarks:
            from facegeom.data.synthetic import extract_5p

            keypoints = _keypoint_vertices(head)
            sample["landmarks"] = camera.project(out.vertices[:, keypoints])[0].to(sample["landmarks"].dtype)
            sample["keypoints5"] = extract_5p(sample["landmarks"])
        if "mask" in sample:
            sample["face"] = sample.pop("mask")
        sample["mouth"] = torch.from_numpy(polygon_mask(sample["landmarks"][list(INNER_LIP)].numpy(), height,
                                                        width))[None]
        p["light_position"] = (camera.R[0] @ light + camera.t[0]).float()
        p["shininess"] = torch.tensor(shininess, dtype=torch.float32)


_FRAMING_CACHE: Dict[tuple, Tuple[float, float, float]] = {}


def matched_framing(config: Config, iterations: int = 4) -> Tuple[float, float, float]:
    """``(face_fraction, shift_x, shift_y)`` of the synthetic data (see :class:`Config`) that put
    a zero-pose sample's 68 landmarks (mean face, no pose noise) where :func:`decode` of zero
    coefficients projects them: the same centre and height in pixels (fixed-point iterations
    from SyntheticConfig's 0.55 / 0 / 0; the residual is measured by
    ``tests/pipelines/test_specular_recovery.py::test_matched_framing_puts_the_mean_face_where_decode_does``).
    The decoder's camera (Deep3D's, principal point at ``center``) is the authors'; the data's
    (principal point at ``(W - 1) / 2``) is facegeom's: only the data moves. Cached per
    face-model / camera setting."""
    key = (config.head_seed, config.rigid_free, config.mouth_open, config.n_shape, config.n_exp, config.n_albedo,
           config.focal, config.center, config.camera_d, config.gamma)
    if key not in _FRAMING_CACHE:
        neutral = replace(config, pose_scale=0.0, shape_components=0, expression_components=0, albedo_components=0,
                          face_fraction=0.55, shift_x=0.0, shift_y=0.0)
        with torch.no_grad():
            target = decode(torch.zeros(1, sum(config.sizes.values())), synthetic_model(config), config,
                            render=False).landmarks[0].double()
        height = float(target[:, 1].max() - target[:, 1].min())
        fraction, shift = 0.55, np.zeros(2)
        side = config.image_size
        for _ in range(iterations):
            data = synthetic_dataset(replace(neutral, face_fraction=fraction, shift_x=float(shift[0]),
                                             shift_y=float(shift[1])), 1, 0)[0]["landmarks"].double()
            fraction *= height / float(data[:, 1].max() - data[:, 1].min())
            shift = shift + (target.mean(0) - data.mean(0)).numpy() / side
        _FRAMING_CACHE[key] = (float(fraction), float(shift[0]), float(shift[1]))
    return _FRAMING_CACHE[key]


def synthetic_dataset(config: Config, count: int, seed: int):
    """``SyntheticFaces`` of the synthetic head with ``n_shape`` / ``n_exp`` / ``n_albedo``
    components (no jaw rotation: the linear face model cannot open the jaw; only the leading
    ``shape_components`` / ``expression_components`` / ``albedo_components`` non-zero when
    set, with ``shape_std`` / ``expression_std`` / ``albedo_std``; the pose spreads times ``pose_scale``; the
    framing of ``face_fraction`` / ``shift_x`` / ``shift_y``, None: :func:`matched_framing`),
    the skin region as the face segmentation and :class:`SyntheticSpecularHook`."""
    from facegeom.data.synthetic import SyntheticConfig, SyntheticFaces

    framing = (config.face_fraction, config.shift_x, config.shift_y)
    if any(x is None for x in framing):
        matched = matched_framing(config)
        framing = tuple(m if x is None else x for x, m in zip(framing, matched))
    spread = SyntheticConfig()
    pose = dict(rotation_std=tuple(config.pose_scale * x for x in spread.rotation_std),
                shift_std=config.pose_scale * spread.shift_std, scale_std=config.pose_scale * spread.scale_std)
    return SyntheticFaces(SyntheticConfig(num_samples=count, image_size=config.image_size, seed=seed,
                                          head_seed=config.head_seed, rigid_free=config.rigid_free,
                                          mouth_open=config.mouth_open,
                                          n_shape=config.n_shape, n_exp=config.n_exp,
                                          n_tex=config.n_albedo, images_per_identity=config.images_per_identity,
                                          max_jaw=0.0, mask="skin", shape_std=config.shape_std,
                                          expression_std=config.expression_std, texture_std=config.albedo_std,
                                          shape_components=config.shape_components,
                                          expression_components=config.expression_components,
                                          texture_components=config.albedo_components, **pose,
                                          face_fraction=framing[0], shift_offset=framing[1:],
                                          hooks=(SyntheticSpecularHook(gamma=config.gamma),)))


# ---------------------------------------------------------------------------------------- #
# Training with facegeom.train (API.md §6)                                                  #
# ---------------------------------------------------------------------------------------- #

class SpecularModel(SpecularNet):
    """The trained model: a :class:`SpecularNet` (``state_dict()`` = the regressor plus a
    ``step`` counter buffer, which switches the mouth term on at ``mouth_start`` and resumes
    with a checkpoint) carrying, outside its state dict, the face model, the renderer and the
    frozen recognition net (they follow the network's device on use)."""

    def __init__(self, config: Config, face_model: Optional[BFM] = None, recog_net: Optional[nn.Module] = None):
        super().__init__(config)
        self.config = config
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self._aux = {"model": face_model, "renderer": None, "recog": recog_net}

    def aux(self, device: torch.device):
        """``(face model, renderer, recognition net or None)`` on ``device``."""
        if self._aux["model"] is None:
            c = self.config
            self._aux["model"] = (load_face_model(c.bfm_path, c.albedo_path, c.keypoints_path, c.n_shape, c.n_exp,
                                                  c.n_albedo) if c.bfm_path else synthetic_model(c))
        if self._aux["renderer"] is None:
            self._aux["renderer"] = SpecularRenderer(self._aux["model"], self.config)
        for key, module in self._aux.items():
            if module is not None:
                self._aux[key] = module.to(device)
        return self._aux["model"], self._aux["renderer"], self._aux["recog"]


def _recognition_net(config: Config) -> Optional[nn.Module]:
    """The frozen ``F`` of eq. 7 (paper: FaceNet; facegeom's :func:`facegeom.nets.iresnet50`,
    ``recog_weights`` its state dict, else random: tests only), ``None`` when ``w_id == 0``
    (Deep3D's loader, :mod:`facegeom.pipelines.deep3d`)."""
    from facegeom.pipelines import deep3d

    return deep3d._recognition_net(deep3d.Config(w_feat=config.w_id, recog_weights=config.recog_weights))


def _angle_deg(rotation: Tensor) -> Tensor:
    """Geodesic angle (degrees) of rotation matrices ``[B, 3, 3]``."""
    cos = ((rotation.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def _vertex_error(model: BFM, alpha: Tensor, alpha_gt: Tensor, aligned: bool = False) -> Tensor:
    """Mean per-vertex distance between the neutral identity shapes, per image ``[B]``
    (optionally after a similarity alignment): Deep3D's validation metric, shared."""
    from facegeom.pipelines import deep3d

    return deep3d._vertex_error(model, alpha, alpha_gt, aligned)


def _expression_error(model: BFM, expression: Tensor, expression_gt: Tensor) -> Tensor:
    """``[B]`` mean per-vertex distance between the expression displacements ``M_e c_e`` of
    ``expression`` and ``expression_gt`` (model units): the expression's analogue of
    :func:`_vertex_error`, in which each coefficient counts by how far it moves the face
    (the components' scales decay; ``exp_err``, the coefficient RMS, counts them alike)."""
    zero = torch.zeros(expression.shape[0], model.n_shape, dtype=expression.dtype, device=expression.device)
    moved = model(shape=zero, expression=expression).vertices - model(shape=zero, expression=expression_gt).vertices
    return moved.norm(dim=-1).mean(-1)


class SpecularMethod:
    """``facegeom train --method specular`` (paper §4.2; PIPELINES.md §5.7).

    - model: :class:`SpecularModel` (ResNet-50; ResNet-18 in :meth:`Config.tiny`);
    - optimiser: Adam, ``lr`` 5e-5 (the loop's ``--lr-schedule`` applies; the paper names none);
    - data ``"synthetic"`` only (:func:`synthetic_dataset`; the authors' 250k-image collection
      is not public);
    - ``training_step``: :func:`decode` + :func:`losses` at the model's step counter;
    - ``validation_step``: the losses (mouth term always on) and the recovery of the held-out
      synthetic parameters against the mean: ``shape_mm`` / ``shape_mm_mean`` (mean
      per-vertex error of the neutral identity shape, mm; ``shape_mm_aligned`` /
      ``shape_mm_mean_aligned``: the same after a similarity alignment), ``rot_deg`` / ``rot_deg_mean`` (head
      rotation error, degrees, against the frontal pose), ``exp_mm`` / ``exp_mm_mean`` (mean
      per-vertex distance between the predicted and true expression displacements, mm),
      ``exp_err`` / ``exp_err_mean`` and
      ``albedo_err`` / ``albedo_err_mean`` (RMS coefficient error of the prediction / of zero),
      ``albedo_gain_err`` / ``albedo_gain_err_mean`` (:func:`albedo_gain_error`: the per-vertex
      diffuse albedo's RMS error after the least-squares gain per image and colour channel,
      which a photometric loss cannot see: it trades with the light's intensity and colour).
    """

    name = "specular"
    Config = Config
    val_metric, val_mode = "loss", "min"
    manual_optimization = False

    def build_model(self, config: Config) -> SpecularModel:
        return SpecularModel(config, None, _recognition_net(config))

    def optimizers(self, model, config: Config):
        return {"adam": torch.optim.Adam(model.parameters(), lr=config.lr)}

    def dataset(self, config: Config, data, split, seed):
        if data != "synthetic":
            raise ValueError(f"--data {data!r}: the specular method trains on 'synthetic' only (the authors' "
                             f"data set is not public)")
        if split == "train":
            return synthetic_dataset(config, config.num_samples, seed)
        return synthetic_dataset(config, config.val_samples, seed + 1_000_003)

    @staticmethod
    def _forward(model, batch, step: Optional[int]):
        net = model.module if hasattr(model, "module") else model
        params = model(batch["image"])
        face_model, renderer, recog = net.aux(params.device)
        output = decode(params, face_model, net.config, renderer)
        skin = face_model.masks.get("skin")
        return output, losses(output, batch, net.config, recog, step, skin), face_model

    def training_step(self, model, batch, optimizers):
        net = model.module if hasattr(model, "module") else model
        terms = self._forward(model, batch, int(net.step))[1]
        net.step += 1
        return terms

    def validation_step(self, model, batch):
        output, terms, face_model = self._forward(model, batch, None)
        terms = {"loss": terms.pop("total"), **terms}
        truth = batch["params"]
        c = output.coeffs
        mm = 1000.0 / SYNTHETIC_SCALE
        alpha_gt = truth["shape"].to(c["shape"])
        terms["shape_mm"] = mm * _vertex_error(face_model, c["shape"], alpha_gt).mean()
        zero = torch.zeros_like(alpha_gt)
        terms["shape_mm_mean"] = mm * _vertex_error(face_model, zero, alpha_gt).mean()
        terms["shape_mm_aligned"] = mm * _vertex_error(face_model, c["shape"], alpha_gt, aligned=True).mean()
        terms["shape_mm_mean_aligned"] = mm * _vertex_error(face_model, zero, alpha_gt, aligned=True).mean()
        rotation = euler_to_matrix(c["angle"], convention="deep3d")
        true_rotation = axis_angle_to_matrix(truth["rotation"].to(c["angle"]))
        terms["rot_deg"] = _angle_deg(rotation.transpose(1, 2) @ true_rotation).mean()
        terms["rot_deg_mean"] = _angle_deg(true_rotation).mean()
        exp_gt = truth["expression"].to(c["expression"])
        terms["exp_mm"] = mm * _expression_error(face_model, c["expression"], exp_gt).mean()
        terms["exp_mm_mean"] = mm * _expression_error(face_model, torch.zeros_like(exp_gt), exp_gt).mean()
        for key, name in (("expression", "exp_err"), ("texture", "albedo_err")):
            gt = truth[key].to(c["shape"])
            pred = c["expression" if key == "expression" else "albedo"]
            terms[name] = ((pred - gt) ** 2).mean().sqrt()
            terms[name + "_mean"] = (gt ** 2).mean().sqrt()
        gt = truth["texture"].to(c["albedo"])
        terms["albedo_gain_err"] = albedo_gain_error(face_model, c["albedo"], gt).mean()
        terms["albedo_gain_err_mean"] = albedo_gain_error(face_model, torch.zeros_like(gt), gt).mean()
        return terms


def albedo_gain_error(model: BFM, albedo: Tensor, albedo_gt: Tensor) -> Tensor:
    """``[B]`` RMS error of the per-vertex diffuse albedo of coefficients ``albedo`` ``[B, K]``
    against ``albedo_gt``'s, after scaling the prediction by the least-squares gain per image and
    colour channel (``g_c = <a_c, t_c> / <a_c, a_c>``). A photometric loss cannot separate the
    albedo from the light's intensity and colour (``c_d = t_d * sum_b lambda_b Y_b``: ``t_d * g`` with
    ``lambda / g`` gives the same image), so the albedo is recovered at best up to that gain; the
    scale-invariant error of intrinsic-image evaluation (Grosse et al., ICCV 2009) per channel.
    facegeom's metric for the smoke trainings, not the paper's."""
    pred = model(texture=albedo).albedo
    true = model(texture=albedo_gt).albedo
    gain = (pred * true).sum(1) / (pred * pred).sum(1).clamp_min(1e-12)  # [B, 3]
    return ((gain[:, None] * pred - true) ** 2).mean((1, 2)).sqrt()


try:  # register with the training loop
    from facegeom import train as _train

    _train.register("specular", SpecularMethod)
except ImportError:  # pragma: no cover - same package
    pass


# ---------------------------------------------------------------------------------------- #
# Checkpoints and facegeom reconstruct (API.md §7)                                         #
# ---------------------------------------------------------------------------------------- #

def load_checkpoint(path, config: Optional[Config] = None, map_location="cpu") -> Tuple[SpecularNet, Config]:
    """``(net, config)`` from ``facegeom train --method specular``'s ``final.pt`` (the
    :class:`SpecularModel` state dict) or a ``facegeom.train`` checkpoint (its ``'model'``).
    The backbone depth and the ``n_shape`` / ``n_exp`` / ``n_albedo`` sizes are read from the
    weights and replace those of ``config`` (default :class:`Config`). No released weights
    exist (PIPELINES.md §5).

    Raises:
        FileNotFoundError: no such file. ValueError: naming the file, when it is not such a checkpoint.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such file (a specular checkpoint: facegeom train's final.pt)")
    try:
        data = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises several types for a corrupt / foreign file
        raise ValueError(f"{source}: not a readable torch checkpoint: {error}") from None
    if isinstance(data, dict) and data.get("format") == "facegeom.train/1" and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or "heads.shape.weight" not in data:
        raise ValueError(f"{source}: not a specular checkpoint (no 'heads.shape.weight'; keys: "
                         f"{sorted(map(str, data))[:8] if isinstance(data, dict) else type(data).__name__})")
    sizes = {name: int(data[f"heads.{name}.weight"].shape[0]) for name in ("shape", "expression", "albedo")
             if f"heads.{name}.weight" in data}
    config = (config or Config()).replace(
        net="resnet50" if "backbone.layer1.0.conv3.weight" in data else "resnet18",
        n_shape=sizes["shape"], n_exp=sizes.get("expression", 1), n_albedo=sizes.get("albedo", 1))
    net = SpecularNet(config)
    state = {k: v for k, v in data.items() if k != "step"}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: does not match SpecularNet({config.net}, {config.sizes}): {error}") from None
    return net.eval(), config


def reconstructor(checkpoint, assets, options=None):
    """``facegeom reconstruct --method specular`` (:mod:`facegeom.reconstruct`).

    Args:
        checkpoint: ``final.pt`` of ``facegeom train --method specular`` (:func:`load_checkpoint`).
        assets: ``"synthetic"`` (:func:`synthetic_model`, for models trained with ``--data
            synthetic``) or a folder with ``model2017-1_face12_nomouth.h5``,
            ``albedoModel2020_face12_albedoPart.h5`` and ``keypoints.npy`` (:func:`load_face_model`).
        options: ``tiny`` (:meth:`Config.tiny`'s camera and crop size), ``device``.

    The crop: Deep3D's 5-point alignment (:func:`facegeom.pipelines.deep3d.preprocess`;
    the paper's MTCNN alignment to 224 is not described further, PIPELINES.md §5.1) [INFERRED].
    Writes the mesh ``f R S + t`` (model frame) with vertex colours ``(c_d + c_s)^(1/2.2)``;
    params: every coefficient group, ``light_position``, ``shininess``, ``lm68`` ``[68, 2]``
    (crop pixels, y down), ``lm68_image`` (input image) and ``trans_params``; the overlay:
    the full render over the input image.
    """
    from facegeom import reconstruct as R
    from facegeom.pipelines import deep3d

    options = dict(options or {})
    if checkpoint is None:
        raise ValueError("--checkpoint is required for specular (facegeom train --method specular's final.pt)")
    if assets is None:
        raise ValueError("--assets is required for specular: 'synthetic' or a folder with the BFM 2017 face12 h5, "
                         "the AlbedoMM face12 h5 and keypoints.npy")
    net, config = load_checkpoint(checkpoint, Config.tiny() if options.get("tiny") else Config())
    if assets == "synthetic":
        face_model = synthetic_model(config)
    else:
        folder = os.fspath(assets)
        names = ("model2017-1_face12_nomouth.h5", "albedoModel2020_face12_albedoPart.h5", "keypoints.npy")
        missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise FileNotFoundError(f"--assets {folder}: missing {', '.join(missing)}")
        face_model = load_face_model(*(os.path.join(folder, n) for n in names), config.n_shape, config.n_exp,
                                     config.n_albedo)
    device = options.get("device", "auto")
    device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    net, face_model = net.to(device), face_model.to(device)
    renderer = SpecularRenderer(face_model, config).to(device)
    d3d = deep3d.Config.tiny() if options.get("tiny") else deep3d.Config()
    faces = face_model.faces.cpu().numpy()

    @torch.no_grad()
    def reconstruct(image, landmarks) -> "R.Reconstruction":
        pixels = deep3d._as_uint8_rgb(image)
        crop, trans_params, _ = deep3d.preprocess(pixels, landmarks, d3d)
        crop = crop[None].to(device)
        out = decode(net(crop), face_model, config, renderer)
        size = config.image_size
        lm = out.landmarks[0].double().cpu().numpy()
        lm_up = np.stack([lm[:, 0], size - 1 - lm[:, 1]], 1)  # deep3d's y-up crop frame
        params = {k: v.cpu().numpy() for k, v in out.coeffs.items()}
        params.update(light_position=out.light.cpu().numpy(), shininess=out.shininess.cpu().numpy(), lm68=lm,
                      lm68_image=deep3d.landmarks_to_image(lm_up, trans_params, d3d), trans_params=trans_params)
        overlay = deep3d.overlay_on_image(out.render_full[0], out.alpha[0, 0], crop[0], pixels, trans_params)
        return R.Reconstruction(out.vertices[0].cpu().numpy(), faces, params, overlay,
                                colors=out.color[0].clamp(0, 1).cpu().numpy())

    return reconstruct


try:
    from facegeom import reconstruct as _reconstruct

    _reconstruct.register("specular", reconstructor)
except ImportError:  # pragma: no cover - same package
    pass
