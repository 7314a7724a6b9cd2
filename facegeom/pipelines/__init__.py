"""The papers' pipelines (API.md §6-7; PIPELINES.md §2-7): one module per paper, each with a
``Config``, its network and ``load_checkpoint``, preprocessing, ``decode`` and ``losses``, and a
training method registered with :mod:`facegeom.train` (imported on first use):
:mod:`facegeom.pipelines.deep3d` (PIPELINES.md §2), :mod:`facegeom.pipelines.mica` (§6),
:mod:`facegeom.pipelines.ringnet` (§3), :mod:`facegeom.pipelines.tdasl` (2DASL, §4),
:mod:`facegeom.pipelines.specular` (Deng et al. 2022, specular albedo, §5)."""
