"""Builds facegeom._C against the torch that is already installed.

CPU kernels are always built; CUDA kernels when torch has CUDA and a CUDA
toolkit is found. Install torch first, then (from this folder):

    pip install --no-build-isolation .        # or -e . for development

Environment variables (see docs/install.md):
    FACEGEOM_CUDA=0/1       force the CUDA kernels off / on (default: auto)
    CUDA_HOME               CUDA toolkit root (nvcc in $CUDA_HOME/bin), when not on PATH
    TORCH_CUDA_ARCH_LIST    GPU architectures, e.g. "8.0;8.6;9.0+PTX" (default: the visible
                            GPU's, or DEFAULT_CUDA_ARCH_LIST when none is visible)
    MAX_JOBS                parallel compile jobs (ninja)
    FACEGEOM_DEBUG=1        keep debug information (release builds are stripped)
"""
import glob
import json
import os
import sys

import setuptools
from setuptools import setup

if int(setuptools.__version__.split(".")[0]) < 77:  # pyproject.toml's SPDX `license = "MIT"`
    sys.exit(f"error: facegeom needs setuptools>=77 to build (found {setuptools.__version__}); run:\n"
             "    pip install -U 'setuptools>=77' ninja")

NEED_TORCH = (
    "facegeom builds its C++/CUDA kernels against the torch you have installed, and torch is not "
    "importable here (pip's build isolation hides it). Install torch first, then run:\n"
    "    pip install --no-build-isolation .\n"
    "(see docs/install.md)."
)
try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    # A source distribution needs no compiler and no torch; anything that compiles does.
    if not {"sdist", "egg_info", "dist_info"} & set(sys.argv[1:]):
        sys.exit("error: " + NEED_TORCH)
    torch = CUDA_HOME = None
    from setuptools import Extension as CppExtension
    from setuptools import Extension as CUDAExtension
    from setuptools.command.build_ext import build_ext as BuildExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
#: Architectures compiled when no GPU is visible (a login node, a docker build)
#: and TORCH_CUDA_ARCH_LIST is unset: Turing to Hopper, plus PTX for newer GPUs.
DEFAULT_CUDA_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0+PTX"
RELEASE = os.environ.get("FACEGEOM_DEBUG", "0") != "1"


def want_cuda() -> bool:
    forced = os.environ.get("FACEGEOM_CUDA")
    if torch is None or forced == "0":
        return False
    if forced == "1":
        if torch.version.cuda is None:
            sys.exit(f"error: FACEGEOM_CUDA=1 but the installed torch {torch.__version__} has no CUDA; "
                     "install a CUDA build of torch, or unset FACEGEOM_CUDA")
        if CUDA_HOME is None:
            sys.exit("error: FACEGEOM_CUDA=1 but no CUDA toolkit was found; set CUDA_HOME to its root "
                     "(the folder with bin/nvcc), e.g. CUDA_HOME=/usr/local/cuda")
        return True
    if forced is not None:
        sys.exit(f"error: FACEGEOM_CUDA must be 0 or 1, got {forced!r}")
    return torch.version.cuda is not None and CUDA_HOME is not None


def default_cuda_arch_list() -> None:
    """Without a visible GPU, torch cannot guess the architectures (it fails in its
    arch-flag detection): build DEFAULT_CUDA_ARCH_LIST unless TORCH_CUDA_ARCH_LIST is set."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST") or torch.cuda.is_available():
        return
    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST
    print(f"facegeom: no GPU visible, building for TORCH_CUDA_ARCH_LIST={DEFAULT_CUDA_ARCH_LIST!r} "
          "(set TORCH_CUDA_ARCH_LIST to choose)", file=sys.stderr)


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


with_cuda = want_cuda()
# bindings: schemas, checks, registrations; aten: ATen-level compositions (both
# devices); cpu: CPU launchers; cuda: kernels (.cu, torch-free) and their
# host-side orchestration (.cpp, ATen).
cpu_sources = (sources("csrc/cpu/*.cpp") + sources("csrc/aten/*.cpp")
               + sources("csrc/bindings/*.cpp"))
cuda_sources = sources("csrc/cuda/*.cu") + sources("csrc/cuda/*.cpp")
include_dirs = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")]
cxx_flags = ["-O3", "-fopenmp", "-fno-math-errno"]

if with_cuda:
    extension = CUDAExtension(
        "facegeom._C",
        cpu_sources + cuda_sources,
        include_dirs=include_dirs,
        define_macros=[("FACEGEOM_WITH_CUDA", "1")],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"]},
        extra_link_args=["-fopenmp"],
    )
else:
    extension = CppExtension(
        "facegeom._C",
        cpu_sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )

if RELEASE:  # Python's CFLAGS carry -g: a 17 MB library instead of 1 MB
    extension.extra_compile_args["cxx"] = extension.extra_compile_args["cxx"] + ["-g0"]
    extension.extra_link_args = extension.extra_link_args + ["-Wl,--strip-debug"]
if with_cuda:
    default_cuda_arch_list()


class build_ext(BuildExtension):
    """torch's BuildExtension (ninja), plus: one object folder for in-place and editable
    builds (so `pip install -e .` and `setup.py build_ext --inplace` share the compiled
    objects), and facegeom/_build.json beside the library, which records the torch it was
    built against (facegeom._native warns when the running torch differs)."""

    def finalize_options(self):
        super().finalize_options()
        if getattr(self, "editable_mode", False):
            self.build_temp = os.path.join(ROOT, "build", f"temp.{self.plat_name}-{sys.implementation.cache_tag}")

    def run(self):
        super().run()
        info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "with_cuda": with_cuda,
                "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
                "debug": not RELEASE}
        folders = {os.path.dirname(os.path.join(self.build_lib, self.get_ext_filename("facegeom._C")))}
        if self.inplace or getattr(self, "editable_mode", False):
            folders.add(os.path.join(ROOT, "facegeom"))
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "_build.json"), "w") as f:
                json.dump(info, f, indent=1)


if torch is None:  # sdist / egg_info only (see NEED_TORCH)
    setup(ext_modules=[extension])
else:
    setup(ext_modules=[extension], cmdclass={"build_ext": build_ext.with_options(use_ninja=True)})
