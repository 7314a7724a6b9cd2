"""Face models: FLAME, Basel Face Model variants and the built-in synthetic head.

All are ``torch.nn.Module``s holding their arrays as buffers and decoding with
:mod:`facegeom.ops`. See docs/models.md for the file formats and conventions,
and docs/architecture.md for where the models sit among the layers.
"""
from facegeom.models.bfm import BFM, BFMOutput, deep3d_vertex_normals, point_buf_from_faces
from facegeom.models.flame import FLAME, FLAMEOutput, load_flame_masks, vertices_to_landmarks
from facegeom.models.synthetic_head import synthetic_head

__all__ = ["BFM", "BFMOutput", "deep3d_vertex_normals", "point_buf_from_faces", "FLAME", "FLAMEOutput", "load_flame_masks", "synthetic_head", "vertices_to_landmarks"]
