"""hyper_adapter's GPU backends, checked on a machine without a GPU.

- Triton (under TRITON_INTERPRET=1): fp16 and multi-block shapes beyond the shared tests,
  the per-set gradient reduction over repeated / unused sets (and its determinism), the
  launcher's edge cases, and the well-formedness of the GPU autotune tables; and (without
  the interpreter) every kernel variant compiled for a real GPU target, sm_80.
- CUDA: the kernels run on the CPU through an emulation of the CUDA execution model
  (tests/cuda_cpu_emulator/) and are compared with the reference, forward and every
  gradient (their nvcc and binding compile checks: tests/test_cuda_sources.py).
"""

from __future__ import annotations

import ctypes

import pytest
import torch
from backend_utils import assert_close_fa, require
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hyper_adapter import ACTIVATIONS, ARGS, SHAPES, make_inputs, run

from pha.ops import reference


def check_against_reference(fn, b, t, d, r, g, dtype, activation, index=None, indexed=False):
    """fn(x, w_down, b_down, w_up, b_up, index=, activation=) vs the reference, forward and
    every gradient, with FlashAttention's tolerance rule."""
    tensors, index = make_inputs(b, t, d, r, g, dtype, indexed=indexed, index=index)
    grad_out = torch.randn(b, t, d, dtype=torch.float64)
    ref_hi = run(
        reference.hyper_adapter, [x.double() for x in tensors], index, activation, grad_out
    )
    ref_same = run(reference.hyper_adapter, tensors, index, activation, grad_out)
    got = run(fn, tensors, index, activation, grad_out)
    atol = 1e-5 if dtype == torch.float32 else 1e-2
    names = ("out",) + tuple(f"grad {n}" for n in ARGS)
    for name, o, s, h in zip(
        names, [got[0], *got[1]], [ref_same[0], *ref_same[1]], [ref_hi[0], *ref_hi[1]]
    ):
        assert_close_fa(name, o, s, h, atol)


# ---------------------------------------------------------------------------------------
# Triton, in the interpreter


def triton_adapter(*args, **kwargs):
    import pha

    return pha.ops.hyper_adapter(*args, **kwargs, backend="triton")


@pytest.mark.parametrize("shape", ["basic", "r=17,d=33", "repeated+unused", "T=1"])
@pytest.mark.parametrize("activation", ["silu", "identity"])
def test_triton_fp16(shape, activation):
    require("triton", "hyper_adapter")
    b, t, d, r, g, indexed, index = SHAPES[shape]
    check_against_reference(
        triton_adapter, b, t, d, r, g, torch.float16, activation, index, indexed
    )


# Every dtype and both index modes, rotated (each case costs seconds in the interpreter).
@pytest.mark.parametrize(
    "dtype,activation,indexed",
    [(torch.float32, "gelu", True), (torch.bfloat16, "relu", False), (torch.float16, "silu", True)],
)
def test_triton_several_blocks(dtype, activation, indexed):
    """T, d and r past the interpreter's 64-blocks: the k-loops, the token loop of the set
    reduction and the tile offsets all run more than once."""
    require("triton", "hyper_adapter")
    check_against_reference(
        triton_adapter, 2, 70, 150, 80, 3 if indexed else 2, dtype, activation, indexed=indexed
    )


FUZZ = dict(
    b=st.integers(1, 4),
    t=st.integers(1, 20),
    d=st.integers(1, 70),
    r=st.integers(1, 40),
    g=st.integers(1, 4),
    indexed=st.booleans(),
    activation=st.sampled_from(ACTIVATIONS),
    seed=st.integers(0, 2**16),
)


@settings(max_examples=6, deadline=None)  # the edge shapes are parametrised above
@given(**FUZZ)
def test_triton_fuzz(b, t, d, r, g, indexed, activation, seed):
    require("triton", "hyper_adapter")
    torch.manual_seed(seed)
    g = g if indexed else b
    check_against_reference(
        triton_adapter, b, t, d, r, g, torch.float32, activation, indexed=indexed
    )


# Distributions of instances over sets (Punica-style): every set's gradient must be the sum
# over exactly its instances; unused sets get exact zeros.
SET_LAYOUTS = {
    "all-identical": (6, torch.tensor([2, 2, 2, 2, 2, 2])),
    "skewed": (4, torch.tensor([0, 3, 3, 3, 3, 1, 3])),
    "distinct-shuffled": (5, torch.tensor([4, 0, 3, 1, 2])),
    "mostly-unused": (9, torch.tensor([7, 1, 7])),
    "descending": (3, torch.tensor([2, 2, 1, 1, 0, 0])),
}


@pytest.mark.parametrize("layout", list(SET_LAYOUTS))
def test_triton_set_reduction(layout):
    require("triton", "hyper_adapter")
    from pha.kernels import hyper_adapter_backward, hyper_adapter_forward

    g, index = SET_LAYOUTS[layout]
    b = index.numel()
    check_against_reference(triton_adapter, b, 5, 24, 16, g, torch.float32, "gelu", index)

    (x, w_down, b_down, w_up, b_up), _ = make_inputs(b, 5, 24, 16, g, index=index)
    _, hidden = hyper_adapter_forward(x, w_down, b_down, w_up, b_up, index, "gelu", True)
    grad_out = torch.randn_like(x)
    first = hyper_adapter_backward(grad_out, x, w_down, w_up, hidden, index, "gelu")
    again = hyper_adapter_backward(grad_out, x, w_down, w_up, hidden, index, "gelu")
    for a, c in zip(first, again):  # no atomics: bitwise reproducible
        assert torch.equal(a, c)
    unused = torch.ones(g, dtype=torch.bool)
    unused[index] = False
    for grad in first[1:]:
        assert torch.count_nonzero(grad[unused]) == 0
        assert torch.count_nonzero(grad[~unused]) > 0


# Empty dimensions: nothing to launch for some products, yet every bias gradient is written
# (r = 0 leaves grad_b_up = sum of grad_out; d = 0 leaves grad_b_down = sum of grad_hidden).
EMPTY_SHAPES = {
    "B=0": (0, 3, 16, 8, 2, torch.zeros(0, dtype=torch.long)),
    "T=0": (2, 0, 16, 8, 2, None),
    "r=0": (2, 3, 16, 0, 2, None),
    "d=0": (2, 3, 0, 4, 2, None),
}


@pytest.mark.parametrize("shape", list(EMPTY_SHAPES))
def test_triton_empty_dimensions(shape):
    require("triton", "hyper_adapter")
    b, t, d, r, g, index = EMPTY_SHAPES[shape]
    check_against_reference(triton_adapter, b, t, d, r, g, torch.float32, "gelu", index)


def test_triton_hidden_is_the_pre_activation():
    require("triton", "hyper_adapter")
    from pha.kernels import hyper_adapter_forward

    (x, w_down, b_down, w_up, b_up), index = make_inputs(3, 4, 20, 12, 2, indexed=True)
    out, hidden = hyper_adapter_forward(x, w_down, b_down, w_up, b_up, index, "silu", True)
    expected = torch.baddbmm(b_down[index].unsqueeze(1), x, w_down[index])
    torch.testing.assert_close(hidden, expected, rtol=1e-5, atol=1e-5)
    assert hidden.dtype == torch.float32
    out_no_hidden, empty = hyper_adapter_forward(
        x, w_down, b_down, w_up, b_up, index, "silu", False
    )
    assert empty.shape == (0,) and empty.dtype == torch.float32
    assert torch.equal(out, out_no_hidden)


def test_triton_launcher_rejects_what_it_cannot_compute():
    require("triton", "hyper_adapter")
    from pha.kernels import hyper_adapter_backward, hyper_adapter_forward

    (x, w_down, b_down, w_up, b_up), _ = make_inputs(2, 3, 16, 8, 2)
    with pytest.raises(TypeError, match="the Triton backend computes in"):
        hyper_adapter_forward(
            *(t.double() for t in (x, w_down, b_down, w_up, b_up)), None, "relu", True
        )
    with pytest.raises(ValueError, match="hidden must be the fp32"):
        hyper_adapter_backward(x, x, w_down, w_up, torch.empty(0), None, "relu")


def test_triton_bad_index_never_reads_out_of_bounds():
    """The public op rejects it first; the launcher itself masks the weight loads of an
    out-of-range set, so that instance gets zeros instead of reading foreign memory."""
    require("triton", "hyper_adapter")
    from pha.kernels import hyper_adapter_forward

    (x, w_down, b_down, w_up, b_up), _ = make_inputs(3, 2, 16, 8, 3)
    index = torch.tensor([0, 5, 1])
    out, _ = hyper_adapter_forward(x, w_down, b_down, w_up, b_up, index, "relu", False)
    assert torch.count_nonzero(out[1]) == 0
    good = index.clone()
    good[1] = 0
    expected = reference.hyper_adapter(x, w_down, b_down, w_up, b_up, good)
    torch.testing.assert_close(out[[0, 2]], expected[[0, 2]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("table", ["INSTANCE_CONFIGS", "SET_GRAD_CONFIGS"])
def test_triton_gpu_config_tables(table):
    pytest.importorskip("triton")
    from pha.kernels import hyper_adapter as kernels

    rows = getattr(kernels, table)
    assert len(rows) >= 4 and len(set(rows)) == len(rows)
    for *blocks, num_warps, num_stages in rows:
        for block in blocks:  # tl.dot needs >= 16 on a GPU; tl.arange needs powers of two
            assert block >= 16 and block & (block - 1) == 0, (table, blocks)
        assert num_warps in (2, 4, 8, 16) and 1 <= num_stages <= 5


@pytest.mark.parametrize(
    "sizes,expected",
    [
        # Nothing fits T=1, K=N=8 (padded to 16): keep the config that overshoots least.
        ({"T": 1, "K": 8, "N": 8}, [(32, 32, 32)]),
        # Everything fits but the 128-wide N blocks.
        ({"T": 512, "K": 768, "N": 64}, "all but BLOCK_N=128"),
    ],
)
def test_triton_config_pruning(sizes, expected):
    pytest.importorskip("triton")
    from pha.kernels import hyper_adapter as kernels

    configs = kernels._configs(kernels.INSTANCE_CONFIGS, kernels._INSTANCE_BLOCKS)
    kept = kernels._prune(kernels._INSTANCE_BLOCKS)(configs, sizes)
    blocks = [(c.kwargs["BLOCK_T"], c.kwargs["BLOCK_K"], c.kwargs["BLOCK_N"]) for c in kept]
    if expected == "all but BLOCK_N=128":
        expected = [row[:3] for row in kernels.INSTANCE_CONFIGS if row[2] < 128]
    assert blocks == expected


@pytest.mark.slow
def test_triton_kernels_compile_for_a_gpu(triton_sm80):
    """Every launcher variant compiles for sm_80 (Triton ships ptxas: no GPU needed), with
    the shared memory of the GPU config it was given within what sm_80+ GPUs offer."""
    compiled = triton_sm80("hyper_adapter")
    assert len(compiled) == 6
    for kernel in compiled:  # 99 KiB: the per-block limit of sm_86/sm_89, the smallest of sm_80+
        assert 0 < kernel["shared"] <= 99 * 1024, kernel


# ---------------------------------------------------------------------------------------
# CUDA: the kernels, run on the CPU through the emulator (tests/cuda_cpu_emulator); the
# compile checks of the .cu and binding sources are in tests/test_cuda_sources.py.


class _Shape(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("batch", "tokens", "dim", "rank", "sets")]


_ACTIVATION_CODES = {"relu": 0, "gelu": 1, "silu": 2, "identity": 3}
_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


@pytest.fixture(scope="module")
def emulated_cuda(emulated_cuda_library):
    """hyper_adapter_kernels.cu compiled by g++ against the emulated CUDA runtime."""
    return emulated_cuda_library("hyper_adapter_kernels.cu")


def _ptr(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class _EmulatedCuda(torch.autograd.Function):
    """The C launchers of hyper_adapter.h called as the torch binding calls them."""

    @staticmethod
    def forward(ctx, lib, index, activation, x, w_down, b_down, w_up, b_up):
        (n, t, d), (g, _, r) = x.shape, w_down.shape
        hidden, out = torch.empty(n, t, r), torch.empty_like(x)
        err = lib.pha_hyper_adapter_forward(
            _DTYPE_CODES[x.dtype], _ACTIVATION_CODES[activation], _Shape(n, t, d, r, g),
            *map(_ptr, (x, w_down, b_down, w_up, b_up, index, hidden, out)), None,
        )  # fmt: skip
        assert err == 0
        ctx.save_for_backward(x, w_down, w_up, hidden)
        ctx.lib, ctx.index, ctx.activation = lib, index, activation
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w_down, w_up, hidden = ctx.saved_tensors
        (n, t, d), (g, _, r), index = x.shape, w_down.shape, ctx.index
        if index is None:
            order, segments = torch.arange(n), torch.arange(n + 1)
        else:
            sorted_sets, order = torch.sort(index, stable=True)
            segments = torch.searchsorted(sorted_sets, torch.arange(g + 1))
        grads = (
            torch.empty_like(x),
            torch.empty_like(w_down),
            w_down.new_empty(g, r),
            torch.empty_like(w_up),
            w_up.new_empty(g, d),
        )
        grad_hidden = torch.empty(n, t, r)  # workspace
        args = (grad_out.contiguous(), x, w_down, w_up, hidden, index, order, segments, grad_hidden)
        err = ctx.lib.pha_hyper_adapter_backward(
            _DTYPE_CODES[x.dtype], _ACTIVATION_CODES[ctx.activation], _Shape(n, t, d, r, g),
            *map(_ptr, args), *map(_ptr, grads), None,
        )  # fmt: skip
        assert err == 0
        return (None, None, None, *grads)


def _emulated(lib):
    def fn(x, w_down, b_down, w_up, b_up, index=None, activation="relu"):
        return _EmulatedCuda.apply(lib, index, activation, x, w_down, b_down, w_up, b_up)

    return fn


@pytest.mark.parametrize("shape", ["basic", "T=1", "r=17,d=33", "d=1,r=1", "repeated+unused"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cuda_kernels_emulated_fp32(emulated_cuda, shape, activation):
    b, t, d, r, g, indexed, index = SHAPES[shape]
    check_against_reference(
        _emulated(emulated_cuda), b, t, d, r, g, torch.float32, activation, index, indexed
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("indexed", [False, True])
def test_cuda_kernels_emulated_half(emulated_cuda, dtype, indexed):
    check_against_reference(
        _emulated(emulated_cuda), 3, 5, 40, 20, 2 if indexed else 3, dtype, "gelu", indexed=indexed
    )


@pytest.mark.parametrize("layout", ["skewed", "mostly-unused"])
def test_cuda_kernels_emulated_several_tiles(emulated_cuda, layout):
    """Tokens, d and r past one 32-tile, with the instances spread unevenly over the sets."""
    g, index = SET_LAYOUTS[layout]
    check_against_reference(
        _emulated(emulated_cuda), index.numel(), 35, 70, 40, g, torch.float32, "silu", index
    )


@pytest.mark.parametrize("shape", list(EMPTY_SHAPES))
def test_cuda_kernels_emulated_empty_dimensions(emulated_cuda, shape):
    b, t, d, r, g, index = EMPTY_SHAPES[shape]
    check_against_reference(_emulated(emulated_cuda), b, t, d, r, g, torch.float32, "gelu", index)


@settings(max_examples=6, deadline=None)  # the edge shapes are parametrised above
@given(**FUZZ)
def test_cuda_kernels_emulated_fuzz(emulated_cuda, b, t, d, r, g, indexed, activation, seed):
    torch.manual_seed(seed)
    g = g if indexed else b
    check_against_reference(
        _emulated(emulated_cuda), b, t, d, r, g, torch.float32, activation, indexed=indexed
    )
