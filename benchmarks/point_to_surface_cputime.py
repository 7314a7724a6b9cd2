"""Point-to-surface CPU-time comparison (one torch thread, process_time over all
threads, min of 3): facegeom vs Warp CPU vs libigl vs trimesh, BVH build/refit,
and scaling with P and F. Robust to a busy machine, unlike wall-clock timings,
which it adds only for the all-cores comparison with Warp (quiet machine only).

    python benchmarks/point_to_surface_cputime.py
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.test_bench_point_to_surface import (  # noqa: E402
    case, facegeom_runner, head_mesh, igl, queries, trimesh, warp_runner, wp)


def cpu_ms(fn, repeats=3):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1e3


def wall_ms(fn, repeats=10):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


CORES = os.cpu_count() or 1


def main():
    torch.set_num_threads(1)
    ops = torch.ops.facegeom
    for num_faces in (9976, 100_000):
        v, f, _ = case(num_faces, "near")
        nodes, order, levels = ops._bvh_build(v[None], f)
        batch16 = v.expand(16, -1, -1).contiguous()
        print(f"F={len(f)} build {cpu_ms(lambda: ops._bvh_build(v[None], f)):.1f} ms, "
              f"refit B=1 {cpu_ms(lambda: ops._bvh_refit(v[None], f, nodes, order, levels)):.2f} ms, "
              f"refit B=16 {cpu_ms(lambda: ops._bvh_refit(batch16, f, nodes, order, levels)):.1f} ms", flush=True)
        for kind in ("near", "uniform"):
            v, f, p = case(num_faces, kind)
            ours = cpu_ms(facegeom_runner(v, f, p))
            line = f"F={len(f)} {kind}: facegeom {ours:.0f} ms"
            if wp is not None:
                run, _mesh = warp_runner(v, f, p, "cpu")
                t = cpu_ms(run)
                line += f" | warp {t:.0f} ({t / ours:.2f}x)"
            vv, ff, pp = v.double().numpy(), f.numpy(), p.double().numpy()
            if igl is not None:
                t = cpu_ms(lambda: igl.point_mesh_squared_distance(pp, vv, ff), 1)
                line += f" | libigl {t:.0f} ({t / ours:.2f}x)"
            if trimesh is not None:
                mesh = trimesh.Trimesh(vv, ff, process=False)
                t = 100 * cpu_ms(lambda: (mesh._cache.clear(),
                                          trimesh.proximity.closest_point(mesh, pp[:1000])), 1)
                line += f" | trimesh(1000 queries x100) {t:.0f} ({t / ours:.0f}x)"
            print(line, flush=True)
    if wp is not None:
        # Throughput with every core (wall clock: only meaningful on a quiet
        # machine) against Warp's single-threaded CPU back end.
        v, f, p = case(9976, "near")
        run, _mesh = warp_runner(v, f, p, "cpu")
        warp = wall_ms(run)
        for threads in sorted({1, CORES}):
            torch.set_num_threads(threads)
            ours = wall_ms(facegeom_runner(v, f, p))
            print(f"F={len(f)} near, wall clock: facegeom {threads} thread(s) {ours:.0f} ms | "
                  f"warp {warp:.0f} ({warp / ours:.2f}x)", flush=True)
        torch.set_num_threads(1)
    v, f = head_mesh(9976)
    for num_points in (10_000, 100_000, 1_000_000):
        p = queries(v, f, "near", num_points)
        print(f"P={num_points} F=9976 near: {cpu_ms(facegeom_runner(v, f, p)):.1f} ms", flush=True)
    for num_faces in (1000, 10_000, 100_000, 1_000_000):
        v, f = head_mesh(num_faces)
        p = queries(v, f, "near")
        print(f"F={len(f)} P=100k near: {cpu_ms(facegeom_runner(v, f, p)):.1f} ms (topology cached), "
              f"build {cpu_ms(lambda: ops._bvh_build(v[None], f), 1):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
