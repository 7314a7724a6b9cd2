"""facegeom.data: the papers' input preprocessing, the skin-attention GMM, augmentation and
dataset readers (PIPELINES.md §1.1, §2.1, §2.6, §3.1, §4.1, §6.1, §7.1)."""
