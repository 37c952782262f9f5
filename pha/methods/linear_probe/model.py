"""The linear probe: the baseline every method must beat on the same features."""

from __future__ import annotations

from ...peft_model import PHAModel
from ..base import register
from .config import LinearProbeConfig


@register
class LinearProbeModel(PHAModel):
    """Parameters: heads.<task>.{weight,bias} only."""

    config_class = LinearProbeConfig

    def build(self) -> None:
        if self.backbone_kind != "encoder":
            raise ValueError(
                f"linear_probe needs an encoder backbone with per-task heads, got a "
                f"{self.backbone_kind} backbone"
            )

    def train(self, mode: bool = True) -> LinearProbeModel:
        super().train(mode)
        self.base_model.eval()  # frozen features: no dropout noise in the probe's inputs
        return self
