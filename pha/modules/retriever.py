"""PHA's instance-dense retriever: z = MLP(masked mean of the hidden states)."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the tokens where mask is nonzero: [B, T, d], [B, T] -> [B, d].

    Rows whose mask is all zero give 0 (not NaN)."""
    if mask is None:
        return hidden.mean(1)
    if mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"mask must have shape {list(hidden.shape[:2])} (the hidden states' [B, T]), "
            f"got {list(mask.shape)}"
        )
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class InstanceRetriever(nn.Module):
    """Masked mean pool, then MLP: Linear(d, hidden) -> ReLU -> Linear(hidden, out)."""

    def __init__(self, d_model: int, hidden_dim: int = 128, out_dim: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pooled = masked_mean(hidden, mask)
        return self.mlp(pooled.to(self.mlp[0].weight.dtype))
