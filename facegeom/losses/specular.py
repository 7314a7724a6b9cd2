"""The training losses of Deng, Jin, Le, Deng (ACM MM 2022), "End-to-End 3D Face
Reconstruction with Expressions and Specular Albedos from Single In-the-wild Images"
(``specular-albedo-deng2022.txt`` §4.1, eq. 6-13; PIPELINES.md §5.6).

No code was released (PIPELINES.md §5), so every function transcribes the printed
formula; the choices the paper leaves open are marked [INFERRED] and listed in
``docs/specular.md``. Each function returns the *unweighted* term; the weights of eq. 6
(``Config`` in :mod:`facegeom.pipelines.specular`) are applied by the pipeline:

==================  ==========  =============================================
term                weight      function
==================  ==========  =============================================
``id``              0.2         :func:`identity_loss` (eq. 7)
``photo``           1.92        :func:`photo_loss` (eq. 8, with :func:`skin_confidence`, eq. 9)
``lmk``             1.8e-3      :func:`landmark_loss` (eq. 10)
``mouth``           1.3e-3      :func:`mouth_loss` (eq. 11)
``reg``             5e-4        :func:`reg_loss` (eq. 12)
``uniform``         5.0         :func:`uniform_loss` (eq. 13, squared-variance reading)
==================  ==========  =============================================

Every term is a per-image quantity averaged over the batch [INFERRED: the paper writes
each for one image].
"""
from __future__ import annotations

from typing import Optional

import torch

from facegeom import _checks

Tensor = torch.Tensor

__all__ = ["LANDMARK_WEIGHTS", "identity_loss", "landmark_loss", "mouth_loss", "photo_loss", "reg_loss",
           "skin_confidence", "uniform_loss"]


def _landmark_weights() -> Tensor:
    weight = torch.ones(68, dtype=torch.float64)
    weight[17:27] = 20.0  # eyebrows, iBUG 0-based 17-26
    weight[48:60] = 20.0  # outer mouth, iBUG 0-based 48-59
    return weight


LANDMARK_WEIGHTS = _landmark_weights()
"""``[68]`` float64 ``mu_i`` of eq. 10: 20 on the eyebrows (0-based 17-26) and the outer
mouth (48-59), 1 elsewhere (paper §4.1.3: "large weights (e.g., 20) to the landmarks on both
the outer mouth and the eyebrows"; the index sets are the iBUG regions of those names
[INFERRED])."""


def _image_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    _checks.floating(name_a, a)
    _checks.floating(name_b, b, a, name_a)
    _checks.shape(name_a, a, [None, 3, None, None], "[B, 3, H, W]")
    if b.shape != a.shape:
        raise ValueError(f"{name_b} must have the shape of {name_a} {list(a.shape)}, got {list(b.shape)}")


def _pixel_map(name: str, m: Tensor, like: Tensor) -> Tensor:
    _checks.floating(name, m, like, "the images")
    batch, _, height, width = like.shape
    if m.dim() != 4 or m.shape[1] != 1 or m.shape[2:] != like.shape[2:] or m.shape[0] not in (1, batch):
        raise ValueError(f"{name} must have shape [B, 1, H, W] = [{batch}, 1, {height}, {width}], got {list(m.shape)}")
    return m.expand(batch, 1, height, width)


def identity_loss(features_in: Tensor, features_render: Tensor) -> Tensor:
    """Eq. 7: ``1 - F(I_in) . F(I_r) / (||F(I_in)|| ||F(I_r)||)``, mean over the batch.

    Args:
        features_in, features_render: ``[B, D]`` recognition features of the input and the
            render (not necessarily normalised; the paper's F is FaceNet, any user-supplied
            recognition net works).

    Returns:
        Scalar tensor in [0, 2].
    """
    _checks.floating("features_in", features_in)
    _checks.floating("features_render", features_render, features_in, "features_in")
    if features_in.dim() != 2 or features_render.shape != features_in.shape:
        raise ValueError(f"features_in and features_render must both be [B, D], got {list(features_in.shape)} "
                         f"and {list(features_render.shape)}")
    cosine = torch.nn.functional.cosine_similarity(features_in, features_render, dim=-1, eps=1e-12)
    return (1 - cosine).mean()


def skin_confidence(probability: Tensor) -> Tensor:
    """Eq. 9: ``C_skin = 1 where p > 0.5, else p`` (``p``: skin probability, e.g.
    :func:`facegeom.data.skin.skin_probability`). Any shape."""
    _checks.floating("probability", probability)
    return torch.where(probability > 0.5, torch.ones_like(probability), probability)


def photo_loss(image_in: Tensor, render_diffuse: Tensor, render_full: Tensor, face_mask: Tensor,
               skin_probability: Tensor, eta: float = 1.0, eps: float = 1e-6) -> Tensor:
    """Eq. 8, per image, mean over the batch:

    ``sum_M C_skin ||I_in - I_diffuse||_2 / sum_M C_skin + eta sum_M ||I_in - I_full||_2 / |M|``

    with ``M`` the pixels where ``face_mask`` is set (the paper's ``I_face ∩ I_project``,
    pixel weights allowed) and ``C_skin`` = :func:`skin_confidence` of ``skin_probability``.
    ``||.||_2`` is the per-pixel colour distance, **not squared**, computed as
    ``sqrt(eps + sum_c (.)^2)`` so the gradient stays finite where the images agree (as
    Deep3D's ``photo_loss``, ``D3D:models/losses.py:45-54``). Sums with no pixel divide by 1.

    ``I_full`` is the paper's ``I_r_diffuse + I_r_specular``: in facegeom the render of
    ``gamma(c_d + c_s)`` (linear-space sum, then gamma; PIPELINES.md §5.3).

    Args:
        image_in: ``[B, 3, H, W]`` input photo (sRGB in [0, 1]).
        render_diffuse: ``[B, 3, H, W]`` the diffuse-only render (differentiable).
        render_full: ``[B, 3, H, W]`` the diffuse + specular render (differentiable).
        face_mask: ``[B, 1, H, W]`` ``M`` (segmentation x projected face region), in [0, 1].
        skin_probability: ``[B, 1, H, W]`` GMM skin probability ``p`` (eq. 9).
        eta: the second term's weight (the paper's "user-specified" eta; no value given).

    Returns:
        Scalar tensor.
    """
    _image_pair("image_in", image_in, "render_diffuse", render_diffuse)
    _image_pair("image_in", image_in, "render_full", render_full)
    mask = _pixel_map("face_mask", face_mask, image_in)
    weight = skin_confidence(_pixel_map("skin_probability", skin_probability, image_in)) * mask

    def distance(render):
        return torch.sqrt(eps + ((image_in - render) ** 2).sum(1, keepdim=True))

    diffuse = (weight * distance(render_diffuse)).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp(min=1.0)
    full = (mask * distance(render_full)).sum((1, 2, 3)) / mask.sum((1, 2, 3)).clamp(min=1.0)
    return (diffuse + eta * full).mean()


def landmark_loss(predicted: Tensor, target: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Eq. 10: ``(1 / |K|) sum_i mu_i ||k_i - k_i^p||_2`` (Euclidean distance, **not squared**,
    unlike Deep3D's), mean over the batch.

    Args:
        predicted, target: ``[B, K, 2]`` landmarks in pixels (differentiable).
        weight: ``[K]`` or ``[B, K]`` ``mu``; default :data:`LANDMARK_WEIGHTS` (needs K = 68).

    Returns:
        Scalar tensor (pixels).
    """
    weight = _checks.landmark_weights("predicted", predicted, "target", target, weight, LANDMARK_WEIGHTS)
    count = predicted.shape[1]
    distance = torch.sqrt(((predicted - target) ** 2).sum(-1) + 1e-12)  # finite gradient at 0
    return (weight * distance).sum(1).mean() / count


def mouth_loss(target_area: Tensor, projected_area: Tensor) -> Tensor:
    """Eq. 11: ``||A - A^p||_1``, the L1 norm over the pixels of the labelled inner-mouth
    mask ``A`` and the projected inner-mouth area ``A^p``, mean over the batch.

    ``A^p`` must carry silhouette gradients to be useful: in the pipeline it is the
    antialiased coverage of the inner-mouth proxy triangles
    (:func:`facegeom.ops.antialias`; PIPELINES.md §5.6 item 4).

    Args:
        target_area: ``[B, 1, H, W]`` mask in [0, 1].
        projected_area: ``[B, 1, H, W]`` coverage in [0, 1] (differentiable).

    Returns:
        Scalar tensor (in pixels: a sum, not a mean, over the image).
    """
    _checks.floating("target_area", target_area)
    _checks.floating("projected_area", projected_area, target_area, "target_area")
    _checks.shape("projected_area", projected_area, [None, 1, None, None], "[B, 1, H, W]")
    if target_area.shape != projected_area.shape:
        raise ValueError(f"target_area must have the shape of projected_area {list(projected_area.shape)}, "
                         f"got {list(target_area.shape)}")
    return (target_area - projected_area).abs().sum((1, 2, 3)).mean()


def reg_loss(shape: Tensor, albedo: Tensor, expression: Tensor) -> Tensor:
    """Eq. 12: ``||c_i||^2 + ||c_t||^2 + ||c_e||^2`` (no per-term weights), mean over the batch.

    Args:
        shape: ``[B, 199]`` ``c_i``; albedo: ``[B, 145]`` ``c_t`` (shared by diffuse and
            specular albedo); expression: ``[B, 100]`` ``c_e`` (any sizes).
    """
    terms = []
    for name, c in (("shape", shape), ("albedo", albedo), ("expression", expression)):
        _checks.floating(name, c, shape, "shape")
        _checks.shape(name, c, [shape.shape[0] if shape.dim() else None, None], "[B, K]")
        terms.append((c ** 2).sum(1))
    return sum(terms).mean()


def uniform_loss(lit_diffuse: Tensor, sh_coeffs: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Eq. 13 in its squared-variance reading, mean over the batch:

    ``(1 / |T|) sum_{i in T} ||t_i - t_mean||^2 + mean_{b, c} (lambda_{b,c} - lambda_mean_b)^2``

    with ``t_i`` the lit diffuse colours (``c_d`` of eq. 4, per vertex) over the region
    ``T``, ``t_mean`` their mean colour, ``lambda [B, 9, 3]`` the SH coefficients of band
    function ``b`` and colour ``c``, and ``lambda_mean_b`` the mean over the three colours.

    The printed eq. 13, ``(1/|T|) sum_i (t_i - t_mean) + sum_b sum_i lambda_{b,i} - lambda_b``,
    is ill-formed: its first term is identically zero and neither term is squared, so it
    penalises nothing. The text says the loss "penalize[s] diffuse albedo color variance"
    and acts on the SH parameters: squaring both differences gives the colour variance of the
    lit diffuse albedo and the colour (chroma) variance of the light, as Deep3D's
    reflectance and gamma losses (``D3D:models/losses.py:76-112``). The second term is a mean
    over the 27 coefficients (PIPELINES.md §5.6 item 6) [INFERRED].

    Args:
        lit_diffuse: ``[B, N, 3]`` per-vertex lit diffuse colours (differentiable).
        sh_coeffs: ``[B, 9, 3]`` SH coefficients (band function, colour).
        mask: ``[N]`` vertex weights selecting ``T`` (e.g. the skin vertices); default all.

    Returns:
        Scalar tensor.
    """
    _checks.floating("lit_diffuse", lit_diffuse)
    _checks.shape("lit_diffuse", lit_diffuse, [None, None, 3], "[B, N, 3]")
    _checks.floating("sh_coeffs", sh_coeffs, lit_diffuse, "lit_diffuse")
    _checks.shape("sh_coeffs", sh_coeffs, [lit_diffuse.shape[0], 9, 3], "[B, 9, 3]")
    if mask is None:
        weight = lit_diffuse.new_ones(lit_diffuse.shape[1])
    else:
        weight = torch.as_tensor(mask).to(lit_diffuse)
        if weight.shape != (lit_diffuse.shape[1],):
            raise ValueError(f"mask must have shape [N] = [{lit_diffuse.shape[1]}], got {list(weight.shape)}")
    count = weight.sum().clamp(min=1e-12)
    w = weight[None, :, None]
    mean = (w * lit_diffuse).sum(1, keepdim=True) / count
    colour = (w * (lit_diffuse - mean) ** 2).sum((1, 2)) / count
    light = ((sh_coeffs - sh_coeffs.mean(2, keepdim=True)) ** 2).mean((1, 2))
    return (colour + light).mean()
