"""Run nvdiffrast's own PyTorch samples (samples/torch/{triangle, cube, pose, earth,
envphong}.py of an NVlabs/nvdiffrast checkout) on facegeom, on the CPU: each script is
copied with ``import nvdiffrast.torch as dr`` replaced by ``import
facegeom.compat.nvdiffrast as dr`` and its CUDA device strings (``.cuda()``,
``device='cuda'``) changed to the CPU, nothing else, then run with the samples' own
command-line flags for resolution and iteration count. Data files missing from the
checkout (``earth.npz`` is not in the repository) are replaced by stand-ins of the
same format (:func:`facegeom.testing.earth_npz`, the sample's 1536 x 2048 atlas size);
``imageio`` (the samples' image writer, not a facegeom dependency) is shimmed with
PIL when it is not installed. Prints each sample's last log lines and its wall time.

    git clone https://github.com/NVlabs/nvdiffrast /tmp/nvdiffrast
    OMP_NUM_THREADS=2 python benchmarks/nvdiffrast_samples.py /tmp/nvdiffrast --out /tmp/nvdr_samples

Not run by CI (minutes on 2 cores). docs/migration/nvdiffrast.md holds one run's figures.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from facegeom import testing

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: sample -> the samples' own flags (small resolution / few iterations).
RUNS = {
    "triangle": [],
    "cube": ["--resolution", "16", "--max-iter", "200"],
    "pose": ["--max-iter", "300"],
    "earth": ["--max-iter", "20"],
    "earth_mip": ["--max-iter", "20", "--mip"],
    "envphong": ["--max-iter", "100"],  # it logs every 100 iterations
}

IMAGEIO_SHIM = '''"""A stand-in for imageio (only what nvdiffrast's samples call), over PIL."""
import numpy as np
from PIL import Image


def imsave(path, image):
    Image.fromarray(np.asarray(image)).save(path)


imwrite = imsave


def get_writer(*args, **kwargs):
    raise RuntimeError("imageio is not installed: run the samples without --mp4save-interval / --outdir")
'''


def port(source: str) -> str:
    """The sample's text with facegeom's import and the CPU for CUDA."""
    text = source.replace("import nvdiffrast.torch as dr", "import facegeom.compat.nvdiffrast as dr")
    text = text.replace(".cuda()", ".cpu()")
    text = re.sub(r"device\s*=\s*'cuda'", "device='cpu'", text)
    return re.sub(r'device\s*=\s*"cuda"', 'device="cpu"', text)


def prepare(checkout: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """out/samples/torch/*.py (ported) and out/samples/data (the checkout's files and
    stand-ins for the missing ones); returns the scripts' folder."""
    scripts = out / "samples" / "torch"
    data = out / "samples" / "data"
    scripts.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    for path in (checkout / "samples" / "torch").glob("*.py"):
        (scripts / path.name).write_text(port(path.read_text()))
    for path in (checkout / "samples" / "data").glob("*"):
        if path.is_file() and not path.read_bytes()[:40].startswith(b"version https://git-lfs"):
            shutil.copy(path, data / path.name)  # (a git-lfs pointer is not data)
    if not (data / "earth.npz").exists():
        np.savez(data / "earth.npz", **testing.earth_npz(tex_shape=(1536, 2048), rings=64, segments=128))
    if not (data / "envphong.npz").exists():
        np.savez(data / "envphong.npz", **testing.envphong_npz(env_size=512, rings=64, segments=128))
    try:
        import imageio  # noqa: F401
    except ImportError:
        (scripts / "imageio.py").write_text(IMAGEIO_SHIM)
    return scripts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=pathlib.Path, help="an NVlabs/nvdiffrast checkout")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("nvdiffrast_samples"))
    parser.add_argument("--only", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per sample")
    args = parser.parse_args(argv)
    scripts = prepare(args.checkout, args.out)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    results = {}
    for name in args.only:
        script = "earth" if name.startswith("earth") else name
        start = time.perf_counter()
        run = subprocess.run([sys.executable, f"{script}.py", *RUNS[name]], cwd=scripts, env=env,
                             capture_output=True, text=True, timeout=args.timeout)
        seconds = time.perf_counter() - start
        lines = [line for line in run.stdout.splitlines() if "iter=" in line or "Saving" in line or "Mesh" in line]
        results[name] = dict(returncode=run.returncode, seconds=round(seconds, 1), first=lines[1:2], last=lines[-1:])
        print(f"== {name} {' '.join(RUNS[name])}: exit {run.returncode}, {seconds:.1f} s")
        for line in (lines[:2] + lines[-2:]) if len(lines) > 4 else lines:
            print("   ", line)
        if run.returncode:
            print(run.stderr[-2000:])
    return results


if __name__ == "__main__":
    main()
