"""Helpers for testing every backend against pha.ops.reference."""

from __future__ import annotations

import pytest
import torch

from pha.ops import _backend

KERNEL_BACKENDS = ("cpp", "triton", "cuda")


def device_for(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "cuda" else "cpu")


def require(backend: str, op: str) -> None:
    """Skip, with the reason, when `backend` cannot run here (e.g. CUDA without a GPU)."""
    if not _backend.backends()[backend]:
        pytest.skip(f"backend {backend} unavailable: {_backend.unavailable_reason(backend)}")
    if not _backend.implements(backend, op):
        pytest.skip(f"backend {backend} does not implement {op}")


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def assert_close_fa(
    name: str, out: torch.Tensor, ref_same: torch.Tensor, ref_hi: torch.Tensor, atol: float
) -> None:
    """FlashAttention's rule: the kernel's error against a high-precision reference is at
    most twice that of a same-precision torch reference (plus a small absolute slack)."""
    assert out.shape == ref_hi.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref_hi.shape)}"
    assert out.dtype == ref_same.dtype, f"{name}: dtype {out.dtype} != {ref_same.dtype}"
    err, ref_err = max_err(out, ref_hi), max_err(ref_same, ref_hi)
    scale = max(1.0, ref_hi.abs().max().item()) if ref_hi.numel() else 1.0
    assert err <= 2 * ref_err + atol * scale, (
        f"{name}: error {err:.3g} > 2 x reference error {ref_err:.3g} + {atol * scale:.3g}"
    )
