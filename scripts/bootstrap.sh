#!/usr/bin/env bash
# Idempotent set-up used by `make demo` / `make test`: a virtual environment in
# .venv with torch, the dependencies, and facegeom built in place.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  # System site-packages stay visible so a machine's own torch (e.g. a CUDA
  # build on a GPU machine) is reused instead of downloading another.
  "$python" -m venv --system-site-packages .venv
fi
venv_python=.venv/bin/python
if ! "$venv_python" -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 4))" 2>/dev/null; then
  # Pinned: an unpinned torch would pull several GB of CUDA packages.
  "$venv_python" -m pip install -q "torch==2.13.0"
fi
# The stamp carries a number: bump it when this list changes so existing venvs pick up new packages.
# setuptools>=77: pyproject.toml's SPDX licence; no pybind11 (torch bundles it).
if [ ! -f .venv/.facegeom-deps-4 ]; then
  "$venv_python" -m pip install -q numpy scipy trimesh tqdm matplotlib pillow pytest pytest-benchmark hypothesis ninja "setuptools>=77" wheel rtree h5py
  # smplx is only the LBS peer for tests and benchmarks; --no-deps keeps pip away from torch.
  "$venv_python" -m pip install -q --no-deps smplx || echo "bootstrap: smplx unavailable; its comparison tests will skip"
  # The one compile: the editable install builds facegeom/_C*.so in place, its objects in
  # build/ (setup.py shares that folder with `build_ext --inplace`, so later runs are incremental).
  "$venv_python" -m pip install -q --no-build-isolation --no-deps -e .
  touch .venv/.facegeom-deps-4
else
  # Incremental (ninja): recompiles only what changed since the last build.
  "$venv_python" setup.py -q build_ext --inplace >/dev/null
fi
