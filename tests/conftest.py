import pytest

from facegeom import _native
from facegeom.testing import FLAME_PARENTS, SMPL_PARENTS, make_model, make_params  # noqa: F401  (shared fixtures)

requires_native = pytest.mark.skipif(not _native.AVAILABLE, reason="facegeom._C is not built")
# Tests that need a CUDA device carry this marker; the repository's conftest.py
# skips them where there is none.
cuda = pytest.mark.cuda
