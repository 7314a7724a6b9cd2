"""Shared fixtures of the tracker tests: the synthetic head with the tracker's assets, and a random state."""
import pytest
import torch

from facegeom.tracking.synthetic import synthetic_tracker_model
from facegeom.transforms import axis_angle_to_matrix, matrix_to_rotation_6d


@pytest.fixture(scope="module")
def model64():
    return synthetic_tracker_model(seed=0, n_shape=20, n_exp=20, n_tex=10, dtype=torch.float64)


def random_state(model, batch=1, seed=0, image_height=32):
    """Tracker parameters near the tracker's start: the camera ~2 m in front, small rotations."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=dt) * scale

    def rot6(scale):
        return matrix_to_rotation_6d(axis_angle_to_matrix(rnd(batch, 3, scale=scale)))

    base = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=dt))
    R = axis_angle_to_matrix(rnd(batch, 3, scale=0.2)) @ base
    return {
        "R": matrix_to_rotation_6d(R) + rnd(batch, 6, scale=0.02),  # not exactly orthonormal, as optimised codes
        "t": torch.tensor([[0.0, 0.0, 2.0]], dtype=dt) + rnd(batch, 3, scale=0.01),
        "focal_length": torch.full((batch, 1), 5000.0 / 512.0, dtype=dt) + rnd(batch, 1, scale=0.1),
        "principal_point": rnd(batch, 2, scale=0.01),
        "shape": rnd(batch, model.n_shape, scale=0.5), "exp": rnd(batch, model.n_exp, scale=0.5),
        "tex": rnd(batch, model.flame.n_tex, scale=0.5), "sh": rnd(batch, 9, 3, scale=0.3) + torch.tensor(
            [3.0] + [0.0] * 8, dtype=dt)[None, :, None],
        "jaw": rot6(0.1), "eyes": torch.cat([rot6(0.1), rot6(0.1)], 1), "eyelids": rnd(batch, 2, scale=0.3),
    }
