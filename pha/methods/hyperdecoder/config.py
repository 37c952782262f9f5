"""HyperDecoderConfig: Hyperdecoders (Ivison & Peters, 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import MethodConfig


@dataclass
class HyperDecoderConfig(MethodConfig):
    """HyperDecoders (docs/METHOD.md): PHA's two halves, but every instance gets its own
    upper-half adapters, generated from MLP(mean_pool(h_split)) (MLP d -> d -> d) and a
    layer embedding; no prototypes, no contrastive losses.

    adapter_dim: bottleneck r (64).
    layer_embed_dim: width of the layer embedding (10).
    hypernet_hidden_dim: width of the generator's hidden layer (128).
    hypernet_out_dim: None (the HyperDecoders release: Linear(d + 10, hidden) -> ReLU, the
        weight heads read the ReLU output), or a width: a second Linear(hidden, out) and a
        LayerNorm before the heads, as in PHA's generator.
    lower_init_gain: xavier_uniform gain of the lower-half shared adapters (1e-4).
    """

    method: ClassVar[str] = "hyperdecoder"
    adapter_dim: int = 64
    layer_embed_dim: int = 10
    hypernet_hidden_dim: int = 128
    hypernet_out_dim: int | None = None
    lower_init_gain: float = 1e-4
