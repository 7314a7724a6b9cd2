"""Benchmark cases and timing shared by ``benchmarks/`` and ``facegeom bench``.

The cases are FLAME-shaped (V = 5023, K = 300 shape + 100 expression, J = 5,
36 pose features) with random bases: timings depend on shapes, not values.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

import torch

FLAME_PARENTS = [-1, 0, 1, 1, 1]


def lbs_case(batch: int, dtype=torch.float32, requires_grad: bool = False, seed: int = 0,
             num_vertices: int = 5023, num_betas: int = 400, parents=FLAME_PARENTS) -> Dict[str, torch.Tensor]:
    """Keyword arguments of ``facegeom.ops.lbs`` for a FLAME-shaped model and batch."""
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


def time_call(fn: Callable[[], object], seconds: float = 1.0) -> Dict[str, float]:
    """Repeat ``fn`` for about ``seconds``; min and median wall time in ms."""
    fn()
    fn()
    times: List[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3}


def lbs_table(batches=(1, 64), seconds: float = 1.0, device: str = "cpu") -> List[Dict[str, object]]:
    """Kernel vs reference (and the torch.mv bandwidth floor) for lbs, as rows."""
    from facegeom.ops import lbs, reference

    rows = []
    for batch in batches:
        case = {k: v.to(device) for k, v in lbs_case(batch).items()}
        basis = case["shapedirs"].reshape(-1, case["shapedirs"].shape[-1])
        with torch.no_grad():
            floor = time_call(lambda: torch.mv(basis, case["betas"][0]), seconds)
            kernel = time_call(lambda: lbs(**case), seconds)
            ref = time_call(lambda: reference.lbs(**case), seconds)
        rows.append(dict(op="lbs", batch=batch, mode="forward", kernel=kernel, reference=ref, mv_floor=floor))
        grad_case = {k: (v.detach().requires_grad_(k in ("betas", "pose")) if v.is_floating_point() else v)
                     for k, v in case.items()}
        kernel = time_call(lambda: forward_backward(lbs, grad_case), seconds)
        ref = time_call(lambda: forward_backward(reference.lbs, grad_case), seconds)
        rows.append(dict(op="lbs", batch=batch, mode="forward+backward", kernel=kernel, reference=ref))
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    lines = [f"{'op':<5} {'B':>5} {'mode':<17} {'kernel ms':>10} {'reference ms':>13} {'speed-up':>9} {'mv floor ms':>12}",
             "-" * 77]
    for r in rows:
        k, ref = r["kernel"]["min_ms"], r["reference"]["min_ms"]
        floor = f"{r['mv_floor']['min_ms']:12.3f}" if "mv_floor" in r else " " * 12
        lines.append(f"{r['op']:<5} {r['batch']:>5} {r['mode']:<17} {k:10.3f} {ref:13.3f} {ref / k:8.2f}x {floor}")
    lines.append("(min of repeated runs; speed-up = reference / kernel)")
    return "\n".join(lines)
