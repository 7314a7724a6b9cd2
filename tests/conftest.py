import pytest

from facegeom import _native
from facegeom.testing import FLAME_PARENTS, SMPL_PARENTS, make_model, make_params  # noqa: F401  (shared fixtures)

requires_native = pytest.mark.skipif(not _native.AVAILABLE, reason="facegeom._C is not built")
# Tests that need a CUDA device carry this marker; the repository's conftest.py
# skips them where there is none.
cuda = pytest.mark.cuda

# Hypothesis budgets (issue 17): a small fixed one in CI, a larger one on demand with
# FACEGEOM_HYPOTHESIS=thorough. Derandomised in CI so a run is reproducible.
try:
    import os as _os

    from hypothesis import HealthCheck, settings as _settings

    _settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True,
                               suppress_health_check=[HealthCheck.too_slow])
    _settings.register_profile("thorough", max_examples=1000, deadline=None)
    _settings.load_profile(_os.environ.get("FACEGEOM_HYPOTHESIS", "ci"))
except ImportError:  # hypothesis is a test dependency; property tests skip without it
    pass
