"""HyperFormerConfig: HyperFormer++ (Karimi Mahabadi et al., ACL 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import MethodConfig


@dataclass
class HyperFormerConfig(MethodConfig):
    """HyperFormer++ (docs/METHOD.md): adapters + LayerNorms generated from
    [task embedding ; layer embedding ; position embedding] after the attention output
    and after the FFN output of every layer (each stack has its own hypernetwork); the
    backbone's own layer norms are trained too.

    adapter_dim: bottleneck r; None gives d_model // 32 (the paper's reduction factor).
    embed_dim: e, the task / layer / position embedding width (64).
    hypernet_hidden_dim, hypernet_out_dim: trunk widths (128, 64).
    activation: the adapter non-linearity ("gelu", tanh form, as in the paper).
    train_layer_norms: also train the backbone's LayerNorms (the paper does).
    norm_init: "normal" (the paper: the heads generating the post-adapter LayerNorm's
        gain and bias are N(0, 1e-2) like every other head) or "zero" (those two heads
        start at zero, so every adapter block starts as the identity).
    """

    method: ClassVar[str] = "hyperformer"
    adapter_dim: int | None = None
    embed_dim: int = 64
    hypernet_hidden_dim: int = 128
    hypernet_out_dim: int = 64
    activation: str = "gelu"
    train_layer_norms: bool = True
    norm_init: str = "normal"

    def __post_init__(self):
        super().__post_init__()
        if self.norm_init not in ("normal", "zero"):
            raise ValueError(f"norm_init: expected 'normal' or 'zero', got {self.norm_init!r}")
