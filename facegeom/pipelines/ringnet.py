"""RingNet (Sanyal et al. 2019): image -> ResNet-50 -> IEF regressor -> FLAME (PIPELINES.md §3).

The authors released inference only (a TF1 graph, ``RN:run_RingNet.py:57-95``); this module
is a PyTorch reimplementation that can be trained (:class:`RingNetMethod`).

- Encoder: ResNet-50, 2048-d pooled feature. **Deviation (documented)**: the torchvision
  v1.5 layout of :func:`facegeom.nets.resnet50`; the paper cites a pre-activation ResNet
  (v2, HMR's ``resnet_v2_50``), and the released TF1 graph cannot be loaded here.
- Regressor (IEF, paper §3.2 / HMR, **[INFERRED]** details in PIPELINES.md §3.2):
  ``[feature, theta_t]`` -> FC 512 + ReLU + dropout(0.5) -> FC 512 + ReLU + dropout ->
  FC ``n_params`` (init ``variance_scaling(0.01, fan_avg, uniform)``);
  ``theta_{t+1} = theta_t + delta``, 3 iterations, from ``theta_0`` (``theta_init``):
  ``"zero"`` (paper §3.2) or ``"hmr"``: HMR's mean-parameter start, a scale that makes the
  mean model fill the crop and global rotation ``(pi, 0, 0)`` "so the pose is up-right when
  projected" (``akanazawa/hmr@f149abe:src/trainer.py:179-193,216``: scale 0.9 for SMPL's
  ~1.7 m body; here ``1 / h`` with ``h`` the height of the mean face's 68 landmarks, so they
  span half the crop) — **[INFERRED]** for RingNet, whose files say they are based on HMR.
  The release's frame is y down, so from ``theta_0 = 0`` a network must learn a 180-degree
  turn and a scale before any landmark gradient reaches the shape (it inflates shape and
  expression instead); training (:class:`RingNetConfig`) uses ``"hmr"``. ``theta_0`` is the
  persistent buffer ``regressor.initial``, so a checkpoint carries its start.
- Output layout (``RN:demo.py:128,140-141``, §3.3): ``cam 3 | pose 6 (global, jaw) |
  shape | expression`` (159 = 3 + 6 + 100 + 50 for FLAME 2019).
- Weak-perspective camera (§3.4): ``n = s * (xy + t)`` compared with landmarks normalised to
  [-1, 1] (y down; the global rotation absorbs FLAME's y-up flip, as the release).
- Preprocessing (``RN:demo.py:102-120``, ``util/image.py:28-62``): :func:`loose_crop`.
- NoW export (``RN:util/using_flame_parameters.py:27-48``): :func:`neutral_vertices` (zero
  pose and expression, shape padded with zeros to the model's size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor, nn

from facegeom import _checks
from facegeom import train as training
from facegeom.cameras import WeakPerspective
from facegeom.eval.now import NOW_LANDMARKS_68
from facegeom.losses import ringnet as ring_losses
from facegeom.nets.resnet import resnet18, resnet50

__all__ = ["IEFRegressor", "RingNet", "split_params", "loose_crop", "preprocess", "neutral_vertices", "now_prediction",
           "load_checkpoint", "RingNetConfig", "RingNetMethod", "Config", "crop_to_image", "reconstructor",
           "ring_separation"]


THETA_INITS = ("zero", "hmr")


def split_params(theta: Tensor, n_shape: int, n_exp: int) -> Dict[str, Tensor]:
    """``[B, 9 + n_shape + n_exp]`` -> ``cam [B, 3]``, ``pose [B, 6]`` (global, jaw),
    ``shape [B, n_shape]``, ``expression [B, n_exp]`` (``RN:demo.py:140-141``)."""
    if theta.dim() != 2 or theta.shape[1] != 9 + n_shape + n_exp:
        raise ValueError(f"theta must have shape [B, {9 + n_shape + n_exp}], got {list(theta.shape)}")
    return {"cam": theta[:, :3], "pose": theta[:, 3:9], "shape": theta[:, 9:9 + n_shape],
            "expression": theta[:, 9 + n_shape:]}


class IEFRegressor(nn.Module):
    """Iterative error feedback (HMR ``Encoder_fc3_dropout``, PIPELINES.md §3.2).

    Forward: ``feature [B, in_features]`` -> list of ``iterations`` estimates ``[B, n_params]``
    (the last is the prediction), starting from ``initial`` (``theta_0 [n_params]``, default 0)."""

    def __init__(self, in_features: int = 2048, n_params: int = 159, iterations: int = 3, dropout: float = 0.5,
                 hidden: int = 512, initial: Optional[Tensor] = None):
        super().__init__()
        for name, v in (("in_features", in_features), ("n_params", n_params), ("iterations", iterations)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.n_params, self.iterations = n_params, iterations
        self.fc1 = nn.Linear(in_features + n_params, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, n_params)
        self.dropout = nn.Dropout(dropout)
        limit = math.sqrt(3.0 * 0.01 / ((hidden + n_params) / 2.0))  # variance_scaling(0.01, FAN_AVG, uniform)
        nn.init.uniform_(self.fc3.weight, -limit, limit)
        nn.init.zeros_(self.fc3.bias)
        initial = torch.zeros(n_params) if initial is None else torch.as_tensor(initial, dtype=torch.float32)
        if initial.shape != (n_params,):
            raise ValueError(f"initial must have shape [{n_params}], got {list(initial.shape)}")
        self.register_buffer("initial", initial.clone())

    def forward(self, feature: Tensor):
        theta = self.initial.to(feature.dtype).expand(feature.shape[0], -1)
        estimates = []
        for _ in range(self.iterations):
            h = self.dropout(torch.relu(self.fc1(torch.cat([feature, theta], 1))))
            h = self.dropout(torch.relu(self.fc2(h)))
            theta = theta + self.fc3(h)
            estimates.append(theta)
        return estimates


class RingNet(nn.Module):
    """Encoder + IEF regressor + fixed FLAME decoder.

    Args:
        flame: :class:`facegeom.models.FLAME` with a landmark embedding (FLAME 2019, 100 shape
            / 50 expression for the paper; :func:`facegeom.models.synthetic_head` in tests).
        encoder: a :class:`facegeom.nets.ResNet` without ``fc`` (default ResNet-50).
        theta_init: ``"zero"`` (paper) or ``"hmr"`` (HMR's start; see the module docstring).

    Forward: ``images [B, 3, S, S]`` (RGB in [-1, 1]) -> dict with ``theta``, ``cam``, ``pose``,
    ``shape``, ``expression``, ``vertices [B, V, 3]``, ``landmarks3d [B, 68, 3]`` (17 dynamic
    contour + 51 static, iBUG order) and ``landmarks [B, 68, 2]`` (weak perspective, normalised).
    """

    def __init__(self, flame, encoder: Optional[nn.Module] = None, iterations: int = 3, dropout: float = 0.5,
                 theta_init: str = "zero"):
        super().__init__()
        if not flame.has_landmarks:
            raise ValueError("flame needs a landmark embedding (RingNet's loss uses 68 landmarks)")
        if theta_init not in THETA_INITS:
            raise ValueError(f"theta_init must be one of {THETA_INITS}, got {theta_init!r}")
        self.encoder = encoder if encoder is not None else resnet50(num_classes=None)
        self.n_shape, self.n_exp = flame.n_shape, flame.n_exp
        initial = torch.zeros(9 + self.n_shape + self.n_exp)
        if theta_init == "hmr":  # akanazawa/hmr@f149abe:src/trainer.py:179-193, scaled to the face model
            with torch.no_grad():
                mean_landmarks = flame().landmarks2d[0, :, 1]
            initial[0] = 1.0 / float(mean_landmarks.max() - mean_landmarks.min())
            initial[3] = math.pi
        self.regressor = IEFRegressor(self.encoder.num_features, 9 + self.n_shape + self.n_exp, iterations, dropout,
                                      initial=initial)
        self.flame = flame
        self.flame.requires_grad_(False)

    def forward(self, images: Tensor) -> Dict[str, Tensor]:
        feature = torch.flatten(self.encoder(images), 1)
        theta = self.regressor(feature)[-1]
        out = split_params(theta, self.n_shape, self.n_exp)
        dtype = self.flame.v_template.dtype
        decoded = self.flame(shape=out["shape"].to(dtype), expression=out["expression"].to(dtype),
                             pose=out["pose"].to(dtype))
        out.update(theta=theta, vertices=decoded.vertices, landmarks3d=decoded.landmarks2d)
        out["landmarks"] = WeakPerspective(out["cam"].to(dtype)).normalized(decoded.landmarks2d)[..., :2]
        return out


def neutral_vertices(flame, shape: Tensor) -> Tensor:
    """NoW mesh: FLAME with the predicted shape, zero pose and expression; a shorter code
    is padded with zeros to the model's ``n_shape`` (300 for the NoW export)."""
    return flame(shape=shape.to(flame.v_template.dtype)).vertices


def now_prediction(flame, shape: Tensor) -> Dict[str, Tensor]:
    """The NoW export of a prediction: :func:`neutral_vertices` and its 7 NoW landmarks
    (68-indices 36, 39, 42, 45, 33, 48, 54 of the neutral mesh's ``landmarks3d``), metres.
    Write them with :func:`facegeom.pipelines.mica.write_now` (``scale=1``: metres, or 1000)."""
    out = flame(shape=shape.to(flame.v_template.dtype))
    if out.landmarks3d is None:
        raise ValueError("flame needs the full 68-landmark embedding for the NoW landmarks")
    return {"vertices": out.vertices, "kpt7": out.landmarks3d[:, list(NOW_LANDMARKS_68)]}


def loose_crop(img: np.ndarray, img_size: int = 224) -> np.ndarray:
    """RingNet's preprocessing (``RN:demo.py:102-120``, ``util/image.py:28-62``): scale so the
    longer side is ``img_size`` (bilinear, sizes floored), edge-pad by ``img_size / 2``, crop
    ``img_size`` around the (rounded) image centre, map to ``2 * (x / 255 - 0.5)``.

    Args:
        img: ``[H, W, 3]`` uint8 RGB.
    Returns:
        ``[img_size, img_size, 3]`` float64 in [-1, 1] (NHWC as the release; permute for torch).
    """
    from facegeom.data._image import as_uint8_image, cv2_resize

    img = as_uint8_image("img", img)
    h, w = img.shape[:2]
    scale = float(img_size) / max(h, w) if max(h, w) != img_size else 1.0
    center = np.round(np.array([h, w]) / 2).astype(int)[::-1]  # (x, y)
    new_size = np.floor(np.array([h, w]) * scale).astype(int)
    scaled = cv2_resize(img, (int(new_size[1]), int(new_size[0])))
    factors = np.array([new_size[1] / float(w), new_size[0] / float(h)])
    center_scaled = np.round(center * factors).astype(int)
    margin = img_size // 2
    padded = np.pad(scaled, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
    start = center_scaled  # center_pad - margin
    crop = padded[start[1]:start[1] + 2 * margin, start[0]:start[0] + 2 * margin]
    return 2.0 * (crop / 255.0 - 0.5)


def preprocess(image: np.ndarray, img_size: int = 224) -> Tensor:
    """:func:`loose_crop` as a network input ``[1, 3, S, S]`` float32 (RGB in [-1, 1])."""
    crop = loose_crop(image, img_size)
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32))[None]


def load_checkpoint(model: RingNet, path) -> RingNet:
    """Load facegeom's own ``final.pt`` of this method (the model's state dict). The authors'
    release is a TF1 graph and cannot be loaded (API.md §7)."""
    import os

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"RingNet checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable torch checkpoint of tensors ({error})") from error
    if not isinstance(state, dict) or not any(str(k).startswith("regressor.") for k in state):
        raise ValueError(f"{path}: not a facegeom RingNet state dict (no 'regressor.*' keys); the authors' "
                         f"TF1 release cannot be loaded")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path}: does not fit the model: {error}") from error
    return model


# --------------------------------------------------------------------------- #
# Training (facegeom.train)                                                    #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class RingNetConfig:
    """RingNet settings (paper §3.5-3.6, PIPELINES.md §3.6): Adam, lr 1e-4, R = 6, eta 0.5,
    lambda_proj 60, shape / expression L2 1e-4. A dataset item is one ring (R images); the
    loop's ``batch_size`` counts rings (``n_b``). ``arch``: ``"resnet50"`` or ``"resnet18"``
    (tiny). Synthetic data uses the synthetic head with ``n_shape`` / ``n_exp`` components;
    ``shape_std`` / ``shape_components`` set its identity distribution (the convergence run,
    ``benchmarks/converge_regressors.py --method ringnet``, uses 3 components of std 8 and
    ``dropout=0.0`` so that the shape is visible at 64 px and the codes are not dropout-noisy:
    docs/benchmarks.md, "Regressors on synthetic identities")."""

    arch: str = "resnet50"
    image_size: int = 224
    ring_size: int = 6
    eta: float = 0.5
    include_diagonal: bool = True
    lambda_proj: float = 60.0
    lambda_shape: float = 1e-4
    lambda_exp: float = 1e-4
    lr: float = 1e-4
    iterations: int = 3
    dropout: float = 0.5
    # HMR's start (the mean face fills the crop, global rotation pi about x) [INFERRED]; "zero": paper
    theta_init: str = "hmr"
    n_shape: int = 100
    n_exp: int = 50
    num_rings: int = 1024
    val_rings: int = 16
    # synthetic data (SyntheticConfig): identity shape ~ N(0, shape_std^2) on the leading
    # shape_components coefficients (None: all n_shape); smoke-configuration choices
    shape_std: float = 1.0
    shape_components: Optional[int] = None
    cache_rings: bool = False  # keep rendered rings in memory (small synthetic runs)

    def __post_init__(self):
        _checks.optional_count("shape_components", self.shape_components)
        if not self.shape_std >= 0:
            raise ValueError(f"shape_std must be >= 0, got {self.shape_std!r}")

    @classmethod
    def tiny(cls) -> "RingNetConfig":
        return cls(arch="resnet18", image_size=64, ring_size=3, n_shape=10, n_exp=5, num_rings=8, val_rings=2)


class _Rings(torch.utils.data.Dataset):
    """Ring ``i``: ``R - 1`` images of synthetic identity ``i`` + the first image of identity
    ``i + 1`` (another identity), with normalised landmarks (y down). ``cache``: keep each
    rendered ring in memory (the samples are deterministic, so only the rendering time changes)."""

    def __init__(self, faces, ring_size: int, num_rings: int, cache: bool = False):
        self.faces, self.R, self.num = faces, ring_size, num_rings
        self.cache = {} if cache else None

    def __len__(self):
        return self.num

    def __getitem__(self, i):
        if self.cache is None:
            return self._render(i)
        if i not in self.cache:
            self.cache[i] = self._render(i)
        return self.cache[i]

    def _render(self, i):
        k = self.R - 1
        indices = [i * k + j for j in range(k)] + [((i + 1) % (self.num + 1)) * k]
        images, landmarks, identity = [], [], []
        for index in indices:
            s = self.faces[index]
            size = s["image"].new_tensor([s["image"].shape[-1], s["image"].shape[-2]])
            images.append(s["image"] * 2.0 - 1.0)
            landmarks.append((s["landmarks"] + 0.5) / size * 2 - 1)
            identity.append(s["identity"])
        return {"image": torch.stack(images), "landmarks": torch.stack(landmarks), "identity": torch.stack(identity)}


@training.register("ringnet")
class RingNetMethod:
    """``facegeom train --method ringnet``: ring loss + landmark L1 + regularisers (eq. 8)."""

    name = "ringnet"
    Config = RingNetConfig
    val_metric, val_mode = "loss", "min"
    manual_optimization = False

    def build_model(self, config: RingNetConfig) -> RingNet:
        from facegeom.models import synthetic_head

        if config.arch not in ("resnet50", "resnet18"):
            raise ValueError(f"arch must be 'resnet50' or 'resnet18', got {config.arch!r}")
        encoder = (resnet50 if config.arch == "resnet50" else resnet18)(num_classes=None)
        flame = synthetic_head(n_shape=config.n_shape, n_exp=config.n_exp, n_tex=1, dtype=torch.float32)
        model = RingNet(flame, encoder, config.iterations, config.dropout, config.theta_init)
        model.loss_config = config  # read by the steps (a frozen dataclass, not a module)
        return model

    def optimizers(self, model, config):
        params = [p for p in training.unwrap(model).parameters() if p.requires_grad]
        return {"adam": torch.optim.Adam(params, lr=config.lr)}

    def dataset(self, config, data, split, seed):
        if data != "synthetic":
            raise ValueError(f"--data {data!r}: the ringnet method reads only 'synthetic' so far")
        from facegeom.data.synthetic import SyntheticFaces

        rings = config.num_rings if split == "train" else config.val_rings
        k = config.ring_size - 1
        faces = SyntheticFaces(num_samples=(rings + 1) * k, image_size=config.image_size,
                               seed=seed if split == "train" else seed + 1_000_003, images_per_identity=k,
                               mask=None, n_shape=config.n_shape, n_exp=config.n_exp, n_tex=1,
                               shape_std=config.shape_std, shape_components=config.shape_components)
        return _Rings(faces, config.ring_size, rings, cache=config.cache_rings)

    @staticmethod
    def _losses(model, batch):
        config = training.unwrap(model).loss_config
        n_b, R = batch["image"].shape[:2]
        out = model(batch["image"].flatten(0, 1))
        terms = ring_losses.total_loss(
            out["shape"].view(n_b, R, -1), out["landmarks"].float(), batch["landmarks"].flatten(0, 1).float(), None,
            out["expression"], {"proj": config.lambda_proj, "shape": config.lambda_shape, "exp": config.lambda_exp},
            include_diagonal=config.include_diagonal, eta=config.eta)
        return terms, out["shape"].view(n_b, R, -1)

    def training_step(self, model, batch, optimizers):
        return self._losses(model, batch)[0]

    def validation_step(self, model, batch):
        """The losses, and on held-out rings :func:`ring_separation`'s ``same_sq``, ``other_sq``
        and ``separated`` (the fraction of triplets apart by the margin)."""
        terms, shape = self._losses(model, batch)
        terms["loss"] = terms.pop("total")
        terms.update(ring_separation(shape, training.unwrap(model).loss_config.eta))
        return terms


def ring_separation(shape: Tensor, eta: float = ring_losses.RING_ETA) -> Dict[str, Tensor]:
    """How well shape codes separate identities on rings ``[n_b, R, D]`` (elements ``0..R-2``
    one identity, ``R-1`` another; the layout of :func:`facegeom.losses.ringnet.ring_loss`):

    - ``same_sq``: mean ``||b_ij - b_ik||^2`` over same-identity pairs ``j != k``;
    - ``other_sq``: mean ``||b_ij - b_iR||^2`` (to the other identity);
    - ``separated``: the fraction of triplets ``(i, j, k)``, ``j != k``, with
      ``||b_ij - b_ik||^2 + eta < ||b_ij - b_iR||^2`` (the ring loss's hinge is inactive).
    """
    if shape.dim() != 3 or shape.shape[1] < 3:
        raise ValueError(f"shape must be [n_b, R >= 3, D], got {list(shape.shape)}")
    same, other = shape[:, :-1].double(), shape[:, -1:].double()
    d_same = ((same[:, :, None] - same[:, None, :]) ** 2).sum(-1)  # [n_b, R-1, R-1]
    d_other = ((same - other) ** 2).sum(-1)  # [n_b, R-1]
    off = ~torch.eye(same.shape[1], dtype=torch.bool, device=shape.device)
    pairs = d_same[:, off]  # [n_b, (R-1)(R-2)] ordered pairs j != k
    gaps = (d_other[:, :, None] - d_same - eta)[:, off]
    return {"same_sq": pairs.mean(), "other_sq": d_other.mean(), "separated": (gaps > 0).double().mean()}


Config = RingNetConfig  # API.md §7: every pipeline module exposes ``Config``


# --------------------------------------------------------------------------- #
# facegeom reconstruct (API.md §7; the authors' demo: RN:demo.py:102-141)      #
# --------------------------------------------------------------------------- #
def _flame_from_assets(assets, n_shape: int, n_exp: int):
    """FLAME 2019 from a folder: ``generic_model.pkl`` with RingNet's embedding pair
    (``flame_static_embedding.pkl``, ``flame_dynamic_embedding.npy``) or ``landmark_embedding.npy``."""
    import os

    from facegeom.models import FLAME

    folder = os.fspath(assets)
    model = os.path.join(folder, "generic_model.pkl")
    if not os.path.isfile(model):
        raise FileNotFoundError(f"--assets {assets}: no generic_model.pkl in it")
    pair = [os.path.join(folder, n) for n in ("flame_static_embedding.pkl", "flame_dynamic_embedding.npy")]
    single = os.path.join(folder, "landmark_embedding.npy")
    if all(os.path.isfile(p) for p in pair):
        embedding = tuple(pair)
    elif os.path.isfile(single):
        embedding = single
    else:
        raise FileNotFoundError(f"--assets {assets}: no landmark embedding (flame_static_embedding.pkl + "
                                f"flame_dynamic_embedding.npy, or landmark_embedding.npy)")
    return FLAME.from_file(model, n_shape=n_shape, n_exp=n_exp, landmark_embedding=embedding, dtype=torch.float32)


def crop_to_image(crop_size: int, image_shape) -> tuple:
    """Where each pixel of the original image ``[H, W]`` falls in :func:`loose_crop`'s
    ``crop_size`` crop: ``(x [H, W], y [H, W])`` integer crop pixels (nearest; outside the
    crop when not in ``[0, crop_size)``). Used to paste a render of the crop back."""
    h, w = image_shape[:2]
    scale = float(crop_size) / max(h, w) if max(h, w) != crop_size else 1.0
    new_size = np.floor(np.array([h, w]) * scale).astype(int)
    factors = np.array([new_size[1] / float(w), new_size[0] / float(h)])
    centre = np.round(np.round(np.array([h, w]) / 2).astype(int)[::-1] * factors).astype(int)
    margin = crop_size // 2
    xs = np.floor((np.arange(w) + 0.5) * factors[0]).astype(int) - centre[0] + margin
    ys = np.floor((np.arange(h) + 0.5) * factors[1]).astype(int) - centre[1] + margin
    return np.broadcast_to(xs[None, :], (h, w)), np.broadcast_to(ys[:, None], (h, w))


def reconstructor(checkpoint, assets, options=None):
    """``facegeom reconstruct --method ringnet`` (:mod:`facegeom.reconstruct`).

    Args:
        checkpoint: ``facegeom train --method ringnet``'s ``final.pt`` (the authors' TF1 release
            cannot be loaded, :func:`load_checkpoint`).
        assets: ``"synthetic"`` (the synthetic head of ``--data synthetic``) or a folder with FLAME
            2019 ``generic_model.pkl`` and its landmark embedding (:func:`_flame_from_assets`).
        options: ``tiny`` (:meth:`RingNetConfig.tiny`), ``device``.

    As ``RN:demo.py``, the **whole image is the loose face crop** (:func:`preprocess`; crop a
    wide image around the face first, e.g. NoW's ``detected_face`` box); landmark sidecars are
    not needed (``needs_landmarks = False``) and are ignored. Returns ``reconstruct(image,
    landmarks) -> Reconstruction`` with, in metres (FLAME's unit, as the authors' NoW export):

    - mesh: the NoW mesh, :func:`now_prediction` (predicted shape, zero pose and expression,
      ``RN:util/using_flame_parameters.py:27-48``); ``<stem>.npy``: its 7 NoW landmarks;
    - params: ``theta cam pose shape expression`` and ``landmarks`` ``[68, 2]`` (crop pixels,
      y down), ``vertices_posed`` ``[V, 3]`` (the posed, expressive mesh);
    - overlay: the posed mesh rendered with the predicted weak-perspective camera in the crop,
      pasted back to the image (:func:`crop_to_image`).
    """
    from facegeom import reconstruct as R

    options = dict(options or {})
    config = RingNetConfig.tiny() if options.get("tiny") else RingNetConfig()
    R.require("ringnet", checkpoint, assets, "facegeom train --method ringnet's final.pt",
              "a folder with FLAME 2019 generic_model.pkl and its landmark embedding, or 'synthetic'")
    if assets == "synthetic":
        model = RingNetMethod().build_model(config)
    else:
        encoder = (resnet50 if config.arch == "resnet50" else resnet18)(num_classes=None)
        model = RingNet(_flame_from_assets(assets, config.n_shape, config.n_exp), encoder, config.iterations,
                        config.dropout, config.theta_init)
    load_checkpoint(model, checkpoint)
    device = R.device(options)
    model = model.to(device).eval()
    faces = model.flame.faces.long().cpu().numpy()
    size = config.image_size

    @torch.no_grad()
    def reconstruct(image, landmarks=None) -> "R.Reconstruction":
        pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        out = model(preprocess(pixels, size).to(device))
        now = now_prediction(model.flame, out["shape"])
        kpt7 = now["kpt7"][0].double().cpu().numpy()
        lm = ((out["landmarks"][0].double().cpu() + 1.0) * size / 2.0 - 0.5).numpy()  # y down, pixel centres
        params = {k: out[k][0].cpu().numpy() for k in ("theta", "cam", "pose", "shape", "expression")}
        params.update(landmarks=lm, vertices_posed=out["vertices"][0].cpu().numpy())
        # The release's frame is y down (the global rotation holds the flip): render (x, -y, -z),
        # the same image under WeakPerspective's y-up convention with ty negated.
        posed = out["vertices"][0].cpu() * torch.tensor([1.0, -1.0, -1.0])
        cam = out["cam"][0].double().cpu().numpy() * np.array([1.0, 1.0, -1.0])
        rgb, mask = R.shaded_render(posed, faces, cam, (size, size))
        xs, ys = crop_to_image(size, pixels.shape)
        inside = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
        xc, yc = xs.clip(0, size - 1), ys.clip(0, size - 1)
        use = inside & mask[yc, xc]
        overlay = np.where(use[..., None], rgb[yc, xc], pixels).astype(np.uint8)
        return R.Reconstruction(now["vertices"][0].double().cpu().numpy(), faces, params, overlay,
                                extra={".npy": lambda path: np.save(path, kpt7)})

    reconstruct.needs_landmarks = False
    return reconstruct


try:
    from facegeom import reconstruct as _reconstruct

    _reconstruct.register("ringnet", reconstructor)
except ImportError:  # pragma: no cover - same package
    pass
