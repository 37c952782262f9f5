"""PHA on any supported backbone (see PHAConfig and docs/METHOD.md)."""

from __future__ import annotations

import torch

from ... import ops
from ...modules import InstanceRetriever, PrototypeBank
from ...peft_model import PHAModel
from ..base import Context, expand_rows, register
from ..generated import (
    attach_generated_upper_adapters,
    attach_shared_lower_adapters,
    per_site,
    tasks_in_batch,
    upper_adapter_hypernet,
)
from .config import PHAConfig


@register
class PrototypeHyperAdapterModel(PHAModel):
    """Parameters: lower_adapters.<i>.*, retriever.*, prototypes.weight, hypernet.* (+ heads)."""

    config_class = PHAConfig
    needs_task_ids = True
    can_retrieve = True

    def build(self) -> None:
        cfg, d, e = self.method_config, self.backbone.d_model, self.method_config.hyper_embed_dim
        self.lower_adapters = attach_shared_lower_adapters(self)
        self.retriever = InstanceRetriever(d, cfg.retriever_hidden_dim, e)
        self.prototypes = PrototypeBank(len(cfg.tasks), e)
        self.hypernet = upper_adapter_hypernet(self, e, e, per_site=cfg.hypernet_per_layer)
        attach_generated_upper_adapters(self)

    def at_split(self, ctx: Context, hidden: torch.Tensor) -> None:
        mask = expand_rows(ctx.pool_mask, hidden.shape[0])
        # z feeds only the contrastive losses and retrieval: detached, those losses cannot
        # move the lower adapters (the task loss still reaches them via the upper half).
        detach = self.method_config.contrastive_trains != "all"
        ctx.z = self.retriever(hidden.detach() if detach else hidden, mask)
        if ctx.stop_at_split:
            return
        if ctx.task_ids is None:  # inference without a task: the nearest prototype
            ctx.task_ids = self.prototypes.nearest(ctx.z)[0]
        # Weights depend only on (task, layer): generate them once per task in the batch.
        tasks, ctx.index = tasks_in_batch(ctx.task_ids, len(self.tasks))
        ctx.weights = per_site(self.hypernet(self.prototypes(tasks)))

    def aux_losses(self, ctx: Context) -> dict[str, torch.Tensor]:
        cfg = self.method_config
        prototypes = self.prototypes.weight
        if cfg.contrastive_trains == "retriever":
            prototypes = prototypes.detach()
        z = ops.all_gather_with_grad(ctx.z)
        labels = ops.all_gather_with_grad(expand_rows(ctx.task_ids, ctx.z.shape[0]))
        ins = ops.supcon_loss(z, labels, cfg.temperature, backend=cfg.backend)
        pro = ops.prototype_loss(
            z,
            prototypes.to(z.dtype),
            labels,
            cfg.temperature,
            exclude_positive=cfg.exclude_positive,
            backend=cfg.backend,
        )
        return {"ins": cfg.ins_weight * ins, "pro": cfg.pro_weight * pro}

    @torch.no_grad()
    def add_task_conditioning(self, examples: dict[str, torch.Tensor], init: str) -> None:
        """A new prototype from the retriever's embeddings of the examples: a copy of the
        nearest source prototype (init="nearest") or their mean direction (init="mean")."""
        z = self.embed(examples["input_ids"], examples.get("attention_mask"))
        self.prototypes.add(z, init)
