"""The papers' pipelines (API.md §7; PIPELINES.md): one module per paper, each with a
``Config``, its network and ``load_checkpoint``, ``decode`` and ``losses``.
:mod:`facegeom.pipelines.deep3d` (PIPELINES.md §2)."""
