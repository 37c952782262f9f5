"""Which backends exist on this machine, and which one a call runs on.

Order of choice: the `backend=` argument, then the PHA_BACKEND environment variable,
then the fastest available backend for the tensors' device. A backend named explicitly
but unavailable raises (never a silent fallback)."""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from types import ModuleType
from typing import Any

import torch

BACKENDS = ("reference", "cpp", "triton", "cuda")
# Fastest first, per device type.
_PREFERENCE = {"cpu": ("cpp", "reference"), "cuda": ("triton", "cuda", "reference")}
# What each kernel backend computes in; an automatic choice skips a backend that does not
# take the inputs' dtype (e.g. float64 on a GPU goes to the reference).
_DTYPES = {
    "cpp": (torch.float32, torch.bfloat16, torch.float64),
    "triton": (torch.float32, torch.bfloat16, torch.float16),
    "cuda": (torch.float32, torch.bfloat16, torch.float16),
}

_unavailable_reason: dict[str, str] = {}


@functools.cache
def _load_cpp() -> ModuleType | None:
    try:
        return importlib.import_module("pha._C")
    except ImportError as err:  # the package still works on the reference backend
        _unavailable_reason["cpp"] = (
            f"the C++ extension pha._C is not built ({err}); "
            "run `pip install --no-build-isolation -e .` after installing torch"
        )
        warnings.warn(
            f"pha: {_unavailable_reason['cpp']}; using the reference backend", stacklevel=3
        )
        return None


@functools.cache
def _triton_usable() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        _unavailable_reason["triton"] = "triton is not installed (pip install 'pha[triton]')"
        return False
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        _unavailable_reason["triton"] = (
            "no GPU (set TRITON_INTERPRET=1 to run it in the interpreter)"
        )
        return False
    return True


@functools.cache
def _load_cuda() -> ModuleType | None:
    if not torch.cuda.is_available():
        _unavailable_reason["cuda"] = "no CUDA device"
        return None
    if _load_cpp() is None:  # pha._C defines the schemas that pha._C_cuda implements
        _unavailable_reason["cuda"] = "the C++ extension pha._C (the op schemas) is not built"
        return None
    try:
        return importlib.import_module("pha._C_cuda")
    except ImportError as err:
        _unavailable_reason["cuda"] = f"the CUDA extension pha._C_cuda is not built ({err})"
        return None


def backends() -> dict[str, bool]:
    """{"reference": True, "cpp": ..., "triton": ..., "cuda": ...} for this machine."""
    return {
        "reference": True,
        "cpp": _load_cpp() is not None,
        "triton": _triton_usable(),
        "cuda": _load_cuda() is not None,
    }


def unavailable_reason(name: str) -> str:
    backends()
    return _unavailable_reason.get(name, "")


def _runs_on(name: str, device: torch.device) -> bool:
    if name == "reference":
        return True
    if name == "cpp":
        return device.type == "cpu"
    if name == "cuda":
        return device.type == "cuda"
    if name == "triton":  # the interpreter runs on CPU tensors
        return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    return False


# The dispatch key under which each compiled backend registers its kernels in torch.ops.pha_C.
_DISPATCH_KEY = {"cpp": "CPU", "cuda": "CUDA"}


def implements(name: str, op: str) -> bool:
    """Whether backend `name` has launchers for `op` (`<op>_forward` / `<op>_backward`)."""
    if name == "reference":
        return True
    launchers = module(name)
    if not hasattr(launchers, f"{op}_forward"):
        return False
    if name in _DISPATCH_KEY:  # one schema, one kernel per device: is this device's there?
        qualname = f"pha_C::{op}_forward"
        return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, _DISPATCH_KEY[name])
    return True


# Traced as a constant under torch.compile: its imports and environment look-ups are not
# traceable, and its answer depends only on its arguments and this process.
@torch.compiler.assume_constant_result
def resolve(
    backend: str | None, device: torch.device, op: str, dtype: torch.dtype | None = None
) -> str:
    """The backend a call of `op` on `device` (with inputs of `dtype`) runs on."""
    asked = backend if backend is not None else os.environ.get("PHA_BACKEND") or None
    available = backends()
    if asked is not None:
        if asked not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or None, got {asked!r}")
        if not available[asked]:
            raise RuntimeError(f"backend {asked!r} is not available: {unavailable_reason(asked)}")
        if not _runs_on(asked, device):
            raise ValueError(f"backend {asked!r} cannot run on {device.type} tensors")
        if not implements(asked, op):
            raise NotImplementedError(f"backend {asked!r} does not implement {op}")
        return asked
    for name in _PREFERENCE.get(device.type, ("reference",)):
        takes_dtype = dtype is None or dtype in _DTYPES.get(name, (dtype,))
        if available[name] and takes_dtype and implements(name, op):
            return name
    return "reference"


def module(name: str) -> Any:
    """What holds a backend's launchers: torch.ops.pha_C (the C++ and CUDA kernels, one
    schema per op, dispatched on the tensors' device) or the Triton module."""
    if name == "triton":
        return importlib.import_module("pha.kernels")
    if name in _DISPATCH_KEY:
        loaded = _load_cpp() if name == "cpp" else _load_cuda()
        if loaded is None:
            raise RuntimeError(f"backend {name!r} is not available: {unavailable_reason(name)}")
        return torch.ops.pha_C
    raise ValueError(f"backend {name!r} has no launcher module")


def cpu_isa() -> str:
    """The C++ CPU kernels' instruction-set path for a call made now: "generic",
    "avx512", "avx512_bf16" or "amx_bf16" (the best this CPU runs, or the one PHA_CPU_ISA
    names; naming one this CPU cannot run raises, saying why)."""
    return str(module("cpp").cpu_isa())


def cpu_isa_paths() -> tuple[str, ...]:
    """Every path PHA_CPU_ISA can force on this CPU, "generic" first."""
    return tuple(module("cpp").cpu_isa_paths())


def cpu_features() -> tuple[str, ...]:
    """The CPU features the C++ extension detected (avx512, avx512_bf16, avx512_fp16,
    amx_bf16; "amx_bf16 unusable: <why>" when the CPU has AMX but the OS withholds the
    tiles): recorded by the benchmarks."""
    return tuple(module("cpp").cpu_features())
