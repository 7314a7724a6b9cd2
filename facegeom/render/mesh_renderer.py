"""A differentiable mesh renderer built from the facegeom ops.

``MeshRenderer`` composes, in this order (PyTorch3D's rasterizer + shader split,
``pytorch3d/renderer/mesh/renderer.py``): projection to clip space (a camera
object or ``pos`` given directly) -> :meth:`MeshRenderer.rasterize`
(:func:`facegeom.ops.rasterize` and :func:`facegeom.ops.vertex_normals`, giving
:class:`Fragments`) -> a shader (:class:`SHShader`: spherical-harmonic diffuse
shading, :func:`facegeom.ops.sh_shading`, plus an optional Blinn-Phong specular
lobe, :func:`facegeom.ops.blinn_phong`, per vertex or per pixel, with
:func:`facegeom.ops.interpolate`; or :class:`UnlitShader`) -> background
compositing -> optional :func:`facegeom.ops.antialias` -> a flip to image rows.

Arguments are checked once, in :meth:`MeshRenderer.forward` (the faces when the
renderer is built); the steps then call the ops' unchecked implementations, so
a render reads no tensor value back to the host for validation.

Image convention. The rasterizer follows nvdiffrast: its row 0 is the *bottom*
of the image (NDC y = -1, y up). Everything ``MeshRenderer`` returns is flipped
to the image convention of the papers and of image files: row 0 is the *top*
row, so ``image[b, r, c]`` is the pixel that the ``project`` of a
:mod:`facegeom.cameras` camera puts at ``(x, y) = (c, r)`` (x right, y down,
pixel centres at integers).
``torch.flip(out.image, [1])`` gives nvdiffrast's layout back.

Everything runs on the device of ``vertices`` (CPU kernels or CUDA kernels, as
the ops choose) in its dtype (float32 or float64).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from facegeom import _checks
from facegeom.ops import antialias_topology
from facegeom.ops.antialias import _antialias
from facegeom.ops.rasterize import MAX_RESOLUTION, MAX_TRIANGLES_FLOAT32, _interpolate, _rasterize
from facegeom.ops.shading import _blinn_phong, _sh_shading, _shininess, _vertex_normals

Tensor = torch.Tensor

SH_CONVENTIONS = ("deep3d", "deca", "irradiance")
SHADING_MODES = ("vertex", "pixel")


class Rendering(NamedTuple):
    """What :meth:`MeshRenderer.forward` returns; all in image convention (row 0 at the top).

    Attributes:
        image: ``[B, H, W, 3]`` shaded colour composited over the background (not
            clamped; antialiased at silhouettes when the renderer antialiases).
        alpha: ``[B, H, W, 1]`` coverage: 1 on the mesh, 0 on the background,
            fractional at antialiased silhouette pixels. Differentiable w.r.t. the
            vertex positions only through antialiasing.
        depth: ``[B, H, W, 1]`` the rasterizer's ``z / w`` (NDC depth in [-1, 1],
            smaller is nearer), 0 on the background; differentiable w.r.t. positions.
        triangle_id: ``[B, H, W]`` int64 index of the visible triangle, -1 on the
            background (not differentiable).
    """

    image: Tensor
    alpha: Tensor
    depth: Tensor
    triangle_id: Tensor


def _size_pair(image_size) -> Tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_size)):
        raise ValueError(f"image_size must be a positive int or an (H, W) pair of positive ints, got {image_size!r}")
    if max(image_size) > MAX_RESOLUTION:
        raise ValueError(f"image_size must be at most {MAX_RESOLUTION} per side (the rasterizer's limit), "
                         f"got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def _batched(name: str, t: Tensor, like: Tensor, trailing: Sequence[int], layout: str) -> Tensor:
    """``t`` as ``[B or 1, *trailing]``: unbatched ``[*trailing]`` gets a batch of 1."""
    _checks.floating(name, t, like, "vertices")
    if t.dim() == len(trailing):
        t = t.unsqueeze(0)
    _checks.shape(name, t, [None, *trailing], layout)
    return t


@dataclass
class Fragments:
    """What :meth:`MeshRenderer.rasterize` gives the shaders (rasterizer layout: row 0
    at the *bottom*, as nvdiffrast).

    Attributes:
        rast: ``[B, H, W, 4]`` ``(u, v, z/w, triangle_id + 1)`` from :func:`facegeom.ops.rasterize`.
        pos: ``[B, V, 4]`` clip-space positions that were rasterized.
        faces: ``[F, 3]`` int32 on the device of ``vertices``.
        vertices: ``[B, V, 3]`` positions in the frame of the lighting.
        normals: ``[B, V, 3]`` unit vertex normals (:func:`facegeom.ops.vertex_normals`).
    """

    rast: Tensor
    pos: Tensor
    faces: Tensor
    vertices: Tensor
    normals: Tensor

    @property
    def covered(self) -> Tensor:
        """``[B, H, W, 1]`` bool: a triangle is drawn at the pixel."""
        return self.rast[..., 3:4] > 0

    def interpolate(self, attributes: Tensor) -> Tensor:
        """Per-vertex ``[B or 1, V, C]`` (or ``[V, C]``) attributes -> per-pixel ``[B, H, W, C]``, 0 on the background."""
        if attributes.dim() == 3 and attributes.shape[0] == 1:
            attributes = attributes[0]  # one set for every image, as ops.interpolate broadcasts it
        return _interpolate(attributes, self.rast, self.faces)[0]


@dataclass
class ShadingInputs:
    """The validated per-render inputs a shader reads, all with the batch ``B`` of
    ``vertices`` (see :meth:`MeshRenderer.forward` for their meaning).

    ``albedo`` ``[B, V, 3]``; ``sh_coeffs`` ``[B, 9, 3]`` or None (unlit);
    ``specular_albedo`` ``[B, V, 3 or 1]`` or None (no specular lobe), then
    ``light_position``, ``camera_position`` ``[B, 3]`` and ``shininess`` ``[B]``.
    """

    albedo: Tensor
    sh_coeffs: Optional[Tensor] = None
    specular_albedo: Optional[Tensor] = None
    light_position: Optional[Tensor] = None
    camera_position: Optional[Tensor] = None
    shininess: Optional[Tensor] = None


class SHShader(nn.Module):
    """Spherical-harmonic diffuse shading, plus a Blinn-Phong lobe when the inputs
    carry ``specular_albedo`` (Deng et al. 2022, eq. 5); unlit (the albedo) when
    they carry no SH light.

    Args:
        convention: SH basis, see :func:`facegeom.ops.sh_basis`.
        per_pixel: False (Deep3DFaceRecon): shade each vertex, then interpolate
            the colours. True (DECA): interpolate albedo and normals,
            re-normalise the normals, shade each pixel.
    """

    def __init__(self, convention: str = "deep3d", per_pixel: bool = False):
        super().__init__()
        self.convention = _checks.choice("sh_convention", convention, SH_CONVENTIONS)
        self.per_pixel = bool(per_pixel)

    def extra_repr(self) -> str:
        return f"convention={self.convention!r}, per_pixel={self.per_pixel}"

    def forward(self, fragments: Fragments, inputs: ShadingInputs) -> Tensor:
        """Returns ``[B, H, W, 3]`` colour in the rasterizer's layout (0 on the background)."""
        return (self._shade_pixels if self.per_pixel else self._shade_vertices)(fragments, inputs)

    def _shade_vertices(self, fragments: Fragments, inputs: ShadingInputs) -> Tensor:
        normals, colour = fragments.normals, inputs.albedo
        if inputs.sh_coeffs is not None:
            colour = _sh_shading(normals, colour, inputs.sh_coeffs, self.convention)
        if inputs.specular_albedo is not None:
            colour = colour + _blinn_phong(normals, fragments.vertices, inputs.light_position,
                                           inputs.camera_position, inputs.specular_albedo, inputs.shininess)
        return fragments.interpolate(colour)

    def _shade_pixels(self, fragments: Fragments, inputs: ShadingInputs) -> Tensor:
        specular = inputs.specular_albedo is not None
        # One interpolate call for every per-pixel attribute.
        attributes = [inputs.albedo, fragments.normals]
        if specular:
            attributes += [fragments.vertices, inputs.specular_albedo]
        values = fragments.interpolate(torch.cat(attributes, -1))
        albedo, normals = values[..., 0:3], values[..., 3:6]
        # Interpolated normals are shorter than 1; the background's are zero and
        # stay zero (normalize divides by max(|n|, eps)), which shades to 0.
        normals = nn.functional.normalize(normals, dim=-1)
        pixels = albedo if inputs.sh_coeffs is None else _sh_shading(
            normals, albedo, inputs.sh_coeffs, self.convention)
        if specular:
            pixels = pixels + _blinn_phong(normals, values[..., 6:9], inputs.light_position,
                                           inputs.camera_position, values[..., 9:], inputs.shininess)
        return pixels


class UnlitShader(nn.Module):
    """The albedo, interpolated: no light (a texture or a mask renders as is)."""

    def forward(self, fragments: Fragments, inputs: ShadingInputs) -> Tensor:
        return fragments.interpolate(inputs.albedo)


class MeshRenderer(nn.Module):
    """Differentiable renderer of a triangle mesh with fixed topology.

    Args:
        faces: ``[F, 3]`` integer vertex indices (any integer dtype; stored as
            int32, the rasterizer's index type). Both windings are drawn; the
            winding sets the side the vertex normals point to (counter-clockwise
            seen from outside gives outward normals, as FLAME and BFM have).
        image_size: ``H`` (square) or ``(H, W)``.
        sh_convention: SH basis of the lighting: ``"deep3d"`` (default),
            ``"deca"`` or ``"irradiance"`` (see :func:`facegeom.ops.sh_basis`).
        shading: ``"vertex"`` (default, as Deep3DFaceRecon: shade each vertex, then
            interpolate colours) or ``"pixel"`` (interpolate albedo and normals,
            re-normalise the normals, shade each pixel, as DECA; sharper highlights).
        antialias: run :func:`facegeom.ops.antialias` on the composited image and
            alpha, which also gives gradients w.r.t. the vertex positions at
            silhouettes and occlusion edges (default True).
        background: default background: a float (grey level), 3 floats (RGB) or a
            tensor broadcastable to ``[B, H, W, 3]`` in image convention.
        shader: replaces the default :class:`SHShader` (``sh_convention``,
            ``shading``): any module ``shader(fragments: Fragments, inputs:
            ShadingInputs) -> [B, H, W, 3]`` in the rasterizer's layout, e.g.
            :class:`UnlitShader` or a tracker's or pipeline's own.

    Lighting frame: normals come from ``vertices`` as given, so the SH light and
    the Blinn-Phong positions live in the frame of ``vertices``. Pass vertices in
    camera coordinates (as Deep3DFaceRecon does) for camera-fixed light.

    Example:
        >>> head = facegeom.models.synthetic_head()
        >>> out = head(texture=torch.zeros(1, head.n_tex))
        >>> renderer = MeshRenderer(head.faces, image_size=224)
        >>> camera = facegeom.cameras.WeakPerspective(torch.tensor([[5.5, 0.0, 0.02]]), image_size=224)
        >>> sh = torch.zeros(1, 9, 3); sh[:, 0] = 0.8                     # ambient light
        >>> r = renderer(out.vertices, out.albedo, sh, camera=camera)
        >>> r.image.shape, r.alpha.shape, r.triangle_id.shape
        (torch.Size([1, 224, 224, 3]), torch.Size([1, 224, 224, 1]), torch.Size([1, 224, 224]))
    """

    def __init__(
        self,
        faces: Tensor,
        image_size: Union[int, Sequence[int]] = 224,
        sh_convention: str = "deep3d",
        shading: str = "vertex",
        antialias: bool = True,
        background: Union[float, Sequence[float], Tensor] = 0.0,
        shader: Optional[nn.Module] = None,
    ):
        super().__init__()
        faces = torch.as_tensor(faces)
        _checks.integer("faces", faces)
        _checks.shape("faces", faces, [None, 3], "[F, 3]")
        # The one range check of the faces: each render compares _max_index with V.
        _checks.indices("faces", faces, 2 ** 31, what="vertex indices", hint="the rasterizer's indices are int32")
        _checks.choice("sh_convention", sh_convention, SH_CONVENTIONS)
        _checks.choice("shading", shading, SHADING_MODES)
        self.register_buffer("faces", faces.to(torch.int32).contiguous())
        # Which triangles share each edge: depends on faces only, so built once.
        self.register_buffer("topology", antialias_topology(self.faces))
        # Read once here, not per call: the largest index decides which meshes fit.
        self._max_index = int(faces.max()) if faces.numel() else -1
        self.image_size = _size_pair(image_size)
        self.sh_convention = sh_convention
        self.shading = shading
        self.antialias = bool(antialias)
        self.background = background
        self.shader = SHShader(sh_convention, per_pixel=shading == "pixel") if shader is None else shader

    def extra_repr(self) -> str:
        return (f"faces={self.faces.shape[0]}, image_size={self.image_size}, sh_convention={self.sh_convention!r}, "
                f"shading={self.shading!r}, antialias={self.antialias}")

    # ------------------------------------------------------------------ #
    def _background(self, background, batch: int, like: Tensor) -> Tensor:
        """The background as ``[B or 1, H, W, 3]`` (image convention) in ``like``'s dtype/device."""
        height, width = self.image_size
        if not isinstance(background, Tensor):
            values = [float(background)] * 3 if isinstance(background, (int, float)) else [float(c) for c in background]
            if len(values) != 3:
                raise ValueError(f"background must be a float, 3 floats or a tensor, got {background!r}")
            background = torch.tensor(values, dtype=like.dtype, device=like.device)
        _checks.floating("background", background, like, "vertices")
        try:
            background = torch.broadcast_to(background, (batch, height, width, 3) if background.dim() == 4
                                            else (height, width, 3))
        except RuntimeError:
            raise ValueError(f"background must broadcast to [B, H, W, 3] = [{batch}, {height}, {width}, 3], "
                             f"got {list(background.shape)}") from None
        return background if background.dim() == 4 else background.unsqueeze(0)

    def forward(
        self,
        vertices: Tensor,
        albedo: Tensor,
        sh_coeffs: Optional[Tensor] = None,
        camera=None,
        pos: Optional[Tensor] = None,
        specular_albedo: Optional[Tensor] = None,
        light_position: Optional[Tensor] = None,
        camera_position: Optional[Tensor] = None,
        shininess: Union[float, Tensor] = 20.0,
        background: Union[None, float, Sequence[float], Tensor] = None,
    ) -> Rendering:
        """Render a batch of meshes.

        Args:
            vertices: ``[B, V, 3]`` (or ``[V, 3]``) float32/float64 positions, in the
                frame of the lighting (differentiable: through the projection,
                normals, shading and antialiasing).
            albedo: ``[B, V, 3]`` or ``[V, 3]`` per-vertex diffuse albedo (differentiable).
            sh_coeffs: ``[B, 9, 3]`` or ``[9, 3]`` SH light per colour channel, in
                ``sh_convention`` (differentiable). ``None``: unlit, the image is the albedo.
            camera: an object with ``to_clip(points [B, V, 3], image_size (H, W)) ->
                pos [B, V, 4]`` (the ``facegeom.cameras`` classes); its tensor
                parameters receive gradients. Exactly one of ``camera`` and ``pos``.
            pos: ``[B, V, 4]`` (or ``[V, 4]``) clip-space positions for the rasterizer
                instead of a camera (differentiable).
            specular_albedo: ``[B, V, 3]``, ``[B, V, 1]`` or unbatched: adds a
                Blinn-Phong lobe (:func:`facegeom.ops.blinn_phong`); then
                ``light_position`` and ``camera_position`` (``[B, 3]`` or ``[3]``, in
                the frame of ``vertices``) are required (all differentiable).
            shininess: Blinn-Phong exponent, float or ``[B]`` tensor (differentiable).
            background: overrides the renderer's default background for this call.

        Returns:
            :class:`Rendering` ``(image, alpha, depth, triangle_id)``, row 0 at the top.
        """
        vertices, pos, inputs = self._inputs(vertices, albedo, sh_coeffs, camera, pos, specular_albedo,
                                             light_position, camera_position, shininess)
        fragments = self.rasterize(vertices, pos)
        return self.composite(fragments, self.shader(fragments, inputs), background)

    def rasterize(self, vertices: Tensor, pos: Tensor) -> Fragments:
        """The rasterize step: ``vertices [B, V, 3]`` and clip-space ``pos [B, V, 4]``
        (validated by :meth:`forward`) -> :class:`Fragments`."""
        faces = self.faces.to(vertices.device)
        rast, _ = _rasterize(pos, faces, *self.image_size)  # [B, H, W, 4], row 0 at the bottom
        return Fragments(rast, pos, faces, vertices, _vertex_normals(vertices, faces))

    def composite(self, fragments: Fragments, pixels: Tensor, background=None) -> Rendering:
        """Background compositing, optional antialiasing and the flip to image rows
        of a shader's ``pixels [B, H, W, 3]``."""
        rast, vertices = fragments.rast, fragments.vertices
        batch = rast.shape[0]
        covered = fragments.covered
        background = self._background(self.background if background is None else background, batch, vertices)
        # Composite before antialiasing, so silhouette pixels blend with the background.
        image = torch.where(covered, pixels, background.flip(1))
        alpha = covered.to(vertices.dtype)
        if self.antialias:
            blended = _antialias(torch.cat([image, alpha], -1), rast, fragments.pos, fragments.faces,
                                 self.topology.to(vertices.device))
            image, alpha = blended[..., 0:3], blended[..., 3:4]
        depth = rast[..., 2:3]
        triangle_id = rast[..., 3].detach().to(torch.int64) - 1
        return Rendering(image.flip(1), alpha.flip(1), depth.flip(1), triangle_id.flip(1))

    def _inputs(self, vertices, albedo, sh_coeffs, camera, pos, specular_albedo, light_position, camera_position,
                shininess) -> Tuple[Tensor, Tensor, ShadingInputs]:
        """The checks of :meth:`forward`, once per render: returns vertices ``[B, V, 3]``,
        pos ``[B, V, 4]`` and the :class:`ShadingInputs`, all expanded to the batch B."""
        _checks.floating("vertices", vertices)
        if vertices.dim() == 2:
            vertices = vertices.unsqueeze(0)
        _checks.shape("vertices", vertices, [None, None, 3], "[B, V, 3] or [V, 3]")
        batch, num_vertices = vertices.shape[:2]
        if self._max_index >= num_vertices:
            raise IndexError(f"faces index vertex {self._max_index}, but vertices has only V = {num_vertices}")
        albedo = _batched("albedo", albedo, vertices, [num_vertices, 3], "[B, V, 3] or [V, 3]")
        if sh_coeffs is not None:
            sh_coeffs = _batched("sh_coeffs", sh_coeffs, vertices, [9, 3], "[B, 9, 3] or [9, 3]")
        specular = specular_albedo is not None
        if specular:
            if light_position is None or camera_position is None:
                raise ValueError("specular_albedo needs light_position and camera_position ([B, 3] or [3])")
            _checks.floating("specular_albedo", specular_albedo, vertices, "vertices")
            channels = specular_albedo.shape[-1] if specular_albedo.dim() else 0
            if channels not in (1, 3):
                raise ValueError(f"specular_albedo must be [B, V, 3] or [B, V, 1] (or unbatched), "
                                 f"got {list(specular_albedo.shape)}")
            specular_albedo = _batched("specular_albedo", specular_albedo, vertices, [num_vertices, channels],
                                       "[B, V, 3] or [B, V, 1]")
            light_position = _batched("light_position", light_position, vertices, [3], "[B, 3] or [3]")
            camera_position = _batched("camera_position", camera_position, vertices, [3], "[B, 3] or [3]")
            shininess = _shininess(shininess, vertices)
        batches = {"vertices": batch, "albedo": albedo.shape[0]}
        if sh_coeffs is not None:
            batches["sh_coeffs"] = sh_coeffs.shape[0]
        if specular:
            batches.update(specular_albedo=specular_albedo.shape[0], light_position=light_position.shape[0],
                           camera_position=camera_position.shape[0], shininess=shininess.shape[0])
        if (camera is None) == (pos is None):
            raise ValueError("pass exactly one of camera (an object with to_clip) and pos ([B, V, 4] clip space)")
        if camera is not None:
            if not callable(getattr(camera, "to_clip", None)):
                raise TypeError(f"camera must have a to_clip(points, image_size) method, got {type(camera).__name__}")
            pos = camera.to_clip(vertices, self.image_size)
        pos = _batched("pos", pos, vertices, [num_vertices, 4], "[B, V, 4] or [V, 4]")
        batches["pos"] = pos.shape[0]
        if _checks.batch_size(batches) != batch:
            raise ValueError(f"vertices has batch {batch}, but the other inputs have batch "
                             f"{_checks.batch_size(batches)}; give vertices the full batch")
        pos = pos.expand(batch, -1, -1).contiguous()
        num_triangles = self.faces.shape[0]
        if pos.dtype == torch.float32 and num_triangles > MAX_TRIANGLES_FLOAT32:
            raise ValueError(f"the renderer has {num_triangles} faces; float32 rast stores ids exactly only up to "
                             f"{MAX_TRIANGLES_FLOAT32}: pass float64 vertices and pos")
        inputs = ShadingInputs(albedo.expand(batch, -1, -1))
        if sh_coeffs is not None:
            inputs.sh_coeffs = sh_coeffs.expand(batch, 9, 3)
        if specular:
            inputs.specular_albedo = specular_albedo.expand(batch, -1, -1)
            inputs.light_position, inputs.camera_position = light_position.expand(batch, 3), \
                camera_position.expand(batch, 3)
            inputs.shininess = shininess.expand(batch)
        return vertices, pos, inputs
