"""lbs / skinning benchmarks (pytest-benchmark): kernel vs the smplx-style
reference vs smplx itself (when installed) vs the torch.mv bandwidth floor, all
in one run on the same data.

    .venv/bin/python -m pytest benchmarks -q --benchmark-group-by=param:batch,param:mode

Point ``lbs_case`` at your own model tensors to measure your data.
"""
import pytest
import torch

from facegeom import bench, testing
from facegeom.ops import lbs, reference

try:
    from smplx.lbs import lbs as smplx_lbs
except ImportError:  # a peer, not a dependency
    smplx_lbs = None

IMPLEMENTATIONS = {"facegeom": lbs, "reference": reference.lbs, "smplx": smplx_lbs}


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("batch", [1, 64])
def test_lbs(benchmark, impl, mode, batch):
    fn = IMPLEMENTATIONS[impl]
    if fn is None:
        pytest.skip(f"{impl} is not installed")
    benchmark.group = f"lbs B={batch} {mode}"
    case = testing.lbs_case(batch, requires_grad=mode != "forward")
    if mode == "forward":
        with torch.no_grad():
            benchmark(lambda: fn(**case))
    else:
        benchmark(lambda: bench.forward_backward(fn, case))


@pytest.mark.parametrize("batch", [1, 64])
def test_mv_bandwidth_floor(benchmark, batch):
    """A bare torch.mv reading the shape+expression basis once: the B = 1 floor."""
    benchmark.group = f"lbs B={batch} forward"
    case = testing.lbs_case(1)
    basis = case["shapedirs"].reshape(-1, case["shapedirs"].shape[-1])
    benchmark(lambda: torch.mv(basis, case["betas"][0]))
