"""pha.ops.supcon_loss (L_ins) and pha.ops.prototype_loss (L_pro), unweighted.

z and the prototypes are L2-normalised inside the ops. Non-reference backends run behind
torch.library custom ops like hyper_adapter's (see that module's docstring).
"""

from __future__ import annotations

import math

import torch

from . import _backend, _checks, reference

_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _validate_temperature(temperature: float) -> float:
    if isinstance(temperature, torch.Tensor) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a Python float, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return float(temperature)


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
    temperature = _validate_temperature(temperature)
    labels = _checks.index_tensor("labels", labels, z.shape[0], 2**62, "one class id per row of z")
    _checks.same_device({"z": z, "labels": labels})
    name = _backend.resolve(backend, z.device, "supcon")
    if name == "reference":
        return reference.supcon_loss(z, labels, temperature)
    raise NotImplementedError(name)


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
    _checks.shape("prototypes", prototypes, (None, z.shape[1]), f"[K, D={z.shape[1]}]")
    _checks.same_dtype({"z": z, "prototypes": prototypes})
    temperature = _validate_temperature(temperature)
    k = prototypes.shape[0]
    labels = _checks.index_tensor(
        "labels", labels, z.shape[0], k, f"one prototype id in [0, {k}) per row of z"
    )
    _checks.same_device({"z": z, "prototypes": prototypes, "labels": labels})
    name = _backend.resolve(backend, z.device, "prototype")
    if name == "reference":
        return reference.prototype_loss(z, prototypes, labels, temperature, exclude_positive)
    raise NotImplementedError(name)
