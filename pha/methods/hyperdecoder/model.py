"""HyperDecoders on any supported backbone: per-instance generated upper-half adapters."""

from __future__ import annotations

import torch

from ...modules import HyperNetwork, InstanceRetriever
from ...peft_model import PHAModel
from ..base import Context, expand_rows, register
from ..generated import (
    adapter_shapes,
    attach_generated_upper_adapters,
    attach_shared_lower_adapters,
)
from .config import HyperDecoderConfig


@register
class HyperDecoderModel(PHAModel):
    """Parameters: lower_adapters.*, retriever.* (the d -> d -> d MLP), hypernet.* (+ heads)."""

    config_class = HyperDecoderConfig

    def build(self) -> None:
        cfg, bb = self.method_config, self.backbone
        d, r = bb.d_model, cfg.adapter_dim
        self.lower_adapters = attach_shared_lower_adapters(self)
        self.retriever = InstanceRetriever(d, hidden_dim=d, out_dim=d)
        self.hypernet = HyperNetwork(
            cond_dim=d,
            shapes=adapter_shapes(d, r),
            site_sizes=(len(bb.upper),),
            site_embed_dim=cfg.layer_embed_dim,
            hidden_dim=cfg.hypernet_hidden_dim,
            out_dim=cfg.hypernet_out_dim,
            init="hyperfanin",
        )
        attach_generated_upper_adapters(self)

    def at_split(self, ctx: Context, hidden: torch.Tensor) -> None:
        ctx.z = self.retriever(hidden, expand_rows(ctx.pool_mask, hidden.shape[0]))
        if not ctx.stop_at_split:
            ctx.weights = self.hypernet(ctx.z)
