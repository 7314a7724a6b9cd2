"""Property test: facegeom.data.arcface.umeyama recovers exact similarities (Umeyama 1991).
Skipped when hypothesis is not installed."""
import numpy as np
import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from facegeom.data import arcface  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(ang=st.floats(-3.1, 3.1), scale=st.floats(0.05, 20.0), tx=st.floats(-500, 500), ty=st.floats(-500, 500),
       seed=st.integers(0, 10_000))
def test_umeyama_recovers_an_exact_similarity(ang, scale, tx, ty, seed):
    src = np.random.default_rng(seed).normal(size=(5, 2)) * 30
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = scale * src @ R.T + np.array([tx, ty])
    T = arcface.umeyama(torch.tensor(src), torch.tensor(dst)).numpy()
    np.testing.assert_allclose(T[:2, :2], scale * R, atol=1e-8 * max(1.0, scale))
    np.testing.assert_allclose(T[:2, 2], [tx, ty], atol=1e-6)
