"""Full fine-tuning through the same wrapper (heads, task ids, saving)."""

from __future__ import annotations

from torch import nn

from ...peft_model import PHAModel
from ..base import register
from .config import FullFinetuneConfig


@register
class FullFinetuneModel(PHAModel):
    config_class = FullFinetuneConfig
    has_adapter = False

    def trainable_backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.base_model.parameters())
