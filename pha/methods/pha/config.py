"""PHAConfig: Prototype-based HyperAdapter (Zhao, Fu, He, EMNLP 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import MethodConfig


@dataclass
class PHAConfig(MethodConfig):
    """PHA (docs/METHOD.md): lower-half shared adapters, an instance retriever at the split,
    task prototypes, and upper-half adapters generated from (prototype, layer).

    adapter_dim: adapter bottleneck r (64).
    hyper_embed_dim: e, the width of z, the prototypes and the layer embeddings (64).
    retriever_hidden_dim: the retriever MLP's hidden width (128).
    hypernet_hidden_dim, hypernet_out_dim: the hypernetwork trunk widths (128, 64).
    hypernet_per_layer: one hypernetwork per upper layer instead of one shared one.
    lower_init_gain: xavier_uniform gain of the lower-half adapters (1e-4).
    temperature: tau of both contrastive losses (0.1).
    ins_weight, pro_weight: weights of L_ins and L_pro in the total loss (0.1, 0.1).
    exclude_positive: L_pro leaves the positive prototype out of the denominator (the
        release); False gives standard InfoNCE.
    detach_retriever: the retriever reads the split's hidden state detached, so the
        contrastive losses train the retriever and the prototypes but not the lower
        adapters (False: they train all three, as the release; see docs/TRAINING.md).
    """

    method: ClassVar[str] = "pha"
    adapter_dim: int = 64
    hyper_embed_dim: int = 64
    retriever_hidden_dim: int = 128
    hypernet_hidden_dim: int = 128
    hypernet_out_dim: int = 64
    hypernet_per_layer: bool = False
    lower_init_gain: float = 1e-4
    temperature: float = 0.1
    ins_weight: float = 0.1
    pro_weight: float = 0.1
    exclude_positive: bool = True
    detach_retriever: bool = False
