"""Training data for the pipelines: the authors' preprocessing, dataset readers,
augmentation and :mod:`facegeom.data.synthetic` (rendered samples from the
built-in synthetic head). See API.md §6 and PIPELINES.md."""
