"""texture benchmarks (pytest-benchmark): 512 x 512 samples from a 1024 x 1024 RGB
float32 texture, bilinear ('linear') and trilinear ('linear-mipmap-linear', the mip
stack built inside the call, as nvdiffrast does without a prebuilt ``mip``), coherent
and random coordinates, forward
and forward+backward (gradients to the texture and the coordinates), against
``torch.nn.functional.grid_sample`` (bilinear, ``align_corners=False``,
``padding_mode='border'``: the same sampling as ``boundary_mode='clamp'``, on its
native NCHW layout) timed in the same test, on the same inputs.

    python -m pytest benchmarks/test_bench_texture.py -q \
        --benchmark-columns=min,median,rounds --benchmark-group-by=group

``extra_info`` of each row holds facegeom's and grid_sample's median ms and their
ratio (grid_sample / facegeom: > 1 means facegeom is faster). Runs on CUDA too
with ``FACEGEOM_BENCH_DEVICE=cuda``. ``texture_case`` takes your own texture size,
sample count and footprint.
"""
import math
import os
import time

import pytest
import torch

import facegeom.ops as fo

DEVICE = os.environ.get("FACEGEOM_BENCH_DEVICE", "cpu")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def texture_case(tex_size=1024, samples=512, channels=3, access="coherent", seed=0):
    """tex [1, T, T, C]; uv [1, S, S, 2]: ``'coherent'``, a textured plane seen rotated
    by 0.3 rad (neighbouring pixels read neighbouring texels, as in rendering), or
    ``'random'``, uniform in [0, 1) (every sample a cache miss: the worst case);
    uv_da [1, S, S, 4]: the coherent plane's footprint, T / S texels per pixel (mip
    level ~1 here), jittered by up to 20%."""
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(1, tex_size, tex_size, channels, generator=g)
    if access == "random":
        uv = torch.rand(1, samples, samples, 2, generator=g)
    else:
        centres = (torch.arange(samples, dtype=torch.float32) + 0.5) / samples - 0.5
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        c, s = math.cos(0.3), math.sin(0.3)
        uv = torch.stack([0.5 + c * x - s * y, 0.5 + s * x + c * y], -1)[None]
    scale = 1.0 / samples
    uv_da = torch.tensor([scale, 0.0, 0.0, scale]) * (1 + 0.2 * torch.rand(1, samples, samples, 4, generator=g))
    return tex.to(DEVICE), uv.contiguous().to(DEVICE), uv_da.to(DEVICE)


def _callables(mode, backward, access):
    """(facegeom call, grid_sample call) on fresh leaves of the benchmark case."""
    tex, uv, uv_da = texture_case(access=access)
    tex_nchw = tex.permute(0, 3, 1, 2).contiguous()
    grid = (uv * 2 - 1).contiguous()
    filter_mode = "linear" if mode == "bilinear" else "linear-mipmap-linear"
    tex_g, uv_g = tex.clone().requires_grad_(backward), uv.clone().requires_grad_(backward)
    nchw_g, grid_g = tex_nchw.clone().requires_grad_(backward), grid.clone().requires_grad_(backward)

    def facegeom_call():
        with torch.set_grad_enabled(backward):
            out = fo.texture(tex_g, uv_g, uv_da if mode == "trilinear" else None, filter_mode=filter_mode,
                             boundary_mode="clamp")
            if backward:
                out.sum().backward()
        sync()

    def grid_sample_call():
        with torch.set_grad_enabled(backward):
            out = torch.nn.functional.grid_sample(nchw_g, grid_g, mode="bilinear", padding_mode="border",
                                                  align_corners=False)
            if backward:
                out.sum().backward()
        sync()

    return facegeom_call, grid_sample_call


def _median_ms(call, rounds):
    call()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * times[len(times) // 2]


@pytest.mark.parametrize("access", ["coherent", "random"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
@pytest.mark.parametrize("mode", ["bilinear", "trilinear"])
def test_texture_vs_grid_sample(benchmark, mode, backward, access):
    facegeom_call, grid_sample_call = _callables(mode, backward, access)
    rounds = 7
    benchmark.group = f"texture 1024^2 -> 512^2 {access} {'forward+backward' if backward else 'forward'}"
    benchmark.pedantic(facegeom_call, rounds=rounds, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: a smoke run
        return
    ours = 1e3 * benchmark.stats.stats.median
    peer = _median_ms(grid_sample_call, rounds)
    benchmark.extra_info["facegeom ms"] = round(ours, 2)
    benchmark.extra_info["grid_sample ms"] = round(peer, 2)
    benchmark.extra_info["grid_sample / facegeom"] = round(peer / ours, 2)
    benchmark.extra_info["Msamples/s"] = round(512 * 512 / ours / 1e3, 1)


@pytest.mark.parametrize("access", ["coherent", "random"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
def test_grid_sample(benchmark, backward, access):
    _, grid_sample_call = _callables("bilinear", backward, access)
    benchmark.group = f"texture 1024^2 -> 512^2 {access} {'forward+backward' if backward else 'forward'}"
    benchmark.pedantic(grid_sample_call, rounds=7, warmup_rounds=1)
