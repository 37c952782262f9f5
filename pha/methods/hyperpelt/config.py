"""HyperPELTConfig: HyperPELT (Zhang et al., Findings of ACL 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...ops.reference import ACTIVATIONS
from ..base import MethodConfig


@dataclass
class HyperPELTConfig(MethodConfig):
    """HyperPELT (docs/METHOD.md): one shared hypernetwork turns a hyper-embedding
    [task ; layer ; block (; visual)] into prefix-tuning keys/values for every attention
    module and into the weights of a parallel FFN adapter in every layer. Trainable: the
    hypernetwork, the embeddings and the backbone's layer norms (+ encoder heads).

    Blocks (the "block" embedding): 0 = self-attention, 1 = cross-attention (T5
    decoder), 2 = FFN adapter. Layers count the encoder's, then the decoder's (T5).
    The adapter sits parallel to the FFN, as in MAM adapters (He et al., 2022), whose
    prefix-plus-FFN-adapter design HyperPELT generates with its hypernetwork.

    prefix_length: P, the key/value vectors prepended to every attention layer (16).
    cross_attention_prefix: also prefix T5's decoder cross-attention (True).
    adapter_dim: the FFN adapters' bottleneck r (64).
    adapter_activation: the adapters' activation ("relu").
    task_embed_dim: width of the learned task embeddings (64).
    site_embed_dim: width of the layer and block embeddings (64; the hypernetwork
        gives every site axis one width).
    visual_dim: width of an optional per-instance conditioning vector (vision-and-
        language: image features), passed to forward / generate as
        `visual_features` [B, visual_dim]; None for text-only. With them, the generated
        prefixes and adapters are instance-specific; calls without them (text-only
        tasks) use a zero visual embedding and per-task weights.
    visual_embed_dim: width of the visual embedding Linear(visual_dim, .) joining the
        hyper-embedding (64).
    hypernet_hidden_dim, hypernet_out_dim: the hypernetwork trunk widths (128, 64).
    hypernet_init: "hyperfanin" (heads start near 0: tiny prefixes and adapters) or
        "normal" (every Linear N(0, 1e-2)).
    split_layer is unused (HyperPELT has no lower / upper halves).
    """

    method: ClassVar[str] = "hyperpelt"
    prefix_length: int = 16
    cross_attention_prefix: bool = True
    adapter_dim: int = 64
    adapter_activation: str = "relu"
    task_embed_dim: int = 64
    site_embed_dim: int = 64
    visual_dim: int | None = None
    visual_embed_dim: int = 64
    hypernet_hidden_dim: int = 128
    hypernet_out_dim: int = 64
    hypernet_init: str = "hyperfanin"

    def __post_init__(self):
        super().__post_init__()
        sizes = {
            "prefix_length": self.prefix_length,
            "adapter_dim": self.adapter_dim,
            "task_embed_dim": self.task_embed_dim,
            "site_embed_dim": self.site_embed_dim,
            "visual_embed_dim": self.visual_embed_dim,
            "hypernet_hidden_dim": self.hypernet_hidden_dim,
            "hypernet_out_dim": self.hypernet_out_dim,
        }
        for name, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.visual_dim is not None and (
            not isinstance(self.visual_dim, int) or self.visual_dim < 1
        ):
            raise ValueError(f"visual_dim must be None or an integer >= 1, got {self.visual_dim!r}")
        if self.adapter_activation not in ACTIVATIONS:
            raise ValueError(
                f"adapter_activation must be one of {ACTIVATIONS}, got {self.adapter_activation!r}"
            )
