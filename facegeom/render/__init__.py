"""facegeom.render: differentiable mesh rendering on top of the facegeom ops.

    renderer = facegeom.render.MeshRenderer(faces, image_size=224)
    image, alpha, depth, triangle_id = renderer(vertices, albedo, sh_coeffs, camera=camera)

See :mod:`facegeom.render.mesh_renderer` for conventions (image rows top-down).
"""
from facegeom.render.mesh_renderer import Fragments, MeshRenderer, Rendering, SHShader, ShadingInputs, UnlitShader

__all__ = ["Fragments", "MeshRenderer", "Rendering", "SHShader", "ShadingInputs", "UnlitShader"]
