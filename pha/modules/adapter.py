"""Bottleneck adapters with learned weights: one set shared by all instances (two plain
GEMMs: the floor every generated-adapter method is measured against), or one set per
task selected by index (pha.ops.hyper_adapter, on the configured backend)."""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..ops.reference import activate


class Adapter(nn.Module):
    """`act(x @ w_down[g] + b_down[g]) @ w_up[g] + b_up[g]` with `num_sets` weight sets.

    With num_sets=1 every instance uses the one set (a plain shared adapter); with one set
    per task, `forward(x, index=task_ids)` picks each instance's set.
    Init (PHA's lower half): xavier_uniform with a tiny gain, biases 0, so that the
    adapter starts close to zero and the frozen model's function is kept.
    """

    def __init__(
        self,
        d_model: int,
        bottleneck: int,
        num_sets: int = 1,
        activation: str = "relu",
        init_gain: float = 1e-4,
        backend: str | None = None,
    ):
        super().__init__()
        if d_model <= 0 or bottleneck <= 0 or num_sets <= 0:
            raise ValueError(
                f"d_model, bottleneck and num_sets must be > 0, got {d_model}, {bottleneck}, {num_sets}"
            )
        self.activation, self.backend = activation, backend
        self.w_down = nn.Parameter(torch.empty(num_sets, d_model, bottleneck))
        self.b_down = nn.Parameter(torch.zeros(num_sets, bottleneck))
        self.w_up = nn.Parameter(torch.empty(num_sets, bottleneck, d_model))
        self.b_up = nn.Parameter(torch.zeros(num_sets, d_model))
        for w in (self.w_down, self.w_up):
            for i in range(num_sets):  # per set: fans of one [d, r] matrix, not of the stack
                nn.init.xavier_uniform_(w.data[i], gain=init_gain)

    @property
    def num_sets(self) -> int:
        return self.w_down.shape[0]

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, d]; index [B] of set ids (required when num_sets > 1)."""
        if index is None:
            if self.num_sets != 1:
                raise ValueError(
                    f"this adapter has {self.num_sets} weight sets: pass index=LongTensor[B]"
                )
            w_down, b_down, w_up, b_up = (
                p[0].to(x.dtype) for p in (self.w_down, self.b_down, self.w_up, self.b_up)
            )
            return activate(x @ w_down + b_down, self.activation) @ w_up + b_up
        return ops.hyper_adapter(
            x,
            self.w_down.to(x.dtype),
            self.b_down.to(x.dtype),
            self.w_up.to(x.dtype),
            self.b_up.to(x.dtype),
            index=index,
            activation=self.activation,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        g, d, r = self.w_down.shape
        return f"d_model={d}, bottleneck={r}, num_sets={g}, activation={self.activation!r}"
