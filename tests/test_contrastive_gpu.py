"""What is specific to the GPU backends of the contrastive losses: the Triton kernels on
tile-boundary shapes (the interpreter runs them with 16 x 16 tiles and 16-wide D chunks),
the launcher edge cases, and a plain-nvcc compile check of the CUDA kernels. The shared
backend-vs-reference tests are in tests/test_contrastive.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from backend_utils import assert_close_fa, require

import pha
from pha.ops import reference

ROOT = Path(__file__).resolve().parents[1]


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
        assert_close_fa(f"triton {name} {part}", g, s, h, atol)


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
        case,
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
    "B=1": (1, 5, 16),
}


@pytest.mark.parametrize("exclude_positive", (True, False))
@pytest.mark.parametrize("case", PROTOTYPE_SHAPES, ids=list(PROTOTYPE_SHAPES))
def test_triton_prototype_tile_boundaries(case, exclude_positive):
    require("triton", "prototype")
    b, k, d = PROTOTYPE_SHAPES[case]
    labels = _labels(b, k)
    _check(
        f"{case} exclude={exclude_positive}",
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
        "supcon",
        lambda z: pha.ops.supcon_loss(z, labels, 0.1, backend="triton"),
        lambda z: reference.supcon_loss(z, labels, 0.1),
        [torch.randn(20, 24)],
        dtype,
        1e-2,
    )
    _check(
        "prototype",
        lambda z, p: pha.ops.prototype_loss(z, p, proto_labels, 0.1, True, "triton"),
        lambda z, p: reference.prototype_loss(z, p, proto_labels, 0.1, True),
        [torch.randn(20, 24), torch.randn(6, 24)],
        dtype,
        1e-2,
    )


def test_triton_launcher_edge_cases():
    require("triton", "supcon")
    from pha import kernels

    z, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    loss, lse = kernels.supcon_forward(z, labels, 0.1)  # no positives at all
    assert loss.item() == 0.0 and loss.dtype == torch.float32 and torch.isfinite(lse).all()
    grad = kernels.supcon_backward(torch.tensor(1.0), z, labels, lse, 0.1)
    assert torch.equal(grad, torch.zeros_like(z))

    loss, lse = kernels.supcon_forward(z[:1], labels[:1], 0.1)  # B = 1: empty denominator
    assert loss.item() == 0.0 and lse.item() == float("-inf")

    z_nan = z.clone()
    z_nan[2, 3] = float("nan")
    assert kernels.supcon_forward(z_nan, labels % 2, 0.1)[0].isnan()
    assert kernels.supcon_forward(z_nan, labels, 0.1)[0].isnan()  # NaN even with no positive
    protos = torch.randn(3, 8)
    assert kernels.prototype_forward(z_nan, protos, labels % 3, 0.1, True)[0].isnan()
    assert kernels.prototype_forward(z_nan, protos[:1], labels * 0, 0.1, True)[0].isnan()

    # Python range-checks labels; the kernel does not trust it: a bad id gives NaN, no read.
    loss, lse = kernels.prototype_forward(z, protos, torch.tensor([0, 1, 2, 3, -1, 0]), 0.1, True)
    assert loss.isnan() and lse[3].isnan() and lse[4].isnan() and torch.isfinite(lse[:3]).all()

    with pytest.raises(TypeError, match="z"):
        kernels.supcon_forward(z.double(), labels, 0.1)


def test_cuda_kernels_compile_with_nvcc(tmp_path):
    """The CI compile check (plain nvcc, torch-free .cu) for the contrastive kernels."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found: CUDA compile check skipped")
    source = ROOT / "csrc" / "cuda" / "contrastive_kernels.cu"
    cmd = [nvcc, "-c", "-std=c++17", "-O3", "-gencode", "arch=compute_80,code=sm_80"]
    result = subprocess.run(
        [*cmd, str(source), "-o", str(tmp_path / "contrastive.o")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
