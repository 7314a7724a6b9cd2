"""Pure-PyTorch references of the facegeom ops: the executable specification.

Every function has the same signature and results as its kernel in
``facegeom.ops``; the tests compare the two, and the ops fall back to these
when the compiled extension is unavailable. Written for clarity, not speed.

One module per op family, in the order of API.md:

1. :mod:`.lbs` — blendshapes, rodrigues, rigid_transform, skin, lbs (smplx's
   ``lbs.py`` step by step, the baseline the benchmarks measure against);
2. :mod:`.rasterize` — rasterize, interpolate (nvdiffrast conventions);
   :mod:`.antialias` — antialias_topology, antialias;
3. :mod:`.shading` — vertex_normals, sh_basis, sh_shading, blinn_phong;
4. :mod:`.point_to_surface` — brute-force point_to_surface;
5. :mod:`.texture` — texture, texture_construct_mip (nvdiffrast conventions).

``facegeom.ops.reference.<name>`` names every public function (and constant) directly.
"""
from facegeom.ops.reference.lbs import (RODRIGUES_EPSILON, blendshapes, lbs, rigid_transform, rodrigues,
                                         rodrigues_angle, skin)
from facegeom.ops.reference.rasterize import interpolate, rasterize
from facegeom.ops.reference.antialias import AA_CROSSING_SLACK, AA_MAX_WALK, antialias, antialias_topology
from facegeom.ops.reference.shading import SH_CONVENTIONS, blinn_phong, sh_basis, sh_shading, vertex_normals
from facegeom.ops.reference.point_to_surface import POINT_TO_SURFACE_CHUNK, point_to_surface
from facegeom.ops.reference.texture import texture, texture_construct_mip

__all__ = [
    "AA_CROSSING_SLACK", "AA_MAX_WALK", "POINT_TO_SURFACE_CHUNK", "RODRIGUES_EPSILON", "SH_CONVENTIONS",
    "antialias", "antialias_topology", "blendshapes", "blinn_phong", "interpolate", "lbs",
    "point_to_surface", "rasterize", "rigid_transform", "rodrigues", "rodrigues_angle", "sh_basis", "sh_shading",
    "skin", "vertex_normals",
    "texture", "texture_construct_mip",
]
