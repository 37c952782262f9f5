"""HyperPELT on any supported backbone (see HyperPELTConfig and docs/METHOD.md)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ...backbones.attention_prefix import PrefixInjector, attention_sites
from ...modules import HyperNetwork
from ...modules.prefix import PrefixGenerator
from ...peft_model import PHAModel, PHAOutput
from ..base import Context, register
from ..generated import ADAPTER_TENSORS, adapter_shapes, apply_generated_adapter, tasks_in_batch
from .config import HyperPELTConfig

SELF_ATTENTION, CROSS_ATTENTION, FFN = range(3)  # the block axis of the hypernetwork's sites
BLOCKS = 3


@register
class HyperPELTModel(PHAModel):
    """Parameters: task_embeddings.weight, visual_proj.* (with visual_dim), hypernet.*,
    the backbone's layer norms (+ heads).

    One HyperNetwork over the sites (layer, block): its trunk reads [cond ; E_layer ;
    E_block] with cond = [E_task (; visual embedding)], and its heads generate the
    prefixes (at attention sites) and the adapter weights (at FFN sites). Text-only,
    everything depends on (task, site): generated once per task in the batch and picked
    per instance by index. With visual features, once per instance.
    """

    config_class = HyperPELTConfig
    needs_task_ids = True

    def build(self) -> None:
        cfg, bb = self.method_config, self.backbone
        sites = attention_sites(self.base_model, cross_attention=cfg.cross_attention_prefix)
        layer_of = {id(m): i for i, layer in enumerate(bb.layers) for m in layer.block.modules()}
        self.prefixes = PrefixGenerator(
            cfg.prefix_length,
            [(s.num_kv_heads, s.head_dim) for s in sites],
            [
                layer_of[id(s.module)] * BLOCKS + (CROSS_ATTENTION if s.cross else SELF_ATTENTION)
                for s in sites
            ],
        )
        self.adapter_sites = [i * BLOCKS + FFN for i in range(len(bb.layers))]
        self.task_embeddings = nn.Embedding(len(cfg.tasks), cfg.task_embed_dim)
        cond_dim = cfg.task_embed_dim
        if cfg.visual_dim is not None:
            self.visual_proj = nn.Linear(cfg.visual_dim, cfg.visual_embed_dim)
            cond_dim += cfg.visual_embed_dim
        self.hypernet = HyperNetwork(
            cond_dim=cond_dim,
            shapes={**adapter_shapes(bb.d_model, cfg.adapter_dim), **self.prefixes.shapes()},
            site_sizes=(len(bb.layers), BLOCKS),
            site_embed_dim=cfg.site_embed_dim,
            hidden_dim=cfg.hypernet_hidden_dim,
            out_dim=cfg.hypernet_out_dim,
            init=cfg.hypernet_init,
        )
        for i, layer in enumerate(bb.layers):
            bb.add_parallel_adapter(layer, self._adapter(i))
        bb.keep(PrefixInjector(self.base_model, sites, self._prefix))
        self._visual_features: torch.Tensor | None = None

    def trainable_backbone_parameters(self) -> list[nn.Parameter]:
        return [p for norm in self.backbone.layer_norms() for p in norm.parameters()]

    def condition(self, ctx: Context) -> None:
        visual, cfg = self._visual_features, self.method_config
        if visual is None:  # weights depend on (task, site) only: one set per task present
            tasks, ctx.index = tasks_in_batch(ctx.task_ids, len(self.tasks))
            cond = self.task_embeddings(tasks)
            if cfg.visual_dim is not None:  # text-only instances: zero visual embedding
                cond = torch.cat([cond, cond.new_zeros(len(tasks), cfg.visual_embed_dim)], -1)
        else:  # instance-specific: one set per instance
            expected = [ctx.task_ids.shape[0], cfg.visual_dim]
            if list(visual.shape) != expected:
                raise ValueError(
                    f"visual_features must have shape {expected} ([B, visual_dim]), got {list(visual.shape)}"
                )
            ctx.index = None
            visual = visual.to(self.visual_proj.weight.dtype)
            cond = torch.cat([self.task_embeddings(ctx.task_ids), self.visual_proj(visual)], -1)
        ctx.weights = {
            **self.hypernet(cond, names=ADAPTER_TENSORS, sites=self.adapter_sites),
            **self.prefixes.generate(self.hypernet, cond),
        }

    @torch.no_grad()
    def add_task_conditioning(self, examples: dict[str, torch.Tensor], init: str) -> None:
        """A new task embedding: the mean of the existing ones (init="mean"). HyperPELT has
        no retriever to embed the examples with, so init="nearest" is refused."""
        if init != "mean":
            raise ValueError(
                f"HyperPELT can initialise a new task embedding only with init='mean' (it has no "
                f"retriever to find the nearest task), got {init!r}"
            )
        weight = self.task_embeddings.weight
        self.task_embeddings.weight = nn.Parameter(
            torch.cat([weight, weight.mean(0, keepdim=True)])
        )
        self.task_embeddings.num_embeddings += 1

    def _adapter(self, layer: int):
        def fn(x: torch.Tensor) -> torch.Tensor:
            ctx, cfg = self.ctx(), self.method_config
            return apply_generated_adapter(
                x, ctx.weights, layer, ctx.index, cfg.adapter_activation, cfg.backend
            )

        return fn

    def _prefix(self, site: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.backbone.enabled:  # disable_adapter(): the base attention, no prefix
            return None
        ctx = self.ctx()
        if ctx.weights is None:
            raise RuntimeError("an attention layer ran before its prefix was generated")
        return self.prefixes.prefix(ctx.weights, site, ctx.index)

    @contextlib.contextmanager
    def _visual(self, visual_features: torch.Tensor | None):
        if visual_features is not None:
            if self.method_config.visual_dim is None:
                raise ValueError("visual_features given, but the config has visual_dim=None")
            if (
                not isinstance(visual_features, torch.Tensor)
                or not visual_features.is_floating_point()
            ):
                raise TypeError(
                    f"visual_features must be a floating-point tensor, got {type(visual_features).__name__}"
                    + (
                        f" of {visual_features.dtype}"
                        if isinstance(visual_features, torch.Tensor)
                        else ""
                    )
                )
        self._visual_features = visual_features
        try:
            yield
        finally:
            self._visual_features = None

    def forward(
        self, input_ids, attention_mask=None, labels=None, task_ids=None, visual_features=None, **kw
    ) -> PHAOutput:
        """PHAModel.forward, plus `visual_features` [B, visual_dim] (configs with visual_dim).
        Its arguments are spelled out: the HF Trainer looks for `labels` among them."""
        with self._visual(visual_features):
            return super().forward(input_ids, attention_mask, labels, task_ids, **kw)

    @torch.no_grad()
    def generate(self, *args, visual_features: torch.Tensor | None = None, **kwargs):
        """PHAModel.generate, plus `visual_features` [B, visual_dim] (configs with visual_dim)."""
        with self._visual(visual_features):
            return super().generate(*args, **kwargs)
