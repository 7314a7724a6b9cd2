"""Benchmark cases and timing shared by ``benchmarks/`` and ``facegeom bench``.

Every op family has a case builder and a ``*_table`` function returning rows
(one per case x batch x mode): the kernel's min/median wall time, the
pure-PyTorch reference's when one call of it is affordable (otherwise
``reference`` is ``None`` and ``reference_note`` says why), and a throughput
note. Timings depend on sizes, not values, so the meshes are procedural:
:func:`head_mesh` is a closed, bumpy, head-sized (0.2 m tall) surface with a
target face count, :func:`clip_space` views it through a simple perspective
camera, :func:`near_surface_queries` samples points near it.

Example:
    >>> from facegeom import bench
    >>> rows = bench.shading_table(batches=(1,), seconds=0.1)
    >>> print(bench.format_table(rows))  # doctest: +SKIP
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

FLAME_PARENTS = [-1, 0, 1, 1, 1]
# Face counts of the two reference face models: BFM's front face (Deep3DFaceRecon)
# and FLAME.
BFM_FACES, FLAME_FACES = 70789, 9976
# A brute-force reference is run only below this many elementary tests (pixel x
# triangle or query x triangle pairs) per call: ~1 s on this CPU. Any other
# reference is timed only when one call of it takes at most REFERENCE_BUDGET_S.
BRUTE_FORCE_BUDGET = 3e7
REFERENCE_BUDGET_S = 1.0

Row = Dict[str, object]


def lbs_case(batch: int, dtype: Optional[torch.dtype] = None, requires_grad: bool = False, seed: int = 0,
             num_vertices: int = 5023, num_betas: int = 400, parents=FLAME_PARENTS) -> Dict[str, torch.Tensor]:
    """Keyword arguments of ``facegeom.ops.lbs`` for a FLAME-shaped model (V = 5023,
    K = 300 shape + 100 expression, J = 5, 36 pose features) with random bases;
    ``dtype`` defaults to ``torch.get_default_dtype()``."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    g = torch.Generator().manual_seed(seed)
    num_joints = len(parents)
    regressor = torch.rand(num_joints, num_vertices, generator=g, dtype=dtype)
    weights = torch.rand(num_vertices, num_joints, generator=g, dtype=dtype)
    return dict(
        betas=torch.randn(batch, num_betas, generator=g, dtype=dtype).requires_grad_(requires_grad),
        pose=(torch.randn(batch, 3 * num_joints, generator=g, dtype=dtype) * 0.3).requires_grad_(requires_grad),
        v_template=torch.randn(num_vertices, 3, generator=g, dtype=dtype) * 0.1,
        shapedirs=torch.randn(num_vertices, 3, num_betas, generator=g, dtype=dtype) * 1e-3,
        posedirs=torch.randn(9 * (num_joints - 1), 3 * num_vertices, generator=g, dtype=dtype) * 1e-3,
        J_regressor=regressor / regressor.sum(1, keepdim=True),
        parents=torch.tensor(parents),
        lbs_weights=weights / weights.sum(1, keepdim=True),
    )


def forward_backward(lbs: Callable, case: Dict[str, torch.Tensor]) -> None:
    vertices, joints = lbs(**case)
    (vertices.sum() + joints.sum()).backward()


def time_call(fn: Callable[[], object], seconds: float = 1.0, device="cpu") -> Dict[str, float]:
    """Repeat ``fn`` for about ``seconds`` (at least 5 times, after 2 warm-up
    calls); min and median wall time in ms. On CUDA the device is synchronised
    before each clock reading, so a row is the kernels' time, not the launches'."""
    fn()
    fn()
    _sync(device)
    times: List[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _time_references(calls, seconds: float, device, pairs: float = 0.0, budget_s: Optional[float] = None):
    """Timings (or ``None``) and notes of the reference's ``(mode, call)`` pairs:
    none is run when ``pairs`` exceeds :data:`BRUTE_FORCE_BUDGET`; each is first
    called once and repeated only when that call took at most ``budget_s``
    (default :data:`REFERENCE_BUDGET_S`); past it the later, costlier modes are
    skipped too."""
    budget_s = REFERENCE_BUDGET_S if budget_s is None else budget_s
    if pairs > BRUTE_FORCE_BUDGET:
        return [(None, f"skipped (brute force, {pairs:.1e} pairs)")] * len(calls)
    out, over = [], ""
    for mode, call in calls:
        if over:
            out.append((None, f"skipped ({over})"))
            continue
        start = time.perf_counter()
        call()
        _sync(device)
        once = time.perf_counter() - start
        if once > budget_s:
            over = f"{mode}: one call took {once:.1f} s, over the {budget_s:g} s budget"
            out.append((None, f"skipped ({over})"))
        else:
            out.append((time_call(call, seconds, device), ""))
    return out


def _row(op: str, case: str, batch: int, mode: str, kernel: Dict[str, float],
         reference: Optional[Dict[str, float]] = None, reference_note: str = "", note: str = "") -> Row:
    return dict(op=op, case=case, batch=batch, mode=mode, kernel=kernel, reference=reference,
                reference_note=reference_note, note=note)


# -- meshes and queries ------------------------------------------------------- #

def head_mesh(num_faces: int = FLAME_FACES, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """A closed, bumpy, head-sized surface (0.16 x 0.2 x 0.18 m, centred at the
    origin, y up) with about ``num_faces`` faces.

    A latitude-longitude grid of ``rows x columns`` vertices (columns ~ 1.5 rows)
    plus two poles: ``F = 2 rows columns`` faces and ``V = rows columns + 2``
    vertices, so ``num_faces = 9976`` gives FLAME's 9976 faces (4990 vertices)
    and ``70789`` gives ~70.8k faces / ~35.4k vertices, BFM-front size. The
    bumps make parts of the surface occlude others (silhouette edges inside
    the image, as a nose and cheeks give). Faces wind counter-clockwise seen
    from outside.

    Returns:
        vertices ``[V, 3]`` (``dtype``), faces ``[F, 3]`` int64.
    """
    if num_faces < 12:
        raise ValueError(f"head_mesh: num_faces must be >= 12, got {num_faces}")
    rows = max(2, round(math.sqrt(num_faces / 3)))
    columns = max(3, round(num_faces / (2 * rows)))
    theta = torch.linspace(0, math.pi, rows + 2, dtype=torch.float64)[1:-1]
    phi = torch.arange(columns, dtype=torch.float64) * (2 * math.pi / columns)
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    radius = 1 + 0.1 * torch.sin(4 * t) * torch.cos(3 * p) + 0.04 * torch.sin(9 * p) * torch.sin(t) ** 2
    ring = torch.stack([0.08 * radius * torch.sin(t) * torch.sin(p), 0.1 * radius * torch.cos(t),
                        0.09 * radius * torch.sin(t) * torch.cos(p)], -1).reshape(-1, 3)
    vertices = torch.cat([ring, torch.tensor([[0.0, 0.1, 0.0], [0.0, -0.1, 0.0]], dtype=torch.float64)])
    r, c = torch.meshgrid(torch.arange(rows - 1), torch.arange(columns), indexing="ij")
    a, b = r * columns + c, r * columns + (c + 1) % columns
    cols = torch.arange(columns)
    top, bottom = rows * columns, rows * columns + 1
    faces = torch.cat([
        torch.stack([a, a + columns, b], -1).reshape(-1, 3),
        torch.stack([b, a + columns, b + columns], -1).reshape(-1, 3),
        torch.stack([torch.full_like(cols, top), cols, (cols + 1) % columns], -1),
        torch.stack([torch.full_like(cols, bottom), (rows - 1) * columns + (cols + 1) % columns,
                     (rows - 1) * columns + cols], -1),
    ])
    return vertices.to(dtype), faces


def clip_space(vertices: torch.Tensor, batch: int = 1, distance: float = 0.6, focal: float = 4.8,
               near: float = 0.1, far: float = 10.0, yaw: float = 0.05) -> torch.Tensor:
    """Clip-space positions ``[batch, V, 4]`` of ``vertices [V, 3]`` (metres) seen by
    an OpenGL-style perspective camera ``distance`` in front of the origin,
    looking down -z, ``focal`` in NDC units (4.8 at 0.6 m: a 0.2 m head spans
    ~80 % of the image height). Image ``k`` is the mesh turned by ``k * yaw``
    radians about y, so the batch's images differ."""
    v = vertices.double()
    out = []
    for k in range(batch):
        c, s = math.cos(k * yaw), math.sin(k * yaw)
        rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
        cam = v @ rot.T
        z = cam[:, 2] - distance  # negative in front of the camera
        clip_z = (far + near) / (near - far) * z + 2 * far * near / (near - far)
        out.append(torch.stack([focal * cam[:, 0], focal * cam[:, 1], clip_z, -z], -1))
    return torch.stack(out).to(vertices.dtype)


def near_surface_queries(vertices: torch.Tensor, faces: torch.Tensor, count: int, noise: float = 0.01,
                         seed: int = 0) -> torch.Tensor:
    """``count`` points ``[count, 3]`` near the surface: area-weighted uniform
    samples on the faces plus Gaussian noise of ``noise`` x the bounding box
    diagonal (per axis)."""
    g = torch.Generator().manual_seed(seed)
    v = vertices.double()
    tri = v[faces.long()]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1)
    face = torch.multinomial(area, count, replacement=True, generator=g)
    u = torch.rand(count, 2, generator=g, dtype=torch.float64)
    u = torch.where((u.sum(1) > 1)[:, None], 1 - u, u)  # fold onto the triangle
    w = torch.stack([1 - u.sum(1), u[:, 0], u[:, 1]], 1)
    surface = (w[:, :, None] * tri[face]).sum(1)
    diagonal = (v.max(0).values - v.min(0).values).norm()
    return (surface + noise * diagonal * torch.randn(count, 3, generator=g, dtype=torch.float64)).to(vertices.dtype)


# -- cases --------------------------------------------------------------------- #

def raster_case(num_faces: int, resolution: Sequence[int], batch: int = 1, device="cpu",
                requires_grad: bool = False, channels: int = 3, seed: int = 0) -> Dict[str, object]:
    """pos ``[B, V, 4]``, tri ``[F, 3]`` int32, resolution and a random attr ``[V, C]``
    (float32) for rasterize / interpolate / antialias."""
    vertices, faces = head_mesh(num_faces)
    g = torch.Generator().manual_seed(seed)
    attr = torch.rand(vertices.shape[0], channels, generator=g)
    return dict(pos=clip_space(vertices, batch).to(device).requires_grad_(requires_grad),
                tri=faces.int().to(device), resolution=tuple(int(r) for r in resolution),
                attr=attr.to(device).requires_grad_(requires_grad))


def render(ops, case: Dict[str, object]):
    """rasterize + interpolate of ``case["attr"]``: (rast, image)."""
    rast, _ = ops.rasterize(case["pos"], case["tri"], case["resolution"])
    image, _ = ops.interpolate(case["attr"], rast, case["tri"])
    return rast, image


def shading_case(batch: int, num_faces: int = BFM_FACES, device="cpu", requires_grad: bool = False,
                 seed: int = 0) -> Dict[str, torch.Tensor]:
    """Inputs of :func:`shade` on a :func:`head_mesh` (float32, B meshes with small
    per-vertex jitter): vertices, faces, albedo, 9 SH coefficients per channel, a
    point light, camera position, specular albedo ``[B, V, 1]``, shininess."""
    vertices, faces = head_mesh(num_faces)
    g = torch.Generator().manual_seed(seed)
    n = vertices.shape[0]
    rg = lambda t: t.to(device).requires_grad_(requires_grad)
    return dict(
        vertices=rg(vertices.expand(batch, -1, -1) + 1e-3 * torch.randn(batch, n, 3, generator=g)),
        faces=faces.to(device),
        albedo=rg(torch.rand(batch, n, 3, generator=g)),
        sh_coeffs=rg(torch.randn(batch, 9, 3, generator=g) * 0.2),
        light_pos=rg(torch.randn(batch, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 1.0])),
        camera_pos=torch.tensor([0.0, 0.0, 0.6]).expand(batch, 3).contiguous().to(device),
        specular_albedo=rg(torch.rand(batch, n, 1, generator=g) * 0.3),
        shininess=rg(torch.full((batch,), 20.0)),
    )


def shade(ops, case: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-vertex colour ``[B, V, 3]``: vertex normals -> SH diffuse ("deep3d") +
    Blinn-Phong specular, with ``ops`` = ``facegeom.ops`` or its ``reference``."""
    normals = ops.vertex_normals(case["vertices"], case["faces"])
    diffuse = ops.sh_shading(normals, case["albedo"], case["sh_coeffs"], "deep3d")
    specular = ops.blinn_phong(normals, case["vertices"], case["light_pos"], case["camera_pos"],
                               case["specular_albedo"], case["shininess"])
    return diffuse + specular


# -- tables ---------------------------------------------------------------------- #

def _modes(forward: Callable, loss: Callable, grads: Sequence[torch.Tensor]):
    """(mode, call) pairs: forward without autograd, then forward+backward of loss."""
    def fwd():
        with torch.no_grad():
            forward()

    def fwd_bwd():
        for t in grads:
            t.grad = None
        loss().backward()
    return [("forward", fwd), ("forward+backward", fwd_bwd)]


def lbs_table(batches=(1, 64), seconds: float = 1.0, device: str = "cpu") -> List[Row]:
    """lbs on the FLAME-shaped :func:`lbs_case`: kernel vs reference, with the
    torch.mv bandwidth floor (the shape basis read once) on the forward rows."""
    from facegeom.ops import lbs, reference

    rows = []
    for batch in batches:
        case = {k: v.to(device) for k, v in lbs_case(batch).items()}
        basis = case["shapedirs"].reshape(-1, case["shapedirs"].shape[-1])
        with torch.no_grad():
            floor = time_call(lambda: torch.mv(basis, case["betas"][0]), seconds, device)
            kernel = time_call(lambda: lbs(**case), seconds, device)
            ref = time_call(lambda: reference.lbs(**case), seconds, device)
        rows.append(_row("lbs", "FLAME V=5023 K=400", batch, "forward", kernel, ref,
                         note=f"mv floor {floor['min_ms']:.3f} ms"))
        grad_case = {k: (v.detach().requires_grad_(k in ("betas", "pose")) if v.is_floating_point() else v)
                     for k, v in case.items()}
        kernel = time_call(lambda: forward_backward(lbs, grad_case), seconds, device)
        ref = time_call(lambda: forward_backward(reference.lbs, grad_case), seconds, device)
        rows.append(_row("lbs", "FLAME V=5023 K=400", batch, "forward+backward", kernel, ref))
    return rows


RASTER_CASES = {  # name: (faces, (H, W))
    "BFM 224x224": (BFM_FACES, (224, 224)),
    "FLAME 512x512": (FLAME_FACES, (512, 512)),
}


def _mesh_label(name: str, case: Dict[str, object]) -> str:
    return f"{name.split()[0]} {case['pos'].shape[1]}v/{case['tri'].shape[0]}f {name.split()[1]}"


def rasterize_table(cases=RASTER_CASES, batches=(1,), seconds: float = 1.0, device: str = "cpu") -> List[Row]:
    """rasterize + interpolate (3 channels) of :func:`raster_case`, forward and
    forward+backward (to pos and attr), with Mpixel/s (output pixels per second,
    median). The reference is brute force (every pixel x every triangle): timed
    only within :data:`BRUTE_FORCE_BUDGET`."""
    import facegeom.ops as fo
    from facegeom.ops import reference

    rows = []
    for name, (num_faces, resolution) in cases.items():
        for batch in batches:
            case = raster_case(num_faces, resolution, batch, device, requires_grad=True)
            pixels = batch * resolution[0] * resolution[1]

            def loss(ops):
                rast, image = render(ops, case)
                return image.sum() + rast[..., :3].sum()

            grads = [case["pos"], case["attr"]]
            refs = _time_references(_modes(lambda: render(reference, case), lambda: loss(reference), grads),
                                    seconds, device, pairs=pixels * case["tri"].shape[0])
            for (mode, call), (ref, ref_note) in zip(_modes(lambda: render(fo, case), lambda: loss(fo), grads), refs):
                kernel = time_call(call, seconds, device)
                rows.append(_row("rasterize+interpolate", _mesh_label(name, case), batch, mode, kernel, ref, ref_note,
                                 note=f"{pixels / kernel['median_ms'] / 1e3:.3g} Mpixel/s"))
    return rows


def antialias_table(cases=RASTER_CASES, batches=(1,), seconds: float = 1.0, device: str = "cpu") -> List[Row]:
    """antialias of an interpolated image of :func:`raster_case` (rasterized once,
    outside the timing; the edge topology built once, timed as its own row),
    forward and forward+backward (to color and pos), with Mpixel/s. The
    reference is timed only within :data:`REFERENCE_BUDGET_S` per call (it is
    not, at the issue's sizes, on this CPU)."""
    import facegeom.ops as fo
    from facegeom.ops import reference

    rows = []
    for name, (num_faces, resolution) in cases.items():
        for batch in batches:
            case = raster_case(num_faces, resolution, batch, device)
            with torch.no_grad():
                rast, color = render(fo, case)
            pos, tri = case["pos"].requires_grad_(True), case["tri"]
            color.requires_grad_(True)
            label = _mesh_label(name, case)
            topo = time_call(lambda: fo.antialias_topology(tri), seconds, device)
            [(ref, ref_note)] = _time_references([("topology", lambda: reference.antialias_topology(tri))],
                                                 seconds, device)
            rows.append(_row("antialias", label, batch, "topology (once per mesh)", topo, ref, ref_note))
            topology = fo.antialias_topology(tri)
            pixels = batch * resolution[0] * resolution[1]
            impl = {ops: _modes(lambda ops=ops: ops.antialias(color, rast, pos, tri, topology),
                                lambda ops=ops: ops.antialias(color, rast, pos, tri, topology).sum(), [color, pos])
                    for ops in (fo, reference)}
            for (mode, call), (ref, ref_note) in zip(impl[fo], _time_references(impl[reference], seconds, device)):
                kernel = time_call(call, seconds, device)
                rows.append(_row("antialias", label, batch, mode, kernel, ref, ref_note,
                                 note=f"{pixels / kernel['median_ms'] / 1e3:.3g} Mpixel/s"))
    return rows


def shading_table(batches=(1, 16), num_faces: int = BFM_FACES, seconds: float = 1.0, device: str = "cpu",
                  reference_budget_s: float = 5.0) -> List[Row]:
    """vertex_normals -> sh_shading + blinn_phong (:func:`shade`) on a BFM-size
    :func:`head_mesh`, forward and forward+backward (to every differentiable
    input), kernel vs reference. The reference's budget per call is 5 s, not
    1 s: its B = 16 forward+backward (~1-2 s on 2 threads) is the issue's
    target comparison."""
    import facegeom.ops as fo
    from facegeom.ops import reference

    rows = []
    for batch in batches:
        case = shading_case(batch, num_faces, device, requires_grad=True)
        grads = [t for t in case.values() if t.requires_grad]
        impl = {ops: _modes(lambda ops=ops: shade(ops, case), lambda ops=ops: shade(ops, case).sum(), grads)
                for ops in (fo, reference)}
        label = f"{case['vertices'].shape[1]}v/{case['faces'].shape[0]}f"
        refs = _time_references(impl[reference], seconds, device, budget_s=reference_budget_s)
        for (mode, call), (ref, ref_note) in zip(impl[fo], refs):
            kernel = time_call(call, seconds, device)
            rows.append(_row("shading", label, batch, mode, kernel, ref, ref_note,
                             note=f"{batch * case['vertices'].shape[1] / kernel['median_ms'] / 1e3:.3g} Mvertex/s"))
    return rows


def point_to_surface_table(num_faces: int = FLAME_FACES, num_queries: int = 100_000, seconds: float = 1.0,
                           device: str = "cpu") -> List[Row]:
    """point_to_surface of :func:`near_surface_queries` (1 % noise) against a
    :func:`head_mesh`: the BVH build (``torch.ops.facegeom._bvh_build``; the op
    caches topologies by the faces, so query rows exclude it), queries forward and
    forward+backward (to points and vertices), with Mquery/s. The reference is
    brute force (every query x every face): timed only within
    :data:`BRUTE_FORCE_BUDGET`."""
    import facegeom.ops as fo
    from facegeom.ops import reference

    vertices, faces = head_mesh(num_faces)
    # Batched [1, ...] inputs: the reference takes only those.
    points = near_surface_queries(vertices, faces, num_queries)[None].to(device).requires_grad_(True)
    vertices, faces = vertices[None].to(device).requires_grad_(True), faces.to(device)
    label = f"{vertices.shape[1]}v/{faces.shape[0]}f, {num_queries} near"
    rows = []
    build = time_call(lambda: torch.ops.facegeom._bvh_build(vertices.detach(), faces), seconds, device)
    rows.append(_row("point_to_surface", label, 1, "BVH build", build, None, "n/a (the reference has no BVH)"))
    impl = {ops: _modes(lambda ops=ops: ops.point_to_surface(points, vertices, faces),
                        lambda ops=ops: ops.point_to_surface(points, vertices, faces)[0].sum(), [points, vertices])
            for ops in (fo, reference)}
    refs = _time_references(impl[reference], seconds, device, pairs=num_queries * faces.shape[0])
    for (mode, call), (ref, ref_note) in zip(impl[fo], refs):
        kernel = time_call(call, seconds, device)
        rows.append(_row("point_to_surface", label, 1, mode, kernel, ref, ref_note,
                         note=f"{num_queries / kernel['median_ms'] / 1e3:.3g} Mquery/s, BVH topology cached"))
    return rows


def format_table(rows: List[Row]) -> str:
    """Rows as a fixed-width text table: kernel and reference min / median ms,
    speed-up (reference / kernel, min), and the row's note."""
    header = (f"{'case':<26} {'B':>3} {'mode':<24} {'kernel ms min/med':>19} {'reference ms min/med':>21} "
              f"{'speed-up':>9}  note")
    lines = [header, "-" * len(header)]
    for r in rows:
        k, ref = r["kernel"], r["reference"]
        kernel = f"{k['min_ms']:9.3f}/{k['median_ms']:<9.3f}"
        if ref is None:
            reference, speedup = f"{'-':>21}", f"{'-':>9}"
            note = ", ".join(filter(None, [r["note"], "reference " + r["reference_note"]]))
        else:
            reference = f"{ref['min_ms']:10.3f}/{ref['median_ms']:<10.3f}"
            speedup = f"{ref['min_ms'] / k['min_ms']:8.2f}x"
            note = r["note"]
        lines.append(f"{r['case']:<26} {r['batch']:>3} {r['mode']:<24} {kernel} {reference} {speedup}  {note}")
    lines.append("(min and median of repeated runs; speed-up = reference min / kernel min)")
    return "\n".join(lines)


# family: (title, table with the issues' cases, table with tiny cases for tests)
OPS = {
    "lbs": ("lbs, FLAME-shaped (V=5023, K=400, J=5)",
            lambda seconds, device: lbs_table((1, 64, 1024) if device == "cuda" else (1, 64), seconds, device),
            lambda seconds, device: lbs_table((1,), seconds, device)),
    "rasterize": ("rasterize + interpolate (3 channels), procedural head mesh",
                  lambda seconds, device: rasterize_table(seconds=seconds, device=device),
                  lambda seconds, device: rasterize_table({"tiny 32x32": (48, (32, 32))}, (1,), seconds, device)),
    "antialias": ("antialias of an interpolated image, procedural head mesh",
                  lambda seconds, device: antialias_table(seconds=seconds, device=device),
                  lambda seconds, device: antialias_table({"tiny 32x32": (48, (32, 32))}, (1,), seconds, device)),
    "shading": ("shading: vertex_normals -> sh_shading + blinn_phong, BFM-size head mesh",
                lambda seconds, device: shading_table(seconds=seconds, device=device),
                lambda seconds, device: shading_table((1, 2), 200, seconds, device)),
    "point_to_surface": ("point_to_surface, near-surface queries (1 % noise), FLAME-size head mesh",
                         lambda seconds, device: point_to_surface_table(seconds=seconds, device=device),
                         lambda seconds, device: point_to_surface_table(48, 500, seconds, device)),
}


def bench_tables(ops: Sequence[str], quick: bool = False):
    """(title, table(seconds, device)) for each op family in ``ops`` (keys of
    :data:`OPS`); ``quick`` swaps in tiny cases (for tests: the figures mean
    nothing)."""
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"bench_tables: unknown op families {unknown}; expected some of {list(OPS)}")
    return [(OPS[op][0] + (" (quick: tiny cases)" if quick else ""), OPS[op][2 if quick else 1]) for op in ops]
