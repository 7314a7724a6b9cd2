"""The papers' training losses, one module per paper (API.md §6; PIPELINES.md §2.5 for
Deep3D): :mod:`facegeom.losses.deep3d`. Functions keep the authors' names, so losses of
different papers that share a name live in their own modules."""
from facegeom.losses import deep3d
from facegeom.losses import tdasl  # noqa: F401  (2DASL, PIPELINES.md §4.4)

__all__ = ["deep3d"]
