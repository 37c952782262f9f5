"""Build helpers for checking pha's CUDA sources without a GPU, shared by the GPU tests:
- `build_emulated`: a torch-free .cu compiled by g++ into a CPU shared library against the
  emulator in tests/cuda_cpu_emulator/ (each CUDA thread a fiber, __syncthreads and warp
  shuffles barriers), so that its kernels and C launchers run here on CPU pointers;
- `nvcc_compile` / `binding_syntax_check`: the CI compile check of a .cu for sm_80 and a
  g++ -fsyntax-only check of a torch binding .cpp against torch's and CUDA's headers
  (they return the compiler's CompletedProcess).
Each skips the calling test when its compiler or headers are missing."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
CUDA_DIR = TESTS.parent / "csrc" / "cuda"
CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
# kernel<T, U><<<grid, block, smem, stream>>>(args) -> emu::launch(kernel<T, U>, emu::Config(...), args)
_LAUNCH = re.compile(r"([\w:]+(?:<[^<>;]*>)?)<<<(.*?)>>>\(", re.DOTALL)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: check skipped")
    return path


def build_emulated(cu_file: Path, out_dir: Path) -> ctypes.CDLL:
    """Compile `cu_file` (launches rewritten) with g++ against the emulator headers."""
    gxx = _tool("g++")
    source, launches = _LAUNCH.subn(r"emu::launch(\1, emu::Config(\2), ", cu_file.read_text())
    assert launches > 0, f"no kernel launch found in {cu_file.name}"
    cpp = out_dir / (cu_file.stem + "_emulated.cpp")
    cpp.write_text(source)
    lib = out_dir / (cu_file.stem + "_emulated.so")
    cmd = [
        gxx, "-std=c++20", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas",
        f"-I{TESTS / 'cuda_cpu_emulator'}", f"-I{cu_file.parent}", str(cpp), "-o", str(lib),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(lib))


def nvcc_compile(cu_file: Path, out_dir: Path) -> subprocess.CompletedProcess:
    """The CI compile check (.ci/run): plain nvcc of a torch-free .cu for sm_80."""
    cmd = [_tool("nvcc"), "-c", "-std=c++17", "-O3", "-gencode", "arch=compute_80,code=sm_80"]
    cmd += [str(cu_file), "-o", str(out_dir / (cu_file.stem + ".o"))]
    return subprocess.run(cmd, capture_output=True, text=True)


def binding_syntax_check(cpp_file: Path) -> subprocess.CompletedProcess:
    """The torch binding cannot be built against the CPU torch wheel, but it must compile
    (-fsyntax-only, warnings as errors) against torch's headers plus the CUDA runtime's."""
    gxx = _tool("g++")
    if not (CUDA_INCLUDE / "cuda_runtime_api.h").exists():
        pytest.skip(f"the CUDA runtime headers ({CUDA_INCLUDE}) not found")
    from torch.utils.cpp_extension import include_paths

    includes = [*include_paths(), str(CUDA_INCLUDE), sysconfig.get_paths()["include"]]
    cmd = [gxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Werror", "-Wno-unused-parameter"]
    cmd += ["-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", "-DTORCH_EXTENSION_NAME=_C_cuda"]
    cmd += [f"-isystem{p}" for p in includes] + [str(cpp_file)]
    return subprocess.run(cmd, capture_output=True, text=True)
