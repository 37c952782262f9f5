"""Argument validation shared by the ops: clear errors before any kernel sees a pointer."""

from __future__ import annotations

import torch


def tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def floating(name: str, t: object, dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    tensor(name, t)
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    return t


def shape(name: str, t: torch.Tensor, expected: tuple[int | None, ...], what: str) -> None:
    """`expected` holds sizes or None (any); `what` spells the expected shape, e.g. "[G, d, r]"."""
    ok = t.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, t.shape))
    if not ok:
        raise ValueError(f"{name} must have shape {what}, got {list(t.shape)}")


def same_device(names_and_tensors: dict[str, torch.Tensor]) -> None:
    devices = {n: t.device for n, t in names_and_tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"all tensors must be on one device, got {devices}")


def same_dtype(names_and_tensors: dict[str, torch.Tensor]) -> None:
    dtypes = {n: t.dtype for n, t in names_and_tensors.items()}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"all floating inputs must share one dtype, got {dtypes}")


def index_tensor(name: str, t: object, length: int, upper: int, what: str) -> torch.Tensor:
    """An integer tensor [length] with values in [0, upper); returned as int64."""
    tensor(name, t)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (torch.long), got {t.dtype}")
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"{name} must have shape [{length}] ({what}), got {list(t.shape)}")
    # Data-dependent: skipped while tracing (the kernels check the range again themselves).
    if length and not torch.compiler.is_compiling():
        lo, hi = (int(v) for v in torch.aminmax(t))
        if lo < 0 or hi >= upper:
            raise ValueError(f"{name} values must lie in [0, {upper}), got min {lo}, max {hi}")
    return t.long().contiguous()
