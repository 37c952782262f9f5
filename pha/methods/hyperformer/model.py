"""HyperFormer++ on any supported backbone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...modules import HyperNetwork
from ...peft_model import PHAModel
from ..base import Context, expand_rows, register
from ..generated import adapter_shapes, apply_generated_adapter, tasks_in_batch
from .config import HyperFormerConfig

POSITIONS = ("ffn", "attention")  # position embedding 0 = after FFN, 1 = after attention


@register
class HyperFormerModel(PHAModel):
    """Parameters: task_embeddings.weight, hypernet.<stack>.* (+ backbone norms, heads)."""

    config_class = HyperFormerConfig
    needs_task_ids = True

    def build(self) -> None:
        cfg, bb = self.method_config, self.backbone
        d, e = bb.d_model, cfg.embed_dim
        r = cfg.adapter_dim or max(1, d // 32)
        self.task_embeddings = nn.Embedding(len(cfg.tasks), e)
        shapes = {**adapter_shapes(d, r), "ln_weight": (d,), "ln_bias": (d,)}
        self.hypernet = nn.ModuleDict(
            {
                stack: HyperNetwork(
                    cond_dim=e,
                    shapes=shapes,
                    site_sizes=(len(bb.stack(stack)), len(POSITIONS)),
                    site_embed_dim=e,
                    hidden_dim=cfg.hypernet_hidden_dim,
                    out_dim=cfg.hypernet_out_dim,
                    init="normal",
                )
                for stack in bb.stacks
            }
        )
        if cfg.norm_init == "zero":
            for net in self.hypernet.values():
                net.zero_heads("ln_weight", "ln_bias")
        for stack in bb.stacks:
            for layer in bb.stack(stack):
                for p, module in enumerate((layer.ffn_out, layer.attention_out)):
                    site = layer.index * len(POSITIONS) + p
                    bb.add_serial_adapter(module, self._adapter_with_norm(stack, site))

    def _adapter_with_norm(self, stack: str, site: int):
        """y -> LN_generated(Adapter_generated(y)); the hook adds the residual y."""
        cfg = self.method_config

        def fn(y: torch.Tensor) -> torch.Tensor:
            ctx = self.ctx()
            weights = ctx.weights[stack]
            a = apply_generated_adapter(y, weights, site, ctx.index, cfg.activation, cfg.backend)
            index = expand_rows(ctx.index, y.shape[0])
            gamma = weights["ln_weight"][site][index].to(y.dtype).unsqueeze(1)
            beta = weights["ln_bias"][site][index].to(y.dtype).unsqueeze(1)
            return F.layer_norm(a, a.shape[-1:]) * gamma + beta

        return fn

    def condition(self, ctx: Context) -> None:
        tasks, ctx.index = tasks_in_batch(ctx.task_ids, len(self.tasks))
        cond = self.task_embeddings(tasks)
        ctx.weights = {stack: net(cond) for stack, net in self.hypernet.items()}

    def trainable_backbone_parameters(self) -> list[nn.Parameter]:
        if not self.method_config.train_layer_norms:
            return []
        return [p for m in self.backbone.layer_norms() for p in m.parameters()]

    @torch.no_grad()
    def add_task_conditioning(self, examples: dict[str, torch.Tensor], init: str) -> None:
        """A new task embedding, the mean of the existing ones (init="mean"); HyperFormer++
        has no retriever to find the nearest task, so init="nearest" is refused."""
        if init != "mean":
            raise ValueError(
                f"HyperFormer++ initialises a new task only with init='mean', got {init!r}"
            )
        weight = self.task_embeddings.weight
        self.task_embeddings.weight = nn.Parameter(
            torch.cat([weight, weight.mean(0, keepdim=True)])
        )
        self.task_embeddings.num_embeddings += 1
