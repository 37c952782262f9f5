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
    contrastive_trains: what L_ins and L_pro move. "all" (the release): the lower
        adapters (through z), the retriever and the prototypes. "retriever_prototypes":
        not the lower adapters (z reads the split's hidden state detached).
        "retriever": the retriever alone, so the features and the prototypes that
        condition the hypernetwork learn from the task loss only, while the retriever
        still learns to find each task's prototype (inference without task ids, few-shot
        initialisation). pha.train uses "retriever": chosen on validation
        (docs/TRAINING.md).
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
    contrastive_trains: str = "all"

    CONTRASTIVE_TRAINS: ClassVar[tuple[str, ...]] = ("all", "retriever_prototypes", "retriever")

    def __post_init__(self):
        super().__post_init__()
        if self.contrastive_trains not in self.CONTRASTIVE_TRAINS:
            raise ValueError(
                f"contrastive_trains: expected one of {self.CONTRASTIVE_TRAINS}, "
                f"got {self.contrastive_trains!r}"
            )
