"""The paper pipelines (API.md §6-7, PIPELINES.md §2-7): each module builds a method's
network, losses and preprocessing and registers it with :mod:`facegeom.train`."""
