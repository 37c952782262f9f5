"""Compile checks of every CUDA source, as far as this GPU-less machine allows: each
torch-free .cu with nvcc for sm_80 (as CI does), each torch binding .cpp with a g++ syntax
check against torch's and the CUDA runtime's headers (CPU torch cannot build it). The
kernels themselves run through the CUDA emulator in tests/test_*_gpu.py."""

from __future__ import annotations

import pytest
from cuda_cpu_build import CUDA_DIR, binding_syntax_check, nvcc_compile

CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
BINDING_FILES = sorted(CUDA_DIR.glob("*.cpp"))


def test_every_kernel_family_has_sources():
    names = {p.name for p in CU_FILES + BINDING_FILES}
    for family in ("hyper_adapter", "contrastive"):
        assert {f"{family}_kernels.cu", f"{family}_binding.cpp"} <= names, names
    assert "module.cpp" in names


@pytest.mark.parametrize("source", CU_FILES, ids=[p.name for p in CU_FILES])
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    result = nvcc_compile(source, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("source", BINDING_FILES, ids=[p.name for p in BINDING_FILES])
def test_cuda_binding_passes_syntax_check(source):
    result = binding_syntax_check(source)
    assert result.returncode == 0, result.stderr
