import pytest
import torch

from facegeom import _native

FLAME_PARENTS = [-1, 0, 1, 1, 1]  # global, neck, jaw, left eye, right eye
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]

requires_native = pytest.mark.skipif(not _native.AVAILABLE, reason="facegeom._C is not built")
cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and _native.WITH_CUDA), reason="needs a CUDA device and a CUDA build"
)


def make_model(num_vertices, num_betas, parents, dtype=torch.float64, seed=0, scale=1.0):
    """A random smplx-layout model: dict of lbs()'s keyword arguments minus betas/pose."""
    g = torch.Generator().manual_seed(seed)
    num_joints = len(parents)
    regressor = torch.rand(num_joints, num_vertices, generator=g, dtype=dtype)
    regressor = regressor / regressor.sum(1, keepdim=True)
    weights = torch.rand(num_vertices, num_joints, generator=g, dtype=dtype) ** 4
    weights = weights / weights.sum(1, keepdim=True)
    return dict(
        v_template=torch.randn(num_vertices, 3, generator=g, dtype=dtype) * 0.1 * scale,
        shapedirs=torch.randn(num_vertices, 3, num_betas, generator=g, dtype=dtype) * 1e-3 * scale,
        posedirs=torch.randn(9 * (num_joints - 1), 3 * num_vertices, generator=g, dtype=dtype) * 1e-3 * scale,
        J_regressor=regressor,
        parents=torch.tensor(parents),
        lbs_weights=weights,
    )


def make_params(batch, num_betas, num_joints, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    betas = torch.randn(batch, num_betas, generator=g, dtype=dtype)
    pose = torch.randn(batch, 3 * num_joints, generator=g, dtype=dtype) * 0.4
    return betas, pose


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
