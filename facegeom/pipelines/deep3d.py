"""Deep3DFaceRecon (Deng et al. 2019), reproducing the PyTorch release
sicxu/Deep3DFaceRecon_pytorch at 9167c7136aebef0c54d3ac74f4b0396222a491c1 (``D3D:``
below; PIPELINES.md §2 gives every convention).

- :class:`Config`: the authors' defaults (``D3D:models/facerecon_model.py:24-71``,
  ``options/train_options.py``), with :meth:`Config.tiny` for tests.
- :class:`ReconNet`: ``ReconNetWrapper`` (``D3D:models/networks.py:69-104``): a
  torchvision-layout ResNet-50 from :mod:`facegeom.nets` and 7 zero-initialised 1x1
  conv heads ``final_layers.{0..6}`` (80 id, 64 exp, 80 tex, 3 angles, 27 gamma, 2
  trans-xy, 1 trans-z) -> ``[B, 257]``. Input RGB in [0, 1], no ImageNet normalisation.
- :func:`load_checkpoint`: ``epoch_20.pth['net_recon']`` loaded as is (§2.8).
- :func:`split_coeff`, :func:`decode` (``ParametricFaceModel.compute_for_render``,
  ``D3D:models/bfm.py:252-299``) + the authors' renderer (:mod:`facegeom.render.deep3d`),
  :func:`losses` (``D3D:models/facerecon_model.py:145-175``, :mod:`facegeom.losses.deep3d`).

[CODE≠PAPER] choices (PIPELINES.md §2.11), all following the code: 257 outputs (RGB
gamma + gamma loss, paper 239); photo weight 1.92 (paper 1.9); texture regulariser
1.7e-2 (paper 1.7e-3); skin attention ``A = P`` (paper thresholds at 0.5); ArcFace r50
on a 112 crop (paper: FaceNet); batch 32 / 20 epochs / StepLR (paper: batch 5, 500k
iterations); the PyTorch face-crop mask indexing (``crop_mask="pytorch"``, see :class:`Config`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import nn

from facegeom import ops
from facegeom.losses import deep3d as L
from facegeom.models.bfm import BFM
from facegeom.nets import resnet18, resnet50
from facegeom import _checks
from facegeom.render.deep3d import Deep3DRenderer
from facegeom.transforms import euler_to_matrix

Tensor = torch.Tensor

__all__ = ["COEFF_SIZES", "ConfidenceNet", "Config", "Deep3DMethod", "Deep3DOutput", "ReconNet", "SyntheticDeep3DHook",
           "aggregate_identity", "decode", "landmarks_to_image", "load_checkpoint", "losses", "multi_image_config",
           "multi_image_losses", "preprocess", "split_coeff", "synthetic_bfm"]

COEFF_SIZES = {"id": 80, "exp": 64, "tex": 80, "angle": 3, "gamma": 27, "trans": 3}
"""Layout of the 257 outputs, in order (``D3D:models/bfm.py:252-273``; PIPELINES.md §2.3)."""
HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)
"""``final_layers.{0..6}`` output channels (``D3D:models/networks.py:84-92``)."""
CROP_MASKS = ("pytorch", "tf", "none")


@dataclass(frozen=True)
class Config:
    """Deep3DFaceRecon's settings; defaults are the PyTorch release's
    (``D3D:models/facerecon_model.py:24-71``, ``options/base_options.py``,
    ``options/train_options.py``); paper values where they differ are in the comments."""

    # network
    net_recon: str = "resnet50"     # facerecon_model.py:24 ('resnet18' also supported)
    # camera / renderer (facerecon_model.py:31-35,66)
    focal: float = 1015.0
    center: float = 112.0           # image size = 2 * center = 224
    camera_d: float = 10.0
    z_near: float = 5.0
    z_far: float = 15.0
    init_lit: float = 0.8           # bfm.py:31-33, added to gamma[:, c, 0]
    # losses (facerecon_model.py:52-60; paper eq. 1-7 weights in brackets)
    w_feat: float = 0.2             # [0.2]
    w_color: float = 1.92           # [1.9]
    w_reg: float = 3.0e-4           # [3e-4]
    w_id: float = 1.0               # [1.0]
    w_exp: float = 0.8              # [0.8]
    w_tex: float = 1.7e-2           # [1.7e-3]
    w_gamma: float = 10.0           # [no gamma term]
    w_lm: float = 1.6e-3            # [1.6e-3]
    w_reflc: float = 5.0            # [5.0]
    # face-crop mask of the photo loss (use_crop_face=True at training, facerecon_model.py:68-71):
    # "pytorch": tri_mask2 rasterised against the full vertex buffer, as the release trains
    # (indexes a 27,660-vertex subset with full-model indices: PIPELINES.md §2.5.1);
    # "tf": the TF original's gather of frontmask2_idx first (the intended mask);
    # "none": the full rendered mask (use_crop_face=False).
    crop_mask: str = "pytorch"
    use_predef_M: bool = False      # facerecon_model.py:43,70: the render's ArcFace crop from predicted landmarks
    recog_input_size: int = 112     # networks.py:107
    # optimisation (facerecon_model.py:117, networks.py:50-51, train_options.py); [CODE≠PAPER] paper: batch 5, 500k it.
    lr: float = 1e-4
    batch_size: int = 32
    epochs: int = 20
    lr_step_epochs: int = 10
    lr_gamma: float = 0.2
    # training with facegeom.train (``facegeom train --method deep3d``; not the authors' options)
    recog_weights: str = ""         # ArcFace IResNet-50 state dict (D3D: ms1mv3_arcface_r50_fp16/backbone.pth); "": random init
    steps_per_epoch: int = 0        # StepLR's epoch in optimiser steps; 0: ceil(num_samples / batch) on synthetic data
    num_samples: int = 20000        # synthetic training samples (--data synthetic)
    val_samples: int = 64           # synthetic validation samples (another seed: disjoint)
    images_per_identity: int = 4
    head_seed: int = 0              # synthetic_head's seed (data and face model)
    # the synthetic data's distribution (--data synthetic; facegeom.data.synthetic.SyntheticConfig): for smoke
    # trainings of small networks, a low-dimensional space: the leading k coefficients drawn, the others 0
    # (None: all 80 / 64 / 80; 0: none, the mean)
    synthetic_id_components: Optional[int] = None
    synthetic_exp_components: Optional[int] = None
    synthetic_tex_components: Optional[int] = None
    synthetic_shape_std: float = 1.0  # std of the identity coefficients (the face model's unit: 1)
    synthetic_max_jaw: float = 0.2    # jaw opening U(0, max) rad; the linear face model cannot open the jaw
    synthetic_rotation_scale: float = 1.0  # x SyntheticConfig.rotation_std (0.12, 0.30, 0.06) rad (pitch, yaw, roll)
    synthetic_model_landmarks: bool = True  # SyntheticDeep3DHook(model_landmarks=...): the decoder's 68 keypoints
    bfm_path: str = ""              # BFM_model_front.mat of the trained model; "": synthetic_bfm(head_seed)

    def __post_init__(self):
        if self.net_recon not in ("resnet50", "resnet18"):
            raise ValueError(f"net_recon must be 'resnet50' or 'resnet18', got {self.net_recon!r}")
        if self.crop_mask not in CROP_MASKS:
            raise ValueError(f"crop_mask must be one of {CROP_MASKS}, got {self.crop_mask!r}")
        if not (self.focal > 0 and self.center > 0 and 0 < self.z_near < self.z_far):
            raise ValueError("need focal > 0, center > 0 and 0 < z_near < z_far")
        for name, low in (("steps_per_epoch", 0), ("num_samples", 1), ("val_samples", 1),
                          ("images_per_identity", 1), ("head_seed", 0), ("lr_step_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("synthetic_id_components", "synthetic_exp_components", "synthetic_tex_components"):
            _checks.optional_count(name, getattr(self, name))
        for name in ("synthetic_shape_std", "synthetic_max_jaw", "synthetic_rotation_scale"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def image_size(self) -> int:
        return int(2 * self.center)

    @classmethod
    def tiny(cls, **overrides) -> "Config":
        """Small and fast for tests: ResNet-18 and a 64 x 64 image (same field of view:
        focal scaled with the centre); ``w_feat = 0`` (no recognition net is built: an
        IResNet-50 forward per step is the slowest part on CPU); 64 synthetic samples."""
        settings = dict(net_recon="resnet18", center=32.0, focal=1015.0 * 32.0 / 112.0, batch_size=2, epochs=1,
                        w_feat=0.0, num_samples=64, val_samples=4)
        settings.update(overrides)
        return cls(**settings)

    def replace(self, **changes) -> "Config":
        return replace(self, **changes)


# ---------------------------------------------------------------------------------------- #
# R-Net                                                                                    #
# ---------------------------------------------------------------------------------------- #

class ReconNet(nn.Module):
    """``ReconNetWrapper`` (``D3D:models/networks.py:69-104``; PIPELINES.md §2.2).

    ``backbone``: torchvision-layout ResNet-50 (or -18) without ``fc``, ending in
    ``AdaptiveAvgPool2d(1)``; ``final_layers``: 7 ``Conv2d(C, k, 1, bias=True)`` with
    weights and biases initialised to zero, so an untrained net outputs all-zero
    coefficients (the mean face, frontal, at the origin). State-dict keys equal
    ``epoch_20.pth['net_recon']``'s.

    Args:
        net_recon: ``"resnet50"`` (release) or ``"resnet18"``.

    Input ``[B, 3, H, W]`` RGB in [0, 1] (no mean/std normalisation, ``D3D:test.py:34``);
    output ``[B, 257]``.

    Example:
        >>> net = ReconNet("resnet18")
        >>> net(torch.rand(1, 3, 64, 64)).abs().max()
        tensor(0., grad_fn=<MaxBackward1>)
    """

    def __init__(self, net_recon: str = "resnet50"):
        super().__init__()
        if net_recon not in ("resnet50", "resnet18"):
            raise ValueError(f"net_recon must be 'resnet50' or 'resnet18', got {net_recon!r}")
        self.backbone = (resnet50 if net_recon == "resnet50" else resnet18)(num_classes=None)
        channels = self.backbone.num_features
        self.final_layers = nn.ModuleList(nn.Conv2d(channels, k, kernel_size=1, bias=True) for k in HEAD_SIZES)
        for layer in self.final_layers:
            nn.init.constant_(layer.weight, 0.0)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)  # [B, C, 1, 1]
        return self.heads(features)

    def heads(self, features: Tensor) -> Tensor:
        """The 7 heads on the pooled features ``[B, C, 1, 1]`` -> ``[B, 257]``."""
        return torch.flatten(torch.cat([layer(features) for layer in self.final_layers], dim=1), 1)

    def forward_features(self, x: Tensor):
        """``(coefficients [B, 257], F_b1, F_g)`` for the C-Net: ``F_b1`` = ``layer1``'s output
        ``[B, 256, H/4, W/4]`` (ResNet-18: 64 channels), ``F_g`` = the pooled features
        ``[B, 2048]`` (ResNet-18: 512). Same coefficients as :meth:`forward`."""
        b = self.backbone
        shallow = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))
        pooled = b.avgpool(b.layer4(b.layer3(b.layer2(shallow))))
        return self.heads(pooled), shallow, torch.flatten(pooled, 1)


def load_checkpoint(path, map_location="cpu") -> ReconNet:
    """A :class:`ReconNet` with the weights of the authors' ``epoch_20.pth``.

    Reads ``torch.load(path)['net_recon']`` (``D3D:models/base_model.py:200-228,244-264``;
    PIPELINES.md §2.8) and loads it with ``strict=True`` as is; a ``module.`` prefix
    (DDP) is stripped. The backbone depth (ResNet-50 or -18) is read from the keys.
    ``'opt_00'`` / ``'sched_00'`` are ignored. A bare state dict (the ``net_recon``
    content itself: ``facegeom train --method deep3d``'s ``final.pt``) and a ``facegeom.train``
    checkpoint (its ``'model'``) are accepted too.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file, when it is not such a checkpoint.
    """
    source = os.fspath(path)
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such file (Deep3DFaceRecon checkpoint, e.g. epoch_20.pth)")
    try:
        data = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt / foreign file
        raise ValueError(f"{source}: not a readable torch checkpoint: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a dict with 'net_recon', got {type(data).__name__}")
    if data.get("format") == "facegeom.train/1" and isinstance(data.get("model"), dict):
        data = data["model"]  # a facegeom.train checkpoint (step_N.pt / best.pt): its model is a ReconNet
    state = data["net_recon"] if "net_recon" in data else data
    if not isinstance(state, dict) or not any(str(k).endswith("final_layers.0.weight") for k in state):
        raise ValueError(f"{source}: no 'net_recon' state dict with final_layers.* (keys: {sorted(map(str, data))[:8]})")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    net_recon = "resnet50" if "backbone.layer1.0.conv3.weight" in state else "resnet18"
    net = ReconNet(net_recon)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: net_recon does not match ReconNet({net_recon!r}): {error}") from error
    return net


# ---------------------------------------------------------------------------------------- #
# Decoding                                                                                 #
# ---------------------------------------------------------------------------------------- #

def split_coeff(coeffs: Tensor) -> Dict[str, Tensor]:
    """``ParametricFaceModel.split_coeff`` (``D3D:models/bfm.py:252-273``): ``[B, 257]`` ->
    ``{'id': [B, 80], 'exp': [B, 64], 'tex': [B, 80], 'angle': [B, 3], 'gamma': [B, 27],
    'trans': [B, 3]}`` (views). ``gamma`` is colour-major (``reshape(B, 3, 9)``: R, G, B).

    Example:
        >>> {k: v.shape[1] for k, v in split_coeff(torch.zeros(2, 257)).items()}
        {'id': 80, 'exp': 64, 'tex': 80, 'angle': 3, 'gamma': 27, 'trans': 3}
    """
    _checks.floating("coeffs", coeffs)
    _checks.shape("coeffs", coeffs, [None, 257], "[B, 257]")
    out, start = {}, 0
    for name, size in COEFF_SIZES.items():
        out[name] = coeffs[:, start:start + size]
        start += size
    return out


@dataclass
class Deep3DOutput:
    """What :func:`decode` returns (names of ``FaceReconModel``'s attributes in brackets).

    Attributes:
        coeffs: :func:`split_coeff` of the parameters (``pred_coeffs_dict``).
        shape: ``[B, N, 3]`` identity + expression shape in the model frame (``face_shape``).
        vertices: ``[B, N, 3]`` in Deep3D's camera frame: ``R S + t`` with ``z`` replaced by
            ``camera_d - z`` (``pred_vertex``; y up, z = distance in front of the camera).
        texture: ``[B, N, 3]`` albedo in [0, 1] (``pred_tex``).
        normals: ``[B, N, 3]`` rotated unit-face-normal vertex normals.
        color: ``[B, N, 3]`` SH-shaded colour, not clamped (``pred_color``).
        landmarks: ``[B, 68, 2]`` projected landmarks, pixels, **y up** (``pred_lm``;
            image row = ``H - 1 - y``).
        mask, depth, image: the render ``[B, 1|1|3, H, W]`` (``pred_mask``, depth, ``pred_face``).
        crop_mask: ``[B, 1, H, W]`` the photo loss's face-crop mask (detached), or ``None``.
        skin_mask: ``[N]`` the model's ``skinmask`` (for the reflectance loss), or ``None``.
    """

    coeffs: Dict[str, Tensor]
    shape: Tensor
    vertices: Tensor
    texture: Tensor
    normals: Tensor
    color: Tensor
    landmarks: Tensor
    mask: Tensor
    depth: Tensor
    image: Tensor
    crop_mask: Optional[Tensor] = None
    skin_mask: Optional[Tensor] = field(default=None, repr=False)


def _projection(config: Config, like: Tensor) -> Tensor:
    """``perspective_projection(focal, center)`` (``D3D:models/bfm.py:11-17``): ``[3, 3]`` float32
    (as the authors round it), transposed for ``points @ K``."""
    f, c = config.focal, config.center
    K = np.array([f, 0, c, 0, f, c, 0, 0, 1]).reshape([3, 3]).astype(np.float32).transpose()
    return torch.tensor(K).to(like)


def decode(params: Tensor, model: BFM, config: Config = Config(),
           renderer: Optional[Deep3DRenderer] = None, render: bool = True) -> Deep3DOutput:
    """``ParametricFaceModel.compute_for_render`` + ``MeshRenderer`` (``D3D:models/bfm.py:274-299``,
    ``models/facerecon_model.py:134-142``; PIPELINES.md §2.4):

    1. ``S = mean + idBase·id + exBase·exp`` (``model``: :meth:`BFM.from_deep3d`, mean re-centred);
    2. ``R = Rz Ry Rx`` (:func:`facegeom.transforms.euler_to_matrix`, ``convention="deep3d"``),
       ``p = R S + t``; camera frame ``(x, y, camera_d - z)``;
    3. landmarks ``(f x + c z) / z``, ``(f y + c z) / z`` of the 68 ``keypoints`` (y up);
    4. texture ``(meantex + texBase·tex) / 255``;
    5. normals: :meth:`BFM.deep3d_normals` of ``S`` (unit face normals, ``point_buf``), then
       rotated (``n @ R^T``);
    6. colour = texture x SH (``"deep3d"`` convention) with ``gamma.reshape(B, 3, 9) + init_lit``
       on coefficient 0, not clamped;
    7. render with :class:`facegeom.render.deep3d.Deep3DRenderer` (no antialiasing, image
       0.5 px off the landmarks) and, when the model has ``tri_mask2``, the face-crop mask of
       ``config.crop_mask``.

    Args:
        params: ``[B, 257]`` R-Net output (differentiable).
        model: a BFM read by :meth:`BFM.from_deep3d` (needs ``keypoints``, ``point_buf`` and a texture).
        config: camera, ``init_lit`` and ``crop_mask``.
        renderer: reuse a renderer (default: one built from ``config``).
        render: False skips rasterisation (``mask``/``depth``/``image`` are then ``None``).
    """
    coeffs = split_coeff(params)
    _checks.floating("params", params, model.mean_shape, "the model's buffers")
    if model.keypoints is None or model.texture_basis is None:
        raise ValueError("model must have keypoints and a texture model (BFM.from_deep3d of BFM_model_front.mat)")
    decoded = model(coeffs["id"], coeffs["exp"], coeffs["tex"])
    shape, texture = decoded.vertices, decoded.albedo
    rotation = euler_to_matrix(coeffs["angle"], convention="deep3d")  # [B, 3, 3] = Rz Ry Rx
    world = shape @ rotation.transpose(1, 2) + coeffs["trans"].unsqueeze(1)
    vertices = torch.cat([world[..., :2], config.camera_d - world[..., 2:]], -1)
    projected = vertices @ _projection(config, vertices)
    landmarks = (projected[..., :2] / projected[..., 2:])[:, model.keypoints]
    normals = model.deep3d_normals(shape) @ rotation.transpose(1, 2)
    gamma = coeffs["gamma"].reshape(-1, 3, 9)
    gamma = torch.cat([gamma[..., :1] + config.init_lit, gamma[..., 1:]], -1)
    color = ops.sh_shading(normals, texture, gamma.transpose(1, 2).contiguous(), convention="deep3d")
    skin = model.masks.get("skin_mask")
    out = Deep3DOutput(coeffs, shape, vertices, texture, normals, color, landmarks, None, None, None,
                       skin_mask=skin)
    if render:
        if renderer is None:
            renderer = Deep3DRenderer(config.focal, config.center, config.z_near, config.z_far)
        out.mask, out.depth, out.image = renderer(vertices, model.faces, feat=color)
        out.crop_mask = _crop_mask(out, model, config, renderer)
    return out


def _crop_mask(out: Deep3DOutput, model: BFM, config: Config, renderer: Deep3DRenderer) -> Tensor:
    """The photo loss's face mask (``D3D:models/facerecon_model.py:157-161``), detached."""
    masks = model.masks
    if config.crop_mask == "none" or "front_faces" not in masks:
        return out.mask.detach()
    with torch.no_grad():
        if config.crop_mask == "pytorch":  # tri_mask2 - 1 against the full vertex buffer (bfm.py:63)
            return renderer(out.vertices, masks["front_faces"]).mask
        if "front_mask" not in masks:
            raise ValueError("crop_mask='tf' needs the model's frontmask2_idx (masks['front_mask'])")
        subset = out.vertices[:, masks["front_mask"]]  # D3D-TF:face_decoder.py:280-282,323-340
        faces = masks["front_faces"]
        if int(faces.max()) >= subset.shape[1]:
            raise IndexError(f"tri_mask2 indexes {int(faces.max()) + 1} vertices, frontmask2_idx has {subset.shape[1]}")
        return renderer(subset, faces).mask


# ---------------------------------------------------------------------------------------- #
# Losses                                                                                   #
# ---------------------------------------------------------------------------------------- #

def _arcface_transform(landmarks: Tensor, height: int) -> Tensor:
    """``estimate_norm_torch`` (``D3D:util/preprocess.py:207-236``) from :mod:`facegeom.data.deep3d`."""
    try:
        from facegeom.data.deep3d import estimate_norm_torch
    except ImportError as error:  # the data layer is a separate issue
        raise ImportError("the perceptual loss with use_predef_M=False needs facegeom.data.deep3d.estimate_norm_torch"
                          ) from error
    return estimate_norm_torch(landmarks, height)


def losses(output: Deep3DOutput, batch: Dict[str, Tensor], config: Config = Config(),
           recog_net: Optional[Callable[[Tensor], Tensor]] = None) -> Dict[str, Tensor]:
    """``FaceReconModel.compute_losses`` (``D3D:models/facerecon_model.py:145-175``): the
    weighted terms and their sum.

    Args:
        output: :func:`decode` output (rendered).
        batch: the authors' keys: ``'imgs'`` ``[B, 3, H, W]`` RGB [0, 1]; ``'lms'`` ``[B, 68, 2]``
            y-up landmarks; ``'msks'`` ``[B, 1, H, W]`` skin attention (default all ones);
            ``'M'`` ``[B, 2, 3]`` ArcFace crop of the input (needed with ``recog_net``).
        config: weights and ``use_predef_M``.
        recog_net: frozen face-recognition net (ArcFace IResNet-50); without it ``feat`` is
            omitted from the dict (and from ``total``).

    Returns:
        ``{'feat'?, 'color', 'lm', 'reg', 'gamma', 'reflc', 'total'}`` scalar tensors
        (``total`` = the authors' ``loss_all``).
    """
    for key in ("imgs", "lms"):
        if key not in batch:
            raise ValueError(f"batch must hold {key!r} (keys: {sorted(batch)})")
    if output.image is None:
        raise ValueError("output has no render: decode(..., render=True)")
    images = batch["imgs"]
    attention = batch.get("msks")
    if attention is None:
        attention = torch.ones_like(images[:, :1])
    terms = {}
    if recog_net is not None:
        if "M" not in batch:
            raise ValueError("batch must hold 'M' (the input's ArcFace crop) for the perceptual loss")
        trans_m = batch["M"]
        pred_m = trans_m if config.use_predef_M else _arcface_transform(output.landmarks, images.shape[-2])
        pred_feat = L.recog_features(recog_net, output.image, pred_m.to(images), config.recog_input_size)
        gt_feat = L.recog_features(recog_net, images, trans_m.to(images), config.recog_input_size)
        terms["feat"] = config.w_feat * L.perceptual_loss(pred_feat, gt_feat)
    face_mask = output.crop_mask if output.crop_mask is not None else output.mask
    terms["color"] = config.w_color * L.photo_loss(output.image, images, attention * face_mask.detach())
    terms["reg"] = config.w_reg * L.reg_loss(output.coeffs, config.w_id, config.w_exp, config.w_tex)
    terms["gamma"] = config.w_gamma * L.gamma_loss(output.coeffs["gamma"])
    terms["lm"] = config.w_lm * L.landmark_loss(output.landmarks, batch["lms"].to(output.landmarks))
    if output.skin_mask is not None:
        terms["reflc"] = config.w_reflc * L.reflectance_loss(output.texture, output.skin_mask)
    terms["total"] = sum(terms.values())
    return terms


# ---------------------------------------------------------------------------------------- #
# Multi-image aggregation: C-Net (paper §5, eq. 7-8; PIPELINES.md §2.9; never released)    #
# ---------------------------------------------------------------------------------------- #

class ConfidenceNet(nn.Module):
    """C-Net (Deng et al. 2019 §5.2): per-coefficient confidences ``c in (0, 1)^80`` of the
    identity coefficients, from R-Net's shallow and pooled features.

    Structure (paper §5.2): three 3x3 convolutions with 256 channels and stride 2 on
    ``F_b1``, global average pooling -> 256; concatenated with ``F_g`` (2048); FC 512 -> FC 80
    -> sigmoid. The last FC is zero-initialised, so every confidence starts at 0.5 and
    eq. 7 starts as plain averaging (paper §6 "Training": "so that we start from average pooling").

    Choices the paper leaves open (no code was released; PIPELINES.md §2.9) [INFERRED]:

    - ``F_b1``: the paper's ``28 x 28 x 256`` is slim ``resnet_v1_50/block1`` (stride in the
      block's last unit); the torchvision-layout R-Net's ``layer1`` gives ``56 x 56 x 256``
      at 224. We use ``layer1`` as is: the three stride-2 convolutions take it to 7 x 7
      before pooling (28 x 28 would give 4 x 4).
    - ReLU after each convolution and after FC 512; no batch norm; PyTorch default init
      except the zeroed last FC.

    With the defaults it has 3.0 M parameters (paper: "3M").

    Args:
        shallow_channels: channels of ``F_b1`` (ResNet-50: 256; ResNet-18: 64).
        global_features: size of ``F_g`` (ResNet-50: 2048; ResNet-18: 512).
        n_id: identity coefficients (80). width / hidden: 256 / 512 (paper).
    """

    def __init__(self, shallow_channels: int = 256, global_features: int = 2048, n_id: int = 80,
                 width: int = 256, hidden: int = 512):
        super().__init__()
        layers, channels = [], shallow_channels
        for _ in range(3):
            layers += [nn.Conv2d(channels, width, kernel_size=3, stride=2, padding=1), nn.ReLU(inplace=True)]
            channels = width
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(width + global_features, hidden)
        self.fc2 = nn.Linear(hidden, n_id)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    @classmethod
    def for_reconnet(cls, net: "ReconNet", n_id: int = 80) -> "ConfidenceNet":
        """A C-Net sized for ``net``'s backbone (ResNet-50 or -18)."""
        shallow = net.backbone.layer1[-1]
        channels = (shallow.conv3 if hasattr(shallow, "conv3") else shallow.conv2).out_channels
        return cls(channels, net.backbone.num_features, n_id)

    def forward(self, shallow: Tensor, pooled: Tensor) -> Tensor:
        """``shallow`` ``[B, C1, h, w]`` (``F_b1``), ``pooled`` ``[B, C2]`` (``F_g``) -> ``[B, 80]`` in (0, 1)."""
        _checks.floating("shallow", shallow)
        _checks.shape("shallow", shallow, [None, self.convs[0].in_channels, None, None], "[B, C1, h, w]")
        _checks.floating("pooled", pooled, shallow, "shallow")
        _checks.shape("pooled", pooled, [shallow.shape[0], self.fc1.in_features - self.convs[-2].out_channels],
                      "[B, C2]")
        local = torch.flatten(self.pool(self.convs(shallow)), 1)
        hidden = torch.relu(self.fc1(torch.cat([local, pooled], 1)))
        return torch.sigmoid(self.fc2(hidden))


def aggregate_identity(alpha: Tensor, confidence: Tensor) -> Tensor:
    """Eq. 7: ``alpha_aggr = (sum_j c_j * alpha_j) / (sum_j c_j)`` element-wise over the images
    ``j`` of a set.

    Args:
        alpha: ``[S, M, K]`` identity coefficients of ``S`` sets of ``M`` images (differentiable).
        confidence: ``[S, M, K]`` positive confidences (differentiable).

    Returns:
        ``[S, K]``.

    Example:
        >>> aggregate_identity(torch.tensor([[[1.0], [3.0]]]), torch.tensor([[[0.5], [0.5]]]))
        tensor([[2.]])
    """
    _checks.floating("alpha", alpha)
    _checks.floating("confidence", confidence, alpha, "alpha")
    _checks.shape("alpha", alpha, [None, None, None], "[S, M, K]")
    if confidence.shape != alpha.shape:
        raise ValueError(f"confidence must have the shape of alpha {list(alpha.shape)}, got {list(confidence.shape)}")
    return (confidence * alpha).sum(1) / confidence.sum(1)


def multi_image_config(config: Config = Config()) -> Config:
    """The multi-image stage's weights (paper §5.1): ``w_lm 1.6e-3, w_photo 1.9, w_id 0.1``;
    the other weights as in ``config`` [INFERRED: the paper names only these three]. Adam,
    lr 2e-5, batch 5 sets x 5 images, 10k iterations (paper §6 "Training")."""
    return config.replace(w_lm=1.6e-3, w_color=1.9, w_feat=0.1, lr=2e-5, batch_size=5)


def multi_image_losses(rnet: ReconNet, cnet: ConfidenceNet, images: Tensor, batch: Dict[str, Tensor], model: BFM,
                       config: Config = None, recog_net=None, renderer: Optional[Deep3DRenderer] = None):
    """Eq. 8: the hybrid loss of every image re-rendered with the set's aggregated identity,
    ``x_hat_j = (alpha_aggr, beta_j, delta_j, p_j, gamma_j)``, averaged over the images.

    R-Net is frozen: it runs without gradients (put it in ``eval()`` so its batch norm uses and
    keeps its running statistics); only ``cnet`` receives gradients. The per-image
    losses of the ``S·M`` images are computed as one batch with :func:`losses`, which
    averages over the batch as the single-image training does (its photo term is normalised
    by the whole batch's mask) [INFERRED].

    Args:
        rnet, cnet: the networks.
        images: ``[S, M, 3, H, W]`` ``S`` sets of ``M`` images of one person each, RGB [0, 1].
        batch: :func:`losses`'s keys for the ``S·M`` images flattened set-major (``'lms'``
            ``[S·M, 68, 2]``, optional ``'msks'``, ``'M'``); ``'imgs'`` is taken from ``images``.
        model, config (default :func:`multi_image_config`), recog_net, renderer: as :func:`decode` / :func:`losses`.

    Returns:
        ``(terms, output, confidence [S, M, 80])``.
    """
    config = multi_image_config() if config is None else config
    _checks.floating("images", images)
    _checks.shape("images", images, [None, None, 3, None, None], "[S, M, 3, H, W]")
    sets, count = images.shape[:2]
    flat = images.flatten(0, 1)
    with torch.no_grad():
        coeffs, shallow, pooled = rnet.forward_features(flat)
    confidence = cnet(shallow, pooled).reshape(sets, count, -1)
    n_id = confidence.shape[-1]
    alpha = aggregate_identity(coeffs[:, :n_id].reshape(sets, count, n_id), confidence)  # [S, K]
    params = torch.cat([alpha[:, None].expand(sets, count, n_id).flatten(0, 1), coeffs[:, n_id:]], 1)
    output = decode(params, model, config, renderer)
    terms = losses(output, dict(batch, imgs=flat), config, recog_net)
    return terms, output, confidence


# ---------------------------------------------------------------------------------------- #
# Preprocessing (D3D:test.py:26-36, util/preprocess.py:175-204; PIPELINES.md §2.1)         #
# ---------------------------------------------------------------------------------------- #

def _as_uint8_rgb(image) -> np.ndarray:
    """A PIL image, ``[H, W, 3]`` uint8 array or ``[3, H, W]`` float tensor in [0, 1] as uint8 RGB."""
    if isinstance(image, torch.Tensor):
        _checks.floating("image", image)
        _checks.shape("image", image, [3, None, None], "[3, H, W]")
        return (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    from facegeom.data._image import to_pil

    return np.asarray(to_pil("image", image).convert("RGB"))


def preprocess(image, landmarks, config: Config = Config()):
    """Deep3D's test-time alignment (``D3D:test.py:26-36`` then ``util/preprocess.py:175-204``).

    Args:
        image: PIL image, ``[H, W, 3]`` uint8 RGB array or ``[3, H, W]`` float tensor in [0, 1].
        landmarks: ``[5, 2]`` or ``[68, 2]`` pixel landmarks in IMAGE coordinates, row 0 at the
            top (as read from a sidecar file); flipped to the authors' y-up ``H - 1 - y`` here.
        config: the crop size ``config.image_size`` (224; the tiny config's 64 uses the same
            field of view: ``rescale_factor = 102 * size / 224``).

    Returns:
        ``(image [3, S, S] float32 RGB in [0, 1], trans_params [5] float64 numpy
        ([w0, h0, s, tx, ty]), landmarks [N, 2] float64 in the crop, y-up)``.
    """
    from facegeom.data import deep3d as data

    pixels = _as_uint8_rgb(image)
    height = pixels.shape[0]
    from facegeom.data._image import as_points

    lm = as_points("landmarks", landmarks, (5, 68)).copy()
    lm[:, 1] = height - 1 - lm[:, 1]
    size = config.image_size
    trans_params, crop, lm_crop, _ = data.align_img(pixels, lm, target_size=float(size),
                                                    rescale_factor=102.0 * size / 224.0)
    return data.to_tensor(crop), trans_params, lm_crop


def landmarks_to_image(landmarks, trans_params, config: Config = Config()) -> np.ndarray:
    """Inverse of :func:`preprocess` for outputs: ``[N, 2]`` crop landmarks, **y-up** (as
    :attr:`Deep3DOutput.landmarks`) -> original-image pixels, row 0 at the top (float64).
    Uses :func:`facegeom.data.deep3d.landmarks_to_original`."""
    from facegeom.data import deep3d as data

    original = data.landmarks_to_original(landmarks, trans_params, target_size=float(config.image_size))
    h0 = float(np.asarray(trans_params, dtype=np.float64).reshape(-1)[1])
    original[:, 1] = h0 - 1 - original[:, 1]
    return original


# ---------------------------------------------------------------------------------------- #
# Synthetic data and face model (facegeom.data.synthetic; API.md §6)                       #
# ---------------------------------------------------------------------------------------- #

SYNTHETIC_SCALE = 10.0
"""Metres -> the BFM's units (the real ``BFM_model_front.mat`` is in decimetres: a face
about 2 units tall at ``camera_d = 10``, PIPELINES.md §2.4)."""


def synthetic_bfm(head_seed: int = 0) -> BFM:
    """The face model of ``--data synthetic`` / ``--assets synthetic``:
    :meth:`BFM.from_flame` of :func:`facegeom.models.synthetic_head` with Deep3D's 80 identity,
    64 expression and 80 texture components, scaled by :data:`SYNTHETIC_SCALE`, mean re-centred
    (as ``ParametricFaceModel`` does), ``skin_mask`` = the vertices of
    :func:`facegeom.data.synthetic.skin_faces` (for the reflectance loss). No ``point_buf``
    (unit-weighted normals over every incident face) and no ``tri_mask2`` (the crop mask is the
    full render)."""
    from facegeom.data.synthetic import skin_faces
    from facegeom.models import synthetic_head

    head = synthetic_head(seed=head_seed, n_shape=80, n_exp=64, n_tex=80, dtype=torch.float32)
    base = BFM.from_flame(head)
    mean = base.mean_shape - base.mean_shape.mean(0, keepdim=True)
    basis = base.shape_basis * SYNTHETIC_SCALE
    skin = np.zeros(base.num_vertices, dtype=np.float32)
    skin[head.faces.long()[skin_faces(head)].reshape(-1).numpy()] = 1.0
    return BFM(mean * SYNTHETIC_SCALE, basis[:80], basis[80:], base.faces, base.mean_texture, base.texture_basis,
               keypoints=base.keypoints, masks={"skin_mask": skin}, dtype=torch.float32)


_SYNTHETIC_KEYPOINTS: Dict[int, Tensor] = {}


def _synthetic_keypoints(head) -> Tensor:
    """The 68 keypoint vertex indices of :func:`synthetic_bfm` for the synthetic ``head``
    (:meth:`BFM.from_flame`'s), cached per head."""
    if id(head) not in _SYNTHETIC_KEYPOINTS:
        _SYNTHETIC_KEYPOINTS[id(head)] = BFM.from_flame(head).keypoints.long().cpu()
    return _SYNTHETIC_KEYPOINTS[id(head)]


@dataclass(frozen=True)
class SyntheticDeep3DHook:
    """A :class:`facegeom.data.synthetic.SyntheticFaces` hook that turns a rendered sample into
    the authors' training sample (``D3D:data/flist_dataset.py:78-109``):

    - skin attention from the YCbCr GMM on the full image (``D3D:util/skin_mask.py``,
      :func:`facegeom.data.skin.skinmask`, as ``data_preparation.py`` stores it);
    - the 68 landmarks flipped to y-up ``H - 1 - y`` (the stored landmark files' convention),
      then :func:`facegeom.data.deep3d.align_img` to ``size`` (``rescale_factor = 102 size / 224``);
    - ``M`` = :func:`facegeom.data.deep3d.estimate_norm` of the aligned landmarks.

    Adds ``imgs [3, S, S]``, ``lms [68, 2]`` (y-up, crop), ``msks [1, S, S]``, ``M [2, 3]``,
    ``trans_params [5]``.

    With ``model_landmarks`` (default) the sample's ``"landmarks"`` (and ``"keypoints5"``)
    are first replaced by the projections of the face model's 68 keypoint *vertices*
    (:func:`synthetic_bfm`'s ``keypoints``, the landmarks :func:`decode` projects, as
    ``BFM_model_front.mat``'s ``keypoints``) instead of the synthetic head's barycentric
    landmarks with their yaw-dependent contour: the two definitions differ by 0.49 px per
    landmark on average (7.8 px at most, on the contour) in the 64 x 64 tiny crops, a
    systematic offset of the size of the identity signal that no coefficients can fit (the
    same finding as :class:`facegeom.pipelines.specular.SyntheticSpecularHook`'s).
    """

    size: int
    model_landmarks: bool = True

    def __call__(self, sample, context) -> None:
        from facegeom.data import deep3d as data
        from facegeom.data.skin import skinmask
        from facegeom.data.synthetic import extract_5p

        if self.model_landmarks:
            keypoints = _synthetic_keypoints(context.head)
            projected = context.camera.project(context.output.vertices[:, keypoints])[0]
            sample["landmarks"] = projected.to(sample["landmarks"].dtype)
            sample["keypoints5"] = extract_5p(sample["landmarks"])
        pixels = _as_uint8_rgb(sample["image"])
        lm = sample["landmarks"].double().numpy().copy()
        lm[:, 1] = pixels.shape[0] - 1 - lm[:, 1]
        tp, crop, lm_crop, mask = data.align_img(pixels, lm, mask=skinmask(pixels), target_size=float(self.size),
                                                 rescale_factor=102.0 * self.size / 224.0)
        sample["imgs"] = data.to_tensor(crop)
        sample["lms"] = torch.from_numpy(lm_crop.astype(np.float32))
        sample["msks"] = data.to_tensor(mask)[:1]
        sample["M"] = torch.from_numpy(data.estimate_norm(lm_crop, self.size).astype(np.float32))
        sample["trans_params"] = torch.from_numpy(tp)


# ---------------------------------------------------------------------------------------- #
# Training with facegeom.train (its module docstring gives the protocol; API.md §6)        #
# ---------------------------------------------------------------------------------------- #

class Deep3DNet(ReconNet):
    """The trained model: a :class:`ReconNet` (so ``state_dict()`` / ``final.pt`` has exactly
    ``epoch_20.pth['net_recon']``'s keys and :func:`load_checkpoint` reads it) that also carries,
    outside its state dict, the face model, the renderer and the frozen recognition net
    (the authors keep ``net_recog`` and the renderer out of the checkpoint too,
    ``D3D:models/facerecon_model.py:82-101``). They follow the network's device on use."""

    def __init__(self, config: Config, face_model: Optional[BFM] = None, recog_net: Optional[nn.Module] = None):
        super().__init__(config.net_recon)
        self.config = config
        renderer = Deep3DRenderer(config.focal, config.center, config.z_near, config.z_far)
        self._aux = {"bfm": face_model, "renderer": renderer, "recog": recog_net}  # not submodules

    def aux(self, device: torch.device):
        """``(face model, renderer, recognition net or None)`` on ``device``; the face model is
        read on first use (``config.bfm_path``, else :func:`synthetic_bfm`)."""
        if self._aux["bfm"] is None:
            cfg = self.config
            self._aux["bfm"] = BFM.from_deep3d(cfg.bfm_path) if cfg.bfm_path else synthetic_bfm(cfg.head_seed)
        for key, module in self._aux.items():
            if module is not None:
                self._aux[key] = module.to(device)
        return self._aux["bfm"], self._aux["renderer"], self._aux["recog"]


def _recognition_net(config: Config) -> Optional[nn.Module]:
    """Frozen ArcFace IResNet-50 in ``eval()`` (``D3D:models/networks.py:107-124``); ``None`` when
    ``w_feat == 0``. Random weights unless ``config.recog_weights`` names a state dict (a
    random net still gives a well-defined, if meaningless, perceptual term: tests only)."""
    if config.w_feat == 0:
        return None
    from facegeom.nets import iresnet50

    net = iresnet50()
    if config.recog_weights:
        path = os.fspath(config.recog_weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"recog_weights: {path} does not exist (ArcFace IResNet-50 backbone.pth)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        except Exception as error:  # noqa: BLE001 - report any read / layout failure with the file
            raise ValueError(f"recog_weights: {path} is not an IResNet-50 state dict: {error}") from None
    net.eval()
    net.requires_grad_(False)
    return net


class _SkipBad(torch.utils.data.Dataset):
    """A :class:`facegeom.data.datasets.Deep3DFlistDataset` whose failed samples (a bad file
    is logged there) are replaced by the next readable one, so the default collate never sees
    a failure record and an epoch never aborts."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        for k in range(len(self.dataset)):
            sample = self.dataset[(int(index) + k) % len(self.dataset)]
            if "failed" not in sample:
                return {key: value for key, value in sample.items() if key != "im_paths"}
        raise ValueError(f"every sample of the dataset failed to load (last: {sample['failed']})")


def _vertex_error(model: BFM, alpha: Tensor, alpha_gt: Tensor, aligned: bool = False) -> Tensor:
    """Mean per-vertex distance (in the model's units) between the neutral identity shapes,
    ``[B]``; ``aligned``: after the least-squares similarity (Umeyama, isotropic scale) of the
    prediction onto the truth, as shape benchmarks align (NoW, MICC): the 5-point crop
    normalises the face's size in the image, so scale is not observable from it."""
    n = alpha_gt.shape[1]
    pred, truth = model(alpha[:, :n]).vertices, model(alpha_gt).vertices
    if aligned:
        from facegeom.data.arcface import umeyama

        T = umeyama(pred.detach(), truth.detach()).to(pred.dtype)  # [B, 4, 4]
        pred = pred @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    return (pred - truth).norm(dim=-1).mean(1)


class Deep3DMethod:
    """``facegeom train --method deep3d``: the single-image R-Net training of
    ``FaceReconModel`` (``D3D:models/facerecon_model.py:104-175``; PIPELINES.md §2.5-2.7).

    - model: :class:`Deep3DNet` (ResNet-50, or ResNet-18 in :meth:`Config.tiny`);
    - optimiser: ``Adam(net_recon.parameters(), lr=1e-4)`` (``facerecon_model.py:117``);
    - scheduler: the authors' ``StepLR(step_size=10 epochs, gamma=0.2)`` stepped per epoch
      (``networks.py:50-51``) becomes a ``StepLR`` stepped per optimiser step with
      ``step_size = lr_step_epochs * steps_per_epoch`` (``steps_per_epoch`` from the Config, or
      ``ceil(num_samples / batch_size)`` on synthetic data); the loop's ``--lr-schedule`` is ignored;
    - data ``"synthetic"``: :class:`facegeom.data.synthetic.SyntheticFaces` of the 80/64/80
      synthetic head with :class:`SyntheticDeep3DHook`, face model :func:`synthetic_bfm`; the
      distribution from the Config's ``synthetic_*`` fields (low-dimensional smoke spaces);
      a folder: ``<folder>/datalist/{train,val}/masks.txt`` (no val list: no validation) read by
      :class:`facegeom.data.datasets.Deep3DFlistDataset` (``data_root = <folder>``; the train split
      with the authors' augmentation); the face model is then ``--set bfm_path=BFM_model_front.mat``;
    - ``training_step``: :func:`decode` + :func:`losses` (``total`` = ``loss_all``);
    - ``validation_step``: the same losses, and on synthetic data ``shape_mm`` / ``shape_mm_mean``:
      the mean per-vertex error (mm) of the predicted vs true neutral identity shape, and of
      the mean face (identity 0) as the baseline; ``shape_mm_aligned`` / ``shape_mm_mean_aligned``:
      the same after a similarity alignment (scale is not observable in the aligned crop).
    """

    name = "deep3d"
    Config = Config
    val_metric, val_mode = "loss", "min"
    manual_optimization = False

    def build_model(self, config: Config) -> Deep3DNet:
        return Deep3DNet(config, None, _recognition_net(config))

    def optimizers(self, model, config: Config):
        return {"adam": torch.optim.Adam(model.parameters(), lr=config.lr)}

    def schedulers(self, optimizers, config: Config, train_config):
        per_epoch = config.steps_per_epoch or max(1, -(-config.num_samples // train_config.batch_size))
        return {k: torch.optim.lr_scheduler.StepLR(o, step_size=config.lr_step_epochs * per_epoch,
                                                   gamma=config.lr_gamma) for k, o in optimizers.items()}

    def dataset(self, config: Config, data, split, seed):
        if data == "synthetic":
            from facegeom.data.synthetic import SyntheticConfig, SyntheticFaces

            count = config.num_samples if split == "train" else config.val_samples
            rotation_std = tuple(config.synthetic_rotation_scale * s for s in SyntheticConfig.rotation_std)
            return SyntheticFaces(num_samples=count, image_size=config.image_size,
                                  seed=seed if split == "train" else seed + 1_000_003,
                                  images_per_identity=config.images_per_identity, head_seed=config.head_seed,
                                  n_shape=80, n_exp=64, n_tex=80, mask=None,
                                  shape_components=config.synthetic_id_components,
                                  expression_components=config.synthetic_exp_components,
                                  texture_components=config.synthetic_tex_components,
                                  shape_std=config.synthetic_shape_std, max_jaw=config.synthetic_max_jaw,
                                  rotation_std=rotation_std,
                                  hooks=(SyntheticDeep3DHook(config.image_size, config.synthetic_model_landmarks),))
        from facegeom.data.datasets import Deep3DFlistDataset

        if config.image_size != 224:
            raise ValueError(f"--data {data!r}: Deep3DFlistDataset gives 224 crops; the config's image_size is "
                             f"{config.image_size} (use the full configuration, not --tiny)")
        if not config.bfm_path:
            raise ValueError(f"--data {data!r}: training on a folder needs the face model: "
                             f"--set bfm_path=BFM_model_front.mat")
        if not os.path.isdir(data):
            raise FileNotFoundError(f"--data {data!r}: not 'synthetic' and not a folder")
        flist, root = os.path.join(data, "datalist", split, "masks.txt"), data
        if split == "val" and not os.path.isfile(flist):
            return None
        return _SkipBad(Deep3DFlistDataset(flist, data_root=root, use_aug=split == "train", seed=seed))

    @staticmethod
    def _forward(model, batch):
        net = model.module if hasattr(model, "module") else model
        images = batch["imgs"]
        coeffs = model(images)  # through the DDP wrapper when there is one
        face_model, renderer, recog = net.aux(images.device)
        output = decode(coeffs, face_model, net.config, renderer)
        return output, losses(output, batch, net.config, recog), face_model

    def training_step(self, model, batch, optimizers):
        return self._forward(model, batch)[1]

    def validation_step(self, model, batch):
        output, terms, face_model = self._forward(model, batch)
        terms = {"loss": terms.pop("total"), **terms}
        if "params" in batch and "shape" in batch["params"]:
            alpha = output.coeffs["id"]
            truth = batch["params"]["shape"].to(alpha)
            mm = 1000.0 / SYNTHETIC_SCALE
            zero = torch.zeros_like(alpha)
            terms["shape_mm"] = mm * _vertex_error(face_model, alpha, truth).mean()
            terms["shape_mm_mean"] = mm * _vertex_error(face_model, zero, truth).mean()
            terms["shape_mm_aligned"] = mm * _vertex_error(face_model, alpha, truth, aligned=True).mean()
            terms["shape_mm_mean_aligned"] = mm * _vertex_error(face_model, zero, truth, aligned=True).mean()
        return terms


try:  # register with the training loop (facegeom.train imports this module on first use)
    from facegeom import train as _train

    _train.register("deep3d", Deep3DMethod)
except ImportError:  # pragma: no cover - facegeom.train is part of the same package
    pass


# ---------------------------------------------------------------------------------------- #
# facegeom reconstruct (API.md §7; the authors' test.py: D3D:test.py:39-72)                #
# ---------------------------------------------------------------------------------------- #

def reconstructor(checkpoint, assets, options=None):
    """``facegeom reconstruct --method deep3d`` (:mod:`facegeom.reconstruct`).

    Args:
        checkpoint: ``epoch_20.pth`` or ``facegeom train``'s ``final.pt`` (:func:`load_checkpoint`).
        assets: a folder with ``BFM_model_front.mat``, or ``"synthetic"`` (:func:`synthetic_bfm`,
            for tests and models trained with ``--data synthetic``).
        options: ``tiny`` (use :meth:`Config.tiny`'s camera and crop size), ``device``.

    Returns ``reconstruct(image [H, W, 3] uint8, landmarks [5|68, 2] row-0-at-top) ->
    Reconstruction`` that, as ``D3D:test.py`` + ``FaceReconModel.save_mesh / save_coeff``
    (``D3D:models/facerecon_model.py:202-225``), writes:

    - mesh: the posed shape in the authors' world frame (``pred_vertex`` with ``z`` mapped back
      to ``camera_d - z``: ``R S + t``), vertex colours ``pred_color`` (clipped to [0, 1]);
    - params: ``id exp tex angle gamma trans`` ``[1, k]`` and ``lm68`` ``[1, 68, 2]`` in the
      crop, y down (``H - 1 - y``, as ``save_coeff``), plus ``lm68_image`` ``[68, 2]`` in the
      input image (row 0 at the top) and ``trans_params`` ``[5]``;
    - overlay: the render (where its mask is set) over the input image, pasted back from the
      crop with :func:`facegeom.data.deep3d.image_to_original`.
    """
    from facegeom import reconstruct as R

    options = dict(options or {})
    config = Config.tiny() if options.get("tiny") else Config()
    if checkpoint is None:
        raise ValueError("--checkpoint is required for deep3d (epoch_20.pth or facegeom train's final.pt)")
    if assets is None:
        raise ValueError("--assets is required for deep3d: a folder with BFM_model_front.mat, or 'synthetic'")
    if assets == "synthetic":
        face_model = synthetic_bfm(config.head_seed)
    else:
        path = os.path.join(os.fspath(assets), "BFM_model_front.mat")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--assets {assets}: no BFM_model_front.mat in it")
        face_model = BFM.from_deep3d(path)
    device = options.get("device", "auto")
    device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    net = load_checkpoint(checkpoint).to(device).eval()
    face_model = face_model.to(device)
    renderer = Deep3DRenderer(config.focal, config.center, config.z_near, config.z_far).to(device)
    faces = face_model.faces.cpu().numpy()

    @torch.no_grad()
    def reconstruct(image, landmarks) -> "R.Reconstruction":
        pixels = _as_uint8_rgb(image)
        crop, trans_params, _ = preprocess(pixels, landmarks, config)
        crop = crop[None].to(device)
        out = decode(net(crop), face_model, config, renderer)
        size = config.image_size
        world = out.vertices[0].clone()
        world[:, 2] = config.camera_d - world[:, 2]
        lm_up = out.landmarks[0].double().cpu().numpy()
        lm_crop = lm_up.copy()
        lm_crop[:, 1] = size - 1 - lm_crop[:, 1]
        params = {k: v.cpu().numpy() for k, v in out.coeffs.items()}
        params.update(lm68=lm_crop[None], lm68_image=landmarks_to_image(lm_up, trans_params, config),
                      trans_params=trans_params)
        overlay = overlay_on_image(out.image[0], out.mask[0, 0], crop[0], pixels, trans_params)
        return R.Reconstruction(world.cpu().numpy(), faces, params, overlay,
                                colors=out.color[0].clamp(0, 1).cpu().numpy())

    return reconstruct


def overlay_on_image(render: Tensor, mask: Tensor, crop: Tensor, pixels: np.ndarray, trans_params) -> np.ndarray:
    """The render over the input image: ``render [3, S, S]`` where ``mask [S, S]`` is set, else
    the aligned ``crop [3, S, S]`` (``D3D:models/facerecon_model.py:185-200``), pasted back into
    ``pixels [H, W, 3]`` uint8 with :func:`facegeom.data.deep3d.image_to_original` of
    ``trans_params`` (pixels outside the pasted render keep the input). Returns ``[H, W, 3]`` uint8."""
    from facegeom.data.deep3d import image_to_original

    mask = mask.detach().cpu()
    vis = render.detach().cpu().clamp(0, 1) * mask + crop.detach().cpu() * (1 - mask)
    vis8 = (vis * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    mask8 = np.repeat((mask.numpy() * 255).astype(np.uint8)[:, :, None], 3, 2)
    pasted, valid = image_to_original(vis8, trans_params)
    pasted_mask, _ = image_to_original(mask8, trans_params)
    use = valid[:, :, None] & (np.asarray(pasted_mask)[:, :, :1] >= 128)
    return np.where(use, np.asarray(pasted), pixels).astype(np.uint8)


try:
    from facegeom import reconstruct as _reconstruct

    _reconstruct.register("deep3d", reconstructor)
except ImportError:  # pragma: no cover - same package
    pass
