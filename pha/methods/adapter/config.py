"""AdapterConfig: plain bottleneck adapters (the baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import MethodConfig


@dataclass
class AdapterConfig(MethodConfig):
    """Ordinary adapters in every layer, parallel to the FFN as in PHA (docs/METHOD.md).

    adapter_dim: bottleneck r (64).
    per_task: one adapter set per task (selected by task id) instead of one shared set.
    activation: "relu" (PHA's), "gelu", "silu" or "identity".
    init_gain: xavier_uniform gain of the adapter weights (1e-4, near-identity start).
    """

    method: ClassVar[str] = "adapter"
    adapter_dim: int = 64
    per_task: bool = False
    activation: str = "relu"
    init_gain: float = 1e-4
