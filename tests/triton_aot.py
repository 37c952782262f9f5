"""Compile pha's Triton kernels ahead of time for a real GPU target (sm_80) without a GPU:
Triton's front end, LLVM and ptxas catch what the interpreter lets through (dot shapes and
dtypes, layouts, shared-memory use).

Run as a script, in a process *without* TRITON_INTERPRET (under the interpreter,
@triton.jit builds interpreter functions); the session fixture `triton_sm80` in
tests/conftest.py runs it once for all the GPU tests. It prints one JSON line per compiled
kernel variant: {"family", "kernel", "variant", "shared"} (the shared memory it needs, in
bytes), or "error" instead of "shared" when the compiler rejects it, so that a broken
kernel fails only its own family's test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

TARGET = ("cuda", 80, 32)  # A100 (sm_80), as the nvcc compile check

# A variant: (kernel fn, label, signature {arg: triton type}, constexprs, num_warps, num_stages)


def hyper_adapter_variants() -> Iterator[tuple]:
    """Each launcher call, with the dtypes and flag values rotated so that every dtype, every
    activation and both index modes appear, each on a different GPU config row."""
    from pha.kernels import hyper_adapter as k

    instance_ints = ("T", "K", "N", "G", "stride_wg", "stride_wk", "stride_wn")
    set_grad_ints = ("T", "M", "N")

    def instance(label, w, a, c, h, has_index, a_act, add_bias, epi_dact, row):
        ptrs = dict(a_ptr=a, w_ptr=w, bias_ptr=w, h_ptr=h, c_ptr=c, index_ptr="i64")
        flags = dict(HAS_INDEX=has_index, A_ACT=a_act, ADD_BIAS=add_bias, EPI_DACT=epi_dact)
        return label, k._instance_matmul_kernel, ptrs, instance_ints, flags, row

    def set_grad(label, a, b, dw, a_act, row):
        ptrs = dict(a_ptr=a, b_ptr=b, dw_ptr=dw, dbias_ptr=dw, order_ptr="i64", seg_ptr="i64")
        return label, k._set_grad_kernel, ptrs, set_grad_ints, dict(A_ACT=a_act), row

    calls = [
        instance("hidden = x @ w_down + b_down", "bf16", "bf16", "fp32", "bf16", True,
                 "identity", True, "identity", k.INSTANCE_CONFIGS[-1]),
        instance("out = act(hidden) @ w_up + b_up", "fp16", "fp32", "fp16", "fp32", False,
                 "gelu", True, "identity", k.INSTANCE_CONFIGS[4]),
        instance("grad_hidden = grad_out @ w_up^T * act'", "fp32", "fp32", "fp32", "fp32", True,
                 "identity", False, "silu", k.INSTANCE_CONFIGS[0]),
        instance("grad_x = grad_hidden @ w_down^T", "bf16", "fp32", "bf16", "fp32", False,
                 "identity", False, "identity", k.INSTANCE_CONFIGS[5]),
        set_grad("grad_w_up = act(hidden)^T @ grad_out", "fp32", "fp16", "fp16", "relu",
                 k.SET_GRAD_CONFIGS[3]),
        set_grad("grad_w_down = x^T @ grad_hidden", "fp32", "fp32", "fp32", "identity",
                 k.SET_GRAD_CONFIGS[-1]),
    ]  # fmt: skip
    for label, fn, ptrs, ints, flags, row in calls:
        blocks = k._INSTANCE_BLOCKS if fn is k._instance_matmul_kernel else k._SET_GRAD_BLOCKS
        constexprs = {**flags, "DOT_FP32": False, **dict(zip(blocks, row[:3]))}
        signature = {n: f"*{d}" for n, d in ptrs.items()} | {n: "i32" for n in ints}
        yield fn, label, signature, constexprs, row[3], row[4]


def contrastive_variants() -> Iterator[tuple]:
    """Every autotune config of the three kernels, on bf16 embeddings (prototype loss with
    exclude_positive). Pointers a_ptr / b_ptr are bf16, labels_ptr int64, the others fp32;
    `scale` is fp32, other scalars int32."""
    from pha.kernels import contrastive as k

    flags = dict(SELF=False, EXCLUDE_POS=True, BLOCK_D=64, DOT_F32=False)

    def kind(name, constexprs):
        if name in constexprs:
            return "constexpr"
        if name.endswith("_ptr"):
            return {"a_ptr": "*bf16", "b_ptr": "*bf16", "labels_ptr": "*i64"}.get(name, "*fp32")
        return "fp32" if name == "scale" else "i32"

    for kernel in (k._forward_kernel, k._row_grad_kernel, k._col_grad_kernel):
        for config in kernel.configs:
            constexprs = {**flags, **config.kwargs}
            signature = {n: kind(n, constexprs) for n in kernel.fn.arg_names}
            label = f"bf16 {config.kwargs}"
            yield kernel.fn, label, signature, constexprs, config.num_warps, config.num_stages


FAMILIES = {"hyper_adapter": hyper_adapter_variants, "contrastive": contrastive_variants}


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1: the interpreter never compiles")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    for family, variants in FAMILIES.items():
        for fn, label, signature, constexprs, num_warps, num_stages in variants():
            row = {"family": family, "kernel": fn.__name__, "variant": label}
            try:
                compiled = triton.compile(
                    ASTSource(fn, signature, constexprs=constexprs),
                    target=GPUTarget(*TARGET),
                    options=dict(num_warps=num_warps, num_stages=num_stages),
                )
                row["shared"] = compiled.metadata.shared
            except Exception as err:  # reported per variant; the family's test fails on it
                row["error"] = f"{type(err).__name__}: {err}"[-3000:]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
