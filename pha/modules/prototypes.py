"""PHA's task prototypes: one learned embedding per task, cosine nearest-prototype look-up."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PrototypeBank(nn.Module):
    """K prototypes P [K, e], N(0, 1) init. `weight` is the parameter (name: ...prototypes.weight)."""

    def __init__(self, num_prototypes: int, dim: int = 64):
        super().__init__()
        if num_prototypes <= 0 or dim <= 0:
            raise ValueError(f"num_prototypes and dim must be > 0, got {num_prototypes}, {dim}")
        self.weight = nn.Parameter(torch.randn(num_prototypes, dim))

    def __len__(self) -> int:
        return self.weight.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids]

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every row of z [B, e] with every prototype: [B, K]."""
        return F.normalize(z.float(), dim=-1) @ F.normalize(self.weight.float(), dim=-1).T

    def nearest(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [B], scores [B, K]): the prototype of highest cosine similarity per row."""
        s = self.scores(z)
        return s.argmax(-1), s

    @torch.no_grad()
    def add(self, z: torch.Tensor, init: str = "nearest") -> int:
        """Append a prototype for a new task from its examples' embeddings z [n, e]; returns
        its id. init="nearest": a copy of the existing prototype nearest (cosine) to the mean
        of the normalised z's; init="mean": that mean direction, scaled to the existing
        prototypes' average norm (the hypernetwork consumes raw prototypes, so the new one
        should have a familiar scale)."""
        if z.dim() != 2 or z.shape[0] == 0 or z.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"z must have shape [n >= 1, {self.weight.shape[1]}], got {list(z.shape)}"
            )
        direction = F.normalize(z.float(), dim=-1).mean(0)
        if init == "nearest":
            new = self.weight[self.nearest(direction[None])[0][0]].clone()
        elif init == "mean":
            new = F.normalize(direction, dim=0) * self.weight.norm(dim=-1).mean()
        else:
            raise ValueError(f"init must be 'nearest' or 'mean', got {init!r}")
        self.weight = nn.Parameter(torch.cat([self.weight.data, new[None].to(self.weight)]))
        return len(self) - 1
