"""Triton kernels of pha.ops.hyper_adapter: act(x @ w_down[g] + b_down[g]) @ w_up[g] + b_up[g].

Every product of the op is one of two kernel shapes:
  _instance_matmul_kernel   C[b] = A[b] @ W[g(b)] (+ bias[g]) (* act'(h))   per instance b
      forward:  hidden = x @ w_down + b_down            (fp32, kept for backward)
                out    = act(hidden) @ w_up + b_up
      backward: grad_hidden = (grad_out @ w_up^T) * act'(hidden)    (fp32)
                grad_x      = grad_hidden @ w_down^T
  _set_grad_kernel          dW[g] = sum over the instances b of set g of A[b]^T @ B[b],
                            dbias[g] = the column sums of those B[b]
      grad_w_up   = act(hidden)^T @ grad_out,  grad_b_up   = sum grad_out
      grad_w_down = x^T @ grad_hidden,          grad_b_down = sum grad_hidden
The per-set reduction walks the instances sorted by set (a stable argsort + segment
offsets), one program per output tile: no atomics, so gradients are deterministic and
bitwise reproducible, and unused sets get exact zeros.

Precision: products accumulate in fp32. bf16/fp16 operands meet at their own precision
(fp32 hidden / grad_hidden are rounded to the input dtype first, as the torch reference
does); fp32 products use input_precision="ieee" (no tf32), so fp32 matches the reference
tightly. Under TRITON_INTERPRET=1 (no GPU) bf16/fp16 tl.dot is wrong, so the operands,
once rounded to the input dtype, are multiplied in fp32 instead; a single block config
is used there (the interpreter's autotuner fails with several).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MIN_BLOCK = 16  # the smallest tl.dot a GPU accepts
_INTERPRETER_MAX_BLOCK = 64  # large enough to keep the interpreter's program count low

# GPU block configs, autotuned per problem size (pruned to the ones that fit it).
# (BLOCK_T, BLOCK_K, BLOCK_N, num_warps, num_stages) for _instance_matmul_kernel:
INSTANCE_CONFIGS = [
    (16, 64, 64, 4, 3),  # a few tokens per instance (decoding)
    (32, 32, 32, 4, 3),
    (32, 64, 64, 4, 4),
    (64, 32, 64, 4, 3),
    (64, 64, 64, 4, 3),
    (64, 32, 128, 4, 3),
    (128, 32, 64, 4, 3),
    (128, 32, 128, 8, 3),
]
# (BLOCK_M, BLOCK_N, BLOCK_T, num_warps, num_stages) for _set_grad_kernel:
SET_GRAD_CONFIGS = [
    (16, 64, 64, 4, 3),  # r = 8..16
    (32, 32, 64, 4, 3),
    (32, 64, 64, 4, 4),
    (64, 32, 64, 4, 4),
    (64, 64, 32, 4, 3),
    (64, 128, 32, 8, 3),
    (128, 64, 32, 8, 3),
]
_INSTANCE_BLOCKS = {"BLOCK_T": "T", "BLOCK_K": "K", "BLOCK_N": "N"}  # block -> the size it tiles
_SET_GRAD_BLOCKS = {"BLOCK_M": "M", "BLOCK_N": "N", "BLOCK_T": "T"}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _padded(size: int) -> int:
    return max(_MIN_BLOCK, triton.next_power_of_2(size))


def _prune(blocks: dict[str, str]) -> Callable:
    """Autotune only the configs whose blocks do not overshoot the problem (padded to a
    power of two); when none fits, the ones that overshoot least."""

    def prune(configs, named_args, **kwargs):
        sizes = {**named_args, **kwargs}

        def waste(config):
            out = 1.0
            for block, dim in blocks.items():
                out *= max(1.0, config.kwargs[block] / _padded(sizes[dim]))
            return out

        least = min(waste(c) for c in configs)
        return [c for c in configs if waste(c) == least]

    return prune


def _configs(table: list[tuple[int, ...]], blocks: dict[str, str]) -> list[triton.Config]:
    return [
        triton.Config(dict(zip(blocks, row[:3])), num_warps=row[3], num_stages=row[4])
        for row in table
    ]


@triton.jit
def _activate(h, ACTIVATION: tl.constexpr):
    if ACTIVATION == "relu":
        h = tl.where(h < 0.0, 0.0, h)  # not tl.maximum: NaN must stay NaN (torch.relu)
    elif ACTIVATION == "gelu":  # tanh form, tanh(u) = 1 - 2 / (exp(2u) + 1) (no libdevice)
        u = 0.7978845608028654 * (h + 0.044715 * h * h * h)
        h = 0.5 * h * (2.0 - 2.0 / (tl.exp(2.0 * u) + 1.0))
    elif ACTIVATION == "silu":
        h = h / (1.0 + tl.exp(-h))
    return h


@triton.jit
def _backprop(h, g, ACTIVATION: tl.constexpr):
    """g * act'(h), elementwise (fp32). relu selects rather than multiplies, as torch's
    threshold_backward does: a NaN or Inf g where h <= 0 gives 0, a NaN h passes g."""
    if ACTIVATION == "relu":
        d = tl.where(h <= 0.0, 0.0, g)
    elif ACTIVATION == "gelu":
        u = 0.7978845608028654 * (h + 0.044715 * h * h * h)
        th = 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)
        du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * h * h)
        d = g * (0.5 * (1.0 + th) + 0.5 * h * (1.0 - th * th) * du)
    elif ACTIVATION == "silu":
        s = 1.0 / (1.0 + tl.exp(-h))
        d = g * (s * (1.0 + h * (1.0 - s)))
    else:
        d = g
    return d


@triton.jit
def _dot(a, b, acc, IN_DTYPE: tl.constexpr, DOT_FP32: tl.constexpr):
    """acc + a @ b with both operands at the op's input precision (fp32 accumulation)."""
    a = a.to(IN_DTYPE)
    b = b.to(IN_DTYPE)
    if DOT_FP32:  # the interpreter's bf16/fp16 dot is wrong: multiply the rounded values in fp32
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


@triton.jit
def _instance_matmul_kernel(
    a_ptr,  # [B, T, K] (x, hidden, grad_out or grad_hidden)
    w_ptr,  # [G, ...] weight sets, element (k, n) of set g at g*stride_wg + k*stride_wk + n*stride_wn
    bias_ptr,  # [G, N] (read when ADD_BIAS)
    h_ptr,  # [B, T, N] fp32 pre-activation (read when EPI_DACT != "identity")
    c_ptr,  # [B, T, N] output
    index_ptr,  # [B] int64 set of each instance (read when HAS_INDEX)
    T,
    K,
    N,
    G,
    stride_wg,
    stride_wk,
    stride_wn,
    HAS_INDEX: tl.constexpr,
    A_ACT: tl.constexpr,  # activation applied to A before the product
    ADD_BIAS: tl.constexpr,
    EPI_DACT: tl.constexpr,  # multiply the result by this activation's derivative at h
    DOT_FP32: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    n_tblocks = tl.cdiv(T, BLOCK_T)
    b = tl.program_id(0) // n_tblocks
    offs_t = (tl.program_id(0) % n_tblocks) * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if HAS_INDEX:
        g = tl.load(index_ptr + b)
    else:
        g = b.to(tl.int64)
    # The launcher's caller checked the range; a bad id must still never read out of bounds.
    g_ok = (g >= 0) & (g < G)
    tl.device_assert(g_ok, "hyper_adapter: index out of range")
    rows = b.to(tl.int64) * T + offs_t
    row_ok = offs_t < T
    n_ok = (offs_n < N) & g_ok
    w_set = w_ptr + g * stride_wg

    acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + offs_k
        a = tl.load(
            a_ptr + rows[:, None] * K + ks[None, :],
            mask=row_ok[:, None] & (ks[None, :] < K),
            other=0.0,
        )
        if A_ACT != "identity":  # act(0) == 0: the masked zeros stay zeros
            a = _activate(a.to(tl.float32), A_ACT)
        w = tl.load(
            w_set + ks[:, None] * stride_wk + offs_n[None, :] * stride_wn,
            mask=(ks[:, None] < K) & n_ok[None, :],
            other=0.0,
        )
        acc = _dot(a, w, acc, w_ptr.dtype.element_ty, DOT_FP32)

    if ADD_BIAS:
        bias = tl.load(bias_ptr + g * N + offs_n, mask=n_ok, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    c_offs = rows[:, None] * N + offs_n[None, :]
    c_mask = row_ok[:, None] & (offs_n[None, :] < N)
    if EPI_DACT != "identity":
        h = tl.load(h_ptr + c_offs, mask=c_mask, other=0.0)
        acc = _backprop(h, acc, EPI_DACT)
    tl.store(c_ptr + c_offs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def _set_grad_kernel(
    a_ptr,  # [B, T, M]
    b_ptr,  # [B, T, N]
    dw_ptr,  # [G, M, N] out: sum over the set's instances of act(A)^T @ B
    dbias_ptr,  # [G, N] out: sum over the set's instances and tokens of B
    order_ptr,  # [B] int64 instances sorted by set
    seg_ptr,  # [G + 1] int64: set g owns order[seg[g]:seg[g+1]]
    T,
    M,
    N,
    A_ACT: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_T)
    m_ok = offs_m < M
    n_ok = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for i in range(tl.load(seg_ptr + g), tl.load(seg_ptr + g + 1)):
        b = tl.load(order_ptr + i)
        for t0 in range(0, T, BLOCK_T):
            ts = t0 + offs_t
            rows = b * T + ts
            t_ok = ts < T
            a_t = tl.load(  # A^T tile [BLOCK_M, BLOCK_T]
                a_ptr + rows[None, :] * M + offs_m[:, None],
                mask=m_ok[:, None] & t_ok[None, :],
                other=0.0,
            )
            if A_ACT != "identity":
                a_t = _activate(a_t.to(tl.float32), A_ACT)
            b_tile = tl.load(
                b_ptr + rows[:, None] * N + offs_n[None, :],
                mask=t_ok[:, None] & n_ok[None, :],
                other=0.0,
            )
            acc = _dot(a_t, b_tile, acc, dw_ptr.dtype.element_ty, DOT_FP32)
            bias_acc += tl.sum(b_tile.to(tl.float32), axis=0)
    dw_offs = g * M * N + offs_m[:, None] * N + offs_n[None, :]
    tl.store(dw_ptr + dw_offs, acc.to(dw_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])
    # Every row of M-blocks computes the same column sums; the first one writes them.
    tl.store(
        dbias_ptr + g * N + offs_n,
        bias_acc.to(dbias_ptr.dtype.element_ty),
        mask=n_ok & (tl.program_id(1) == 0),
    )


_instance_matmul_tuned = triton.autotune(
    configs=_configs(INSTANCE_CONFIGS, _INSTANCE_BLOCKS),
    key=["T", "K", "N", "A_ACT", "ADD_BIAS", "EPI_DACT"],
    prune_configs_by={"early_config_prune": _prune(_INSTANCE_BLOCKS)},
)(_instance_matmul_kernel)
_set_grad_tuned = triton.autotune(
    configs=_configs(SET_GRAD_CONFIGS, _SET_GRAD_BLOCKS),
    key=["T", "M", "N", "A_ACT"],
    prune_configs_by={"early_config_prune": _prune(_SET_GRAD_BLOCKS)},
)(_set_grad_kernel)


def _launch(kernel, tuned, grid: Callable, args: tuple, sizes: dict[str, int], **constexprs):
    """Autotuned launch on a GPU; in the interpreter one config sized to the problem."""
    dot_fp32 = _interpreting()
    if dot_fp32:
        blocks = {b: min(_padded(n), _INTERPRETER_MAX_BLOCK) for b, n in sizes.items()}
        kernel[grid(blocks)](*args, DOT_FP32=True, **constexprs, **blocks)
    else:
        tuned[grid](*args, DOT_FP32=False, **constexprs)


def _instance_matmul(
    a, w, w_strides, bias, h, out, index, a_act="identity", epi_dact="identity"
) -> torch.Tensor:
    """out[b] = a_act(a[b]) @ W[g] (+ bias[g]) (* epi_dact'(h[b])), W[g] read via w_strides
    (set, k, n); bias / h may be None."""
    n, t, k = a.shape
    cols = out.shape[2]
    if out.numel() == 0:
        return out
    grid = lambda meta: (  # noqa: E731
        n * triton.cdiv(t, meta["BLOCK_T"]),
        triton.cdiv(cols, meta["BLOCK_N"]),
    )
    args = (
        a,
        w,
        bias if bias is not None else w,
        h if h is not None else a,
        out,
        index if index is not None else a,
        t,
        k,
        cols,
        w.shape[0],
        *w_strides,
    )
    _launch(
        _instance_matmul_kernel,
        _instance_matmul_tuned,
        grid,
        args,
        {"BLOCK_T": t, "BLOCK_K": k, "BLOCK_N": cols},
        HAS_INDEX=index is not None,
        A_ACT=a_act,
        ADD_BIAS=bias is not None,
        EPI_DACT=epi_dact,
    )
    return out


def _set_grad(a, b, dw, dbias, order, segments, a_act="identity") -> None:
    """dw[g] = sum_{instances of g} a_act(a)^T @ b, dbias[g] = their column sums of b."""
    t, m, cols = a.shape[1], a.shape[2], b.shape[2]
    if dw.shape[0] == 0 or cols == 0:
        return
    grid = lambda meta: (  # noqa: E731
        dw.shape[0],
        max(1, triton.cdiv(m, meta["BLOCK_M"])),  # one M-block even if M == 0: it writes dbias
        triton.cdiv(cols, meta["BLOCK_N"]),
    )
    _launch(
        _set_grad_kernel,
        _set_grad_tuned,
        grid,
        (a, b, dw, dbias, order, segments, t, m, cols),
        {"BLOCK_M": m, "BLOCK_N": cols, "BLOCK_T": t},
        A_ACT=a_act,
    )


def _check_inputs(x: torch.Tensor, index: torch.Tensor | None) -> None:
    if x.dtype not in _DTYPES:
        raise TypeError(
            f"the Triton backend computes in {[str(d) for d in _DTYPES]}, got x of dtype "
            f"{x.dtype}; use backend='cpp' or 'reference' for other dtypes"
        )
    if index is not None and (index.dtype != torch.int64 or index.dim() != 1):
        raise TypeError(f"index must be an int64 tensor [B], got {index.dtype} {list(index.shape)}")


def _on_device(x: torch.Tensor):
    """Launch on x's GPU (Triton launches on the current device), or anywhere on CPU."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _segments(index: torch.Tensor | None, n: int, g: int, device) -> tuple[torch.Tensor, ...]:
    """Instances sorted by weight set and each set's [start, end) in that order (on device,
    no host sync; out-of-range ids fall outside every segment)."""
    if index is None:
        order = torch.arange(n, device=device)
        return order, torch.arange(n + 1, device=device)
    sorted_sets, order = torch.sort(index, stable=True)
    bounds = torch.searchsorted(sorted_sets, torch.arange(g + 1, device=device))
    return order, bounds


def _hidden(x, w_down, b_down, index) -> torch.Tensor:
    n, t, _ = x.shape
    d, r = w_down.shape[1:]
    hidden = torch.empty(n, t, r, dtype=torch.float32, device=x.device)
    return _instance_matmul(x, w_down, (d * r, r, 1), b_down, None, hidden, index)


def hyper_adapter_forward(
    x: torch.Tensor,
    w_down: torch.Tensor,
    b_down: torch.Tensor,
    w_up: torch.Tensor,
    b_up: torch.Tensor,
    index: torch.Tensor | None,
    activation: str,
    save_hidden: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, T, d] x.dtype, hidden [B, T, r] fp32 or an empty fp32 [0] tensor)."""
    _check_inputs(x, index)
    with _on_device(x):
        hidden = _hidden(x, w_down, b_down, index)
        r, d = w_up.shape[1:]
        out = torch.empty_like(x)
        _instance_matmul(hidden, w_up, (r * d, d, 1), b_up, None, out, index, a_act=activation)
    if not save_hidden:
        hidden = hidden.new_empty(0)
    return out, hidden


def hyper_adapter_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w_down: torch.Tensor,
    w_up: torch.Tensor,
    hidden: torch.Tensor,
    index: torch.Tensor | None,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_w_down, grad_b_down, grad_w_up, grad_b_up); a set's gradient sums over
    the instances using it (deterministically), unused sets get zeros."""
    _check_inputs(x, index)
    n, t, d = x.shape
    g, _, r = w_down.shape
    if hidden.shape != (n, t, r) or hidden.dtype != torch.float32:
        raise ValueError(
            f"hidden must be the fp32 [B={n}, T={t}, r={r}] pre-activation saved by the forward "
            f"(save_hidden=True), got {hidden.dtype} {list(hidden.shape)}"
        )
    with _on_device(x):
        grad_hidden = torch.empty(n, t, r, dtype=torch.float32, device=x.device)
        _instance_matmul(
            grad_out, w_up, (r * d, 1, d), None, hidden, grad_hidden, index, epi_dact=activation
        )
        grad_x = torch.empty_like(x)
        _instance_matmul(grad_hidden, w_down, (d * r, 1, r), None, None, grad_x, index)
        order, segments = _segments(index, n, g, x.device)
        grad_w_up, grad_b_up = torch.empty_like(w_up), w_up.new_empty(g, d)
        _set_grad(hidden, grad_out, grad_w_up, grad_b_up, order, segments, a_act=activation)
        grad_w_down, grad_b_down = torch.empty_like(w_down), w_down.new_empty(g, r)
        _set_grad(x, grad_hidden, grad_w_down, grad_b_down, order, segments)
    return grad_x, grad_w_down, grad_b_down, grad_w_up, grad_b_up
