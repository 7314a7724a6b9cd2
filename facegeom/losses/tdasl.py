"""2DASL's training losses (Tu et al. 2019, PIPELINES.md §4.4) and the 3DDFA losses it uses.

2DASL released test code only, so every loss here is the paper's (§3, eq. 1-6) except
WPDC and VDC, which are 3DDFA's code (``3DDFA:wpdc_loss.py:24-126``,
``3DDFA:vdc_loss.py:23-97``), since 2DASL trains its 3D term "following [49]" (3DDFA).

Parameters are 3DDFA's 62-vectors ``[B, 62]`` (PIPELINES.md §4.3): ``p[0:12]`` is the
row-major ``3 x 4`` matrix ``[f R | t]``, ``p[12:52]`` the 40 shape and ``p[52:62]`` the
10 expression coefficients; the networks predict them **whitened**
(``p = p_whitened * std + mean``).

Choices the paper leaves open (documented, each a keyword argument). Some are filled
from 2DASL's repository history (commit ``ead2e16``, never part of a release):
``2DASL@ead2e16:advers_proj_utils_3.py`` holds ``lmsMask_18pts`` and ``Discriminator``.

- 2D landmark weights (red : pink : yellow = 4 : 2 : 1, Fig. 4): as ``lmsMask_18pts``,
  slots 13 and 16 of the 18-point set (nose tip, inner-mouth centre) weigh 2.0, slots 7, 10,
  15, 17 (eye centres, mouth corners) 1.0, the other 12 points 0.5
  (:data:`LANDMARK_WEIGHTS_18`). Distances are Euclidean as in eq. 3 (the historical
  script used a weighted MSE instead), summed over the points, averaged over the batch.
- 3D landmark consistency (eq. 4): sum over the 68 points of the Euclidean distance of
  the posed 3D landmarks (crop frame, after ``[fR | t]``), mean over the batch.
- Self-critic (eq. 6): the critic's FC stack is ``Discriminator``'s (``Linear 512,
  LeakyReLU 0.2, Linear 1024, Dropout 0.4, LeakyReLU, Linear 1024, Dropout 0.4, LeakyReLU,
  Linear 1``, then ``Linear(1, 1)`` and a sigmoid — the paper's "softmax"); :class:`SelfCritic`
  returns the logit before the sigmoid. The critic minimises binary cross-entropy (real
  ``[z*, alpha*]`` -> 1, predicted ``[z, R(I)]`` -> 0) and the regressor the non-saturating
  ``-log D([z, R(I)])`` (as the historical script: ``BCELoss(D(fake), real)``). The image
  encoder is the paper's (the historical critic sees parameters only): 6 x (3x3 conv, ReLU,
  2x2 max-pool) with 32, 64, 128, 256, 256, 512 channels, then global average pooling to
  ``z [512]`` (kernel sizes and widths are not given anywhere).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegeom import _checks

__all__ = ["WPDC_MAGIC", "LANDMARK_WEIGHTS_18", "parse_params", "dewhiten", "whiten", "resample_index",
           "wpdc_weights", "wpdc_loss", "vdc_loss", "landmarks_18", "landmark_2d_consistency",
           "landmark_3d_consistency", "cycle_consistency", "SelfCritic", "critic_loss", "adversarial_loss"]

#: 3DDFA's scale of the shape/expression WPDC weights (``3DDFA:wpdc_loss.py:99``).
WPDC_MAGIC = 0.00057339936

#: Weights of the 18 2DASL points (order of ``facegeom.data.crops.TDASL_18_INDEX``), 4 : 2 : 1 as
#: ``lmsMask_18pts`` (``2DASL@ead2e16:advers_proj_utils_3.py``): see the module doc.
LANDMARK_WEIGHTS_18 = tuple(2.0 if i in (13, 16) else 1.0 if i in (7, 10, 15, 17) else 0.5 for i in range(18))


def _params(name: str, p: Tensor) -> Tensor:
    _checks.floating(name, p)
    if p.dim() != 2 or p.shape[1] != 62:
        raise ValueError(f"{name} must have shape [B, 62] (3DDFA parameters), got {list(p.shape)}")
    return p


def dewhiten(p: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``p * std + mean`` for all 62 entries (``3DDFA:wpdc_loss.py:43-44``)."""
    return p * std + mean


def whiten(p: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Inverse of :func:`dewhiten`."""
    return (p - mean) / std


def parse_params(p: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(fR [B,3,3], t [B,3,1], alpha_shp [B,40,1], alpha_exp [B,10,1])`` of de-whitened
    ``p [B, 62]`` (``3DDFA:wpdc_loss.py:13-21`` ``_parse_param_batch``)."""
    n = p.shape[0]
    pose = p[:, :12].reshape(n, 3, 4)
    return pose[:, :, :3], pose[:, :, 3:], p[:, 12:52, None], p[:, 52:, None]


def resample_index(keypoints: Tensor, num_vertices: int, resample_num: int = 132,
                   generator: Optional[torch.Generator] = None) -> Tensor:
    """3DDFA's WPDC/VDC vertex set as flat ``[3K]`` indices: the 68 keypoint rows
    (``keypoints``, flat xyz indices, [204]) then ``resample_num`` random vertices
    (``torch.randperm``), each as ``3i, 3i+1, 3i+2`` (``3DDFA:wpdc_loss.py:53-60``)."""
    if resample_num <= 0:
        return keypoints
    index = torch.randperm(num_vertices, generator=generator)[:resample_num].reshape(-1, 1).to(keypoints.device)
    return torch.cat([keypoints, torch.cat([3 * index, 3 * index + 1, 3 * index + 2], 1).reshape(-1)])


def _bases(model, index: Tensor, dtype, device):
    u = model.u.to(device=device, dtype=dtype)[index]
    return (u, model.w_shp.to(device=device, dtype=dtype)[index], model.w_exp.to(device=device, dtype=dtype)[index])


def wpdc_weights(input: Tensor, target: Tensor, mean: Tensor, std: Tensor, model, index: Tensor) -> Tensor:
    """3DDFA's WPDC weights ``[B, 62]`` (``3DDFA:wpdc_loss.py:50-118``), without gradient.

    From de-whitened copies: ``delta = |p_hat - p*|``; ``tmpv = u + W_shp a_shp + W_exp a_exp``
    on the vertex rows ``index`` with the **predicted** coefficients (as coded: the first
    of ``reconstruct_and_parse``'s results is the input's; PIPELINES.md §4.4 says GT),
    ``n = ||tmpv||`` per axis over the K points; pose entries 0,4,8 / 1,5,9 / 2,6,10 get
    ``delta * n_x / n_y / n_z``, 3 and 7 (tx, ty) ``delta * sqrt(K)``; shape/expression
    ``WPDC_MAGIC * delta * ||[W_shp, W_exp][index, i]||``; ``+1e-6``; divided by the
    per-sample **max**; ``w[11] = 0`` (tz).
    """
    with torch.no_grad():
        inp = dewhiten(input.detach(), mean, std)
        tgt = dewhiten(target.detach(), mean, std)
        n = inp.shape[0]
        u, w_shp, w_exp = _bases(model, index, inp.dtype, inp.device)
        _, _, a_shp, a_exp = parse_params(inp)
        tmpv = (u + w_shp @ a_shp + w_exp @ a_exp).reshape(n, -1, 3).permute(0, 2, 1)  # [B, 3, K]
        norm = tmpv.norm(dim=2)  # [B, 3]
        k = w_shp.shape[0] // 3
        delta = (inp - tgt).abs()
        weights = torch.zeros_like(inp)
        for i, axis in enumerate((0, 1, 2, None, 0, 1, 2, None, 0, 1, 2)):
            weights[:, i] = delta[:, i] * (norm[:, axis] if axis is not None else k ** 0.5)
        w_norm = torch.cat([w_shp, w_exp], 1).norm(dim=0)
        weights[:, 12:] = WPDC_MAGIC * delta[:, 12:] * w_norm
        weights[:, :11] += 1e-6
        weights[:, 12:] += 1e-6
        weights = weights / weights.max(dim=1, keepdim=True).values
        weights[:, 11] = 0
    return weights


def wpdc_loss(input: Tensor, target: Tensor, mean: Tensor, std: Tensor, model, resample_num: int = 132,
              index: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """3DDFA's WPDC: ``mean(w * (input - target)^2)`` on the whitened vectors
    (``3DDFA:wpdc_loss.py:120-126``; 2DASL's ``L_3d``, PIPELINES.md §4.4 item 1).

    Args:
        input, target: ``[B, 62]`` whitened prediction and ground truth.
        mean, std: ``[62]`` whitening statistics (:func:`facegeom.pipelines.tdasl.load_whitening`).
        model: a :class:`facegeom.pipelines.tdasl.DDFAModel` (``u [3N,1]``, ``w_shp``,
            ``w_exp``, ``keypoints [204]`` flat indices).
        resample_num: random extra vertices (132 as coded; 0: keypoints only).
        index: the flat vertex rows to use (overrides the resampling; for tests).
    """
    _params("input", input)
    _params("target", target)
    if input.shape != target.shape:
        raise ValueError(f"input {list(input.shape)} and target {list(target.shape)} differ")
    if index is None:
        index = resample_index(model.keypoints, model.num_vertices, resample_num, generator)
    weights = wpdc_weights(input, target, mean, std, model, index)
    return (weights * (input - target) ** 2).mean()


def vdc_loss(input: Tensor, target: Tensor, mean: Tensor, std: Tensor, model, opt_style: str = "all",
             resample_num: int = 132, index: Optional[Tensor] = None,
             generator: Optional[torch.Generator] = None) -> Tensor:
    """3DDFA's VDC (``3DDFA:vdc_loss.py:48-86``; 2DASL stage 2): de-whiten both, replace the
    predicted tz by the ground truth's, ``mean((V* - V_hat)^2)`` over all vertices
    (``opt_style="all"``) or the 68 + ``resample_num`` rows (``"resample"``)."""
    _params("input", input)
    _params("target", target)
    if opt_style not in ("all", "resample"):
        raise ValueError(f"opt_style must be 'all' or 'resample', got {opt_style!r}")
    if index is None:
        index = (torch.arange(3 * model.num_vertices, device=input.device) if opt_style == "all" else
                 resample_index(model.keypoints, model.num_vertices, resample_num, generator))
    inp, tgt = dewhiten(input, mean, std), dewhiten(target, mean, std)
    n = inp.shape[0]
    u, w_shp, w_exp = _bases(model, index, inp.dtype, inp.device)
    p, offset, a_shp, a_exp = parse_params(inp)
    pg, offsetg, a_shpg, a_expg = parse_params(tgt)
    offset = torch.cat([offset[:, :2], offsetg[:, 2:]], 1)
    gt = pg @ (u + w_shp @ a_shpg + w_exp @ a_expg).reshape(n, -1, 3).permute(0, 2, 1) + offsetg
    pred = p @ (u + w_shp @ a_shp + w_exp @ a_exp).reshape(n, -1, 3).permute(0, 2, 1) + offset
    return ((gt - pred) ** 2).mean()


def landmarks_18(lms68: Tensor) -> Tensor:
    """Differentiable 68 -> 18 reduction ``[B, 68, D] -> [B, 18, D]``
    (``2DASL:benchmark_...1998.py:140-146``; numpy twin :func:`facegeom.data.crops.map_2d_18pts_2d`)."""
    from facegeom.data.crops import TDASL_18_INDEX

    if lms68.dim() != 3 or lms68.shape[1] != 68:
        raise ValueError(f"lms68 must have shape [B, 68, D], got {list(lms68.shape)}")
    out = lms68[:, TDASL_18_INDEX].clone()
    out[:, 7] = (lms68[:, 37] + lms68[:, 40]) / 2
    out[:, 10] = (lms68[:, 43] + lms68[:, 46]) / 2
    out[:, 16] = (lms68[:, 62] + lms68[:, 66]) / 2
    return out


def landmark_2d_consistency(x: Tensor, y: Tensor, weights=LANDMARK_WEIGHTS_18) -> Tensor:
    """``L_2d-con = sum_i v_i ||x_i - y_i||`` over the 18 points, mean over the batch (eq. 3).

    Args:
        x: ``[B, 18, 2]`` input landmarks; y: ``[B, 18, 2]`` projected from the prediction.
        weights: 18 weights (default :data:`LANDMARK_WEIGHTS_18`, 4:2:1).
    """
    if x.shape != y.shape or x.dim() != 3 or x.shape[1] != 18:
        raise ValueError(f"x and y must both be [B, 18, 2], got {list(x.shape)} and {list(y.shape)}")
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    if w.shape != (18,):
        raise ValueError(f"weights must have 18 entries, got {tuple(w.shape)}")
    return ((x - y).norm(dim=-1) * w).sum(-1).mean()


def landmark_3d_consistency(x3d: Tensor, x3d_back: Tensor) -> Tensor:
    """``L_3d-con = sum_{i=1}^{68} ||x3d_i - x3d_back_i||``, mean over the batch (eq. 4)."""
    if x3d.shape != x3d_back.shape or x3d.dim() != 3 or x3d.shape[-1] != 3:
        raise ValueError(f"x3d and x3d_back must both be [B, L, 3], got {list(x3d.shape)}, {list(x3d_back.shape)}")
    return (x3d - x3d_back).norm(dim=-1).sum(-1).mean()


def cycle_consistency(x2d: Tensor, x2d_back: Tensor, weights=LANDMARK_WEIGHTS_18) -> Tensor:
    """``L_cyc = L_2d-con(x2d, x2d_back)`` (eq. 5): input landmarks against those projected
    from the backward pass."""
    return landmark_2d_consistency(x2d, x2d_back, weights)


class SelfCritic(nn.Module):
    """2DASL's self-critic (paper §3.3, Fig. 2): an image encoder (6 x conv + ReLU +
    max-pool, widths our choice, see the module doc) to ``z [B, 512]`` and a critic
    ``FC 512 -> 1024 -> 1024 -> 1 (-> Linear(1, 1))`` on ``[z, alpha]`` (``alpha``: the 62
    whitened parameters; layout of ``2DASL@ead2e16:advers_proj_utils_3.py`` ``Discriminator``).
    Returns logits ``[B]`` (the sigmoid lives in :func:`critic_loss` / :func:`adversarial_loss`)."""

    def __init__(self, in_channels: int = 3, num_params: int = 62,
                 widths: Tuple[int, ...] = (32, 64, 128, 256, 256, 512)):
        super().__init__()
        if len(widths) != 6 or widths[-1] != 512:
            raise ValueError(f"widths must be 6 channel counts ending in 512, got {widths}")
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            c = w
        self.encoder = nn.Sequential(*layers)
        self.critic = nn.Sequential(nn.Linear(512 + num_params, 512), nn.LeakyReLU(0.2),
                                    nn.Linear(512, 1024), nn.Dropout(0.4), nn.LeakyReLU(0.2),
                                    nn.Linear(1024, 1024), nn.Dropout(0.4), nn.LeakyReLU(0.2),
                                    nn.Linear(1024, 1), nn.Linear(1, 1))
        self.num_params = num_params

    def forward(self, image: Tensor, params: Tensor) -> Tensor:
        if image.dim() != 4 or params.dim() != 2 or params.shape[1] != self.num_params:
            raise ValueError(f"image must be [B, C, H, W] and params [B, {self.num_params}], "
                             f"got {list(image.shape)} and {list(params.shape)}")
        z = self.encoder(image).mean((2, 3))
        return self.critic(torch.cat([z, params], 1))[:, 0]


def critic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The critic's side of eq. 6: ``-E[log D(real)] - E[log(1 - D(fake))]`` (BCE on logits)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def adversarial_loss(fake_logits: Tensor) -> Tensor:
    """The regressor's side of eq. 6, non-saturating: ``-E[log D([z, R(I)])]``."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
