"""rasterize / interpolate benchmarks (pytest-benchmark) on procedural head-sized
meshes (:func:`facegeom.testing.head_mesh`) tessellated to FLAME size (~5k v /
10k f), BFM-front size (~35k v / 71k f) and 1M triangles, seen by a perspective
camera, spanning about half the image height.

    python -m pytest benchmarks/test_bench_rasterize.py -q \
        --benchmark-columns=min,median,rounds --benchmark-group-by=group

``extra_info`` of each row holds Mpixel/s (output pixels per second, median).
Runs on CUDA too when ``FACEGEOM_BENCH_DEVICE=cuda``; nvdiffrast is the peer
there when it is installed. Point ``clip_mesh`` at your own clip-space
``pos``/``tri`` to measure your data.
"""
import functools
import os

import pytest
import torch

from facegeom.ops import interpolate, rasterize, reference
from facegeom.testing import clip_space, head_mesh

DEVICE = os.environ.get("FACEGEOM_BENCH_DEVICE", "cpu")

try:  # a GPU-only peer, not a dependency
    import nvdiffrast.torch as nvdr
except ImportError:
    nvdr = None


@functools.lru_cache(maxsize=None)
def clip_mesh(num_faces: int, batch: int = 1):
    """:func:`facegeom.testing.head_mesh` with about ``num_faces`` triangles seen by a
    perspective camera (it spans about half the image height), ``batch`` slightly
    rotated copies: pos [B, V, 4] float32, tri [F, 3] int32."""
    vertices, faces = head_mesh(num_faces, dtype=torch.float64)
    pos = clip_space(vertices, batch, focal=3.0)
    return pos.float().to(DEVICE), faces.int().to(DEVICE)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def render(pos, tri, resolution, attr):
    rast, _ = rasterize(pos, tri, resolution)
    out, _ = interpolate(attr, rast, tri)
    return rast, out


def run_case(benchmark, mesh, resolution, batch, mode, group):
    pos, tri = clip_mesh(mesh, batch)
    attr = torch.rand(pos.shape[1], 3, device=pos.device)
    benchmark.group = group
    if mode == "forward":
        def call():
            with torch.no_grad():
                rasterize(pos, tri, resolution)
            sync()
    else:
        pos_g = pos.clone().requires_grad_(True)
        attr_g = attr.clone().requires_grad_(True)

        def call():
            rast, out = render(pos_g, tri, resolution, attr_g)
            (out.sum() + rast[..., :3].sum()).backward()
            sync()
    benchmark.pedantic(call, rounds=5 if batch * resolution[0] * resolution[1] > 4e6 else 15,
                       warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: a smoke run
        return
    pixels = batch * resolution[0] * resolution[1]
    benchmark.extra_info["Mpixel/s"] = round(pixels / benchmark.stats.stats.median / 1e6, 1)
    benchmark.extra_info["ms/image"] = round(benchmark.stats.stats.median * 1e3 / batch, 2)
    benchmark.extra_info["triangles"] = int(tri.shape[0])


CASES = {
    # name: (faces, resolution)
    "flame_10k_512": (9976, (512, 512)),          # 4990 v / 9976 f
    "bfm_71k_224": (70789, (224, 224)),           # ~35.4k v / ~70.8k f
    "1m_2048": (1_000_000, (2048, 2048)),         # ~500k v / ~1M f
}


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("case", list(CASES))
def test_rasterize(benchmark, case, batch, mode):
    if case == "1m_2048" and batch > 1:
        pytest.skip("16 x 2048^2 x 4 floats per output: beyond this machine's memory budget")
    mesh, resolution = CASES[case]
    run_case(benchmark, mesh, resolution, batch, mode, f"rasterize {case} B={batch} {mode}")


@pytest.mark.parametrize("triangles", [2_000, 8_000, 32_000, 128_000, 512_000])
def test_scaling_with_triangles(benchmark, triangles):
    """512 x 512, forward: time should grow roughly linearly with F."""
    run_case(benchmark, triangles, (512, 512), 1, "forward", "scaling: triangles at 512^2")


@pytest.mark.parametrize("side", [128, 256, 512, 1024, 2048])
def test_scaling_with_resolution(benchmark, side):
    """10k triangles, forward: time should grow roughly linearly with H * W."""
    run_case(benchmark, 9976, (side, side), 1, "forward", "scaling: resolution, 10k triangles")


@pytest.mark.parametrize("impl", ["facegeom", "reference"])
def test_vs_reference(benchmark, impl):
    """The brute-force reference is only affordable on a small case."""
    pos, tri = clip_mesh(1024)
    fn = rasterize if impl == "facegeom" else reference.rasterize
    benchmark.group = "vs reference: 1k triangles at 64^2 forward"
    benchmark.pedantic(lambda: fn(pos, tri, (64, 64)), rounds=5, warmup_rounds=1)


@pytest.mark.skipif(nvdr is None or DEVICE != "cuda", reason="nvdiffrast (CUDA) is not installed")
@pytest.mark.parametrize("case", list(CASES))
def test_nvdiffrast_peer(benchmark, case):
    mesh, resolution = CASES[case]
    pos, tri = clip_mesh(mesh, 1)
    glctx = nvdr.RasterizeCudaContext()
    benchmark.group = f"rasterize {case} B=1 forward"

    def call():
        nvdr.rasterize(glctx, pos, tri, resolution)
        sync()

    benchmark.pedantic(call, rounds=15, warmup_rounds=1)
