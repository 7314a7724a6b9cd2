#!/usr/bin/env bash
# Run here (with network to the package registry) before a GPU run: downloads wheels of the pure-Python
# packages the GPU machine's image lacks (trimesh for the tests, smplx as the lbs peer) into
# .gpu-carry/whl (git-ignored), for `device run` with carry [".gpu-carry"]. Warp's wheel is added when it
# fits the carry budget (WARP=1). The GPU image's python is 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-carry/whl
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .gpu-carry/whl "$@"; }
dl trimesh smplx
if [ "${WARP:-0}" = 1 ]; then dl warp-lang; fi
du -sh .gpu-carry
