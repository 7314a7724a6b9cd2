#!/usr/bin/env bash
# The whole GPU check of issue 20, in one run on a machine with an NVIDIA GPU (about 10 minutes,
# most of it the CUDA build):
#   1. builds facegeom._C with its CUDA kernels in place (TORCH_CUDA_ARCH_LIST defaults to the
#      visible GPU's compute capability; MAX_JOBS to the core count);
#   2. runs every CUDA test: `pytest -m cuda` (CUDA vs CPU: rasterizer ids bit-identical,
#      floats to 1e-5, lbs forward and backward, ...);
#   3. `facegeom bench --cuda` (kernel vs reference, every op family);
#   4. benchmarks/gpu_side_by_side.py (vs nvdiffrast, Warp and smplx where importable, lbs vs
#      the HBM floor, shading vs the reference);
#   5. benchmarks/bench_tracking.py --device cuda (the metrical tracker's seconds per frame, faithful
#      schedule, 512^2 synthetic sequence; --dry-run: tiny preset at 64^2 on the CPU);
#   6. writes result.json: device, commit, torch, build time, test counts, exit codes, and the
#      side-by-side rows.
# Usage: scripts/gpu-check.sh [OUT_DIR]          (default: $OUT, else gpu_out)
#        scripts/gpu-check.sh --dry-run [OUT_DIR] (no GPU needed: CPU build check, CPU dry run of the
#                                                 benchmark script, the summary; for testing the script)
# Optional: wheels of missing pure-Python peers/deps in .gpu-carry/whl (scripts/gpu-prepare.sh
# downloads them) are installed into a private target first; nothing is fetched from the network.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${1:-${OUT:-gpu_out}}
mkdir -p "$out"
py=${PYTHON:-python3}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export PYTHONUNBUFFERED=1

if ls .gpu-carry/whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/facegeom-gpu-site .gpu-carry/whl/*.whl && export PYTHONPATH=/tmp/facegeom-gpu-site:${PYTHONPATH:-}
fi

if [ $dry = 0 ]; then
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || {
      echo "gpu-check: torch sees no CUDA device" | tee "$out/result.json"; exit 2; }
    export TORCH_CUDA_ARCH_LIST
  fi
  export FACEGEOM_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
else
  export FACEGEOM_CUDA=0
fi

SECONDS=0
"$py" setup.py -q build_ext --inplace >"$out/build.log" 2>&1
build_rc=$?
build_s=$SECONDS
echo "build rc=$build_rc in ${build_s}s"

if [ $dry = 0 ]; then
  "$py" -m pytest -m cuda -q -p no:cacheprovider -o addopts= --junitxml="$out/cuda-tests.xml" tests \
    >"$out/pytest-cuda.log" 2>&1
  tests_rc=$?
  tail -3 "$out/pytest-cuda.log"
  "$py" -m facegeom.cli bench --cuda --seconds 0.3 >"$out/bench.txt" 2>&1
  bench_rc=$?
  "$py" benchmarks/gpu_side_by_side.py --commit "$commit" --out "$out/side_by_side.json" \
    --markdown "$out/side_by_side.md" >"$out/side_by_side.log" 2>&1
  sbs_rc=$?
  "$py" benchmarks/bench_tracking.py --device cuda --image-size 512 --frames 3 --preset faithful \
    >"$out/tracking.json" 2>"$out/tracking.log"
  track_rc=$?
else
  # The CUDA tests' selection must be non-empty and collect cleanly even here (they skip).
  "$py" -m pytest -m cuda -q -p no:cacheprovider -o addopts= --collect-only tests >"$out/pytest-cuda.log" 2>&1
  tests_rc=$?
  bench_rc=0
  "$py" benchmarks/gpu_side_by_side.py --dry-run --commit "$commit" --out "$out/side_by_side.json" \
    --markdown "$out/side_by_side.md" >"$out/side_by_side.log" 2>&1
  sbs_rc=$?
  "$py" benchmarks/bench_tracking.py --device cpu --image-size 64 --frames 2 --preset tiny \
    >"$out/tracking.json" 2>"$out/tracking.log"
  track_rc=$?
fi

"$py" - "$out" "$commit" "$build_rc" "$build_s" "$tests_rc" "$bench_rc" "$sbs_rc" "$dry" "$track_rc" <<'PY'
import json, re, sys
from pathlib import Path

import torch

out, commit = Path(sys.argv[1]), sys.argv[2]
build_rc, build_s, tests_rc, bench_rc, sbs_rc, dry, track_rc = map(int, sys.argv[3:])
log = (out / "pytest-cuda.log").read_text(errors="replace") if (out / "pytest-cuda.log").exists() else ""
counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|selected|deselected)", log)}
side = out / "side_by_side.json"
result = {
    "dry_run": bool(dry), "commit": commit, "torch": torch.__version__, "cuda": torch.version.cuda,
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "build": {"rc": build_rc, "seconds": build_s},
    "cuda_tests": {"rc": tests_rc, **counts},
    "bench_rc": bench_rc, "side_by_side_rc": sbs_rc,
    "side_by_side": json.loads(side.read_text()) if side.exists() else None,
    "tracking_rc": track_rc,
}
tracking = out / "tracking.json"
try:
    result["tracking"] = json.loads(tracking.read_text())
except (OSError, ValueError):
    result["tracking"] = None
result["ok"] = build_rc == 0 and tests_rc == 0 and bench_rc == 0 and sbs_rc == 0 and track_rc == 0
(out / "result.json").write_text(json.dumps(result, indent=1))
print(json.dumps({k: v for k, v in result.items() if k != "side_by_side"}))
sys.exit(0 if result["ok"] else 1)
PY
