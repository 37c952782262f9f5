"""Compile pha's hyper_adapter Triton kernels for a real GPU target (sm_80) without a GPU.

Run as a script in a process *without* TRITON_INTERPRET (the interpreter never runs the
GPU compiler, so it cannot catch what only a GPU build rejects: dot shapes and dtypes,
layouts, shared memory). Prints one JSON line per kernel variant: its name and the
shared memory the compiled kernel needs. Used by tests/test_hyper_adapter_gpu.py.
"""

from __future__ import annotations

import json
import os

import triton
from pha.kernels import hyper_adapter as k
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 80, 32)
_INSTANCE_INTS = ("T", "K", "N", "G", "stride_wg", "stride_wk", "stride_wn")
_SET_GRAD_INTS = ("T", "M", "N")


def _instance(dt, a, c, h, has_index, a_act, add_bias, epi_dact):
    """The pointer dtypes and flags of one _instance_matmul call of the launchers."""
    ptrs = dict(a_ptr=a, w_ptr=dt, bias_ptr=dt, h_ptr=h, c_ptr=c, index_ptr="i64")
    flags = dict(HAS_INDEX=has_index, A_ACT=a_act, ADD_BIAS=add_bias, EPI_DACT=epi_dact)
    return ptrs, flags


# Each launcher call, with the dtypes and flag values rotated so that every dtype, every
# activation and both index modes appear, each on a different GPU config row.
VARIANTS = [
    ("hidden = x @ w_down + b_down", k._instance_matmul_kernel, _INSTANCE_INTS,
     *_instance("bf16", "bf16", "fp32", "bf16", True, "identity", True, "identity"),
     k.INSTANCE_CONFIGS[-1]),
    ("out = act(hidden) @ w_up + b_up", k._instance_matmul_kernel, _INSTANCE_INTS,
     *_instance("fp16", "fp32", "fp16", "fp32", False, "gelu", True, "identity"),
     k.INSTANCE_CONFIGS[4]),
    ("grad_hidden = grad_out @ w_up^T * act'", k._instance_matmul_kernel, _INSTANCE_INTS,
     *_instance("fp32", "fp32", "fp32", "fp32", True, "identity", False, "silu"),
     k.INSTANCE_CONFIGS[0]),
    ("grad_x = grad_hidden @ w_down^T", k._instance_matmul_kernel, _INSTANCE_INTS,
     *_instance("bf16", "fp32", "bf16", "fp32", False, "identity", False, "identity"),
     k.INSTANCE_CONFIGS[5]),
    ("grad_w_up = act(hidden)^T @ grad_out", k._set_grad_kernel, _SET_GRAD_INTS,
     dict(a_ptr="fp32", b_ptr="fp16", dw_ptr="fp16", dbias_ptr="fp16", order_ptr="i64",
          seg_ptr="i64"),
     dict(A_ACT="relu"), k.SET_GRAD_CONFIGS[3]),
    ("grad_w_down = x^T @ grad_hidden", k._set_grad_kernel, _SET_GRAD_INTS,
     dict(a_ptr="fp32", b_ptr="fp32", dw_ptr="fp32", dbias_ptr="fp32", order_ptr="i64",
          seg_ptr="i64"),
     dict(A_ACT="identity"), k.SET_GRAD_CONFIGS[-1]),
]  # fmt: skip


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1: the interpreter never compiles")
    for name, fn, ints, ptrs, flags, config in VARIANTS:
        blocks = dict(zip(k._INSTANCE_BLOCKS if fn is k._instance_matmul_kernel else
                          k._SET_GRAD_BLOCKS, config[:3]))  # fmt: skip
        constexprs = {**flags, "DOT_FP32": False, **blocks}
        signature = {n: f"*{d}" for n, d in ptrs.items()} | {n: "i32" for n in ints}
        signature |= {n: "constexpr" for n in constexprs}
        compiled = triton.compile(
            ASTSource(fn, signature, constexprs=constexprs),
            target=TARGET,
            options=dict(num_warps=config[3], num_stages=config[4]),
        )
        print(json.dumps({"variant": name, "config": config, "shared": compiled.metadata.shared}))


if __name__ == "__main__":
    main()
