"""Drop-in replacements for other libraries' APIs, backed by facegeom.ops.

``facegeom.compat.nvdiffrast``: ``import facegeom.compat.nvdiffrast as dr`` in
place of ``import nvdiffrast.torch as dr`` runs rasterize / interpolate /
antialias / texture / depth-peeling code unchanged, on CPU or CUDA tensors.
"""
