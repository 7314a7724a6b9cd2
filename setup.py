"""Builds facegeom._C: CPU kernels always, CUDA kernels when torch has CUDA and nvcc exists.

FACEGEOM_CUDA=0/1 forces the CUDA part off/on. Build against the installed torch:
    pip install --no-build-isolation -e .
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def want_cuda() -> bool:
    forced = os.environ.get("FACEGEOM_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


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

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
