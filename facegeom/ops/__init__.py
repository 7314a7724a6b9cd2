"""facegeom.ops: differentiable geometry kernels (C++ on CPU, CUDA on GPU).

Every op is a ``torch.ops.facegeom`` custom op with autograd and a fake kernel;
``facegeom.ops.reference`` holds a pure-PyTorch version of each with the same
signature.
"""
from facegeom.ops import reference
from facegeom.ops.antialias import antialias, antialias_topology
from facegeom.ops.lbs import blendshapes, lbs, rigid_transform, rodrigues, skin
from facegeom.ops.rasterize import interpolate, rasterize
from facegeom.ops.shading import blinn_phong, sh_basis, sh_shading, vertex_normals
from facegeom.ops.point_to_surface import (
    closest_points,
    mesh_to_mesh_distance,
    point_to_plane_distance,
    point_to_surface,
)
from facegeom.ops.texture import texture, texture_construct_mip
from facegeom.ops.rasterize import rasterize_next_layer
from facegeom.ops._autograd import register_autocast_policies as _register_autocast_policies

# Every facegeom:: op upcasts float16/bfloat16 to float32 under torch.autocast (issue 17;
# docs/ops.md "Autocast"); facegeom.train's AMP option reads this flag.
_register_autocast_policies()
SUPPORTS_AUTOCAST = True

__all__ = [
    "antialias",
    "antialias_topology",
    "blendshapes",
    "blinn_phong",
    "closest_points",
    "interpolate",
    "lbs",
    "mesh_to_mesh_distance",
    "point_to_plane_distance",
    "point_to_surface",
    "rasterize",
    "reference",
    "rigid_transform",
    "rodrigues",
    "sh_basis",
    "sh_shading",
    "skin",
    "vertex_normals",
    "texture",
    "texture_construct_mip",
    "rasterize_next_layer",
]
