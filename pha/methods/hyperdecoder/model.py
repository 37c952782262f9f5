"""HyperDecoders on any supported backbone: per-instance generated upper-half adapters."""

from __future__ import annotations

import torch
from torch import nn

from ...modules import Adapter, HyperNetwork, InstanceRetriever
from ..base import Context, PHAModel, expand_rows, register
from ..generated import adapter_shapes, apply_generated_adapter
from .config import HyperDecoderConfig


@register
class HyperDecoderModel(PHAModel):
    """Parameters: lower_adapters.*, retriever.* (the d -> d -> d MLP), hypernet.* (+ heads)."""

    config_class = HyperDecoderConfig

    def build(self) -> None:
        cfg, bb = self.config, self.backbone
        d, r = bb.d_model, cfg.adapter_dim
        self.lower_adapters = nn.ModuleList(
            Adapter(d, r, activation="relu", init_gain=cfg.lower_init_gain, backend=cfg.backend)
            for _ in bb.lower
        )
        for layer, adapter in zip(bb.lower, self.lower_adapters):
            bb.add_parallel_adapter(layer, adapter)
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
        for site, layer in enumerate(bb.upper):
            bb.add_parallel_adapter(layer, self._upper_adapter(site))

    def _upper_adapter(self, site: int):
        def fn(x: torch.Tensor) -> torch.Tensor:
            # index=None: each instance has its own weight set (B sets)
            ctx = self.ctx()
            return apply_generated_adapter(x, ctx.weights, site, None, "relu", self.config.backend)

        return fn

    def at_split(self, ctx: Context, hidden: torch.Tensor) -> None:
        ctx.z = self.retriever(hidden, expand_rows(ctx.pool_mask, hidden.shape[0]))
        if not ctx.stop_at_split:
            ctx.weights = self.hypernet(ctx.z)
