"""Compile Triton kernels ahead of time for a GPU target without a GPU (Triton's own
front end, LLVM and ptxas), catching what the interpreter lets through (dot shapes and
dtypes, layouts, shared-memory use). Run as a script, in a process *without*
TRITON_INTERPRET (under the interpreter, @triton.jit builds interpreter functions):
    python tests/triton_aot.py MODULE KERNEL[,KERNEL...] DTYPE CONSTEXPR=VALUE...
Pointer arguments named a_ptr / b_ptr get DTYPE, labels_ptr int64, other pointers fp32;
`scale` is fp32, other scalars int32. Every config of an autotuned kernel is compiled."""

from __future__ import annotations

import importlib
import os
import sys

assert os.environ.get("TRITON_INTERPRET") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGET = GPUTarget("cuda", 80, 32)  # A100 (sm_80), as the CUDA compile check
_POINTERS = {"fp32": "*fp32", "bf16": "*bf16", "fp16": "*fp16"}


def _signature(arg_names, constexprs, dtype):
    def kind(name):
        if name in constexprs:
            return "constexpr"
        if name in ("a_ptr", "b_ptr"):
            return _POINTERS[dtype]
        if name == "labels_ptr":
            return "*i64"
        if name.endswith("_ptr"):
            return "*fp32"
        return "fp32" if name == "scale" else "i32"

    return {name: kind(name) for name in arg_names}


def compile_all(kernel, dtype: str, constexprs: dict) -> int:
    configs = getattr(kernel, "configs", [triton.Config({})])
    fn = getattr(kernel, "fn", kernel)
    for config in configs:
        values = {**constexprs, **config.kwargs}
        source = ASTSource(fn, _signature(fn.arg_names, values, dtype), values)
        options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
        compiled = triton.compile(source, target=TARGET, options=options)
        print(f"{fn.__name__} {dtype} {values}: ok, {compiled.metadata.shared} B shared")
    return len(configs)


def main(argv: list[str]) -> None:
    module, names, dtype, *pairs = argv
    constexprs = {}
    for pair in pairs:
        key, value = pair.split("=")
        constexprs[key] = {"True": True, "False": False}.get(value, value)
        if isinstance(constexprs[key], str):
            constexprs[key] = int(value)
    mod = importlib.import_module(module)
    for name in names.split(","):
        compile_all(getattr(mod, name), dtype, constexprs)


if __name__ == "__main__":
    main(sys.argv[1:])
