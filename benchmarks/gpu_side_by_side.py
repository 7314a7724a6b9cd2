"""GPU side-by-side timings in one run (issue 20): facegeom's CUDA kernels against
the peers that are importable on the machine, and against the memory floor.

    python benchmarks/gpu_side_by_side.py --out side_by_side.json --markdown side_by_side.md
    python benchmarks/gpu_side_by_side.py --dry-run      # CPU, tiny cases: checks the script itself

Rows (each timed with CUDA events after warm-up; min and median of the repeats):
- rasterize + interpolate (3 channels) at FLAME / BFM size, 512^2 and 1024^2, B = 1 and 16:
  facegeom vs ``nvdiffrast.torch`` (``RasterizeCudaContext``) when nvdiffrast is importable.
- point_to_surface, 100k near-surface queries on a FLAME-size mesh: facegeom vs Warp CUDA
  (``wp.mesh_query_point_no_sign``, its BVH built outside the timed call) when warp is importable.
- lbs (FLAME-shaped, V = 5023, K = 400, J = 5) at B = 1, 64, 1024: facegeom vs smplx's ``lbs``
  when importable, and the HBM floor: the bytes that must move at least once (the shape basis
  read once, the pose correctives read once, the output written) over the copy bandwidth measured
  in the same run.
- shading (vertex normals -> SH + Blinn-Phong) forward + backward at BFM size, B = 1 and 16:
  facegeom vs its pure-PyTorch reference.
- texture, 512^2 samples from a 1024^2 texture, bilinear and trilinear (linear-mipmap-linear from a
  uv_da of a 2x minification), forward + backward: facegeom vs ``nvdiffrast.torch.texture`` when
  importable, and vs ``torch.nn.functional.grid_sample`` (bilinear only; its border padding is not
  nvdiffrast's wrap, which costs the same).

A peer that is not importable gives a row saying so; nothing here installs or builds a peer.
``--dry-run`` runs every row on the CPU with tiny cases (the figures mean nothing): it is what the
test suite runs so that this script cannot rot while no GPU is at hand.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from facegeom import bench, ops  # noqa: E402
from facegeom.ops import reference  # noqa: E402

try:  # peers: never dependencies
    import nvdiffrast.torch as nvdr
except Exception:  # ImportError, or a broken build
    nvdr = None
try:
    import warp as wp
except Exception:
    wp = None
try:
    from smplx.lbs import lbs as smplx_lbs
except Exception:
    smplx_lbs = None


def timed(fn: Callable[[], object], device: str, repeats: int) -> Dict[str, float]:
    """min / median ms of ``fn`` over ``repeats`` runs after 3 warm-ups (CUDA events on a GPU)."""
    for _ in range(3):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"min_ms": min(times), "median_ms": statistics.median(times)}


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), device, 10)
    return 2 * nbytes / (t["min_ms"] * 1e-3)


def row(op: str, case: str, impl: str, timing: Optional[Dict[str, float]], note: str = "") -> Dict[str, object]:
    return {"op": op, "case": case, "impl": impl, "timing": timing, "note": note}


def rasterize_rows(device: str, dry: bool, repeats: int) -> List[Dict[str, object]]:
    rows = []
    meshes = {"tiny": 48} if dry else {"FLAME size": bench.FLAME_FACES, "BFM size": bench.BFM_FACES}
    resolutions = [(32, 32)] if dry else [(512, 512), (1024, 1024)]
    batches = (1, 2) if dry else (1, 16)
    ctx = nvdr.RasterizeCudaContext() if (nvdr is not None and device == "cuda") else None
    for name, faces in meshes.items():
        for res in resolutions:
            for batch in batches:
                case = bench.raster_case(faces, res, batch, device=device)
                label = f"{name} {res[0]}x{res[1]} B={batch}"
                rows.append(row("rasterize+interpolate", label, "facegeom",
                                timed(lambda: bench.render(ops, case), device, repeats)))
                if ctx is None:
                    rows.append(row("rasterize+interpolate", label, "nvdiffrast", None,
                                    "nvdiffrast not importable" if nvdr is None else "needs CUDA"))
                    continue
                pos, tri, attr = case["pos"].contiguous(), case["tri"].contiguous(), case["attr"].contiguous()

                def peer():
                    rast, _ = nvdr.rasterize(ctx, pos, tri, res)
                    return nvdr.interpolate(attr, rast, tri)

                rows.append(row("rasterize+interpolate", label, "nvdiffrast", timed(peer, device, repeats)))
                # Same triangle ids where both cover a pixel: a cheap agreement check beside the timing.
                ours, _ = ops.rasterize(pos, tri, res)
                theirs, _ = nvdr.rasterize(ctx, pos, tri, res)
                agree = (ours[..., 3] == theirs[..., 3]).float().mean().item()
                rows[-1]["note"] = f"triangle ids equal on {100 * agree:.3f} % of pixels"
    return rows


def point_to_surface_rows(device: str, dry: bool, repeats: int) -> List[Dict[str, object]]:
    num_faces, num_queries = (48, 500) if dry else (bench.FLAME_FACES, 100_000)
    vertices, faces = bench.head_mesh(num_faces)
    points = bench.near_surface_queries(vertices, faces, num_queries)
    v, f, p = vertices.to(device), faces.to(device), points.to(device)
    label = f"F={faces.shape[0]} P={num_queries} near"
    rows = [row("point_to_surface", label, "facegeom",
                timed(lambda: ops.point_to_surface(p[None], v[None], f), device, repeats))]
    if wp is None or device != "cuda":
        rows.append(row("point_to_surface", label, "warp", None,
                        "warp not importable" if wp is None else "needs CUDA"))
        return rows
    wp.init()
    mesh = wp.Mesh(points=wp.array(vertices.numpy(), dtype=wp.vec3, device="cuda:0"),
                   indices=wp.array(faces.int().numpy().ravel(), dtype=wp.int32, device="cuda:0"))
    pts = wp.array(points.numpy(), dtype=wp.vec3, device="cuda:0")
    dist2 = wp.zeros(num_queries, dtype=float, device="cuda:0")
    kernel = _warp_kernel()

    def peer():
        wp.launch(kernel, dim=num_queries, inputs=[mesh.id, pts, 1.0e6, dist2], device="cuda:0")

    rows.append(row("point_to_surface", label, "warp", timed(peer, device, repeats)))
    ours = ops.point_to_surface(p[None], v[None], f)[0][0]
    theirs = torch.from_numpy(dist2.numpy()).to(device)
    rows[-1]["note"] = f"max |dist2 difference| {float((ours - theirs).abs().max()):.3g}"
    return rows


def _warp_kernel():
    @wp.kernel
    def closest(mesh: wp.uint64, points: wp.array(dtype=wp.vec3), max_dist: float,
                dist2: wp.array(dtype=float)):
        tid = wp.tid()
        q = wp.mesh_query_point_no_sign(mesh, points[tid], max_dist)
        if q.result:
            d = wp.mesh_eval_position(mesh, q.face, q.u, q.v) - points[tid]
            dist2[tid] = wp.dot(d, d)

    return closest


def lbs_rows(device: str, dry: bool, repeats: int, bandwidth: float) -> List[Dict[str, object]]:
    rows = []
    batches = (1, 2) if dry else (1, 64, 1024)
    size = dict(num_vertices=50, num_betas=10) if dry else {}
    for batch in batches:
        case = {k: v.to(device) for k, v in bench.lbs_case(batch, **size).items()}
        label = f"B={batch}"
        ours = timed(lambda: ops.lbs(**case), device, repeats)
        shapedirs, posedirs = case["shapedirs"], case["posedirs"]
        floor_bytes = 4 * (shapedirs.numel() + posedirs.numel() + batch * shapedirs.shape[0] * 3)
        floor_ms = floor_bytes / bandwidth * 1e3
        rows.append(row("lbs", label, "facegeom", ours,
                        f"HBM floor {floor_ms:.4f} ms ({floor_bytes / 1e6:.1f} MB at "
                        f"{bandwidth / 1e12:.2f} TB/s): {floor_ms / ours['min_ms']:.0%} of it"))
        if smplx_lbs is None:
            rows.append(row("lbs", label, "smplx", None, "smplx not importable"))
        else:
            rows.append(row("lbs", label, "smplx", timed(lambda: smplx_lbs(**case), device, repeats)))
    return rows


def shading_rows(device: str, dry: bool, repeats: int) -> List[Dict[str, object]]:
    rows = []
    num_faces = 200 if dry else bench.BFM_FACES
    for batch in ((1, 2) if dry else (1, 16)):
        case = bench.shading_case(batch, num_faces, device=device, requires_grad=True)
        grads = [t for t in case.values() if isinstance(t, torch.Tensor) and t.requires_grad]
        label = f"F={num_faces} B={batch} fwd+bwd"
        for impl, module in (("facegeom", ops), ("reference", reference)):
            def step():
                for t in grads:
                    t.grad = None
                bench.shade(module, case).sum().backward()

            rows.append(row("shading", label, impl, timed(step, device, repeats)))
    return rows


def texture_rows(device: str, dry: bool, repeats: int) -> List[Dict[str, object]]:
    """``texture`` bilinear and trilinear (mip from a screen-space uv_da), forward + backward into the
    texture and uv, vs nvdiffrast's ``texture`` and ``torch.nn.functional.grid_sample`` (bilinear)."""
    rows = []
    side, samples = (32, 16) if dry else (1024, 512)
    g = torch.Generator(device="cpu").manual_seed(0)
    tex = torch.rand(1, side, side, 3, generator=g).to(device).requires_grad_(True)
    uv = torch.rand(1, samples, samples, 2, generator=g).to(device).requires_grad_(True)
    uv_da = torch.full((1, samples, samples, 4), 0.0, device=device)
    uv_da[..., 0] = uv_da[..., 3] = 2.0 / samples  # a minification of 2 -> mip level ~1
    grid_tex = tex.detach().permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    for mode, kwargs in (("linear", {}), ("linear-mipmap-linear", {"uv_da": uv_da})):
        label = f"{side}^2 texture, {samples}^2 samples, {mode}, fwd+bwd"

        def ours():
            ops.texture(tex, uv, filter_mode=mode, **kwargs).sum().backward()

        rows.append(row("texture", label, "facegeom", timed(ours, device, repeats)))
        if nvdr is not None and device == "cuda":
            def peer():
                nvdr.texture(tex, uv, filter_mode=mode, **kwargs).sum().backward()

            rows.append(row("texture", label, "nvdiffrast", timed(peer, device, repeats)))
        else:
            rows.append(row("texture", label, "nvdiffrast", None,
                            "nvdiffrast not importable" if nvdr is None else "needs CUDA"))
        if mode == "linear":
            def grid():
                torch.nn.functional.grid_sample(grid_tex, uv * 2 - 1, mode="bilinear", padding_mode="border",
                                                align_corners=False).sum().backward()

            rows.append(row("texture", label, "grid_sample", timed(grid, device, repeats),
                            "clamp boundary (facegeom/nvdiffrast: wrap)"))
    return rows


def markdown(rows: List[Dict[str, object]], header: Dict[str, object]) -> str:
    lines = [f"Device: {header['device']}; torch {header['torch']}; commit {header['commit']}; "
             f"copy bandwidth {header['bandwidth_TBps']:.2f} TB/s", "",
             "| op | case | implementation | min ms | median ms | vs facegeom | note |",
             "|---|---|---|---:|---:|---:|---|"]
    ours = {(r["op"], r["case"]): r["timing"] for r in rows if r["impl"] == "facegeom"}
    for r in rows:
        t = r["timing"]
        if t is None:
            lines.append(f"| {r['op']} | {r['case']} | {r['impl']} | - | - | - | {r['note']} |")
            continue
        base = ours.get((r["op"], r["case"]))
        ratio = "" if r["impl"] == "facegeom" or base is None else f"{t['min_ms'] / base['min_ms']:.2f}x"
        lines.append(f"| {r['op']} | {r['case']} | {r['impl']} | {t['min_ms']:.4f} | {t['median_ms']:.4f} "
                     f"| {ratio} | {r['note']} |")
    lines.append("")
    lines.append("vs facegeom = peer min / facegeom min (above 1: facegeom is faster).")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON file for the rows")
    parser.add_argument("--markdown", type=Path, help="Markdown table file")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny cases: checks the script only")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--commit", default="unknown")
    args = parser.parse_args(argv)
    if args.dry_run:
        device, repeats = "cpu", 2
    elif not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run")
    else:
        device, repeats = "cuda", args.repeats
    bandwidth = copy_bandwidth(device, (1 << 20) if args.dry_run else (1 << 31))
    header = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)",
              "torch": torch.__version__, "commit": args.commit, "bandwidth_TBps": bandwidth / 1e12,
              "peers": {"nvdiffrast": nvdr is not None, "warp": wp is not None, "smplx": smplx_lbs is not None}}
    rows: List[Dict[str, object]] = []
    for section in (lambda: rasterize_rows(device, args.dry_run, repeats),
                    lambda: point_to_surface_rows(device, args.dry_run, repeats),
                    lambda: lbs_rows(device, args.dry_run, repeats, bandwidth),
                    lambda: shading_rows(device, args.dry_run, repeats),
                    lambda: texture_rows(device, args.dry_run, repeats)):
        try:
            rows.extend(section())
        except Exception as error:  # one failing section must not lose the others' figures
            rows.append(row("error", type(error).__name__, "-", None, str(error)[:300]))
        if device == "cuda":
            torch.cuda.empty_cache()
    table = markdown(rows, header)
    print(table, flush=True)
    if args.out:
        args.out.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 1 if any(r["op"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
