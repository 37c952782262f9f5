"""pha.ops.supcon_loss (L_ins) and pha.ops.prototype_loss (L_pro), unweighted.

z and the prototypes are L2-normalised inside the ops. Non-reference backends run behind
torch.library custom ops like hyper_adapter's (see that module's docstring):
  pha::supcon_fwd    -> (loss, lse)   lse [B] = log sum_{j != i} exp(s_ij), kept for backward
  pha::supcon_bwd    -> grad_z
  pha::prototype_fwd -> (loss, lse)   lse [B] over the prototypes in the denominator
  pha::prototype_bwd -> (grad_z, grad_prototypes)
loss and lse are fp32 (fp64 for fp64 inputs); the public functions cast the loss to z.dtype.
Each backend module provides supcon_forward / supcon_backward / prototype_forward /
prototype_backward with these signatures (torch.ops.pha_C for the C++ and CUDA kernels,
pha.kernels for Triton).
"""

from __future__ import annotations

import math

import torch

from . import _backend, _checks, reference

_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_MAX_INVERSE_TEMPERATURE = torch.finfo(torch.float32).max


def _accumulation_dtype(z: torch.Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


@torch.library.custom_op("pha::supcon_fwd", mutates_args=())
def _supcon_forward(
    z: torch.Tensor, labels: torch.Tensor, temperature: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backend.module(backend).supcon_forward(z, labels, temperature)


@_supcon_forward.register_fake
def _(z, labels, temperature, backend):
    acc = _accumulation_dtype(z)
    return z.new_empty((), dtype=acc), z.new_empty((z.shape[0],), dtype=acc)


@torch.library.custom_op("pha::supcon_bwd", mutates_args=())
def _supcon_backward(
    grad_loss: torch.Tensor,
    z: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
    backend: str,
) -> torch.Tensor:
    return _backend.module(backend).supcon_backward(grad_loss, z, labels, lse, temperature)


@_supcon_backward.register_fake
def _(grad_loss, z, labels, lse, temperature, backend):
    return torch.empty_like(z)


def _supcon_setup_context(ctx, inputs, output):
    z, labels, temperature, backend = inputs
    ctx.save_for_backward(z, labels, output[1])
    ctx.temperature, ctx.backend = temperature, backend


def _supcon_autograd(ctx, grad_loss, _grad_lse):
    z, labels, lse = ctx.saved_tensors
    grad_z = _supcon_backward(grad_loss.contiguous(), z, labels, lse, ctx.temperature, ctx.backend)
    return grad_z, None, None, None


_supcon_forward.register_autograd(_supcon_autograd, setup_context=_supcon_setup_context)


@torch.library.custom_op("pha::prototype_fwd", mutates_args=())
def _prototype_forward(
    z: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    exclude_positive: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    launch = _backend.module(backend).prototype_forward
    return launch(z, prototypes, labels, temperature, exclude_positive)


@_prototype_forward.register_fake
def _(z, prototypes, labels, temperature, exclude_positive, backend):
    acc = _accumulation_dtype(z)
    return z.new_empty((), dtype=acc), z.new_empty((z.shape[0],), dtype=acc)


@torch.library.custom_op("pha::prototype_bwd", mutates_args=())
def _prototype_backward(
    grad_loss: torch.Tensor,
    z: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
    exclude_positive: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    launch = _backend.module(backend).prototype_backward
    return launch(grad_loss, z, prototypes, labels, lse, temperature, exclude_positive)


@_prototype_backward.register_fake
def _(grad_loss, z, prototypes, labels, lse, temperature, exclude_positive, backend):
    return torch.empty_like(z), torch.empty_like(prototypes)


def _prototype_setup_context(ctx, inputs, output):
    z, prototypes, labels, temperature, exclude_positive, backend = inputs
    ctx.save_for_backward(z, prototypes, labels, output[1])
    ctx.temperature, ctx.exclude_positive, ctx.backend = temperature, exclude_positive, backend


def _prototype_autograd(ctx, grad_loss, _grad_lse):
    z, prototypes, labels, lse = ctx.saved_tensors
    grad_z, grad_prototypes = _prototype_backward(
        grad_loss.contiguous(),
        z,
        prototypes,
        labels,
        lse,
        ctx.temperature,
        ctx.exclude_positive,
        ctx.backend,
    )
    return grad_z, grad_prototypes, None, None, None, None


_prototype_forward.register_autograd(_prototype_autograd, setup_context=_prototype_setup_context)


def _validate_temperature(temperature: float) -> float:
    if isinstance(temperature, torch.Tensor) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a Python float, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if 1.0 / temperature > _MAX_INVERSE_TEMPERATURE:  # the kernels scale by 1/tau in fp32
        raise ValueError(
            f"temperature must be >= {1.0 / _MAX_INVERSE_TEMPERATURE:.3g} (1/temperature "
            f"finite in float32), got {temperature}"
        )
    return float(temperature)


def _autocast_fp32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Under autocast the losses run in fp32, as torch's autocast runs its losses: a bf16 or
    fp16 embedding from an autocast matmul meets fp32 prototypes."""
    if not torch.is_autocast_enabled(tensors[0].device.type):
        return tensors
    return tuple(t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in tensors)


def _validate_z(z: torch.Tensor) -> None:
    _checks.floating("z", z, _DTYPES)
    _checks.shape("z", z, (None, None), "[B, D]")


def supcon_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    backend: str | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss over the batch (PHA's L_ins).

    Args:
        z: [B, D] instance embeddings (normalised inside).
        labels: integer tensor [B] of non-negative class (task) ids.
        temperature: tau > 0.
    Returns:
        A scalar: the mean over rows with at least one positive; 0 (zero gradient) if none.
    """
    _validate_z(z)
    (z,) = _autocast_fp32(z)
    temperature = _validate_temperature(temperature)
    _checks.same_device({"z": z, "labels": _checks.tensor("labels", labels)})
    labels = _checks.index_tensor("labels", labels, z.shape[0], 2**62, "one class id per row of z")
    name = _backend.resolve(backend, z.device, "supcon", z.dtype)
    if name == "reference":
        with torch.autocast(z.device.type, enabled=False):  # in fp32, as the kernels
            return reference.supcon_loss(z, labels, temperature)
    loss, _ = _supcon_forward(z.contiguous(), labels, temperature, name)
    return loss.to(z.dtype)


def prototype_loss(
    z: torch.Tensor,
    prototypes: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    exclude_positive: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """Instance-to-prototype contrastive loss (PHA's L_pro).

    Args:
        z: [B, D] instance embeddings; prototypes: [K, D]; labels: integer [B] in [0, K).
        exclude_positive: True leaves the positive out of the denominator (the PHA
            release); False is standard InfoNCE.
    Returns:
        A scalar, the mean over rows.
    """
    _validate_z(z)
    _checks.floating("prototypes", prototypes, _DTYPES)
    z, prototypes = _autocast_fp32(z, prototypes)
    _checks.shape("prototypes", prototypes, (None, z.shape[1]), f"[K, D={z.shape[1]}]")
    _checks.same_dtype({"z": z, "prototypes": prototypes})
    temperature = _validate_temperature(temperature)
    _checks.same_device(
        {"z": z, "prototypes": prototypes, "labels": _checks.tensor("labels", labels)}
    )
    k = prototypes.shape[0]
    labels = _checks.index_tensor(
        "labels", labels, z.shape[0], k, f"one prototype id in [0, {k}) per row of z"
    )
    name = _backend.resolve(backend, z.device, "prototype", z.dtype)
    if name == "reference":
        with torch.autocast(z.device.type, enabled=False):  # in fp32, as the kernels
            return reference.prototype_loss(z, prototypes, labels, temperature, exclude_positive)
    exclude_positive = bool(exclude_positive)
    loss, _ = _prototype_forward(
        z.contiguous(), prototypes.contiguous(), labels, temperature, exclude_positive, name
    )
    return loss.to(z.dtype)
