"""Shading: vertex normals, spherical-harmonic lighting, Blinn-Phong specular.

Public functions: :func:`vertex_normals`, :func:`sh_basis`, :func:`sh_shading` and
:func:`blinn_phong`. Each validates its arguments, then calls the
``torch.ops.facegeom`` custom op (C++ on CPU, CUDA on GPU), which has a fake
kernel (``torch.compile``) and an autograd formula whose backward is itself a
kernel. Without the compiled extension they fall back to
``facegeom.ops.reference``.
"""
from __future__ import annotations

import math
from typing import Union

import torch

from facegeom import _checks, _native
from facegeom.ops import reference
from facegeom.ops._autograd import forbid_double_backward, op_policy, refuse_forward_ad

Tensor = torch.Tensor

SH_CONVENTIONS = reference.SH_CONVENTIONS

# The compiled ops (a name that cannot be mistaken for the facegeom.ops package).
_C_ops = torch.ops.facegeom


@op_policy("vertex_normals")
def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted unit vertex normals (PyTorch3D's ``verts_normals`` definition).

    Every face ``(p0, p1, p2)`` adds ``(p1 - p0) x (p2 - p0)`` (twice its area
    times its unit normal, so the winding sets the side) to its three vertices;
    each vertex's sum is then normalised. (Deep3DFaceRecon's ``compute_norm``
    sums *unit* face normals instead; the two agree on evenly tessellated meshes.)

    Defined results: zero-area faces contribute nothing; a vertex with no
    incident face, or whose contributions cancel (a summed normal whose largest
    component is below the smallest normal float), gets the zero vector and a
    zero gradient, never NaN. The sum is scaled by its largest component before
    normalising, so meshes in tiny or huge units do not under/overflow. A
    non-finite sum (a NaN/Inf corner, or an overflow) gives a NaN normal
    (docs/ops.md "Non-finite values").

    Args:
        vertices: ``[B, V, 3]`` or ``[V, 3]`` float32/float64 (differentiable).
        faces: ``[F, 3]`` integer (int32 or int64 used as is, other integer types
            as int64) indices into ``V``, on the vertices' device. Indices outside
            ``[0, V)`` raise ``IndexError``.

    Returns:
        ``[B, V, 3]`` (``[V, 3]`` for unbatched vertices) unit normals.

    The gradient is computed by a kernel: on CPU by gathering over each vertex's
    incident faces (deterministic, independent of the thread count); on CUDA with
    atomic adds (last-bit differences between runs are possible).

    Example:
        >>> v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> vertex_normals(v, torch.tensor([[0, 1, 2]]))[0]
        tensor([0., 0., 1.])
    """
    _checks.floating("vertices", vertices)
    _checks.integer("faces", faces, vertices.device)
    unbatched = vertices.dim() == 2
    if unbatched:
        vertices = vertices.unsqueeze(0)
    _checks.shape("vertices", vertices, [None, None, 3], "[B, V, 3] or [V, 3]")
    _checks.shape("faces", faces, [None, 3], "[F, 3]")
    if faces.dtype not in (torch.int32, torch.int64):
        faces = faces.long()
    _checks.indices("faces", faces, vertices.shape[1], what="vertex indices")
    out = _vertex_normals(vertices, faces)
    return out[0] if unbatched else out


@op_policy("sh_basis")
def sh_basis(normals: Tensor, convention: str = "deep3d") -> Tensor:
    """The 9 order-2 spherical-harmonic basis values of each normal, in a paper's convention.

    ``convention`` (constants and signs exactly as the source code uses them):

    - ``"deep3d"`` — Deep3DFaceRecon (TF and PyTorch, ``SH.a``/``SH.c`` and
      ``compute_color``): with ``a = [pi, 2pi/sqrt(3), 2pi/sqrt(8)]``,
      ``c = [1/sqrt(4pi), sqrt(3)/sqrt(4pi), 3sqrt(5)/sqrt(12pi)]``:
      ``[a0c0, -a1c1 y, a1c1 z, -a1c1 x, a2c2 xy, -a2c2 yz,
      0.5 a2c2/sqrt(3) (3z^2-1), -a2c2 xz, 0.5 a2c2 (x^2-y^2)]``.
    - ``"deca"`` — DECA / metrical-tracker ``add_SHlight``:
      ``[1, x, y, z, xy, xz, yz, x^2-y^2, 3z^2-1]`` times
      ``[1/sqrt(4pi), (2pi/3)sqrt(3/(4pi)) x3, (pi/4)3sqrt(5/(12pi)) x3,
      (pi/4)(3/2)sqrt(5/(12pi)), (pi/4)(1/2)sqrt(5/(4pi))]``.
    - ``"irradiance"`` — Ramamoorthi & Hanrahan 2001 irradiance with Kaolin's
      (``sh9_irradiance``) rounded constants, in deep3d's order and signs:
      ``[0.282095, -0.488603 y, 0.488603 z, -0.488603 x, 1.092548 xy, -1.092548 yz,
      0.315392 (3z^2-1), -1.092548 xz, 0.546274 (x^2-y^2)]`` times the band
      factors ``pi`` (band 0), ``2pi/3`` (band 1), ``pi/4`` (band 2).

    Constants are evaluated in double precision and rounded once to the
    tensor's dtype. Normals are used as given (not re-normalised). A NaN/Inf
    normal gives non-finite basis values (docs/ops.md).

    Args:
        normals: ``[..., 3]`` float32/float64 unit normals (differentiable).
        convention: ``"deep3d"``, ``"deca"`` or ``"irradiance"``.

    Returns:
        ``[..., 9]`` basis values.

    Example:
        >>> sh_basis(torch.tensor([0.0, 0.0, 1.0]), "deca")[3]  # z term
        tensor(1.0233)
    """
    _checks.floating("normals", normals)
    _check_unit_last_dim("normals", normals, "[..., 3]")
    _checks.choice("convention", convention, SH_CONVENTIONS)
    flat = normals.reshape(-1, 3)
    if _native.serves("sh_basis", flat.device):
        basis = torch.ops.facegeom.sh_basis(flat, convention)
    else:
        basis = reference.sh_basis(flat, convention)
    return basis.reshape(*normals.shape[:-1], 9)


@op_policy("sh_shading")
def sh_shading(normals: Tensor, albedo: Tensor, sh_coeffs: Tensor, convention: str = "deep3d") -> Tensor:
    """Diffuse spherical-harmonic shading: ``albedo * (sh_basis(normals) @ sh_coeffs)``.

    ``out[..., c] = albedo[..., c] * sum_k Y_k(normals) * sh_coeffs[b, k, c]``, with
    ``Y`` the basis of :func:`sh_basis` in ``convention`` (see there for each
    convention's constants and source). Per vertex (``[B, V, 3]``) or per pixel
    (``[B, H, W, 3]``).

    Deep3DFaceRecon's ``gamma [B, 27]`` is ``gamma.view(B, 3, 9).transpose(1, 2)``
    plus its ``init_lit`` (0.8 on coefficient 0 of each channel); DECA's
    ``[B, 9, 3]`` light is used as is.

    Args:
        normals: unit normals (differentiable), ``[B, ..., 3]`` when ``sh_coeffs``
            is batched, any ``[..., 3]`` when it is ``[9, 3]``.
        albedo: diffuse albedo with the shape of ``normals`` (differentiable).
        sh_coeffs: ``[B, 9, 3]`` (per batch element, per colour channel) or
            ``[9, 3]`` shared (differentiable). A batch of 1 in any of the three
            broadcasts against the others.
        convention: ``"deep3d"`` (default), ``"deca"`` or ``"irradiance"``.

    Returns:
        ``[B, ..., 3]`` shaded colour (``[..., 3]`` with shared ``[9, 3]`` coefficients).
        A NaN/Inf input entry makes the colours it enters non-finite (docs/ops.md).

    Example:
        >>> n = torch.tensor([[[0.0, 0.0, 1.0]]])                  # [1, 1, 3]
        >>> coeffs = torch.zeros(1, 9, 3); coeffs[:, 0] = 0.8       # ambient only
        >>> sh_shading(n, torch.ones(1, 1, 3), coeffs)              # 0.8 * pi / sqrt(4 pi)
        tensor([[[0.7090, 0.7090, 0.7090]]])
    """
    normals, albedo, sh_coeffs, shared = _sh_shading_args(normals, albedo, sh_coeffs, convention)
    out = _sh_shading(normals, albedo, sh_coeffs, convention)
    return out[0] if shared else out


@op_policy("blinn_phong")
def blinn_phong(
    normals: Tensor,
    points: Tensor,
    light_pos: Tensor,
    camera_pos: Tensor,
    specular_albedo: Tensor,
    shininess: Union[float, Tensor],
) -> Tensor:
    """Blinn-Phong specular lobe of one point light (Deng et al. 2022, eq. 5).

    ``h = normalize(normalize(camera_pos - p) + normalize(light_pos - p))``,
    ``out = specular_albedo * max(dot(n, h), 0) ** shininess``.

    Defined behaviour, never NaN for finite input:

    - where ``dot(n, h) <= 0`` the lobe is 0 (also when ``shininess`` is 0) and
      every gradient through it, including the shininess gradient
      ``lobe * log(dot(n, h))``, is 0;
    - a point on the light or the camera has no direction to it: that direction
      is the zero vector (with zero gradient), and likewise ``h`` is zero when
      the light and view directions cancel, which makes the lobe 0.

    ``normals`` are used as given (pass unit normals). NaN/Inf input gives NaN
    where ``dot(n, h)`` becomes NaN (never a silent 0; docs/ops.md).

    Args:
        normals: ``[B, ..., 3]`` (per vertex ``[B, N, 3]`` or per pixel
            ``[B, H, W, 3]``) or unbatched ``[N, 3]`` (differentiable).
        points: surface points with the shape of ``normals`` (differentiable).
        light_pos: ``[B, 3]`` or ``[3]`` point-light position (differentiable).
        camera_pos: ``[B, 3]`` or ``[3]`` camera centre (differentiable).
        specular_albedo: ``[B, ..., 3]`` or ``[B, ..., 1]`` (differentiable).
        shininess: a float, or a ``[B]`` (or 0-dim) tensor (differentiable).

    All tensors share dtype (float32/float64) and device; a batch of 1 in any
    input broadcasts against the others.

    Returns:
        ``[B, ..., 3]`` specular colour (``[N, 3]`` when every input is unbatched).

    Example:
        >>> n = torch.tensor([[[0.0, 0.0, 1.0]]]); p = torch.zeros(1, 1, 3)
        >>> eye = torch.tensor([0.0, 0.0, 5.0])                    # light at the camera
        >>> blinn_phong(n, p, eye, eye, torch.ones(1, 1, 1), 20.0)  # n . h = 1
        tensor([[[1., 1., 1.]]])
    """
    args, unbatched = _blinn_phong_args(normals, points, light_pos, camera_pos, specular_albedo, shininess)
    out = _blinn_phong(*args)
    return out[0] if unbatched and out.shape[0] == 1 else out


# --------------------------------------------------------------------------- #
# Checks (run once, by the public functions above)                            #
# --------------------------------------------------------------------------- #

def _sh_shading_args(normals, albedo, sh_coeffs, convention):
    """Checks :func:`sh_shading`'s arguments; returns normals, albedo ``[B, ..., 3]``
    and sh_coeffs ``[B, 9, 3]`` expanded to the common batch, and whether the
    coefficients were shared (``[9, 3]``)."""
    _checks.floating("normals", normals)
    _checks.floating("albedo", albedo, normals, "normals")
    _checks.floating("sh_coeffs", sh_coeffs, normals, "normals")
    _checks.choice("convention", convention, SH_CONVENTIONS)
    shared = sh_coeffs.dim() == 2
    if shared:
        _checks.shape("sh_coeffs", sh_coeffs, [9, 3], "[B, 9, 3] or [9, 3]")
        _check_unit_last_dim("normals", normals, "[..., 3]")
        normals, albedo, sh_coeffs = normals.unsqueeze(0), albedo.unsqueeze(0), sh_coeffs.unsqueeze(0)
    else:
        _checks.shape("sh_coeffs", sh_coeffs, [None, 9, 3], "[B, 9, 3] or [9, 3]")
        if normals.dim() < 2 or normals.shape[-1] != 3:
            raise ValueError(f"normals must have shape [B, ..., 3], got {list(normals.shape)}")
    if albedo.dim() != normals.dim() or albedo.shape[1:] != normals.shape[1:]:
        raise ValueError(
            f"albedo must have the shape of normals ({list(normals.shape)}, batch 1 broadcasts), "
            f"got {list(albedo.shape)}"
        )
    batch = _checks.batch_size({"normals": normals.shape[0], "albedo": albedo.shape[0],
                                "sh_coeffs": sh_coeffs.shape[0]})
    return (normals.expand(batch, *normals.shape[1:]), albedo.expand(batch, *normals.shape[1:]),
            sh_coeffs.expand(batch, 9, 3), shared)


def _blinn_phong_args(normals, points, light_pos, camera_pos, specular_albedo, shininess):
    """Checks :func:`blinn_phong`'s arguments; returns them expanded to the common
    batch (normals, points ``[B, ..., 3]``, positions ``[B, 3]``, specular albedo
    ``[B, ..., C]``, shininess ``[B]``) and whether the call was unbatched."""
    _checks.floating("normals", normals)
    for name, t in (("points", points), ("light_pos", light_pos), ("camera_pos", camera_pos),
                    ("specular_albedo", specular_albedo)):
        _checks.floating(name, t, normals, "normals")
    unbatched = normals.dim() == 2
    if unbatched:
        normals, points, specular_albedo = normals.unsqueeze(0), points.unsqueeze(0), specular_albedo.unsqueeze(0)
    if normals.dim() < 3 or normals.shape[-1] != 3:
        raise ValueError(f"normals must have shape [B, ..., 3] or [N, 3], got {list(normals.shape)}")
    middle = list(normals.shape[1:-1])
    if points.dim() != normals.dim() or points.shape[1:] != normals.shape[1:]:
        raise ValueError(f"points must have the shape of normals ({list(normals.shape)}), got {list(points.shape)}")
    if (specular_albedo.dim() != normals.dim() or list(specular_albedo.shape[1:-1]) != middle
            or specular_albedo.shape[-1] not in (1, 3)):
        raise ValueError(
            f"specular_albedo must have shape [B, {', '.join(map(str, middle))}, 3 or 1], "
            f"got {list(specular_albedo.shape)}"
        )
    if light_pos.dim() == 1:
        light_pos = light_pos.unsqueeze(0)
    if camera_pos.dim() == 1:
        camera_pos = camera_pos.unsqueeze(0)
    _checks.shape("light_pos", light_pos, [None, 3], "[B, 3] or [3]")
    _checks.shape("camera_pos", camera_pos, [None, 3], "[B, 3] or [3]")
    shininess = _shininess(shininess, normals)
    batch = _checks.batch_size({"normals": normals.shape[0], "points": points.shape[0],
                                "light_pos": light_pos.shape[0], "camera_pos": camera_pos.shape[0],
                                "specular_albedo": specular_albedo.shape[0], "shininess": shininess.shape[0]})
    shape = (batch, *middle)
    channels = specular_albedo.shape[-1]
    return (normals.expand(*shape, 3), points.expand(*shape, 3), light_pos.expand(batch, 3),
            camera_pos.expand(batch, 3), specular_albedo.expand(*shape, channels), shininess.expand(batch)), unbatched


def _shininess(shininess, like: Tensor) -> Tensor:
    """A float or a ``[B]`` / 0-dim tensor -> a ``[B or 1]`` tensor in ``like``'s dtype and device."""
    if isinstance(shininess, Tensor):
        _checks.floating("shininess", shininess, like, "normals")
        if shininess.dim() == 0:
            shininess = shininess.unsqueeze(0)
        _checks.shape("shininess", shininess, [None], "a float or Tensor [B]")
    elif isinstance(shininess, (int, float)) and not isinstance(shininess, bool):
        shininess = torch.full((1,), float(shininess), dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"shininess must be a float or a Tensor [B], got {type(shininess).__name__}")
    return shininess


def _check_unit_last_dim(name: str, t: Tensor, layout: str) -> None:
    if t.dim() == 0 or t.shape[-1] != 3:
        raise ValueError(f"{name} must have shape {layout}, got {list(t.shape)}")


# --------------------------------------------------------------------------- #
# Unchecked implementations: for callers that validated already (the public   #
# functions above, facegeom.render). Inputs in the op's layout.               #
# --------------------------------------------------------------------------- #

def _vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """vertices [B, V, 3], faces [F, 3] int32/int64 in [0, V): no checks."""
    if _native.serves("vertex_normals", vertices.device):
        refuse_forward_ad("vertex_normals", vertices)  # facegeom.render calls this directly
        return torch.ops.facegeom.vertex_normals(vertices, faces)[0]
    return reference.vertex_normals(vertices, faces)


def _sh_shading(normals: Tensor, albedo: Tensor, sh_coeffs: Tensor, convention: str) -> Tensor:
    """normals, albedo [B, ..., 3] (one shape), sh_coeffs [B, 9, 3]: no checks."""
    out_shape = normals.shape
    batch, num_points = out_shape[0], math.prod(out_shape[1:-1])
    normals, albedo = normals.reshape(batch, num_points, 3), albedo.reshape(batch, num_points, 3)
    if _native.serves("sh_shading", normals.device):
        refuse_forward_ad("sh_shading", normals, albedo, sh_coeffs)  # facegeom.render calls this directly
        out = torch.ops.facegeom.sh_shading(normals, albedo, sh_coeffs, convention)
    else:
        out = reference.sh_shading(normals, albedo, sh_coeffs, convention)
    return out.reshape(out_shape)


def _blinn_phong(normals: Tensor, points: Tensor, light_pos: Tensor, camera_pos: Tensor,
                 specular_albedo: Tensor, shininess: Tensor) -> Tensor:
    """normals, points [B, ..., 3], light_pos, camera_pos [B, 3], specular_albedo
    [B, ..., 3 or 1], shininess [B], one batch B: no checks. Returns [B, ..., 3]."""
    out_shape = normals.shape
    batch, num_points = out_shape[0], math.prod(out_shape[1:-1])
    normals, points = normals.reshape(batch, num_points, 3), points.reshape(batch, num_points, 3)
    specular_albedo = specular_albedo.reshape(batch, num_points, specular_albedo.shape[-1])
    if _native.serves("blinn_phong", normals.device):
        # facegeom.render calls this directly
        refuse_forward_ad("blinn_phong", normals, points, light_pos, camera_pos, specular_albedo, shininess)
        out = torch.ops.facegeom.blinn_phong(normals, points, light_pos, camera_pos, specular_albedo, shininess)
    else:
        out = reference.blinn_phong(normals, points, light_pos, camera_pos, specular_albedo, shininess)
    return out.reshape(out_shape)


# --------------------------------------------------------------------------- #
# Op registration: fake kernels and autograd (only when _C has the ops)       #
# --------------------------------------------------------------------------- #

def _masked_empty(inputs, mask):
    return tuple(t.new_empty(t.shape) if wanted else t.new_empty(0) for t, wanted in zip(inputs, mask))


if _native.has_op("vertex_normals"):

    # -- vertex_normals ----------------------------------------------------- #
    # The op also returns 1 / |sum| per vertex ([B, V]) for its backward.
    @torch.library.register_fake("facegeom::vertex_normals")
    def _(vertices, faces):
        return vertices.new_empty(vertices.shape), vertices.new_empty(vertices.shape[:2])

    @torch.library.register_fake("facegeom::vertex_normals_backward")
    def _(grad_out, vertices, faces, normals, inv_len):
        return vertices.new_empty(vertices.shape)

    def _normals_setup(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(*inputs, *output)

    def _normals_backward(ctx, grad, _grad_inv_len):
        vertices, faces, normals, inv_len = ctx.saved_tensors
        return _C_ops.vertex_normals_backward(grad, vertices, faces, normals, inv_len), None

    torch.library.register_autograd(
        "facegeom::vertex_normals", _normals_backward, setup_context=_normals_setup
    )

    # -- sh_basis ----------------------------------------------------------- #
    @torch.library.register_fake("facegeom::sh_basis")
    def _(normals, convention):
        return normals.new_empty(normals.shape[0], 9)

    @torch.library.register_fake("facegeom::sh_basis_backward")
    def _(grad_basis, normals, convention):
        return normals.new_empty(normals.shape)

    def _basis_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.convention = inputs[1]

    def _basis_backward(ctx, grad):
        (normals,) = ctx.saved_tensors
        return _C_ops.sh_basis_backward(grad, normals, ctx.convention), None

    torch.library.register_autograd("facegeom::sh_basis", _basis_backward, setup_context=_basis_setup)

    # -- sh_shading --------------------------------------------------------- #
    @torch.library.register_fake("facegeom::sh_shading")
    def _(normals, albedo, sh_coeffs, convention):
        return normals.new_empty(normals.shape)

    @torch.library.register_fake("facegeom::sh_shading_backward")
    def _(grad_out, normals, albedo, sh_coeffs, convention, output_mask):
        return _masked_empty((normals, albedo, sh_coeffs), output_mask)

    def _shading_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:3])
        ctx.convention = inputs[3]

    def _shading_backward(ctx, grad):
        mask = list(ctx.needs_input_grad[:3])
        grads = _C_ops.sh_shading_backward(grad, *ctx.saved_tensors, ctx.convention, mask)
        return tuple(g if wanted else None for g, wanted in zip(grads, mask)) + (None,)

    torch.library.register_autograd(
        "facegeom::sh_shading", _shading_backward, setup_context=_shading_setup
    )

    # -- blinn_phong -------------------------------------------------------- #
    @torch.library.register_fake("facegeom::blinn_phong")
    def _(normals, points, light_pos, camera_pos, specular_albedo, shininess):
        return normals.new_empty(normals.shape)

    @torch.library.register_fake("facegeom::blinn_phong_backward")
    def _(grad_out, normals, points, light_pos, camera_pos, specular_albedo, shininess, output_mask):
        return _masked_empty((normals, points, light_pos, camera_pos, specular_albedo, shininess), output_mask)

    def _phong_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _phong_backward(ctx, grad):
        mask = list(ctx.needs_input_grad[:6])
        grads = _C_ops.blinn_phong_backward(grad, *ctx.saved_tensors, mask)
        return tuple(g if wanted else None for g, wanted in zip(grads, mask))

    torch.library.register_autograd("facegeom::blinn_phong", _phong_backward, setup_context=_phong_setup)

    forbid_double_backward("vertex_normals_backward", "sh_basis_backward", "sh_shading_backward",
                           "blinn_phong_backward")


