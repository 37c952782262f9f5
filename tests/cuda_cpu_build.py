"""Build a torch-free CUDA source into a CPU shared library with the emulator in
tests/cuda_cpu_emulator/ (threads for CUDA threads, barriers for __syncthreads and shuffles),
so that its kernels and C launchers run here, without a GPU, on CPU pointers."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# kernel<T><<<grid, block, smem, stream>>>(args)  ->  emu::launch(kernel<T>, emu::Config(...), args)
_LAUNCH = re.compile(r"(\w+(?:<[\w:]+>)?)<<<(.*?)>>>\(", re.DOTALL)


def build_emulated(cu_file: Path, out_dir: Path) -> ctypes.CDLL:
    """Compile `cu_file` (launches rewritten) with g++ against the emulator headers."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ not found: cannot build the CUDA emulation")
    source = _LAUNCH.sub(r"emu::launch(\1, emu::Config(\2), ", cu_file.read_text())
    cpp = out_dir / (cu_file.stem + "_emulated.cpp")
    cpp.write_text(source)
    lib = out_dir / (cu_file.stem + "_emulated.so")
    cmd = [
        compiler, "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread",
        f"-I{TESTS / 'cuda_cpu_emulator'}", f"-I{cu_file.parent}", str(cpp), "-o", str(lib),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return ctypes.CDLL(str(lib))
