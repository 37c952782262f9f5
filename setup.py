"""Builds pha._C (C++ CPU kernels, always) and pha._C_cuda (CUDA kernels, when usable).

Environment flags:
  PHA_FORCE_CUDA=1  build the CUDA extension even if torch reports no CUDA toolkit
  PHA_SKIP_CUDA=1   never build the CUDA extension
  PHA_NATIVE=1      compile the portable code with -march=native (the AVX-512 kernels
                    are compiled per function with target attributes either way)
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _cuda_wanted() -> bool:
    if os.environ.get("PHA_SKIP_CUDA") == "1":
        return False
    if os.environ.get("PHA_FORCE_CUDA") == "1":
        return True
    import torch

    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


cxx_flags = ["-O3", "-std=c++17", "-fopenmp", "-DAT_PARALLEL_OPENMP=1"]
if os.environ.get("PHA_NATIVE") == "1":
    cxx_flags.append("-march=native")

ext_modules = [
    cpp_extension.CppExtension(
        "pha._C",
        _sources("csrc/cpu/*.cpp"),
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )
]
if _cuda_wanted():
    ext_modules.append(
        cpp_extension.CUDAExtension(
            "pha._C_cuda",
            _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp"),
            extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-O3", "-std=c++17"]},
        )
    )

setup(
    # The Triton kernels live in the top-level kernels/ folder but install as pha.kernels:
    # a top-level module named "kernels" would clash with the PyPI package of that name.
    packages=find_packages(include=["pha", "pha.*"]) + ["pha.kernels"],
    package_dir={"pha.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
