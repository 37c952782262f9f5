"""What is specific to the GPU backends of the contrastive losses (the shared
backend-vs-reference tests are in tests/test_contrastive.py):
- Triton: the kernels on tile-boundary shapes (the interpreter runs them with 16 x 16 tiles
  and 16-wide D chunks), low precision, launcher edge cases; every autotune config
  compiled for sm_80 ahead of time (no GPU needed).
- CUDA: the .cu kernels *run* on the CPU through an emulation of the CUDA execution model
  (tests/cuda_cpu_emulator) against the reference (their nvcc and binding compile checks:
  tests/test_cuda_sources.py)."""

from __future__ import annotations

import ctypes

import pytest
import torch
from backend_utils import assert_close_fa, require

import pha
from pha.ops import reference


def _grads(fn, tensors, grad=1.7):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    loss = fn(*leaves)
    loss.backward(torch.tensor(grad, dtype=loss.dtype))
    return [loss.detach()] + [leaf.grad for leaf in leaves]


def _check(name, kernel_fn, ref_fn, tensors, dtype, atol):
    """kernel in `dtype` vs the reference in fp64 (and in `dtype`): FlashAttention's rule."""
    hi = _grads(ref_fn, [t.double() for t in tensors])
    same = _grads(ref_fn, [t.to(dtype) for t in tensors])
    got = _grads(kernel_fn, [t.to(dtype) for t in tensors])
    for part, g, s, h in zip(("loss", "grad z", "grad prototypes"), got, same, hi):
        assert_close_fa(f"{name} {part}", g, s, h, atol)


def _labels(b: int, classes: int) -> torch.Tensor:
    return torch.randint(0, classes, (b,))


# (B, D, classes): around the 16-row tile and the 16-wide D chunk of the interpreter config.
SUPCON_SHAPES = {
    "B=tile-1": (15, 16, 3),
    "B=tile": (16, 8, 2),
    "B=tile+1,D=chunk+1": (17, 17, 4),
    "B=2 tiles+1": (33, 5, 3),
    "D=1": (18, 1, 2),
    "one class": (19, 12, 1),
    "all distinct but one pair": (17, 9, None),
    "many classes": (24, 7, 20),
    "sparse int64 ids": (17, 6, "sparse"),
}


@pytest.mark.parametrize("case", SUPCON_SHAPES, ids=list(SUPCON_SHAPES))
def test_triton_supcon_tile_boundaries(case):
    require("triton", "supcon")
    b, d, classes = SUPCON_SHAPES[case]
    if classes is None:
        labels = torch.arange(b)
        labels[-1] = 0
    elif classes == "sparse":  # huge ids: the kernels compare labels, never index by them
        labels = torch.tensor([2**61, 7, 2**61, 0, 7] * 4)[:b]
    else:
        labels = _labels(b, classes)
    z = torch.randn(b, d)
    _check(
        f"triton {case}",
        lambda z: pha.ops.supcon_loss(z, labels, 0.1, backend="triton"),
        lambda z: reference.supcon_loss(z, labels, 0.1),
        [z],
        torch.float32,
        1e-5,
    )


# (B, K, D)
PROTOTYPE_SHAPES = {
    "K=1": (5, 1, 8),
    "K=2": (17, 2, 16),
    "K=tile+1": (9, 17, 20),
    "K=3 tiles": (20, 48, 4),
    "K=600": (5, 600, 8),
    "B=1": (1, 5, 16),
}


@pytest.mark.parametrize("exclude_positive", (True, False))
@pytest.mark.parametrize("case", PROTOTYPE_SHAPES, ids=list(PROTOTYPE_SHAPES))
def test_triton_prototype_tile_boundaries(case, exclude_positive):
    require("triton", "prototype")
    b, k, d = PROTOTYPE_SHAPES[case]
    labels = _labels(b, k)
    _check(
        f"triton {case} exclude={exclude_positive}",
        lambda z, p: pha.ops.prototype_loss(z, p, labels, 0.1, exclude_positive, "triton"),
        lambda z, p: reference.prototype_loss(z, p, labels, 0.1, exclude_positive),
        [torch.randn(b, d), torch.randn(k, d)],
        torch.float32,
        1e-5,
    )


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_triton_low_precision(dtype):
    """bf16/fp16 operands, fp32 accumulation: at most 2x the error of a same-dtype torch."""
    require("triton", "supcon")
    labels, proto_labels = _labels(20, 3), _labels(20, 6)
    _check(
        "triton supcon",
        lambda z: pha.ops.supcon_loss(z, labels, 0.1, backend="triton"),
        lambda z: reference.supcon_loss(z, labels, 0.1),
        [torch.randn(20, 24)],
        dtype,
        1e-2,
    )
    _check(
        "triton prototype",
        lambda z, p: pha.ops.prototype_loss(z, p, proto_labels, 0.1, True, "triton"),
        lambda z, p: reference.prototype_loss(z, p, proto_labels, 0.1, True),
        [torch.randn(20, 24), torch.randn(6, 24)],
        dtype,
        1e-2,
    )


def check_launcher_edge_cases(launchers):
    """The contract's edge cases, on any object with the four launchers (pha.kernels, the
    emulated CUDA kernels): no positive, B = 1, NaN, untrusted label ids, B = 0."""
    z, labels = torch.randn(6, 8), torch.tensor([0, 1, 0, 1, 2, 2])
    distinct = torch.arange(6)
    loss, lse = launchers.supcon_forward(z, distinct, 0.1)  # no positives at all
    assert loss.item() == 0.0 and loss.dtype == torch.float32 and torch.isfinite(lse).all()
    grad = launchers.supcon_backward(torch.tensor(1.0), z, distinct, lse, 0.1)
    assert torch.equal(grad, torch.zeros_like(z))

    loss, lse = launchers.supcon_forward(z[:1], labels[:1], 0.1)  # B = 1: empty denominator
    assert loss.item() == 0.0 and lse.item() == float("-inf")

    z_nan = z.clone()
    z_nan[2, 3] = float("nan")
    assert launchers.supcon_forward(z_nan, labels, 0.1)[0].isnan()
    assert launchers.supcon_forward(z_nan, distinct, 0.1)[0].isnan()  # NaN even with no positive
    protos = torch.randn(3, 8)
    assert launchers.prototype_forward(z_nan, protos, labels, 0.1, True)[0].isnan()
    assert launchers.prototype_forward(z_nan, protos[:1], labels * 0, 0.1, True)[0].isnan()

    # Python range-checks labels; the kernels do not trust it: a bad id gives NaN, no read.
    bad = torch.tensor([0, 1, 2, 3, -1, 0])
    for exclude_positive in (True, False):
        loss, lse = launchers.prototype_forward(z, protos, bad, 0.1, exclude_positive)
        assert loss.isnan() and lse[3:5].isnan().all() and torch.isfinite(lse[:3]).all()

    empty = z[:0]  # B = 0: loss 0, no launch on an empty grid
    assert launchers.supcon_forward(empty, labels[:0], 0.1)[0].item() == 0.0
    loss, lse = launchers.prototype_forward(empty, protos, labels[:0], 0.1, False)
    assert loss.item() == 0.0 and lse.shape == (0,)
    grad_z, grad_p = launchers.prototype_backward(
        torch.ones(()), empty, protos, labels[:0], lse, 0.1, False
    )
    assert grad_z.shape == (0, 8) and torch.equal(grad_p, torch.zeros_like(protos))


def test_triton_launcher_edge_cases():
    require("triton", "supcon")
    from pha import kernels

    check_launcher_edge_cases(kernels)
    with pytest.raises(TypeError, match="z"):
        kernels.supcon_forward(torch.randn(4, 8).double(), torch.arange(4), 0.1)


# ---------------------------------------------------------------- CUDA kernels, emulated
# No GPU here: the .cu launchers run on CPU pointers through tests/cuda_cpu_emulator (each
# CUDA thread an OS thread, __syncthreads / shuffles as barriers), called the way
# contrastive_binding.cpp calls them. This checks the kernels' indexing, masking and
# synchronisation against the reference; the binding itself only gets a syntax check.

_CUDA_DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


class EmulatedContrastive:
    """supcon/prototype forward/backward with the contract's signatures, on CPU tensors."""

    def __init__(self, lib: ctypes.CDLL):
        p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
        lib.pha_supcon_workspace_floats.restype = ctypes.c_size_t
        lib.pha_supcon_workspace_floats.argtypes = [i64, i64]
        lib.pha_prototype_workspace_floats.restype = ctypes.c_size_t
        lib.pha_prototype_workspace_floats.argtypes = [i64, i64, i64]
        lib.pha_supcon_forward.argtypes = [p, i32, p, i64, i64, f32, p, p, p, p]
        lib.pha_supcon_backward.argtypes = [p, p, i32, p, p, i64, i64, f32, p, p, p]
        lib.pha_prototype_forward.argtypes = [p, p, i32, p, i64, i64, i64, f32, i32, p, p, p, p]
        lib.pha_prototype_backward.argtypes = [
            p, p, p, i32, p, p, i64, i64, i64, f32, i32, p, p, p, p,
        ]  # fmt: skip
        self.lib = lib

    @staticmethod
    def _floats(n: int) -> torch.Tensor:
        return torch.full((n,), float("nan"))  # poisoned: reading unwritten scratch shows up

    def supcon_forward(self, z, labels, temperature):
        (b, d), lse, loss = z.shape, torch.empty(z.shape[0]), torch.empty(())
        ws = self._floats(self.lib.pha_supcon_workspace_floats(b, d))
        err = self.lib.pha_supcon_forward(
            z.data_ptr(), _CUDA_DTYPES[z.dtype], labels.data_ptr(), b, d, temperature,
            ws.data_ptr(), lse.data_ptr(), loss.data_ptr(), None,
        )  # fmt: skip
        assert err == 0
        return loss, lse

    def supcon_backward(self, grad_loss, z, labels, lse, temperature):
        (b, d), grad_z, grad = z.shape, torch.empty_like(z), grad_loss.float().reshape(())
        ws = self._floats(self.lib.pha_supcon_workspace_floats(b, d))
        err = self.lib.pha_supcon_backward(
            grad.data_ptr(), z.data_ptr(), _CUDA_DTYPES[z.dtype], labels.data_ptr(),
            lse.data_ptr(), b, d, temperature, ws.data_ptr(), grad_z.data_ptr(), None,
        )  # fmt: skip
        assert err == 0
        return grad_z

    def prototype_forward(self, z, prototypes, labels, temperature, exclude_positive):
        (b, d), k = z.shape, prototypes.shape[0]
        lse, loss = torch.empty(b), torch.empty(())
        ws = self._floats(self.lib.pha_prototype_workspace_floats(b, k, d))
        err = self.lib.pha_prototype_forward(
            z.data_ptr(), prototypes.data_ptr(), _CUDA_DTYPES[z.dtype], labels.data_ptr(),
            b, k, d, temperature, int(exclude_positive), ws.data_ptr(), lse.data_ptr(),
            loss.data_ptr(), None,
        )  # fmt: skip
        assert err == 0
        return loss, lse

    def prototype_backward(self, grad_loss, z, prototypes, labels, lse, temperature, exclude):
        (b, d), k, grad = z.shape, prototypes.shape[0], grad_loss.float().reshape(())
        grad_z, grad_p = torch.empty_like(z), torch.empty_like(prototypes)
        ws = self._floats(self.lib.pha_prototype_workspace_floats(b, k, d))
        err = self.lib.pha_prototype_backward(
            grad.data_ptr(), z.data_ptr(), prototypes.data_ptr(), _CUDA_DTYPES[z.dtype],
            labels.data_ptr(), lse.data_ptr(), b, k, d, temperature, int(exclude),
            ws.data_ptr(), grad_z.data_ptr(), grad_p.data_ptr(), None,
        )  # fmt: skip
        assert err == 0
        return grad_z, grad_p


@pytest.fixture(scope="module")
def emulated_cuda(emulated_cuda_library):
    return EmulatedContrastive(emulated_cuda_library("contrastive_kernels.cu"))


def _as_function(forward, backward, n_tensors):
    """A differentiable function from a launcher pair: backward takes
    (grad, *the first n_tensors inputs, lse, *the other inputs), as in the contract."""

    class Loss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            loss, lse = forward(*inputs)
            ctx.save_for_backward(*inputs[:n_tensors], lse)
            ctx.rest, ctx.n_inputs = inputs[n_tensors:], len(inputs)
            return loss.to(inputs[0].dtype)  # as the public ops do

        @staticmethod
        def backward(ctx, grad):
            grads = backward(grad, *ctx.saved_tensors, *ctx.rest)
            grads = grads if isinstance(grads, tuple) else (grads,)
            return (*grads, *[None] * (ctx.n_inputs - len(grads)))

    return Loss.apply


# (B, D, classes) around the 32-row tile and the 32-wide D chunk of the CUDA kernels
CUDA_SUPCON = {
    "B=33,D=33": (33, 33, 4),
    "B=32,D=5": (32, 5, 2),
    "B=1": (1, 4, 1),
    "no positives": (6, 7, None),
}


@pytest.mark.parametrize("case", CUDA_SUPCON, ids=list(CUDA_SUPCON))
def test_cuda_supcon_emulated(emulated_cuda, case):
    b, d, classes = CUDA_SUPCON[case]
    labels = torch.randperm(b) if classes is None else _labels(b, classes)
    loss_fn = _as_function(emulated_cuda.supcon_forward, emulated_cuda.supcon_backward, 2)
    _check(
        f"cuda {case}",
        lambda z: loss_fn(z, labels, 0.1),
        lambda z: reference.supcon_loss(z, labels, 0.1),
        [torch.randn(b, d)],
        torch.float32,
        1e-5,
    )


# (B, K, D, dtype)
CUDA_PROTOTYPE = {
    "K=1": (5, 1, 8, torch.float32),
    "K=33,D=40": (34, 33, 40, torch.float32),
    "B=1,K=3": (1, 3, 16, torch.float32),
    "bf16": (20, 6, 24, torch.bfloat16),
    "fp16": (20, 6, 24, torch.float16),
}


@pytest.mark.parametrize("exclude_positive", (True, False))
@pytest.mark.parametrize("case", CUDA_PROTOTYPE, ids=list(CUDA_PROTOTYPE))
def test_cuda_prototype_emulated(emulated_cuda, case, exclude_positive):
    b, k, d, dtype = CUDA_PROTOTYPE[case]
    labels = _labels(b, k)
    loss_fn = _as_function(emulated_cuda.prototype_forward, emulated_cuda.prototype_backward, 3)
    _check(
        f"cuda {case} exclude={exclude_positive}",
        lambda z, p: loss_fn(z, p, labels, 0.1, exclude_positive),
        lambda z, p: reference.prototype_loss(z, p, labels, 0.1, exclude_positive),
        [torch.randn(b, d), torch.randn(k, d)],
        dtype,
        1e-5 if dtype == torch.float32 else 1e-2,
    )


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_cuda_supcon_emulated_low_precision(emulated_cuda, dtype):
    labels = _labels(20, 3)
    loss_fn = _as_function(emulated_cuda.supcon_forward, emulated_cuda.supcon_backward, 2)
    _check(
        "cuda supcon",
        lambda z: loss_fn(z, labels, 0.1),
        lambda z: reference.supcon_loss(z, labels, 0.1),
        [torch.randn(20, 24)],
        dtype,
        1e-2,
    )


def test_cuda_emulated_edge_cases(emulated_cuda):
    check_launcher_edge_cases(emulated_cuda)


@pytest.mark.slow
def test_triton_kernels_compile_for_sm80(triton_sm80):
    """Every autotune config of the three kernels compiles for an A100 (Triton front end,
    LLVM, ptxas; no GPU needed), within the shared memory sm_80+ GPUs offer per block:
    what the interpreter cannot check."""
    compiled = triton_sm80("contrastive")
    assert {k["kernel"] for k in compiled} == {
        "_forward_kernel",
        "_row_grad_kernel",
        "_col_grad_kernel",
    }
    for kernel in compiled:  # 99 KiB: the per-block limit of sm_86/sm_89, the smallest of sm_80+
        assert 0 < kernel["shared"] <= 99 * 1024, kernel
