"""Repository-wide pytest hooks (tests/ and benchmarks/).

Tests that need a CUDA device carry the ``cuda`` marker (declared in
pyproject.toml); they are skipped where there is no CUDA device or the
extension was built without CUDA.
"""
import pytest
import torch

from facegeom import _native

HAS_CUDA = torch.cuda.is_available() and _native.WITH_CUDA


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and a CUDA build")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
