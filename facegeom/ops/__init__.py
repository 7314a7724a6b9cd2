"""facegeom.ops: differentiable geometry kernels (C++ on CPU, CUDA on GPU).

Every op is a ``torch.ops.facegeom`` custom op with autograd and a fake kernel;
``facegeom.ops.reference`` holds a pure-PyTorch version of each with the same
signature.
"""
from facegeom.ops import reference
from facegeom.ops.lbs import blendshapes, lbs, rigid_transform, rodrigues, skin
from facegeom.ops.rasterize import interpolate, rasterize
from facegeom.ops.shading import blinn_phong, sh_basis, sh_shading, vertex_normals
from facegeom.ops.antialias import antialias, antialias_topology

__all__ = ["blendshapes", "lbs", "reference", "rigid_transform", "rodrigues", "skin"]
__all__ += ["interpolate", "rasterize"]
__all__ += ["blinn_phong", "sh_basis", "sh_shading", "vertex_normals"]
__all__ += ["antialias", "antialias_topology"]
