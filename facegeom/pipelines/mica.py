"""MICA (Zielonka et al. 2022): ArcFace identity -> mapping network -> FLAME shape.

Sources (PIPELINES.md §6; ``MICA`` = ``Zielon/MICA`` at the commit listed there):

- Identity encoder: ArcFace IResNet-100 (:func:`facegeom.nets.iresnet100`;
  ``MICA:models/arcface.py:155-199``). ``conv1, bn1, prelu, layer1..3`` are frozen
  (``requires_grad=False``) and run under ``torch.no_grad()``; ``layer4, bn2, fc`` and
  ``features.bias`` train (``features.weight`` is fixed at 1). The whole model is in
  ``train()`` mode while training, so the running statistics of the frozen BatchNorms
  still drift, as in the authors' checkpoint. The feature is L2-normalised
  (``MICA:micalib/models/mica.py:76``).
- Mapping network (``MICA:models/generator.py:31-60``, ``mapping_layers = 3``):
  ``Linear(512,300)`` + 3 x ``Linear(300,300)``, LeakyReLU(0.2) after each, output
  ``Linear(300, n_shape)``; hidden Linears ``kaiming_normal_(a=0.2, fan_in, leaky_relu)``
  (PyTorch default bias), output PyTorch default then ``weight *= 0.25``. Module names
  ``network.{0..3}`` / ``output`` so ``mica.tar['flameModel']['regressor.*']`` loads as is.
  **[CODE≠PAPER]** the paper says ReLU and three hidden layers of its own description.
- Decoder: FLAME with zero expression and pose (``MICA:models/flame.py:252-298``);
  vertices in metres. :func:`write_outputs` writes millimetres as ``MICA:demo.py:121-140``.
- Loss: :func:`facegeom.losses.mica.vertex_loss` with :func:`~facegeom.losses.mica.weights_per_vertex`.
- Optimiser: AdamW, param groups (mapping ``lr``, ArcFace ``arcface_lr``), both 1e-5,
  weight decay 2e-4 (``MICA:micalib/trainer.py:85-92``, ``configs/mica.yml``); batch =
  identities x K images (``MICA:datasets/base.py:82-125``).

Checkpoint policy (:func:`load_checkpoint`): ``mica.tar`` also stores the authors' FLAME
buffers under ``flameModel['generator.*']``. They are cross-checked against the FLAME the
model was built with (template, faces and the shape basis of the used components);
a mismatch RAISES by default (``check_flame="raise"``: wrong FLAME = silently wrong
meshes), ``"warn"`` warns and ``"ignore"`` skips the check. Absent buffers are fine.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegeom import _checks
from facegeom import train as training
from facegeom.eval.now import NOW_LANDMARKS_68
from facegeom.losses import mica as mica_loss
from facegeom.nets.iresnet import IResNet, iresnet50, iresnet100

__all__ = ["NOW_LANDMARKS", "MappingNetwork", "MICA", "MICAConfig", "MICAMethod", "freeze_arcface",
           "arcface_features", "load_checkpoint", "write_outputs", "load_keypoints", "preprocess",
           "detect_keypoints", "optimizer", "losses", "write_now", "Config", "keypoints5", "reconstructor",
           "vertex_error_mm", "align"]

#: 68-landmark indices of the 7 NoW landmarks (``full_lmk[17:][[19,22,25,28,16,31,37]]``, PIPELINES.md §6.3).
NOW_LANDMARKS = NOW_LANDMARKS_68  # the NoW protocol's own constant (facegeom.eval.now)
FROZEN = ("conv1", "bn1", "prelu", "layer1", "layer2", "layer3")


class MappingNetwork(nn.Module):
    """``MICA:models/generator.py:31-60``: ``[B, z_dim] -> [B, out_dim]``.

    ``network`` = ``Linear(z_dim, hidden_dim)`` + ``hidden`` x ``Linear(hidden_dim, hidden_dim)``
    (a skip concatenating ``z`` at layer ``hidden // 2`` only when ``hidden > 5``), each
    followed by LeakyReLU(0.2); ``output`` = ``Linear(hidden_dim, out_dim)``.
    """

    def __init__(self, z_dim: int = 512, hidden_dim: int = 300, out_dim: int = 300, hidden: int = 3):
        super().__init__()
        for name, v in (("z_dim", z_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(hidden, int) or hidden < 0:
            raise ValueError(f"hidden must be a non-negative int, got {hidden!r}")
        self.skips = [hidden // 2] if hidden > 5 else []
        self.network = nn.ModuleList(
            [nn.Linear(z_dim, hidden_dim)]
            + [nn.Linear(hidden_dim + (z_dim if i in self.skips else 0), hidden_dim) for i in range(hidden)])
        self.output = nn.Linear(hidden_dim, out_dim)
        for layer in self.network:
            nn.init.kaiming_normal_(layer.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
        with torch.no_grad():
            self.output.weight *= 0.25

    def forward(self, z: Tensor) -> Tensor:
        h = z
        for i, layer in enumerate(self.network):
            h = F.leaky_relu(layer(h), negative_slope=0.2)
            if i in self.skips:
                h = torch.cat([z, h], 1)
        return self.output(h)


def freeze_arcface(net: IResNet) -> IResNet:
    """Freeze ``conv1, bn1, prelu, layer1..3`` (``requires_grad=False``) and ``features.weight``
    (``MICA:models/arcface.py:171-191``); ``layer4, bn2, fc, features.bias`` stay trainable."""
    for name in FROZEN:
        for p in getattr(net, name).parameters():
            p.requires_grad_(False)
    net.features.weight.requires_grad_(False)
    return net


def arcface_features(net: IResNet, x: Tensor) -> Tensor:
    """MICA's ArcFace forward: the frozen stem and layers 1-3 under ``no_grad``, then layer4,
    bn2, flatten, dropout, fc, features (``MICA:models/arcface.py:180-191``). Not normalised.
    When the stem is trainable (``conv1.weight.requires_grad``, ``MICAConfig.freeze_stem=False``)
    it runs with gradients."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    size = net.input_size
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
        raise ValueError(f"arcface input must have shape [B, 3, {size}, {size}], got {list(x.shape)}")
    with torch.set_grad_enabled(torch.is_grad_enabled() and net.conv1.weight.requires_grad):
        h = net.prelu(net.bn1(net.conv1(x)))
        h = net.layer3(net.layer2(net.layer1(h)))
    h = net.layer4(h)
    h = net.dropout(torch.flatten(net.bn2(h), 1))
    return net.features(net.fc(h))


class MICA(nn.Module):
    """ArcFace -> L2 normalise -> :class:`MappingNetwork` -> FLAME (zero expression and pose).

    Args:
        flame: a :class:`facegeom.models.FLAME` (FLAME 2020 ``generic_model.pkl`` with 300
            shape components for the released weights; :func:`facegeom.models.synthetic_head`
            in tests). Its buffers are not trained.
        arcface: an :class:`~facegeom.nets.IResNet` (default IResNet-100 at 112).
        n_shape: regressed shape coefficients (default ``flame.n_shape``; MICA: 300).
        mapping_layers: hidden layers of the mapping network (MICA: 3).

    Forward: ``arcface [B, 3, S, S]`` (RGB in [-1, 1], :func:`preprocess`) -> dict with
    ``identity [B, 512]`` (normalised), ``shape [B, n_shape]``, ``vertices [B, V, 3]`` (metres),
    ``landmarks3d [B, 68, 3]`` and ``kpt7 [B, 7, 3]`` when the model has a landmark embedding.
    """

    def __init__(self, flame, arcface: Optional[IResNet] = None, n_shape: Optional[int] = None,
                 mapping_layers: int = 3):
        super().__init__()
        self.arcface = freeze_arcface(arcface if arcface is not None else iresnet100())
        n_shape = flame.n_shape if n_shape is None else n_shape
        if not isinstance(n_shape, int) or not 1 <= n_shape <= flame.n_shape:
            raise ValueError(f"n_shape must be an int in [1, {flame.n_shape}], got {n_shape!r}")
        self.n_shape = n_shape
        self.regressor = MappingNetwork(self.arcface.fc.out_features, 300, n_shape, mapping_layers)
        self.flame = flame

    def decode(self, shape: Tensor) -> Dict[str, Tensor]:
        """FLAME with the shape code, zero expression and pose."""
        out = self.flame(shape=shape.to(self.flame.v_template.dtype))
        result = {"shape": shape, "vertices": out.vertices}
        if out.landmarks3d is not None:
            result["landmarks3d"] = out.landmarks3d
            result["kpt7"] = out.landmarks3d[:, list(NOW_LANDMARKS)]
        return result

    def forward(self, arcface: Tensor) -> Dict[str, Tensor]:
        identity = F.normalize(arcface_features(self.arcface, arcface))
        result = self.decode(self.regressor(identity))
        result["identity"] = identity
        return result


def optimizer(model: MICA, lr: float = 1e-5, arcface_lr: float = 1e-5,
              weight_decay: float = 2e-4) -> torch.optim.AdamW:
    """AdamW with MICA's two param groups (mapping ``lr``, ArcFace ``arcface_lr``), only the
    parameters that require gradients (``MICA:micalib/trainer.py:85-92``)."""
    groups = [{"params": [p for p in model.regressor.parameters() if p.requires_grad], "lr": lr},
              {"params": [p for p in model.arcface.parameters() if p.requires_grad], "lr": arcface_lr}]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, amsgrad=False)


def losses(output: Dict[str, Tensor], target_vertices: Tensor, weights: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """MICA's loss dict (``MICA:micalib/models/mica.py:107-120``, the authors' term name):
    ``pred_verts_shape_canonical_diff`` = :func:`facegeom.losses.mica.vertex_loss`, and ``total``."""
    term = mica_loss.vertex_loss(output["vertices"], target_vertices, weights)
    return {"pred_verts_shape_canonical_diff": term, "total": term}


# --------------------------------------------------------------------------- #
# Checkpoint                                                                   #
# --------------------------------------------------------------------------- #
def _cross_check(flame, stored: Dict[str, Tensor], n_shape: int) -> list:
    problems = []
    pairs = (("v_template", flame.v_template, None), ("faces_tensor", flame.faces, None),
             ("shapedirs", flame.shapedirs[:, :, :n_shape], n_shape))
    for key, ours, cut in pairs:
        if key not in stored:
            continue
        theirs = stored[key]
        if cut is not None and theirs.dim() == 3:
            theirs = theirs[:, :, :cut]
        if tuple(theirs.shape) != tuple(ours.shape):
            problems.append(f"{key}: shape {list(theirs.shape)} in the file, {list(ours.shape)} in the model")
        else:
            a, b = theirs.to(torch.float64), ours.detach().cpu().to(torch.float64)
            if not torch.allclose(a, b, atol=1e-6, rtol=1e-5):
                problems.append(f"{key}: values differ (max {float((a - b).abs().max()):.3g})")
    return problems


def _from_final(state: Dict[str, Tensor]) -> Dict[str, Dict[str, Tensor]]:
    """facegeom ``final.pt`` keys -> the authors' layout."""
    names = {"v_template": "v_template", "faces": "faces_tensor", "shapedirs": "shapedirs"}
    flame_model = {k: v for k, v in state.items() if k.startswith("regressor.")}
    flame_model.update({f"generator.{names[k[6:]]}": v for k, v in state.items()
                        if k.startswith("flame.") and k[6:] in names})
    return {"arcface": {k[8:]: v for k, v in state.items() if k.startswith("arcface.")}, "flameModel": flame_model}


def load_checkpoint(model: MICA, path, check_flame: str = "raise") -> MICA:
    """Load the authors' ``mica.tar`` (PIPELINES.md §6.6), or facegeom's own ``final.pt``
    of this method, into ``model``.

    Reads ``['arcface']`` (strict) and ``['flameModel']['regressor.*']`` (strict);
    ``['flameModel']['generator.*']`` (the authors' FLAME buffers) is only cross-checked
    against ``model.flame`` (see the module docstring; ``check_flame`` in
    ``"raise" | "warn" | "ignore"``).
    """
    if check_flame not in ("raise", "warn", "ignore"):
        raise ValueError(f"check_flame must be 'raise', 'warn' or 'ignore', got {check_flame!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MICA checkpoint not found: {path}")
    try:  # tensors and plain containers only: never unpickle arbitrary objects
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable torch checkpoint of tensors ({error})") from error
    if isinstance(data, dict) and "arcface" not in data and any(str(k).startswith("arcface.") for k in data):
        data = _from_final(data)  # facegeom's own final.pt (the model's plain state_dict)
    if not isinstance(data, dict) or "arcface" not in data or "flameModel" not in data:
        raise ValueError(f"{path}: expected a dict with 'arcface' and 'flameModel' (MICA's mica.tar), got "
                         f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    try:
        model.arcface.load_state_dict(data["arcface"], strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: ['arcface'] does not fit the model's IResNet: {error}") from error
    flame_model = data["flameModel"]
    regressor = {k[len("regressor."):]: v for k, v in flame_model.items() if k.startswith("regressor.")}
    try:
        model.regressor.load_state_dict(regressor, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: ['flameModel']['regressor.*'] does not fit the mapping network: {error}") from error
    if check_flame != "ignore":
        stored = {k[len("generator."):]: v for k, v in flame_model.items() if k.startswith("generator.")}
        problems = _cross_check(model.flame, stored, model.n_shape)
        if problems:
            message = (f"{path}: the FLAME stored in the checkpoint differs from the model's FLAME: "
                       + "; ".join(problems) + " (pass check_flame='ignore' to skip this check)")
            if check_flame == "raise":
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
    return model


def write_outputs(out_dir, output: Dict[str, Tensor], faces: Tensor, index: int = 0) -> Dict[str, str]:
    """Write one prediction as ``MICA:demo.py:121-140``, in millimetres: ``mesh.ply``,
    ``mesh.obj``, ``identity.npy`` (the shape code), ``kpt7.npy`` ``[7, 3]`` and
    ``kpt68.npy`` ``[1, 68, 3]`` (the authors save it with its batch axis).

    Returns the written paths by name.
    """
    import trimesh

    os.makedirs(out_dir, exist_ok=True)
    vertices = output["vertices"][index].detach().cpu().double().numpy() * 1000.0
    faces = np.asarray(torch.as_tensor(faces).cpu().numpy(), dtype=np.int64)
    paths = {}
    for ext in ("ply", "obj"):
        paths[f"mesh.{ext}"] = os.path.join(out_dir, f"mesh.{ext}")
        trimesh.Trimesh(vertices=vertices, faces=faces, process=False).export(paths[f"mesh.{ext}"])
    arrays = {"identity": output["shape"][index].detach().cpu().numpy()}
    if "landmarks3d" in output:
        arrays["kpt7"] = output["kpt7"][index].detach().cpu().numpy() * 1000.0
        arrays["kpt68"] = output["landmarks3d"][index:index + 1].detach().cpu().numpy() * 1000.0
    for name, array in arrays.items():
        paths[name] = os.path.join(out_dir, f"{name}.npy")
        np.save(paths[name], array)
    return paths


def write_now(root, stem, vertices: Tensor, kpt7: Tensor, faces: Tensor, scale: float = 1000.0) -> Dict[str, str]:
    """Write one NoW prediction (PIPELINES.md §8.1): ``<root>/<stem>.obj`` and ``<root>/<stem>.npy``
    (the 7 landmarks ``[7, 3]``), coordinates times ``scale`` (1000: millimetres from metres,
    as MICA's outputs; pass ``mm`` to the metrical evaluation).

    Args:
        stem: ``subject/challenge/name`` without extension (NoW's layout).
        vertices: ``[V, 3]``; kpt7: ``[7, 3]``; faces: ``[F, 3]``.
    """
    import trimesh

    if tuple(kpt7.shape) != (7, 3):
        raise ValueError(f"kpt7 must have shape [7, 3], got {list(kpt7.shape)}")
    base = os.path.join(os.fspath(root), os.fspath(stem))
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    verts = vertices.detach().cpu().double().numpy() * scale
    trimesh.Trimesh(vertices=verts, faces=np.asarray(torch.as_tensor(faces).cpu().numpy(), dtype=np.int64),
                    process=False).export(base + ".obj")
    np.save(base + ".npy", kpt7.detach().cpu().double().numpy() * scale)
    return {"mesh": base + ".obj", "landmarks": base + ".npy"}


# --------------------------------------------------------------------------- #
# Preprocessing (PIPELINES.md §6.1)                                           #
# --------------------------------------------------------------------------- #
def load_keypoints(path) -> np.ndarray:
    """Read 5 keypoints ``[5, 2]`` (pixels; ArcFace order: eyes, nose, mouth corners) from
    ``.npy`` or a text file of 5 lines ``x y``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"keypoint file not found: {path}")
    try:
        array = np.load(path) if path.endswith(".npy") else np.loadtxt(path, ndmin=2)
    except Exception as error:
        raise ValueError(f"{path}: cannot read keypoints ({error})") from error
    array = np.asarray(array, dtype=np.float64).reshape(-1, array.shape[-1]) if np.ndim(array) else array
    if array.shape != (5, 2):
        raise ValueError(f"{path}: expected 5 keypoints [5, 2], got shape {list(np.shape(array))}")
    return array


def align(image, keypoints, image_size: int = 112) -> np.ndarray:
    """ArcFace alignment ``[S, S, 3]`` uint8: insightface ``norm_crop`` when ``image_size`` is a
    multiple of 112 or 128 (the authors' sizes); otherwise (smoke configurations at a low
    resolution, e.g. 64: not the authors') the 112 template's similarity scaled by
    ``image_size / 112``, i.e. the 112 crop sampled on an ``S x S`` grid, with the same warp."""
    from facegeom.data._image import cv2_warp_affine
    from facegeom.data.arcface import estimate_norm, norm_crop

    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if image_size % 112 == 0 or image_size % 128 == 0:
        return norm_crop(image, keypoints, image_size=image_size)
    M = estimate_norm(keypoints, 112) * (image_size / 112.0)
    return cv2_warp_affine(np.asarray(image), M, (image_size, image_size), border_value=0.0)


def preprocess(image_bgr, keypoints, image_size: int = 112) -> Tensor:
    """ArcFace alignment (insightface ``norm_crop``) from 5 keypoints and MICA's blob:
    ``[1, 3, S, S]`` RGB in [-1, 1] (``MICA:datasets/creation/util.py:27-45``).

    Args:
        image_bgr: ``[H, W, 3]`` uint8, BGR as cv2 reads it.
        keypoints: ``[5, 2]`` array or a file for :func:`load_keypoints`.
    """
    if isinstance(keypoints, (str, os.PathLike)):
        keypoints = load_keypoints(keypoints)
    aligned = align(image_bgr, keypoints, image_size)
    rgb = np.ascontiguousarray(aligned[..., ::-1]).astype(np.float32)
    blob = (rgb - np.float32(127.5)) * np.float32(1.0 / 127.5)
    return torch.from_numpy(np.ascontiguousarray(blob.transpose(2, 0, 1)))[None]


def detect_keypoints(image_bgr) -> np.ndarray:
    """5 keypoints of the face closest to the image centre with insightface ``antelopev2``
    (``MICA:demo.py:51-95``). Needs the optional ``insightface`` package and its models."""
    try:
        from insightface.app import FaceAnalysis  # type: ignore
    except ImportError as error:
        raise ImportError("face detection needs the optional 'insightface' package (pip install insightface "
                          "onnxruntime); or give the 5 keypoints in a file (load_keypoints / --keypoints)") from error
    app = FaceAnalysis(name="antelopev2", providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=0, det_size=(224, 224))
    boxes, kps = app.det_model.detect(image_bgr, max_num=0, metric="default")
    if boxes is None or len(boxes) == 0:
        raise ValueError("no face detected")
    centre = np.array(image_bgr.shape[:2][::-1], dtype=np.float64) / 2
    centres = (boxes[:, :2] + boxes[:, 2:4]) / 2
    return np.asarray(kps[int(np.argmin(((centres - centre) ** 2).sum(1)))], dtype=np.float64)


# --------------------------------------------------------------------------- #
# Training method (facegeom.train)                                             #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class MICAConfig:
    """MICA's settings (authors' defaults: ``configs/mica.yml``, PIPELINES.md §6.5).

    ``arch``: ``"iresnet100"`` (MICA), ``"iresnet50"``, or ``"tiny"`` (an IResNet ``[1,1,1,1]``,
    tests only). ``flame``: path of ``generic_model.pkl`` or ``None`` for the synthetic head.
    ``landmark_embedding``: ``landmark_embedding.npy`` for ``flame`` (kpt7 / kpt68 outputs).
    ``masks``: ``FLAME_masks.pkl`` or ``None`` (no region weights, ``use_mask=False``).
    ``identities`` x ``images_per_identity`` images make one batch element group: a dataset
    item is one identity with K images (the loop's ``batch_size`` counts identities).
    ``input_size``: the ArcFace input side, a multiple of 16 (the authors: 112); sizes off the
    112 / 128 grid (smoke runs at 32-64 px) use :func:`align`.
    """

    arch: str = "iresnet100"
    input_size: int = 112
    render_size: int = 224
    n_shape: int = 300
    mapping_layers: int = 3
    flame: Optional[str] = None
    landmark_embedding: Optional[str] = None
    masks: Optional[str] = None
    lr: float = 1e-5
    arcface_lr: float = 1e-5
    weight_decay: float = 2e-4
    images_per_identity: int = 2
    # The authors freeze conv1..layer3 of a Glint360K-trained ArcFace. From random weights (no
    # pretrained file, synthetic runs) a frozen random stem gives no identity features (a ridge
    # probe barely beats the mean shape: benchmarks/mica_probe.py, docs/benchmarks.md), so
    # freeze_stem=False trains it.
    freeze_stem: bool = True
    num_identities: int = 512
    val_identities: int = 16
    synthetic_n_shape: int = 50
    # Smoke-configuration choices for ``--data synthetic`` (not the authors'): the synthetic
    # identities' shape codes N(0, synthetic_shape_std^2) with only the leading
    # ``synthetic_shape_components`` kept (None: all; SyntheticConfig.shape_components).
    synthetic_shape_components: Optional[int] = None
    synthetic_shape_std: float = 1.0

    def __post_init__(self):
        _checks.optional_count("synthetic_shape_components", self.synthetic_shape_components)
        if not self.synthetic_shape_std >= 0:
            raise ValueError(f"synthetic_shape_std must be >= 0, got {self.synthetic_shape_std!r}")

    @classmethod
    def tiny(cls) -> "MICAConfig":
        return cls(arch="tiny", input_size=112, render_size=112, n_shape=50, num_identities=8,
                   val_identities=2, lr=1e-4, arcface_lr=1e-4)


def _build_flame(config: MICAConfig):
    if config.flame:
        from facegeom.models import FLAME

        return FLAME.from_file(config.flame, n_shape=config.n_shape, n_exp=100,
                               landmark_embedding=config.landmark_embedding, dtype=torch.float32)
    from facegeom.models import synthetic_head

    return synthetic_head(n_shape=config.synthetic_n_shape, n_exp=1, n_tex=1, dtype=torch.float32)


class _IdentityGroups(torch.utils.data.Dataset):
    """One item = one synthetic identity: K ArcFace crops aligned from the rendered 5 keypoints
    plus the identity's shape code (``MICA:datasets/base.py:82-125``)."""

    def __init__(self, faces, k: int, input_size: int):
        self.faces, self.k, self.input_size = faces, k, input_size

    def __len__(self):
        return len(self.faces) // self.k

    def __getitem__(self, i):
        crops, shape = [], None
        for j in range(self.k):
            s = self.faces[i * self.k + j]
            rgb = (s["image"].permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            aligned = align(rgb, s["keypoints5"].numpy(), self.input_size)  # RGB kept
            crops.append(torch.from_numpy((aligned.astype(np.float32) - 127.5) / 127.5).permute(2, 0, 1))
            shape = s["params"]["shape"]
        return {"arcface": torch.stack(crops), "shape": shape.to(torch.float32)}


@training.register("mica")
class MICAMethod:
    """``facegeom train --method mica``: MICA's masked vertex loss on identity groups."""

    name = "mica"
    Config = MICAConfig
    val_metric, val_mode = "loss", "min"
    manual_optimization = False

    def build_model(self, config: MICAConfig) -> MICA:
        if config.arch == "iresnet100":
            net = iresnet100(input_size=config.input_size)
        elif config.arch == "iresnet50":
            net = iresnet50(input_size=config.input_size)
        elif config.arch == "tiny":
            net = IResNet([1, 1, 1, 1], input_size=config.input_size)
        else:
            raise ValueError(f"arch must be 'iresnet100', 'iresnet50' or 'tiny', got {config.arch!r}")
        flame = _build_flame(config)
        model = MICA(flame, net, n_shape=min(config.n_shape, flame.n_shape), mapping_layers=config.mapping_layers)
        if not config.freeze_stem:
            for name in FROZEN:
                getattr(model.arcface, name).requires_grad_(True)
        weights = None
        if config.masks:
            from facegeom.models.flame import load_flame_masks

            masks = load_flame_masks(config.masks, flame.num_vertices)
            weights = mica_loss.weights_per_vertex(masks, flame.num_vertices)
        model.register_buffer("loss_weights", weights, persistent=False)
        return model

    def optimizers(self, model, config):
        return {"adamw": optimizer(training.unwrap(model), config.lr, config.arcface_lr, config.weight_decay)}

    def dataset(self, config, data, split, seed):
        if data != "synthetic":
            raise ValueError(f"--data {data!r}: the mica method reads only 'synthetic' so far")
        if config.flame:
            raise ValueError("--data synthetic pairs with the synthetic head: leave the 'flame' setting empty "
                             "(the synthetic shape codes are not FLAME coefficients)")
        from facegeom.data.synthetic import SyntheticFaces

        count = (config.num_identities if split == "train" else config.val_identities) * config.images_per_identity
        faces = SyntheticFaces(num_samples=count, image_size=config.render_size,
                               seed=seed if split == "train" else seed + 1_000_003,
                               images_per_identity=config.images_per_identity, mask=None,
                               n_shape=config.synthetic_n_shape, n_exp=1, n_tex=1,
                               shape_components=config.synthetic_shape_components,
                               shape_std=config.synthetic_shape_std)
        return _IdentityGroups(faces, config.images_per_identity, config.input_size)

    @staticmethod
    def _loss(model, batch):
        core = training.unwrap(model)
        images = batch["arcface"].flatten(0, 1)  # [B*K, 3, S, S]
        k = batch["arcface"].shape[1]
        shape = batch["shape"].repeat_interleave(k, 0)
        with torch.no_grad():
            target = core.flame(shape=shape.to(core.flame.v_template.dtype)).vertices
        output = model(images)
        return losses(output, target, core.loss_weights), output, target

    def training_step(self, model, batch, optimizers):
        return self._loss(model, batch)[0]

    def validation_step(self, model, batch):
        """The loss, and on held-out identities ``vertex_mm``: the mean per-vertex distance (mm)
        between the predicted and true neutral shapes, ``mean_shape_mm``: the same for the mean
        shape (zero code), the baseline a regressor must beat."""
        terms, output, target = self._loss(model, batch)
        mean_shape = training.unwrap(model).flame.v_template[None]
        return {"loss": terms["total"], "vertex_mm": vertex_error_mm(output["vertices"], target),
                "mean_shape_mm": vertex_error_mm(mean_shape.expand_as(target), target)}


def vertex_error_mm(vertices: Tensor, target: Tensor) -> Tensor:
    """Mean per-vertex Euclidean distance in millimetres between ``[B, V, 3]`` meshes in metres
    (no alignment: MICA's canonical frame)."""
    return 1000.0 * (vertices - target).norm(dim=-1).mean()


Config = MICAConfig  # API.md §7: every pipeline module exposes ``Config``


# --------------------------------------------------------------------------- #
# facegeom reconstruct (API.md §7; the authors' demo: MICA:demo.py:51-140)     #
# --------------------------------------------------------------------------- #
def keypoints5(landmarks) -> np.ndarray:
    """ArcFace's 5 keypoints ``[5, 2]`` from a sidecar's 5 points (returned as they are) or 68
    iBUG landmarks (Deep3D's ``extract_5p``: eye centres, nose tip, mouth corners — the order
    of ``ARCFACE_TEMPLATE``)."""
    from facegeom.data.synthetic import extract_5p

    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (5, 2):
        return lm
    if lm.shape == (68, 2):
        return extract_5p(torch.from_numpy(lm)).numpy()
    raise ValueError(f"landmarks must be [5, 2] or [68, 2] pixels, got {list(lm.shape)}")


def reconstructor(checkpoint, assets, options=None):
    """``facegeom reconstruct --method mica`` (:mod:`facegeom.reconstruct`).

    Args:
        checkpoint: the authors' ``mica.tar`` or ``facegeom train --method mica``'s ``final.pt``
            (:func:`load_checkpoint`).
        assets: a folder with FLAME 2020 ``generic_model.pkl`` and ``landmark_embedding.npy``
            (MICA's ``data/FLAME2020``), or ``"synthetic"`` (the synthetic head of
            ``--data synthetic``).
        options: ``tiny`` (:meth:`MICAConfig.tiny`'s network), ``device``.

    Returns ``reconstruct(image [H, W, 3] uint8 RGB, landmarks [5|68, 2]) -> Reconstruction``:
    the 5 ArcFace keypoints (:func:`keypoints5`) -> :func:`preprocess` (``norm_crop`` 112, blob)
    -> :class:`MICA`; as ``MICA:demo.py:121-140``, in **millimetres**:

    - mesh: the canonical shape (zero expression and pose);
    - params: ``identity`` ``[n_shape]`` (the shape code), ``kpt7`` ``[7, 3]``, ``kpt68``
      ``[1, 68, 3]`` (mm, the demo's arrays);
    - ``<stem>.npy``: ``kpt7``, the NoW landmarks (``facegeom now-eval --predictions OUT``;
      ``--metrical --unit mm`` for the metrical protocol);
    - overlay: the mesh rendered over the image with the weak-perspective camera that puts its
      5 keypoints (x, y of the canonical, frontal mesh) on the given ones (a visual check only:
      MICA predicts no pose).
    """
    import dataclasses

    from facegeom import reconstruct as R
    from facegeom.data.synthetic import extract_5p

    options = dict(options or {})
    config = MICAConfig.tiny() if options.get("tiny") else MICAConfig()
    R.require("mica", checkpoint, assets, "mica.tar or facegeom train's final.pt",
              "a folder with generic_model.pkl and landmark_embedding.npy (FLAME 2020), or 'synthetic'")
    if assets != "synthetic":
        names = [os.path.join(os.fspath(assets), n) for n in ("generic_model.pkl", "landmark_embedding.npy")]
        for path in names:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--assets {assets}: no {os.path.basename(path)} in it")
        config = dataclasses.replace(config, flame=names[0], landmark_embedding=names[1])
    model = MICAMethod().build_model(config)
    load_checkpoint(model, checkpoint)
    device = R.device(options)
    model = model.to(device).eval()
    faces = model.flame.faces.long().cpu().numpy()

    @torch.no_grad()
    def reconstruct(image, landmarks) -> "R.Reconstruction":
        pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {list(pixels.shape)}")
        kps = keypoints5(landmarks)
        crop = preprocess(pixels[..., ::-1], kps, image_size=config.input_size).to(device)  # BGR in, as cv2
        out = model(crop)
        if "kpt7" not in out:
            raise ValueError("the FLAME model has no landmark embedding: NoW landmarks need landmark_embedding.npy")
        mm = {"vertices": out["vertices"][0].double().cpu() * 1000.0, "kpt7": out["kpt7"][0].double().cpu() * 1000.0,
              "kpt68": out["landmarks3d"][:1].double().cpu() * 1000.0}
        params = {"identity": out["shape"][0].cpu().numpy(), "kpt7": mm["kpt7"].numpy(), "kpt68": mm["kpt68"].numpy()}
        size = pixels.shape[:2]
        cam = R.fit_weak_perspective(extract_5p(mm["kpt68"][0]).numpy(), kps, size)
        rgb, mask = R.shaded_render(mm["vertices"], faces, cam, size)
        overlay = np.where(mask[..., None], rgb, pixels).astype(np.uint8)
        kpt7 = params["kpt7"]
        return R.Reconstruction(mm["vertices"].numpy(), faces, params, overlay,
                                extra={".npy": lambda path: np.save(path, kpt7)})

    return reconstruct


try:
    from facegeom import reconstruct as _reconstruct

    _reconstruct.register("mica", reconstructor)
except ImportError:  # pragma: no cover - same package
    pass
