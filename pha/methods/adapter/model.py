"""Plain adapters, shared or per task, in every layer."""

from __future__ import annotations

from torch import nn

from ...modules import Adapter
from ...peft_model import PHAModel
from ..base import expand_rows, register
from .config import AdapterConfig


@register
class AdapterModel(PHAModel):
    """Parameters: adapters.<layer>.{w_down,b_down,w_up,b_up} (+ heads)."""

    config_class = AdapterConfig

    @property
    def needs_task_ids(self) -> bool:  # type: ignore[override]
        return self.method_config.per_task

    def build(self) -> None:
        cfg, bb = self.method_config, self.backbone
        sets = len(cfg.tasks) if cfg.per_task else 1
        self.adapters = nn.ModuleList(
            Adapter(bb.d_model, cfg.adapter_dim, sets, cfg.activation, cfg.init_gain, cfg.backend)
            for _ in bb.layers
        )
        for layer, adapter in zip(bb.layers, self.adapters):
            bb.add_parallel_adapter(layer, self._run(adapter))

    def _run(self, adapter: Adapter):
        if not self.method_config.per_task:
            return adapter

        def fn(x):
            return adapter(x, expand_rows(self.ctx().task_ids, x.shape[0]))

        return fn
