"""LinearProbeConfig: per-task linear heads on the frozen encoder's pooled features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import MethodConfig


@dataclass
class LinearProbeConfig(MethodConfig):
    """The linear probe: the backbone frozen and run in eval mode (no dropout), so each
    example has one fixed feature vector (the masked mean of the last hidden states);
    only the per-task classification heads train. Encoder backbones only: a text-to-text
    model has no per-task head to probe with. Only the common fields apply."""

    method: ClassVar[str] = "linear_probe"
