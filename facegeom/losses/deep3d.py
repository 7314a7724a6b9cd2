"""Deep3DFaceRecon's training losses, with the authors' names and semantics.

Source: sicxu/Deep3DFaceRecon_pytorch at 9167c7136aebef0c54d3ac74f4b0396222a491c1,
``D3D:models/losses.py`` (line numbers below) and their use in
``D3D:models/facerecon_model.py:145-175``; PIPELINES.md §2.5. Each function returns
the *unweighted* term; the weights (``Config`` in :mod:`facegeom.pipelines.deep3d`,
``D3D:models/facerecon_model.py:52-60``) are applied by the pipeline:

==================  ============  ===========================================
term                weight        function
==================  ============  ===========================================
``feat``            0.2           :func:`perceptual_loss` of :func:`recog_features`
``color``           1.92          :func:`photo_loss`
``lm``              1.6e-3        :func:`landmark_loss`
``reg``             3e-4          :func:`reg_loss` (id 1.0, exp 0.8, tex 1.7e-2)
``gamma``           10            :func:`gamma_loss`
``reflc``           5             :func:`reflectance_loss`
==================  ============  ===========================================

[CODE≠PAPER] (paper: Deng et al. 2019 eq. 2-6): photo weight 1.9 in the paper,
1.92 in code; texture regulariser 1.7e-3 in the paper, 1.7e-2 in code; the code's
``sqrt(1e-6 + ||.||^2)`` instead of ``||.||``; an ArcFace (not FaceNet) identity
loss on a 112 x 112 crop; the gamma (monochrome light) term exists only in code.
The authors' ``reg_loss`` returns ``(coefficient term, gamma term)``; here they
are two functions, :func:`reg_loss` and :func:`gamma_loss`, with the same values.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from facegeom import _checks

Tensor = torch.Tensor

__all__ = ["LANDMARK_WEIGHTS", "gamma_loss", "landmark_loss", "perceptual_loss", "photo_loss",
           "recog_features", "reflectance_loss", "reg_loss", "resize_n_crop"]


def _landmark_weights() -> Tensor:
    weight = torch.ones(68, dtype=torch.float64)
    weight[28:31] = 20  # nose ridge, 0-based 28-30 (D3D:models/losses.py:66)
    weight[-8:] = 20    # inner lips, 0-based 60-67 (D3D:models/losses.py:67)
    return weight


LANDMARK_WEIGHTS = _landmark_weights()
"""``[68]`` float64: 1, except 20 at the 0-based indices 28-30 and 60-67 (``D3D:models/losses.py:64-69``)."""


def photo_loss(imageA: Tensor, imageB: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Masked photometric loss (``D3D:models/losses.py:45-54``; paper eq. 3):
    ``sum(mask * sqrt(eps + sum_c (A - B)^2)) / max(sum(mask), 1)`` (sums over the
    batch too). The ``eps`` keeps the gradient finite where ``A == B``.

    Args:
        imageA, imageB: ``[B, 3, H, W]`` images (Deep3D: RGB in [0, 1]; the render and the input).
        mask: ``[B, 1, H, W]`` weights (Deep3D: skin attention x rasterised face-crop mask, detached).
        eps: added under the square root (TF original: 0, on 0-255 BGR).

    Returns:
        Scalar tensor.

    Example:
        >>> a = torch.zeros(1, 3, 2, 2); b = torch.ones(1, 3, 2, 2)
        >>> round(float(photo_loss(a, b, torch.ones(1, 1, 2, 2), eps=0.0)), 4)   # sqrt(3)
        1.7321
    """
    _checks.floating("imageA", imageA)
    _checks.floating("imageB", imageB, imageA, "imageA")
    _checks.floating("mask", mask, imageA, "imageA")
    _checks.shape("imageA", imageA, [None, None, None, None], "[B, C, H, W]")
    if imageB.shape != imageA.shape:
        raise ValueError(f"imageB must have the shape of imageA {list(imageA.shape)}, got {list(imageB.shape)}")
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != imageA.shape[2:] \
            or mask.shape[0] not in (1, imageA.shape[0]):
        raise ValueError(f"mask must have shape [B, 1, H, W] = [{imageA.shape[0]}, 1, {imageA.shape[2]}, "
                         f"{imageA.shape[3]}], got {list(mask.shape)}")
    loss = torch.sqrt(eps + torch.sum((imageA - imageB) ** 2, dim=1, keepdim=True)) * mask
    return torch.sum(loss) / torch.clamp(torch.sum(mask), min=1.0)


def landmark_loss(predict_lm: Tensor, gt_lm: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Weighted landmark MSE (``D3D:models/losses.py:56-72``; paper eq. 4):
    ``sum_b sum_n w_n ||p_bn - q_bn||^2 / (B * N)`` in pixels (Deep3D: 68 points, y up).

    Args:
        predict_lm, gt_lm: ``[B, N, 2]`` landmarks (differentiable).
        weight: ``[N]``, ``[1, N]`` or ``[B, N]``; default :data:`LANDMARK_WEIGHTS`
            (needs ``N = 68``).

    Returns:
        Scalar tensor.
    """
    weight = _checks.landmark_weights("predict_lm", predict_lm, "gt_lm", gt_lm, weight, LANDMARK_WEIGHTS)
    loss = torch.sum((predict_lm - gt_lm) ** 2, dim=-1) * weight
    return torch.sum(loss) / (predict_lm.shape[0] * predict_lm.shape[1])


def _coefficient(coeffs: Dict[str, Tensor], key: str) -> Tensor:
    if key not in coeffs:
        raise ValueError(f"coeffs_dict must hold {key!r} (split_coeff's keys), got {sorted(coeffs)}")
    value = coeffs[key]
    _checks.floating(f"coeffs_dict[{key!r}]", value)
    if value.dim() != 2:
        raise ValueError(f"coeffs_dict[{key!r}] must have shape [B, K], got {list(value.shape)}")
    return value


def reg_loss(coeffs_dict: Dict[str, Tensor], w_id: float = 1.0, w_exp: float = 0.8, w_tex: float = 1.7e-2) -> Tensor:
    """Coefficient regulariser (``D3D:models/losses.py:76-92``, first output; paper eq. 5):
    ``(w_id sum(id^2) + w_exp sum(exp^2) + w_tex sum(tex^2)) / B``.

    Args:
        coeffs_dict: ``split_coeff`` output, needs ``'id'``, ``'exp'``, ``'tex'`` ``[B, K]``.
        w_id, w_exp, w_tex: ``opt.w_id / w_exp / w_tex`` (``D3D:models/facerecon_model.py:55-57``).
            [CODE≠PAPER] the paper's texture weight is 1.7e-3.
    """
    ident, expr, tex = (_coefficient(coeffs_dict, k) for k in ("id", "exp", "tex"))
    total = w_id * torch.sum(ident ** 2) + w_exp * torch.sum(expr ** 2) + w_tex * torch.sum(tex ** 2)
    return total / ident.shape[0]


def gamma_loss(gamma: Tensor) -> Tensor:
    """Monochrome-light regulariser (``D3D:models/losses.py:94-97``, second output of
    the authors' ``reg_loss``; code only): ``mean((g - mean_c g)^2)`` over ``g`` =
    ``gamma.reshape(B, 3, 9)`` (mean over the colour axis, then over all B·3·9 entries).

    Args:
        gamma: ``[B, 27]`` (or ``[B, 3, 9]``) SH coefficients, colour-major.
    """
    _checks.floating("gamma", gamma)
    if gamma.shape[1:] not in (torch.Size([27]), torch.Size([3, 9])):
        raise ValueError(f"gamma must have shape [B, 27] or [B, 3, 9], got {list(gamma.shape)}")
    gamma = gamma.reshape(-1, 3, 9)
    return torch.mean((gamma - torch.mean(gamma, dim=1, keepdim=True)) ** 2)


def reflectance_loss(texture: Tensor, mask: Tensor) -> Tensor:
    """Albedo flatness over the skin region (``D3D:models/losses.py:101-112``; paper eq. 6):
    ``mu = sum_v m_v T_v / sum m`` per batch element and channel, then
    ``sum(((T - mu) m)^2) / (B sum m)``.

    Args:
        texture: ``[B, N, 3]`` per-vertex albedo in [0, 1] (differentiable).
        mask: ``[N]`` vertex weights (Deep3D: ``skinmask``, 0 or 1).
    """
    _checks.floating("texture", texture)
    _checks.shape("texture", texture, [None, None, None], "[B, N, 3]")
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    mask = mask.to(texture)
    if mask.dim() != 1 or mask.shape[0] != texture.shape[1]:
        raise ValueError(f"mask must have shape [N = {texture.shape[1]}], got {list(mask.shape)}")
    mask = mask.reshape(1, -1, 1)
    mean = torch.sum(mask * texture, dim=1, keepdim=True) / torch.sum(mask)
    return torch.sum(((texture - mean) * mask) ** 2) / (texture.shape[0] * torch.sum(mask))


def perceptual_loss(id_featureA: Tensor, id_featureB: Tensor) -> Tensor:
    """Identity loss on unit features (``D3D:models/losses.py:39-42``; paper eq. 7 with an
    ArcFace net): ``sum_b (1 - <f_A, f_B>) / B``.

    Args:
        id_featureA, id_featureB: ``[B, D]`` L2-normalised features (see :func:`recog_features`).
    """
    _checks.floating("id_featureA", id_featureA)
    _checks.floating("id_featureB", id_featureB, id_featureA, "id_featureA")
    if id_featureA.dim() != 2 or id_featureB.shape != id_featureA.shape:
        raise ValueError(f"id_featureA and id_featureB must both be [B, D], got {list(id_featureA.shape)} "
                         f"and {list(id_featureB.shape)}")
    cosine_d = torch.sum(id_featureA * id_featureB, dim=-1)
    return torch.sum(1 - cosine_d) / cosine_d.shape[0]


def resize_n_crop(image: Tensor, M: Tensor, dsize: int = 112) -> Tensor:
    """The authors' ArcFace crop (``D3D:models/losses.py:7-10``): kornia 0.5.5
    ``warp_affine(image, M, (dsize, dsize))`` (bilinear, zero padding,
    ``align_corners=True``): output pixel ``p`` samples ``image`` at ``M^{-1} p``,
    pixel coordinates with integers at pixel centres.

    Args:
        image: ``[B, C, H, W]`` (differentiable).
        M: ``[B, 2, 3]`` forward affine transform from ``image`` pixels to crop pixels
            (``estimate_norm``'s output; not differentiated).
        dsize: crop size.

    Returns:
        ``[B, C, dsize, dsize]``.
    """
    _checks.floating("image", image)
    _checks.shape("image", image, [None, None, None, None], "[B, C, H, W]")
    _checks.floating("M", M)
    _checks.shape("M", M, [image.shape[0], 2, 3], "[B, 2, 3]")
    if not isinstance(dsize, int) or dsize <= 0:
        raise ValueError(f"dsize must be a positive int, got {dsize!r}")
    height, width = image.shape[2:]
    # kornia's arithmetic, step for step (so float32 results agree to rounding): pixel ->
    # [-1, 1] normalisation with align_corners=True on both sides, inverse, affine_grid.
    M = M.to(image.dtype)
    forward = torch.cat([M, M.new_tensor([0.0, 0.0, 1.0]).expand(M.shape[0], 1, 3)], 1)
    dst_norm_from_src_norm = _pixel_to_normalized(dsize, dsize, M) @ (
        forward @ torch.linalg.inv(_pixel_to_normalized(height, width, M)))
    src_norm_from_dst_norm = torch.linalg.inv(dst_norm_from_src_norm)
    grid = F.affine_grid(src_norm_from_dst_norm[:, :2, :], [image.shape[0], image.shape[1], dsize, dsize],
                         align_corners=True)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _pixel_to_normalized(height: int, width: int, like: Tensor) -> Tensor:
    """``[1, 3, 3]``: pixel (integers at centres) -> [-1, 1] with the corner pixels' centres
    at +-1 (kornia ``normal_transform_pixel``; eps 1e-14 for a size of 1)."""
    transform = like.new_tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    transform[0, 0] = transform[0, 0] * 2.0 / (1e-14 if width == 1 else width - 1)
    transform[1, 1] = transform[1, 1] * 2.0 / (1e-14 if height == 1 else height - 1)
    return transform.unsqueeze(0)


def recog_features(recog_net: Callable[[Tensor], Tensor], image: Tensor, M: Tensor, input_size: int = 112) -> Tensor:
    """``RecogNetWrapper.forward`` (``D3D:models/networks.py:107-124``): unit features of
    ``recog_net(2 * resize_n_crop(image, M, input_size) - 1)``.

    Args:
        recog_net: the face recognition network (Deep3D: ArcFace IResNet-50,
            ``ms1mv3_arcface_r50_fp16``), frozen and in ``eval()`` mode by the caller.
        image: ``[B, 3, H, W]`` RGB in [0, 1].
        M: ``[B, 2, 3]`` crop transforms (Deep3D: ``estimate_norm`` of the predicted
            landmarks for the render, of the ground truth for the photo).

    Returns:
        ``[B, D]`` L2-normalised features.
    """
    crop = 2 * resize_n_crop(image, M, input_size) - 1
    return F.normalize(recog_net(crop), dim=-1, p=2)
