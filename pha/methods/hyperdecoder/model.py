"""HyperDecoders on any supported backbone: per-instance generated upper-half adapters."""

from __future__ import annotations

import torch

from ...modules import InstanceRetriever
from ...peft_model import PHAModel
from ..base import Context, expand_rows, register
from ..generated import (
    attach_generated_upper_adapters,
    attach_shared_lower_adapters,
    per_site,
    upper_adapter_hypernet,
)
from .config import HyperDecoderConfig


@register
class HyperDecoderModel(PHAModel):
    """Parameters: lower_adapters.*, retriever.* (the d -> d -> d MLP), hypernet.* (+ heads)."""

    config_class = HyperDecoderConfig

    def build(self) -> None:
        d = self.backbone.d_model
        self.lower_adapters = attach_shared_lower_adapters(self)
        self.retriever = InstanceRetriever(d, hidden_dim=d, out_dim=d)
        self.hypernet = upper_adapter_hypernet(self, d, self.method_config.layer_embed_dim)
        attach_generated_upper_adapters(self)

    def at_split(self, ctx: Context, hidden: torch.Tensor) -> None:
        ctx.z = self.retriever(hidden, expand_rows(ctx.pool_mask, hidden.shape[0]))
        if not ctx.stop_at_split:
            ctx.weights = per_site(self.hypernet(ctx.z))
