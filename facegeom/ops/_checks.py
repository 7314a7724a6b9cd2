"""Kept so that ``from facegeom.ops import _checks`` still works: the checks
live in :mod:`facegeom._checks` (one module for ops, cameras, render, models)."""
from facegeom._checks import batch_size, choice, floating, indices, integer, shape  # noqa: F401
