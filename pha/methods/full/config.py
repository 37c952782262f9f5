"""FullFinetuneConfig: train every backbone weight (the comparison point)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import MethodConfig


@dataclass
class FullFinetuneConfig(MethodConfig):
    """Full fine-tuning: no adapters, every backbone parameter (and the per-task heads of
    encoder backbones) trainable. Only the common fields apply."""

    method: ClassVar[str] = "full"
