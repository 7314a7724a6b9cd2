"""The papers' training losses, one module per paper (API.md §6; PIPELINES.md §2.5, §3.5, §4.4,
§6.4): :mod:`facegeom.losses.deep3d`, :mod:`facegeom.losses.mica`, :mod:`facegeom.losses.ringnet`,
:mod:`facegeom.losses.tdasl`, :mod:`facegeom.losses.specular` (Deng et al. 2022, PIPELINES.md §5.6). Functions keep the authors' names, so losses of different papers
that share a name live in their own modules."""
from facegeom.losses import deep3d, mica, ringnet, specular, tdasl

__all__ = ["deep3d", "mica", "ringnet", "tdasl", "specular"]
