"""antialias benchmarks (pytest-benchmark): the kernel vs the pure-PyTorch
reference vs nvdiffrast (when installed, on CUDA), all in one run on the same
data, plus the one-off topology build.

    python -m pytest benchmarks/test_bench_antialias.py -q --benchmark-group-by=group

Cases: a FLAME-size mesh (~5k vertices, 9976 triangles) at 512 x 512 and a
BFM-size mesh (~35k vertices, ~71k triangles) at 224 x 224, batch 1 and 16,
forward and forward+backward, float32. The meshes are bumpy spheres (so they
have self-occlusion silhouettes, not only an outline) filling most of the
image; point ``antialias_case`` at your own ``pos``/``tri`` to measure your data.
"""
import math

import pytest
import torch

from facegeom.ops import antialias, antialias_topology, interpolate, rasterize, reference

try:
    import nvdiffrast.torch as nvdiffrast
except ImportError:  # a peer, not a dependency (and CUDA only)
    nvdiffrast = None

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (rings, segments) giving FLAME's 9976 and about BFM-front's 70789 triangles.
MESHES = {"flame": ((59, 86), (512, 512)), "bfm": ((173, 206), (224, 224))}


def bumpy_sphere(rings: int, segments: int):
    """A closed sphere with bumps that occlude each other: pos [V, 3], tri [F, 3] int32."""
    theta = torch.linspace(0, math.pi, rings + 1, dtype=torch.float64)[1:-1]
    phi = torch.arange(segments, dtype=torch.float64) * (2 * math.pi / segments)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    radius = 1 + 0.12 * torch.sin(5 * t) * torch.sin(4 * p)
    ring = torch.stack([radius * torch.sin(t) * torch.cos(p), radius * torch.sin(t) * torch.sin(p),
                        radius * torch.cos(t)], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 0, 1]], dtype=torch.float64), ring,
                       torch.tensor([[0.0, 0, -1]], dtype=torch.float64)])
    index = lambda r, s: 1 + r * segments + s % segments
    faces = []
    for s in range(segments):
        faces.append([0, index(0, s), index(0, s + 1)])
        for r in range(rings - 2):
            a, b, c, d = index(r, s), index(r + 1, s), index(r + 1, s + 1), index(r, s + 1)
            faces += [[a, b, c], [a, c, d]]
        faces.append([len(verts) - 1, index(rings - 2, s + 1), index(rings - 2, s)])
    return verts, torch.tensor(faces, dtype=torch.int32)


def antialias_case(mesh: str, batch: int, requires_grad: bool = False, device: str = DEVICE):
    """color, rast, pos, tri, topology for one benchmark case (float32)."""
    (rings, segments), resolution = MESHES[mesh]
    verts, tri = bumpy_sphere(rings, segments)
    g = torch.Generator().manual_seed(0)
    pos = []
    for _ in range(batch):  # a slightly different view per image
        angle = float(torch.rand(1, generator=g)) * 0.6 - 0.3
        c, s = math.cos(angle), math.sin(angle)
        rotated = verts @ torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64).T
        z = rotated[:, 2] - 3.2  # camera at the origin looking down -z
        pos.append(torch.stack([rotated[:, 0] * 2.6, rotated[:, 1] * 2.6, -z * 1.02 - 0.2, -z], -1))
    pos = torch.stack(pos).float().to(device)
    tri = tri.to(device)
    with torch.no_grad():
        rast, _ = rasterize(pos, tri, resolution)
        attr = torch.rand(verts.shape[0], 3, generator=g).to(device)
        color, _ = interpolate(attr, rast, tri)
    return dict(color=color.requires_grad_(requires_grad), rast=rast, pos=pos.requires_grad_(requires_grad),
                tri=tri, topology=antialias_topology(tri))


def _facegeom(case):
    return antialias(case["color"], case["rast"], case["pos"], case["tri"], case["topology"])


def _reference(case):
    return reference.antialias(case["color"], case["rast"], case["pos"], case["tri"], case["topology"])


def _nvdiffrast(case):
    return nvdiffrast.antialias(case["color"].contiguous(), case["rast"], case["pos"], case["tri"],
                                case["nvdiffrast_topology"])


IMPLEMENTATIONS = {"facegeom": _facegeom, "reference": _reference, "nvdiffrast": _nvdiffrast}


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("mesh", list(MESHES))
def test_antialias(benchmark, mesh, batch, mode, impl):
    if impl == "nvdiffrast" and (nvdiffrast is None or DEVICE != "cuda"):
        pytest.skip("nvdiffrast is not installed (or no CUDA device)")
    if impl == "reference" and batch > 1:
        pytest.skip("the reference is measured at batch 1 only (it scales linearly)")
    fn = IMPLEMENTATIONS[impl]
    (_, _), (height, width) = MESHES[mesh]
    benchmark.group = f"antialias {mesh} {height}x{width} B={batch} {mode}"
    case = antialias_case(mesh, batch, requires_grad=mode != "forward")
    if impl == "nvdiffrast":
        case["nvdiffrast_topology"] = nvdiffrast.antialias_construct_topology_hash(case["tri"])
    grad = torch.rand_like(case["color"])
    benchmark.extra_info["mpixels"] = batch * height * width / 1e6
    benchmark.extra_info["silhouette_pixels"] = int((fn(case) != case["color"]).any(-1).sum())

    def run():
        if mode == "forward":
            with torch.no_grad():
                fn(case)
        else:
            fn(case).backward(grad)
        _sync()

    benchmark(run)


@pytest.mark.parametrize("mesh", list(MESHES))
def test_topology_build(benchmark, mesh):
    """One-off per mesh (pass ``topology=`` to reuse it)."""
    benchmark.group = f"antialias topology {mesh}"
    (rings, segments), _ = MESHES[mesh]
    tri = bumpy_sphere(rings, segments)[1].to(DEVICE)
    benchmark(lambda: (antialias_topology(tri), _sync()))
