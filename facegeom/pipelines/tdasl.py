"""2DASL (Tu et al. 2019; PIPELINES.md §4): 3DDFA v1's model folder, whitening, decoding,
the 4-channel ResNet-50 and the training method registered with :mod:`facegeom.train`.

- :class:`DDFAModel`: 3DDFA v1's ``train.configs`` folder as 2DASL decodes it
  (``2DASL:test_codes/ddfa_utils2.py:17-41``, ``3DDFA:utils/params.py:13-33``):
  ``u = u_shp + u_exp [3N, 1]``, ``w_shp_sim [3N, 40]``, ``w_exp_sim [3N, 10]``,
  ``keypoints_sim [204]`` (flat xyz indices), x/y/z interleaved per vertex. (3DDFA_V2's
  ``bfm_noneck_v3.pkl`` is :meth:`facegeom.models.BFM.from_3ddfa`.)
- :func:`load_whitening`: 3DDFA v1 ``param_whitening.pkl`` (``param_mean``/``param_std``)
  or 3DDFA_V2 ``param_mean_std_62d_120x120.pkl`` (``mean``/``std``); they differ.
- :func:`reconstruct_vertex` / :func:`to_original`: crop and original-image coordinates
  in either pixel base: ``"v1"`` = 3DDFA v1 / 2DASL ``y = 121 - y`` (1-based; x as is,
  ``3DDFA:utils/inference.py`` ``reconstruct_vertex``), ``"v2"`` = 3DDFA_V2
  ``similar_transform`` (``x - 1``, ``120 - y``, ``z - 1``; 0-based, facegeom's convention,
  :class:`facegeom.cameras.ScaledOrthographic`). The two differ by exactly 1 px in x and y.
- :func:`build_network` / :func:`load_checkpoint`: the released ``['res_state_dict']``.
- :class:`TDASL`: the method for ``facegeom train --method tdasl`` (manual optimisation:
  SGD regressor, Adam critic, paper §4.1; losses in :mod:`facegeom.losses.tdasl`; the
  landmark terms in crop widths, :attr:`Config.landmark_unit`, ``docs/tdasl.md``).
- :func:`reconstructor`: ``facegeom reconstruct --method tdasl`` (3DDFA v1 folder +
  ``tri.mat`` via :func:`load_triangles`, or the synthetic model).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from facegeom import _checks
from facegeom.losses import tdasl as L

__all__ = ["DDFAModel", "load_whitening", "reconstruct_vertex", "to_original", "PIXEL_BASES",
           "build_network", "load_checkpoint", "preprocess", "decode", "losses", "landmark_map", "Config", "TDASLModel", "SyntheticTDASL",
           "synthetic_model", "TDASL", "load_triangles", "reconstructor"]

PIXEL_BASES = ("v1", "v2")
STD_SIZE = 120


def _npy(folder: str, name: str) -> np.ndarray:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"3DDFA model folder {folder!r}: missing {name}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a plain .npy array ({exc})") from None


class DDFAModel(nn.Module):
    """3DDFA v1's linear model (buffers, so it moves with ``.to``).

    Attributes:
        u: ``[3N, 1]`` mean (``u_shp + u_exp``); w_shp ``[3N, 40]``; w_exp ``[3N, 10]``;
        keypoints: ``[204]`` int64 flat indices (x, y, z rows of the 68 landmark vertices).
    The ``*_base`` arrays of WPDC/VDC are rows ``keypoints`` (:attr:`u_base` etc.).
    """

    def __init__(self, u, w_shp, w_exp, keypoints, dtype=torch.float32):
        super().__init__()
        u = torch.as_tensor(np.asarray(u), dtype=dtype).reshape(-1, 1)
        w_shp = torch.as_tensor(np.asarray(w_shp), dtype=dtype)
        w_exp = torch.as_tensor(np.asarray(w_exp), dtype=dtype)
        kp = torch.as_tensor(np.asarray(keypoints).reshape(-1).astype(np.int64))
        n3 = u.shape[0]
        if n3 % 3:
            raise ValueError(f"u must have 3N entries, got {n3}")
        for name, w in (("w_shp", w_shp), ("w_exp", w_exp)):
            if w.dim() != 2 or w.shape[0] != n3:
                raise ValueError(f"{name} must be [3N={n3}, K], got {list(w.shape)}")
        if kp.numel() != 204 or kp.min() < 0 or kp.max() >= n3:
            raise ValueError(f"keypoints must be 204 flat indices in [0, {n3}), got {kp.numel()} "
                             f"in [{int(kp.min()) if kp.numel() else 0}, {int(kp.max()) if kp.numel() else 0}]")
        self.register_buffer("u", u)
        self.register_buffer("w_shp", w_shp)
        self.register_buffer("w_exp", w_exp)
        self.register_buffer("keypoints", kp)

    @classmethod
    def from_folder(cls, folder, dtype=torch.float32) -> "DDFAModel":
        """Read ``u_shp.npy``, ``u_exp.npy``, ``w_shp_sim.npy``, ``w_exp_sim.npy`` and
        ``keypoints_sim.npy`` from 3DDFA v1's / 2DASL's ``train.configs`` folder."""
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"3DDFA model folder not found: {folder!r}")
        u = _npy(folder, "u_shp.npy").astype(np.float64) + _npy(folder, "u_exp.npy").astype(np.float64)
        return cls(u, _npy(folder, "w_shp_sim.npy"), _npy(folder, "w_exp_sim.npy"),
                   _npy(folder, "keypoints_sim.npy"), dtype=dtype)

    @property
    def num_vertices(self) -> int:
        return self.u.shape[0] // 3

    @property
    def u_base(self) -> Tensor:
        return self.u[self.keypoints]

    @property
    def w_shp_base(self) -> Tensor:
        return self.w_shp[self.keypoints]

    @property
    def w_exp_base(self) -> Tensor:
        return self.w_exp[self.keypoints]

    def shape(self, params: Tensor, dense: bool = True) -> Tensor:
        """Unposed shape ``[B, 3, N or 68]`` of de-whitened ``params [B, 62]``."""
        _, _, a_shp, a_exp = L.parse_params(params)
        rows = slice(None) if dense else self.keypoints
        u, ws, we = self.u[rows].to(params), self.w_shp[rows].to(params), self.w_exp[rows].to(params)
        return (u + ws @ a_shp + we @ a_exp).reshape(params.shape[0], -1, 3).permute(0, 2, 1)

    def posed(self, params: Tensor, dense: bool = True) -> Tensor:
        """``fR @ shape + t`` ``[B, 3, N or 68]`` (3DDFA's crop space, y up, 1-based)."""
        p, offset, _, _ = L.parse_params(params)
        return p @ self.shape(params, dense) + offset


def load_whitening(path, dtype=torch.float32) -> Tuple[Tensor, Tensor]:
    """``(mean [62], std [62])`` from 3DDFA v1's ``param_whitening.pkl`` (keys ``param_mean``,
    ``param_std``; ``3DDFA:utils/params.py:17-20``) or 3DDFA_V2's
    ``param_mean_std_62d_120x120.pkl`` (keys ``mean``, ``std``; ``3DDFA_V2:TDDFA.py``).
    The files' values differ (V2 retrained); read the one matching the checkpoint."""
    from facegeom.models import _pickle

    source = os.fspath(path)
    data = _pickle.load(source)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a pickled dict with param_mean/param_std or mean/std")
    for km, ks in (("param_mean", "param_std"), ("mean", "std")):
        if km in data and ks in data:
            mean = np.asarray(data[km], dtype=np.float64).reshape(-1)
            std = np.asarray(data[ks], dtype=np.float64).reshape(-1)
            if mean.shape != (62,) or std.shape != (62,):
                raise ValueError(f"{source}: {km}/{ks} must have 62 entries, got {mean.shape}, {std.shape}")
            if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
                raise ValueError(f"{source}: {ks} must be finite and positive")
            return torch.as_tensor(mean, dtype=dtype), torch.as_tensor(std, dtype=dtype)
    raise ValueError(f"{source}: no 'param_mean'/'param_std' (3DDFA v1) or 'mean'/'std' (3DDFA_V2) keys; "
                     f"found {sorted(map(str, data))}")


def _base(pixel_base: str) -> str:
    if pixel_base not in PIXEL_BASES:
        raise ValueError(f"pixel_base must be one of {PIXEL_BASES}, got {pixel_base!r}")
    return pixel_base


def reconstruct_vertex(params: Tensor, model: DDFAModel, mean: Optional[Tensor] = None,
                       std: Optional[Tensor] = None, dense: bool = False, pixel_base: str = "v2") -> Tensor:
    """Vertices ``[B, 3, N]`` (``dense``) or the 68 landmarks ``[B, 3, 68]`` in the 120 crop.

    ``params [B, 62]``; whitened if ``mean``/``std`` are given (all 62 entries de-whitened).
    ``pixel_base="v1"``: ``y = 121 - y`` (3DDFA v1 / 2DASL, 1-based); ``"v2"``: ``x - 1``,
    ``120 - y``, ``z - 1`` (3DDFA_V2 ``similar_transform``, 0-based, as
    :class:`facegeom.cameras.ScaledOrthographic`).
    """
    L._params("params", params)
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (whitened params) or neither")
    if mean is not None:
        params = L.dewhiten(params, mean.to(params), std.to(params))
    v = model.posed(params, dense)
    x, y, z = v.unbind(1)
    if _base(pixel_base) == "v1":
        return torch.stack([x, STD_SIZE + 1 - y, z], 1)
    return torch.stack([x - 1, STD_SIZE - y, z - 1], 1)


def to_original(vertex: Tensor, roi_box, pixel_base: str = "v2", size: int = STD_SIZE) -> Tensor:
    """Map crop coordinates ``[B, 3, K]`` back to the original image with ``roi_box``
    ``[B, 4]`` or ``[4]`` = ``(sx, sy, ex, ey)``: ``x * (ex - sx) / size + sx``, same for
    y, ``z * s`` with ``s`` the mean scale (``3DDFA:utils/inference.py`` ``_predict_vertices``);
    ``"v2"`` also shifts z so its minimum is 0 (``3DDFA_V2:utils/tddfa_util.py`` ``similar_transform``)."""
    _base(pixel_base)
    if vertex.dim() != 3 or vertex.shape[1] != 3:
        raise ValueError(f"vertex must have shape [B, 3, K], got {list(vertex.shape)}")
    box = torch.as_tensor(roi_box, dtype=vertex.dtype, device=vertex.device)
    if box.shape == (4,):
        box = box[None].expand(vertex.shape[0], 4)
    if box.shape != (vertex.shape[0], 4):
        raise ValueError(f"roi_box must be [4] or [B, 4], got {list(box.shape)}")
    sx, sy, ex, ey = box.unbind(1)
    scale_x, scale_y = (ex - sx) / size, (ey - sy) / size
    x = vertex[:, 0] * scale_x[:, None] + sx[:, None]
    y = vertex[:, 1] * scale_y[:, None] + sy[:, None]
    z = vertex[:, 2] * ((scale_x + scale_y) / 2)[:, None]
    if pixel_base == "v2":
        z = z - z.min(dim=1, keepdim=True).values
    return torch.stack([x, y, z], 1)


# --------------------------------------------------------------------------- #
# Network                                                                      #
# --------------------------------------------------------------------------- #
def build_network(num_params: int = 62, net: str = "resnet50") -> nn.Module:
    """2DASL's 4-channel ResNet-50 (:func:`facegeom.nets.resnet.resnet50_2dasl`; PIPELINES.md §4.2);
    ``net="resnet18"``: the same layout (4-channel ``conv1``, ``layer4`` stride 1,
    ``AvgPool2d(7, stride=2)``) on ResNet-18 blocks, 512 -> 62 (tiny configs only; not the authors')."""
    from facegeom.nets.resnet import resnet18, resnet50_2dasl

    if net == "resnet50":
        return resnet50_2dasl(num_params)
    if net == "resnet18":
        return resnet18(num_classes=num_params, in_channels=4, layer4_stride=1, avgpool=nn.AvgPool2d(7, stride=2))
    raise ValueError(f"net must be 'resnet50' or 'resnet18', got {net!r}")


def load_checkpoint(path, map_location="cpu") -> nn.Module:
    """The regressor with the weights of ``path``: the authors'
    ``2DASL_checkpoint_epoch_allParams_stage{1,2}.pth.tar`` (``torch.load(path)['res_state_dict']``
    with the ``module.`` prefix stripped; ``2DASL:test_codes/benchmark_...1998.py:183-188``,
    PIPELINES.md §4.6) or facegeom's own ``final.pt`` of ``facegeom train --method tdasl``
    (its ``regressor.*`` entries). Strict: any missing or unexpected key raises ValueError."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"2DASL checkpoint not found: {source!r}")
    data = torch.load(source, map_location=map_location, weights_only=True)
    if isinstance(data, dict) and "res_state_dict" in data:
        state = {(k[len("module."):] if k.startswith("module.") else k): v
                 for k, v in data["res_state_dict"].items()}
    elif isinstance(data, dict) and any(isinstance(k, str) and k.startswith("regressor.") for k in data):
        state = {k[len("regressor."):]: v for k, v in data.items() if k.startswith("regressor.")}
    else:
        raise ValueError(f"{source}: expected a dict with 'res_state_dict' (2DASL checkpoint) or "
                         f"facegeom's final.pt with 'regressor.*' entries")
    net = build_network(net="resnet50" if "layer1.0.conv3.weight" in state else "resnet18")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: res_state_dict does not match 2DASL's ResNet-50: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return net.eval()


def preprocess(image_bgr, landmarks68, roi_box=None) -> Tuple[Tensor, list]:
    """2DASL's network input from a whole image and its 68 landmarks (pixels, ``[68, 2]``
    or ``[2, 68]``): the 3DDFA 120 crop of ``roi_box`` (default: 3DDFA's box from the
    landmarks, ``3DDFA:utils/inference.py:62-79``), the landmarks mapped into the crop
    (``(x - sx) * 120 / (ex - sx)``), then :func:`facegeom.data.crops.tdasl_input`.
    (The authors' test ran FAN on the crop itself; mapping the image's landmarks is the
    equivalent for a user who has them.) Returns ``([4, 120, 120], roi_box)``."""
    from facegeom.data import crops

    pts = crops._pts_2xn("landmarks68", landmarks68).astype(np.float64)
    if roi_box is None:
        roi_box = crops.parse_roi_box_from_landmark(pts)
    sx, sy, ex, ey = [float(v) for v in roi_box]
    crop = crops.ddfa_crop(image_bgr, roi_box, STD_SIZE)
    on_crop = np.stack([(pts[0] - sx) * STD_SIZE / (ex - sx), (pts[1] - sy) * STD_SIZE / (ey - sy)])
    return crops.tdasl_input(crop, on_crop), list(roi_box)


def decode(params: Tensor, model: DDFAModel, mean: Tensor, std: Tensor, roi_box=None,
           pixel_base: str = "v2") -> Dict[str, Tensor]:
    """Whitened network output ``[B, 62]`` -> ``{"vertices" [B, N, 3], "landmarks" [B, 68, 3],
    "params" [B, 62] (de-whitened)}``, in the 120 crop or, with ``roi_box``, in the original
    image (:func:`reconstruct_vertex`, :func:`to_original`; ``pixel_base`` as there)."""
    raw = L.dewhiten(params, mean.to(params), std.to(params))
    out = {"params": raw}
    for key, dense in (("vertices", True), ("landmarks", False)):
        v = reconstruct_vertex(raw, model, dense=dense, pixel_base=pixel_base)
        if roi_box is not None:
            v = to_original(v, roi_box, pixel_base)
        out[key] = v.transpose(1, 2)
    return out


def landmark_map(pts68: Tensor, size: int = STD_SIZE) -> Tensor:
    """Batched torch twin of :func:`facegeom.data.crops.obtain_18pts_map` for training's
    backward pass: ``[B, 68, 2]`` pixels -> ``[B, 1, size, size]`` (-1, +1 at the 18 points).
    Unlike the authors' test code (which clips only above 119), predicted points are clamped
    to ``[0, size - 1]`` at both ends, since a prediction can leave the crop. Not differentiable."""
    pts = L.landmarks_18(pts68.detach()).clamp(0, size - 1).floor().long()
    m = torch.full((pts.shape[0], size * size), -1.0, dtype=pts68.dtype, device=pts68.device)
    m.scatter_(1, pts[..., 1] * size + pts[..., 0], 1.0)
    return m.reshape(-1, 1, size, size)


# --------------------------------------------------------------------------- #
# Training                                                                     #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Config:
    """2DASL's training settings (paper §4.1; PIPELINES.md §4.4-4.5).

    ``lambda_*``: eq. 1's weights (2D-con 0.005, 3D-con 0.005, cycle 1, self-critic 0.005).
    ``lr_regressor`` 5e-5 (SGD; momentum 0.9 and weight decay 5e-4 are 3DDFA's defaults and
    those of 2DASL's unreleased training script in its history, commit ``ead2e16``; the paper
    gives none), ``lr_critic`` 1e-4 (Adam; ``critic_betas`` (0.5, 0.999) as that script's
    ``optimizer_D``); the exponential decay's rate is not given (use the loop's
    ``schedule="exponential"`` with your ``gamma``); batch 32 goes
    into :class:`facegeom.train.TrainConfig`. ``resample_num`` 132 (WPDC). ``head_seed``,
    ``whitening_samples``, ``num_samples``: the synthetic data (see :class:`SyntheticTDASL`).
    ``stage``: 1 = full loss with WPDC, 2 = VDC fine-tuning (paper §4.1).
    ``net``: the regressor (``"resnet50"``, 2DASL's; ``"resnet18"`` in :meth:`tiny`).
    ``val_samples``: synthetic validation samples (0: ``max(2, num_samples // 4)``).
    ``zero_head``: zero the regressor's last layer (``fc``) so the untrained network predicts
    the whitened zero, i.e. the mean parameters (True in :meth:`tiny` only; the authors'
    network keeps PyTorch's default ``Linear`` initialisation). With the default
    initialisation the untrained ResNet-18 outputs whitened values of std ~0.36, which a
    few hundred SGD steps do not remove: its 50 shape and expression coefficients then sit
    further from the truth than the mean's (``docs/tdasl.md``) [INFERRED, tiny config].
    ``landmark_unit``: the length unit of the landmark terms (eq. 3-5), in pixels of the 120
    crop: 120 (default) measures them in crop widths, 1 in pixels. The paper gives no unit;
    in pixels the cycle term (lambda 1, a sum over 18 points) has a gradient about 6,000 x
    WPDC's at initialisation, SGD takes steps of several units in parameter space and the
    smoke run diverges (WPDC rises; ``docs/tdasl.md``) [INFERRED].
    ``shape_components`` / ``expression_components``: the synthetic samples keep only the
    leading k of the 40 shape / 10 expression coefficients (the others 0; None: all, 0: none), a
    low-dimensional space for smoke trainings (the whitening, computed from the same
    distribution, then has the floor std 1e-6 on the others, so the network's outputs there
    barely move the mesh) [tiny config].
    ``shape_std`` / ``expression_std``: the standard deviation of the synthetic samples' shape /
    expression coefficients (:class:`facegeom.data.synthetic.SyntheticConfig`; 1 = the model's
    prior) [tiny config].
    ``model_unit_um``: build the synthetic 3DDFA-layout model in micrometres (the synthetic
    head's metres x 1e6: mean shape and bases; the fitted poses and the whitening follow) instead
    of metres. 3DDFA's BFM is in micrometre-like units (vertex coordinates ~1e4-1e5) and WPDC's
    constant :data:`facegeom.losses.tdasl.WPDC_MAGIC` scales the shape / expression weights
    (``WPDC_MAGIC * |delta| * ||basis column||``) for that unit, while the pose weights are
    unit-free; with the model in metres the shape / expression weights come out ~1e6 x too
    small against the pose's (~1e-7 after the max normalisation) and WPDC barely trains the
    coefficients (``docs/tdasl.md``). Only the synthetic model is affected (a 3DDFA folder is
    read as it is); the projected geometry, the whitened targets and every other loss term
    are the same in either unit. True in :meth:`tiny` [INFERRED, smoke config].
    """

    lambda_2d: float = 0.005
    lambda_3d: float = 0.005
    lambda_cyc: float = 1.0
    lambda_sc: float = 0.005
    lr_regressor: float = 5e-5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_critic: float = 1e-4
    resample_num: int = 132
    stage: int = 1
    head_seed: int = 0
    num_samples: int = 1000
    whitening_samples: int = 64
    critic_widths: Tuple[int, ...] = (32, 64, 128, 256, 256, 512)
    critic_betas: Tuple[float, float] = (0.5, 0.999)
    landmark_unit: float = 120.0
    net: str = "resnet50"
    val_samples: int = 0
    zero_head: bool = False
    shape_components: Optional[int] = None
    expression_components: Optional[int] = None
    shape_std: float = 1.0
    expression_std: float = 1.0
    model_unit_um: bool = False

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage!r}")
        for name in ("lr_regressor", "lr_critic", "landmark_unit", "shape_std", "expression_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("shape_components", "expression_components"):
            _checks.optional_count(name, getattr(self, name))

    @classmethod
    def tiny(cls, **overrides) -> "Config":
        return replace(cls(num_samples=8, whitening_samples=8, critic_widths=(4, 8, 8, 16, 16, 512), net="resnet18",
                           zero_head=True, model_unit_um=True), **overrides)

    @property
    def mm_per_unit(self) -> float:
        """Millimetres per length unit of the synthetic model (1e3 in metres, 1e-3 in micrometres)."""
        return 1e-3 if self.model_unit_um else 1e3


_SYNTH_CACHE: Dict[tuple, Tuple[DDFAModel, Tensor, Tensor]] = {}


def _synthetic_ddfa(head, scale: float = 1.0) -> DDFAModel:
    """The synthetic head as a 3DDFA-layout linear model: ``u`` = template, ``w_shp`` /
    ``w_exp`` = its 40 / 10 blendshapes (x, y, z interleaved), all times ``scale`` (1: metres,
    1e6: micrometres, :attr:`Config.model_unit_um`); keypoints = the vertex nearest to each of
    the neutral head's 68 landmarks."""
    with torch.no_grad():
        v = head.v_template.double()
        dirs = head.shapedirs.double()
        ns = head.n_shape
        out = head()
        lmk = out.landmarks2d[0].double()
        near = torch.cdist(lmk, out.vertices[0].double()).argmin(1)
    kp = torch.stack([3 * near, 3 * near + 1, 3 * near + 2], 1).reshape(-1)
    return DDFAModel(scale * v.reshape(-1, 1).numpy(), scale * dirs[..., :ns].reshape(-1, ns).numpy(),
                     scale * dirs[..., ns:ns + 10].reshape(-1, 10).numpy(), kp.numpy())


def _fit_pose(model: DDFAModel, alpha: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Ground-truth ``[fR | t]`` (12, 3DDFA's 1-based y-up crop space) for a sample: the
    least-squares affine camera from the model's 68 keypoint vertices (unposed, with the
    sample's coefficients ``alpha [50]``) to the same vertices' rendered pixels ``[68, 2]``
    (v2 base), its 2 x 3 part made a scaled rotation (polar decomposition), row 3 =
    ``s * (r1 x r2)``, ``tz = 0``. Exact but for the render's perspective."""
    params = np.concatenate([np.zeros(12), alpha])
    shape = model.shape(torch.as_tensor(params, dtype=model.u.dtype)[None], dense=False)[0].double().numpy().T
    target = np.stack([pixels[:, 0] + 1, STD_SIZE - pixels[:, 1]], 1)  # v2 pixel -> 3DDFA crop space
    A = np.concatenate([shape, np.ones((68, 1))], 1)
    M = np.linalg.lstsq(A, target, rcond=None)[0].T  # [2, 4]
    U, S, Vt = np.linalg.svd(M[:, :3], full_matrices=False)
    R2 = U @ Vt
    s = S.mean()
    P = np.zeros((3, 4))
    P[:2, :3] = s * R2
    P[2, :3] = s * np.cross(R2[0], R2[1])
    P[:2, 3] = M[:, 3]
    return P.reshape(-1)


class SyntheticTDASL:
    """Hook for :class:`facegeom.data.synthetic.SyntheticFaces` (120 x 120 renders, 40 shape +
    10 expression components, no jaw opening) adding ``"input"`` ``[4, 120, 120]`` (the RGB
    render as uint8 BGR through :func:`facegeom.data.crops.tdasl_input` with the rendered 68
    landmarks, standing in for FAN detections: the crop is the whole image, roi box
    ``(0, 0, 120, 120)``) and ``"params62"`` ``[62]``, the whitened ground truth in the
    synthetic 3DDFA-layout model (:func:`synthetic_model`): the sample's 40 + 10
    coefficients and the pose of :func:`_fit_pose` on the projected keypoint vertices.
    With ``mean = 0`` and ``std = 1`` it records the raw parameters (used for the whitening).
    With ``model_landmarks`` (default) the sample's ``"landmarks"`` (and ``"keypoints5"``, the
    input map and the crop) are the projected keypoint vertices of the model, the points
    WPDC's pose and the landmark terms use, instead of the synthetic head's barycentric
    landmarks (1.7 mm apart on average: a systematic offset the landmark terms would push the
    shape and expression coefficients to absorb; ``docs/tdasl.md``)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, model: DDFAModel, model_landmarks: bool = True):
        self.mean, self.std, self.model, self.model_landmarks = mean, std, model, model_landmarks

    def __call__(self, sample, context) -> None:
        from facegeom.data.crops import tdasl_input

        from facegeom.data.synthetic import extract_5p

        near = self.model.keypoints[::3] // 3
        pixels = context.camera.project(context.output.vertices[:, near])[0].double().numpy()
        if self.model_landmarks:
            sample["landmarks"] = torch.as_tensor(pixels, dtype=sample["landmarks"].dtype)
            sample["keypoints5"] = extract_5p(sample["landmarks"])
        rgb = (sample["image"].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        sample["input"] = tdasl_input(np.ascontiguousarray(rgb[..., ::-1]), sample["landmarks"].numpy())
        p = sample["params"]
        alpha = np.concatenate([p["shape"].double().numpy()[:40], p["expression"].double().numpy()[:10]])
        params = np.concatenate([_fit_pose(self.model, alpha, pixels), alpha])
        sample["params62"] = torch.as_tensor((params - self.mean) / self.std, dtype=torch.float32)


def _synthetic_config(config: Config, num_samples: int, seed: int, hooks=()):
    from facegeom.data.synthetic import SyntheticConfig

    return SyntheticConfig(num_samples=num_samples, image_size=STD_SIZE, seed=seed, head_seed=config.head_seed,
                           n_shape=40, n_exp=10, n_tex=10, max_jaw=0.0, mask=None, hooks=tuple(hooks),
                           shape_components=config.shape_components,
                           expression_components=config.expression_components,
                           shape_std=config.shape_std, expression_std=config.expression_std)


def synthetic_model(config: Config) -> Tuple[DDFAModel, Tensor, Tensor]:
    """``(model, mean [62], std [62])``: the synthetic 3DDFA-layout model and its whitening
    (computed from ``whitening_samples`` renders of seed 0; cached per process, keyed by every
    field that changes them). ``config.model_unit_um``: the model in micrometres (else metres)."""
    key = (config.head_seed, config.whitening_samples, config.shape_components, config.expression_components,
           config.shape_std, config.expression_std, config.model_unit_um)
    if key not in _SYNTH_CACHE:
        from facegeom.data.synthetic import SyntheticFaces

        from facegeom.models import synthetic_head

        model = _synthetic_ddfa(synthetic_head(seed=config.head_seed, n_shape=40, n_exp=10, n_tex=10,
                                                  dtype=torch.float32), 1e6 if config.model_unit_um else 1.0)
        record = SyntheticTDASL(np.zeros(62), np.ones(62), model)
        ds = SyntheticFaces(_synthetic_config(config, config.whitening_samples, 0, [record]))
        rows = np.stack([ds[i]["params62"].double().numpy() for i in range(config.whitening_samples)])
        mean, std = rows.mean(0), np.maximum(rows.std(0), 1e-6)
        _SYNTH_CACHE[key] = (model, torch.as_tensor(mean, dtype=torch.float32),
                             torch.as_tensor(std, dtype=torch.float32))
    return _SYNTH_CACHE[key]


def losses(model: "TDASLModel", batch, config: Optional[Config] = None) -> Dict[str, Tensor]:
    """Every term of eq. 1 and ``total`` (and the critic's loss): see :meth:`TDASL.losses`."""
    return TDASL.losses(model, batch, config if config is not None else model.config)


class TDASLModel(nn.Module):
    """Regressor + self-critic + the 3DDFA-layout model and whitening (buffers)."""

    def __init__(self, config: Config, model: DDFAModel, mean: Tensor, std: Tensor):
        super().__init__()
        self.regressor = build_network(net=config.net)
        if config.zero_head:
            nn.init.zeros_(self.regressor.fc.weight)
            nn.init.zeros_(self.regressor.fc.bias)
        self.critic = L.SelfCritic(widths=tuple(config.critic_widths))
        self.ddfa = model
        self.config = config
        self.register_buffer("param_mean", mean.clone())
        self.register_buffer("param_std", std.clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.regressor(x)

    def landmarks(self, pred: Tensor) -> Tuple[Tensor, Tensor]:
        """``(x3d [B, 68, 3] crop space, x2d [B, 68, 2] v2 pixels)`` of whitened ``pred``."""
        p = L.dewhiten(pred, self.param_mean, self.param_std)
        x3d = self.ddfa.posed(p, dense=False).transpose(1, 2)
        x2d = torch.stack([x3d[..., 0] - 1, STD_SIZE - x3d[..., 1]], -1)
        return x3d, x2d


class TDASL:
    """``facegeom train --method tdasl`` (paper eq. 1, §4.1; manual optimisation).

    One step: forward pass ``R(I, FLM)``; ``L_3d`` = WPDC (stage 1) or VDC (stage 2);
    ``L_2d-con`` between the input and projected 18 points; backward pass: a new map from
    the projected 68 points (:func:`landmark_map`), ``R`` again, ``L_3d-con`` and ``L_cyc``;
    ``L_sc``: critic on ``[z(RGB), params]`` with the ground truth as "real" and the
    prediction as "fake" (in the paper the real pairs are 300W-LP's; here every synthetic
    sample has ground truth). The regressor's total and the critic's loss are both
    computed before either optimiser steps (simultaneous updates).

    Scale: the landmark terms are sums over the points (as eq. 3-5) of distances measured in
    ``Config.landmark_unit`` (default: crop widths, 120 px). In pixels, the cycle term (lambda
    1, ~260 at initialisation on the tiny synthetic data against WPDC's ~0.1) has a gradient
    norm ~6,000 x WPDC's; the 18 2D points cannot determine the 62 parameters, so that
    gradient moves them freely and WPDC rises (the earlier smoke run; ``docs/tdasl.md``).

    [CODE≠PAPER] An unreleased training script in 2DASL's history (commit ``ead2e16``, beside
    ``advers_proj_utils_3.py``) differs from the paper: ``loss = 0.1 * (10 * 10 * WPDC +
    0.5 * adv + 0.05 * (proj + proj_cycle))`` with weighted-MSE landmark terms, a critic on
    the 10 expression parameters only (no image encoder), SGD (nesterov) base lr 0.004 and
    Adam lr 1e-5. This class follows the paper (issue 15); only the choices the paper leaves
    open are taken from that script (see :mod:`facegeom.losses.tdasl`).
    """

    name = "tdasl"
    Config = Config
    manual_optimization = True
    val_metric = "loss"
    val_mode = "min"

    @staticmethod
    def build_model(config: Config) -> TDASLModel:
        model, mean, std = synthetic_model(config)
        return TDASLModel(config, copy.deepcopy(model), mean, std)

    @staticmethod
    def optimizers(model: nn.Module, config: Config):
        from facegeom.train import unwrap

        m = unwrap(model)
        return {"regressor": torch.optim.SGD(m.regressor.parameters(), lr=config.lr_regressor,
                                             momentum=config.momentum, weight_decay=config.weight_decay),
                "critic": torch.optim.Adam(m.critic.parameters(), lr=config.lr_critic, betas=tuple(config.critic_betas))}

    @staticmethod
    def dataset(config: Config, data, split: str, seed: int):
        from facegeom.data.synthetic import SyntheticFaces

        if data != "synthetic":
            raise ValueError(f"--data {data!r}: the tdasl method reads only 'synthetic' for now")
        model, mean, std = synthetic_model(config)
        hook = SyntheticTDASL(mean.double().numpy(), std.double().numpy(), model)
        n = config.num_samples if split == "train" else (config.val_samples or max(2, config.num_samples // 4))
        return SyntheticFaces(_synthetic_config(config, n, seed + (0 if split == "train" else 7919), [hook]))

    @staticmethod
    def losses(model: TDASLModel, batch, config: Config) -> Dict[str, Tensor]:
        x, target = batch["input"], batch["params62"]
        lms68 = batch["landmarks"].to(x)
        pred = model.regressor(x)
        if config.stage == 1:
            l3d = L.wpdc_loss(pred, target, model.param_mean, model.param_std, model.ddfa, config.resample_num)
        else:
            l3d = L.vdc_loss(pred, target, model.param_mean, model.param_std, model.ddfa)
        x3d, x2d = model.landmarks(pred)
        in18 = L.landmarks_18(lms68)
        l2d = L.landmark_2d_consistency(in18, L.landmarks_18(x2d))
        back = model.regressor(torch.cat([x[:, :3], landmark_map(x2d)], 1))
        x3d_b, x2d_b = model.landmarks(back)
        l3dc = L.landmark_3d_consistency(x3d, x3d_b)
        cyc = L.cycle_consistency(in18, L.landmarks_18(x2d_b))
        adv = L.adversarial_loss(model.critic(x[:, :3], pred))
        unit = config.landmark_unit  # distances are linear in the unit: divide the pixel-valued terms
        l2d, l3dc, cyc = l2d / unit, l3dc / unit, cyc / unit
        total = (l3d + config.lambda_2d * l2d + config.lambda_3d * l3dc + config.lambda_cyc * cyc
                 + config.lambda_sc * adv)
        critic = L.critic_loss(model.critic(x[:, :3], target), model.critic(x[:, :3], pred.detach()))
        return {"total": total, "l3d": l3d, "l2d_con": l2d, "l3d_con": l3dc, "cyc": cyc, "adv": adv,
                "critic": critic}

    @classmethod
    def training_step(cls, model, batch, optimizers):
        from facegeom.train import unwrap

        m = unwrap(model)
        out = cls.losses(m, batch, cls._config(m))
        optimizers["regressor"].backward(out["total"])
        optimizers["critic"].backward(out["critic"])
        optimizers["regressor"].step()
        optimizers["critic"].step()
        return {k: v.detach() for k, v in out.items()}

    @classmethod
    def validation_step(cls, model, batch):
        """VDC (``loss``) and, against the mean parameters (whitened zero): ``vdc_mean``;
        ``lm_px`` / ``lm_px_mean``: mean 2D error (pixels) of the 68 projected landmarks
        against the sample's; ``shape_rmse`` / ``shape_rmse_mean``: RMS error of the 50
        de-whitened shape and expression coefficients; ``shape_mm`` / ``shape_mm_mean`` and
        ``exp_mm`` / ``exp_mm_mean``: mean per-vertex distance (mm, from the synthetic model's
        metres or micrometres, :attr:`Config.mm_per_unit`) of the dense identity offsets
        ``w_shp alpha_shp`` and expression offsets ``w_exp alpha_exp`` (unposed) to the
        truth's, i.e. the coefficient errors weighted by what they do to
        the mesh; ``adv`` / ``adv_mean``: the regressor's side of the
        adversarial loss (eq. 6) under the current critic, for the prediction / for the mean
        parameters, and ``critic``: the critic's loss (the truth against the prediction). The
        training log's ``adv`` is measured against a critic that keeps learning, so it rises
        as the critic separates; ``adv < adv_mean`` says the prediction is judged more
        realistic than the mean by the same critic."""
        mm = cls._config(model).mm_per_unit
        with torch.no_grad():
            target = batch["params62"]
            pred = model.regressor(batch["input"])
            image = batch["input"][:, :3]
            out = {"adv": L.adversarial_loss(model.critic(image, pred)),
                   "adv_mean": L.adversarial_loss(model.critic(image, torch.zeros_like(pred))),
                   "critic": L.critic_loss(model.critic(image, target), model.critic(image, pred))}
            for suffix, p in (("", pred), ("_mean", torch.zeros_like(pred))):
                out["loss" if not suffix else "vdc_mean"] = L.vdc_loss(p, target, model.param_mean, model.param_std,
                                                                      model.ddfa)
                _, x2d = model.landmarks(p)
                out["lm_px" + suffix] = (x2d - batch["landmarks"].to(x2d)).norm(dim=-1).mean()
                delta = (L.dewhiten(p, model.param_mean, model.param_std)
                         - L.dewhiten(target, model.param_mean, model.param_std))[:, 12:]
                out["shape_rmse" + suffix] = delta.pow(2).mean().sqrt()
                ddfa = model.ddfa
                for name, w, part in (("shape_mm", ddfa.w_shp, delta[:, :ddfa.w_shp.shape[1]]),
                                      ("exp_mm", ddfa.w_exp, delta[:, ddfa.w_shp.shape[1]:])):
                    offsets = (part.to(w) @ w.T).reshape(part.shape[0], -1, 3)
                    out[name + suffix] = mm * offsets.norm(dim=-1).mean()
        return out

    @staticmethod
    def _config(model) -> Config:
        return getattr(model, "config", Config())


# --------------------------------------------------------------------------- #
# facegeom reconstruct (API.md §7)                                             #
# --------------------------------------------------------------------------- #
def load_triangles(path, num_vertices: int) -> np.ndarray:
    """3DDFA v1's ``visualize/tri.mat`` (key ``tri``, ``[3, F]``, 1-based, as ``3DDFA:main.py``
    reads it for ``dump_to_ply``) as ``[F, 3]`` 0-based int64; ``[F, 3]`` and 0-based
    files are accepted too (0-based when the smallest index is 0)."""
    from facegeom.models.bfm import _loadmat

    source = os.fspath(path)
    data, _ = _loadmat(source, "3DDFA triangles (visualize/tri.mat)")
    if "tri" not in data:
        raise ValueError(f"{source}: no 'tri' array (keys: {sorted(k for k in data if not k.startswith('__'))})")
    tri = np.asarray(data["tri"])
    if tri.ndim != 2 or 3 not in tri.shape or tri.dtype.kind not in "iuf":
        raise ValueError(f"{source}: tri must be a [3, F] or [F, 3] index array, got {tri.dtype} {list(tri.shape)}")
    tri = (tri.T if tri.shape[0] == 3 and tri.shape[1] != 3 else tri).astype(np.int64)
    tri = tri - (1 if tri.min() >= 1 else 0)
    if tri.min() < 0 or tri.max() >= num_vertices:
        raise ValueError(f"{source}: tri indexes vertices outside [0, {num_vertices})")
    return tri


def _shaded_overlay(pixels: np.ndarray, vertices: Tensor, faces: np.ndarray) -> np.ndarray:
    """The mesh (vertices ``[N, 3]`` in image pixels, x right, y down, z towards the viewer)
    drawn grey-shaded (``0.3 + 0.7 |n_z|``) over ``pixels`` ``[H, W, 3]`` uint8."""
    from facegeom import ops
    from facegeom.render import MeshRenderer, UnlitShader

    height, width = pixels.shape[:2]
    v = vertices.double()
    tri = torch.as_tensor(faces)
    z = v[:, 2]
    depth = 0.9 - 1.8 * (z - z.min()) / (z.max() - z.min()).clamp(min=1e-9)  # nearer (larger z) -> smaller
    pos = torch.stack([(2 * v[:, 0] + 1) / width - 1, 1 - (2 * v[:, 1] + 1) / height, depth, torch.ones_like(z)], 1)
    shade = 0.3 + 0.7 * ops.vertex_normals(v[None], tri)[0, :, 2:].abs()
    renderer = MeshRenderer(tri, (height, width), antialias=False, shader=UnlitShader())
    out = renderer(v[None], shade.expand(-1, 3)[None], pos=pos[None])
    alpha = out.alpha[0].numpy()
    grey = (out.image[0].numpy() * 255).clip(0, 255)
    return (alpha * grey + (1 - alpha) * pixels).round().astype(np.uint8)


def reconstructor(checkpoint, assets, options=None):
    """``facegeom reconstruct --method tdasl`` (:mod:`facegeom.reconstruct`; the authors'
    ``2DASL:test_codes/benchmark_0resnet50_4chls_FAN2d_18pts_1998.py`` / ``main_visualize_plot_4chls.py``).

    Args:
        checkpoint: the authors' ``2DASL_checkpoint_epoch_allParams_stage{1,2}.pth.tar`` or
            ``facegeom train --method tdasl``'s ``final.pt`` (:func:`load_checkpoint`; a
            ``final.pt`` also carries its model and whitening, which are then used).
        assets: a folder with 3DDFA v1's model files (:meth:`DDFAModel.from_folder`),
            ``param_whitening.pkl`` (:func:`load_whitening`) and ``tri.mat``
            (:func:`load_triangles`); or ``"synthetic"`` (:func:`synthetic_model` of the tiny
            config with ``--tiny``, else of the default one; the synthetic head's triangles).
        options: ``device``; ``pixel_base`` (``"v2"``, facegeom's, default; ``"v1"``: the
            authors' 1-based ``121 - y``).

    The image needs 68 landmarks (the crop and the 18-point map come from them: 2DASL ran FAN
    on its crops). Writes the dense mesh in the input image (x right, y down, z towards the
    viewer, :func:`decode` with the roi box), params ``params62`` (de-whitened), ``roi_box``,
    ``lm68`` ``[68, 3]`` (image), and the grey-shaded mesh over the image.
    """
    from facegeom import reconstruct as R
    from facegeom.data.crops import _pts_2xn

    options = dict(options or {})
    pixel_base = _base(options.get("pixel_base", "v2"))
    if checkpoint is None:
        raise ValueError("--checkpoint is required for tdasl (2DASL_checkpoint_epoch_allParams_stage2.pth.tar or "
                         "facegeom train's final.pt)")
    if assets is None:
        raise ValueError("--assets is required for tdasl: a 3DDFA v1 train.configs folder (+ param_whitening.pkl, "
                         "tri.mat) or 'synthetic'")
    net = load_checkpoint(checkpoint)
    state = torch.load(os.fspath(checkpoint), map_location="cpu", weights_only=True)
    if assets == "synthetic":
        from facegeom.models import synthetic_head

        config = Config.tiny() if options.get("tiny") else Config()
        model, mean, std = synthetic_model(config)
        faces = synthetic_head(seed=config.head_seed, n_shape=40, n_exp=10, n_tex=10).faces.long().numpy()
    else:
        folder = os.fspath(assets)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--assets {folder}: not a folder")
        model = DDFAModel.from_folder(folder)
        mean, std = load_whitening(os.path.join(folder, "param_whitening.pkl"))
        faces = load_triangles(os.path.join(folder, "tri.mat"), model.num_vertices)
    if isinstance(state, dict) and "param_mean" in state and "param_std" in state:  # facegeom's final.pt
        mean, std = state["param_mean"].float(), state["param_std"].float()
        if assets == "synthetic" and "ddfa.u" in state:  # the model it was trained with (its unit, e.g.)
            model = DDFAModel(state["ddfa.u"], state["ddfa.w_shp"], state["ddfa.w_exp"], state["ddfa.keypoints"])
    device = options.get("device", "auto")
    device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
    net, model = net.to(device), copy.deepcopy(model).to(device)
    mean, std = mean.to(device), std.to(device)

    @torch.no_grad()
    def reconstruct(image, landmarks) -> "R.Reconstruction":
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {pixels.dtype} {list(pixels.shape)}")
        pts = _pts_2xn("landmarks", landmarks)  # 2DASL needs the 68 points (its crop and 18-point map)
        x, roi_box = preprocess(np.ascontiguousarray(pixels[..., ::-1]), pts)
        out = decode(net(x[None].to(device)), model, mean, std, roi_box=roi_box, pixel_base=pixel_base)
        vertices = out["vertices"][0].cpu()
        params = {"params62": out["params"].cpu().numpy(), "roi_box": np.asarray(roi_box, dtype=np.float64),
                  "lm68": out["landmarks"][0].cpu().numpy()}
        return R.Reconstruction(vertices.numpy(), faces, params, _shaded_overlay(pixels, vertices, faces))

    return reconstruct


def _register():
    from facegeom import reconstruct, train

    train.register("tdasl", TDASL)
    reconstruct.register("tdasl", reconstructor)


_register()
