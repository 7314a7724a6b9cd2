#!/usr/bin/env bash
# CI step (not pytest): the source distribution builds, installs into a fresh
# virtual environment that already has torch, and its compiled kernels load.
#   sdist (python -m build) -> fresh venv -> pip install --no-build-isolation <sdist>
#   -> `facegeom info` (from outside the source tree) reports facegeom._C with the cpu back end.
# Torch in the fresh venv: the system interpreter's, if it has one (a CUDA machine), else
# the same version as the project venv's (pip finds it locally when a wheel is cached).
set -euo pipefail
cd "$(dirname "$0")/.."
project_python=${PYTHON:-.venv/bin/python}
base_python=$("$project_python" -c 'import sys; print(sys._base_executable)')
torch_version=$("$project_python" -c 'import torch; print(torch.__version__)')
work=$(mktemp -d /tmp/facegeom-sdist.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$base_python" -m venv --system-site-packages "$work/venv"
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install -q build "setuptools>=77" ninja

echo "check-sdist: building the sdist"
"$venv_python" -m build --sdist --no-isolation --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
sdist=$(ls "$work"/dist/facegeom-*.tar.gz)
tar tzf "$sdist" | sed 's|^[^/]*/||' >"$work/files.txt"  # (grep -q on a pipe would SIGPIPE tar)
echo "check-sdist: $(basename "$sdist"), $(wc -l <"$work/files.txt") files"
for required in LICENSE csrc/bindings/checks.h facegeom/py.typed; do
  grep -q -x "$required" "$work/files.txt" || { echo "check-sdist: $required missing from the sdist"; exit 1; }
done
for suffix in h cu cuh; do
  grep -q "^csrc/.*\.$suffix\$" "$work/files.txt" || { echo "check-sdist: no csrc/**.$suffix in the sdist"; exit 1; }
done
if grep -q -E '\.so$|_build\.json$' "$work/files.txt"; then echo "check-sdist: build artifacts in the sdist"; exit 1; fi

if ! "$venv_python" -c 'import torch' 2>/dev/null; then
  echo "check-sdist: installing torch==$torch_version into the fresh venv"
  "$venv_python" -m pip install -q --no-deps "torch==$torch_version"
fi
echo "check-sdist: pip install --no-build-isolation $(basename "$sdist") (compiles facegeom._C)"
MAX_JOBS=${MAX_JOBS:-2} "$venv_python" -m pip install -q --no-build-isolation "$sdist"

cd "$work"  # away from the source tree: the installed package must be the one imported
"$work/venv/bin/facegeom" info | tee "$work/info.txt"
grep -q -E '^compiled kernels \(facegeom._C\) +yes$' "$work/info.txt" \
  || { echo "check-sdist: facegeom info does not report the compiled kernels"; exit 1; }
grep -q -E '^back ends +cpu' "$work/info.txt" || { echo "check-sdist: no cpu back end"; exit 1; }
"$venv_python" - "$work" <<'PY'
import json, os, sys, warnings
warnings.simplefilter("error")  # a torch-mismatch warning would fail here
import torch, facegeom
from facegeom import _native
root = os.path.dirname(facegeom.__file__)
assert root.startswith(sys.argv[1]), f"imported {root}, not the installed sdist"
assert _native.AVAILABLE and _native.BUILD.get("torch") == torch.__version__, _native.BUILD
library = [f for f in os.listdir(root) if f.startswith("_C") and f.endswith(".so")][0]
size = os.path.getsize(os.path.join(root, library)) / 2**20
assert size < 8, f"{library} is {size:.1f} MB: debug information was not stripped"
assert os.path.isfile(os.path.join(root, "py.typed"))
vertices = torch.rand(1, 3, 4) * 0.5
vertices[..., 2:] = 0.5; vertices[..., 3] = 1.0
out = facegeom.ops.rasterize(vertices, torch.tensor([[0, 1, 2]], dtype=torch.int32), (8, 8))
print(f"check-sdist: ok ({library}: {size:.2f} MB, built against torch {_native.BUILD['torch']})")
PY
