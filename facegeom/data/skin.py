"""Deep3D's skin-attention mask (PIPELINES.md §2.6): per-pixel posterior of a skin GMM.

Source: ``D3D:util/skin_mask.py`` (sicxu/Deep3DFaceRecon_pytorch @ 9167c71; identical to
``D3D-TF:skin.py``): ``_rgb2ycbcr`` lines 42-51, the two 4-component GMMs lines 59-83,
``GMM.likelihood`` lines 23-39, priors lines 85-86, ``skinmask`` lines 90-108 (posterior,
``uint8(round(255 P))`` tiled to 3 channels), loader ``D3D:data/flist_dataset.py:86,99``
(``ToTensor`` of the RGB mask, channel 0, i.e. ``/255``).

``P = 0.8 L_skin / (0.8 L_skin + 0.2 L_nonskin)`` with
``L = sum_k w_k exp(-0.5 d^T C_k^-1 d) / ((2 pi)^{3/2} sqrt(det C_k))`` on YCbCr of 0-255 RGB.
[CODE≠PAPER] the paper's ``A = 1 if P > 0.5`` threshold is not in the code; ``A = P``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# D3D:util/skin_mask.py:59-68 (skin) and :72-81 (non-skin), transcribed.
SKIN_W = [0.24063933, 0.16365987, 0.26034665, 0.33535415]
SKIN_MU = [[113.71862, 103.39613, 164.08226], [150.19858, 105.18467, 155.51428],
           [183.92976, 107.62468, 152.71820], [114.90524, 113.59782, 151.38217]]
SKIN_COV_DET = [5692842.5, 5851930.5, 2329131., 1585971.]
SKIN_COV_INV = [
    [[0.0019472069, 0.0020450759, -0.00060243998], [0.0020450759, 0.017700525, 0.0051420014],
     [-0.00060243998, 0.0051420014, 0.0081308950]],
    [[0.0027110141, 0.0011036990, 0.0023122299], [0.0011036990, 0.010707724, 0.010742856],
     [0.0023122299, 0.010742856, 0.017481629]],
    [[0.0048026871, 0.00022935172, 0.0077668377], [0.00022935172, 0.011729696, 0.0081661865],
     [0.0077668377, 0.0081661865, 0.025374353]],
    [[0.0011989699, 0.0022453172, -0.0010748957], [0.0022453172, 0.047758564, 0.020332102],
     [-0.0010748957, 0.020332102, 0.024502251]],
]
NONSKIN_W = [0.12791070, 0.31130761, 0.34245777, 0.21832393]
NONSKIN_MU = [[99.200851, 112.07533, 140.20602], [110.91392, 125.52969, 130.19237],
              [129.75864, 129.96107, 126.96808], [112.29587, 128.85121, 129.05431]]
NONSKIN_COV_DET = [458703648., 6466488., 90611376., 133097.63]
NONSKIN_COV_INV = [
    [[0.00085371657, 0.00071197288, 0.00023958916], [0.00071197288, 0.0025935620, 0.00076557708],
     [0.00023958916, 0.00076557708, 0.0015042332]],
    [[0.00024650150, 0.00045542428, 0.00015019422], [0.00045542428, 0.026412144, 0.018419769],
     [0.00015019422, 0.018419769, 0.037497383]],
    [[0.00037054974, 0.00038146760, 0.00040408765], [0.00038146760, 0.0085505722, 0.0079136286],
     [0.00040408765, 0.0079136286, 0.010982352]],
    [[0.00013709733, 0.00051228428, 0.00012777430], [0.00051228428, 0.28237113, 0.10528370],
     [0.00012777430, 0.10528370, 0.23468947]],
]
PRIOR_SKIN = 0.8
PRIOR_NONSKIN = 1 - PRIOR_SKIN

_YCBCR = torch.tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]],
                      dtype=torch.float64)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``D3D:util/skin_mask.py:42-51``: ``[..., 3]`` RGB in 0-255 -> YCbCr (float64).

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``, ``Cb = 128 + (-37.797 R - 74.203 G
    + 112 B) / 255``, ``Cr = 128 + (112 R - 93.786 G - 18.214 B) / 255``.
    """
    rgb = torch.as_tensor(rgb).double()
    out = rgb @ (_YCBCR.to(rgb.device).T / 255.0)
    return out + torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64, device=rgb.device)


def gmm_likelihood(data: torch.Tensor, w, mu, cov_det, cov_inv) -> torch.Tensor:
    """``D3D:util/skin_mask.py:19-39``: ``sum_k w_k exp(-0.5 d^T C_k^-1 d) / ((2 pi)^{D/2}
    sqrt(det C_k))`` for ``data`` ``[N, D]`` (float64), ``d = x - mu_k``. Returns ``[N]``."""
    data = torch.as_tensor(data, dtype=torch.float64)
    dim = data.shape[-1]
    lh = torch.zeros(data.shape[:-1], dtype=torch.float64, device=data.device)
    for wk, mk, det, inv in zip(w, mu, cov_det, cov_inv):
        d = data - torch.tensor(mk, dtype=torch.float64, device=data.device)
        q = ((d @ torch.tensor(inv, dtype=torch.float64, device=data.device)) * d).sum(-1)
        factor = (2 * math.pi) ** (dim / 2) * det ** 0.5
        lh = lh + torch.exp(-0.5 * q) / factor * wk
    return lh


def skin_probability(img, bgr: bool = False) -> torch.Tensor:
    """Posterior skin probability ``P`` per pixel (float64, before the uint8 rounding).

    Args:
        img: ``[H, W, 3]`` image in 0-255 (uint8 or float; numpy or tensor), RGB, or BGR with
            ``bgr=True`` (the authors read with ``cv2.imread`` and convert BGR -> RGB).
    Returns:
        ``[H, W]`` float64 tensor in ``[0, 1]``; NaN where both likelihoods underflow to 0 (as
        the authors' ``0/0``; it cannot happen for 0-255 inputs in practice).

    Example::

        P = skin_probability(np.asarray(Image.open(path).convert("RGB")))   # [H, W]
    """
    x = torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img)
    if x.dim() != 3 or x.shape[-1] != 3:
        raise ValueError(f"img must have shape [H, W, 3], got {list(x.shape)}")
    if bgr:
        x = x.flip(-1)
    ycc = rgb_to_ycbcr(x.double()).reshape(-1, 3)
    t1 = PRIOR_SKIN * gmm_likelihood(ycc, SKIN_W, SKIN_MU, SKIN_COV_DET, SKIN_COV_INV)
    t2 = PRIOR_NONSKIN * gmm_likelihood(ycc, NONSKIN_W, NONSKIN_MU, NONSKIN_COV_DET, NONSKIN_COV_INV)
    return (t1 / (t1 + t2)).reshape(x.shape[:2])


def skinmask(img, bgr: bool = False) -> np.ndarray:
    """The stored mask (``D3D:util/skin_mask.py:90-108``): ``uint8(round(255 P))`` tiled to
    ``[H, W, 3]`` (numpy ``round``: half to even). Written as PNG by the authors."""
    p = skin_probability(img, bgr=bgr).numpy()
    m = np.round(p * 255).astype(np.uint8)
    return np.tile(m[:, :, None], (1, 1, 3))


def load_skin_attention(mask) -> torch.Tensor:
    """What the training loader feeds the loss (``D3D:data/flist_dataset.py:99``):
    channel 0 of a ``[H, W, 3]`` (or ``[H, W]``) uint8 mask divided by 255, as ``[1, H, W]``
    float32."""
    m = np.asarray(mask)
    if m.dtype != np.uint8 or m.ndim not in (2, 3):
        raise ValueError(f"mask must be a uint8 [H, W] or [H, W, C] array, got {m.dtype} {list(m.shape)}")
    if m.ndim == 3:
        m = m[:, :, 0]
    return torch.from_numpy(m.astype(np.float32) / 255.0)[None]
