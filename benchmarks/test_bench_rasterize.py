"""rasterize / interpolate benchmarks (pytest-benchmark) on procedural head-sized
meshes: an ellipsoid tessellated to FLAME size (~5k v / 10k f), BFM-front size
(~35k v / 71k f) and 1M triangles, seen by a perspective camera, covering about
a quarter of the image.

    python -m pytest benchmarks/test_bench_rasterize.py -q \
        --benchmark-columns=min,median,rounds --benchmark-group-by=group

``extra_info`` of each row holds Mpixel/s (output pixels per second, median).
Runs on CUDA too when ``FACEGEOM_BENCH_DEVICE=cuda``; nvdiffrast is the peer
there when it is installed. Point ``head_mesh`` at your own clip-space
``pos``/``tri`` to measure your data.
"""
import functools
import math
import os

import pytest
import torch

from facegeom.ops import interpolate, rasterize, reference

DEVICE = os.environ.get("FACEGEOM_BENCH_DEVICE", "cpu")

try:  # a GPU-only peer, not a dependency
    import nvdiffrast.torch as nvdr
except ImportError:
    nvdr = None


@functools.lru_cache(maxsize=None)
def head_mesh(n_lat: int, n_lon: int, batch: int = 1):
    """Clip-space ellipsoid (a head-sized blob) with 2 * n_lat * n_lon triangles,
    ``batch`` slightly rotated copies: pos [B, V, 4] float32, tri [F, 3] int32."""
    theta = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)
    phi = torch.linspace(0, 2 * math.pi, n_lon + 1, dtype=torch.float64)[:-1]
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    xyz = torch.stack([0.8 * t.sin() * p.cos(), t.cos(), 0.9 * t.sin() * p.sin()], -1).reshape(-1, 3)
    i, j = torch.arange(n_lat).view(-1, 1), torch.arange(n_lon).view(1, -1)
    a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
    c, d = a + n_lon, b + n_lon
    tri = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([b, d, c], -1).reshape(-1, 3)])
    poses = []
    for k in range(batch):
        angle = 0.05 * k
        rot = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                            [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64)
        cam = xyz @ rot.T
        depth = cam[:, 2] + 4.0  # camera 4 units away, looking down +z
        # focal 2.4; z/w maps depth [1, 10] to [-1, 1] (OpenGL near/far).
        poses.append(torch.stack([2.4 * cam[:, 0], 2.4 * cam[:, 1], depth * 11 / 9 - 20 / 9, depth], -1))
    return torch.stack(poses).float().to(DEVICE), tri.int().to(DEVICE)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def render(pos, tri, resolution, attr):
    rast, _ = rasterize(pos, tri, resolution)
    out, _ = interpolate(attr, rast, tri)
    return rast, out


def run_case(benchmark, mesh, resolution, batch, mode, group):
    pos, tri = head_mesh(*mesh, batch)
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
    # name: ((n_lat, n_lon), resolution)
    "flame_10k_512": ((58, 86), (512, 512)),      # 5074 v / 9976 f
    "bfm_71k_224": ((102, 347), (224, 224)),      # 35394 v / 70788 f
    "1m_2048": ((500, 1000), (2048, 2048)),       # 500k v / 1M f
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
    n_lat = int(math.sqrt(triangles / 4))
    run_case(benchmark, (n_lat, 2 * n_lat), (512, 512), 1, "forward", "scaling: triangles at 512^2")


@pytest.mark.parametrize("side", [128, 256, 512, 1024, 2048])
def test_scaling_with_resolution(benchmark, side):
    """10k triangles, forward: time should grow roughly linearly with H * W."""
    run_case(benchmark, (58, 86), (side, side), 1, "forward", "scaling: resolution, 10k triangles")


@pytest.mark.parametrize("impl", ["facegeom", "reference"])
def test_vs_reference(benchmark, impl):
    """The brute-force reference is only affordable on a small case."""
    pos, tri = head_mesh(16, 32)
    fn = rasterize if impl == "facegeom" else reference.rasterize
    benchmark.group = "vs reference: 1k triangles at 64^2 forward"
    benchmark.pedantic(lambda: fn(pos, tri, (64, 64)), rounds=5, warmup_rounds=1)


@pytest.mark.skipif(nvdr is None or DEVICE != "cuda", reason="nvdiffrast (CUDA) is not installed")
@pytest.mark.parametrize("case", list(CASES))
def test_nvdiffrast_peer(benchmark, case):
    mesh, resolution = CASES[case]
    pos, tri = head_mesh(*mesh, 1)
    glctx = nvdr.RasterizeCudaContext()
    benchmark.group = f"rasterize {case} B=1 forward"

    def call():
        nvdr.rasterize(glctx, pos, tri, resolution)
        sync()

    benchmark.pedantic(call, rounds=15, warmup_rounds=1)
