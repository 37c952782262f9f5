"""Where the methods attach to Hugging Face models: T5, BERT-family, LLaMA-family, GPT-2.

Nothing is copied from the HF modeling code and no module is replaced: the adapters
attach with forward hooks on the models' own submodules (found by structure and name),
so every backbone parameter keeps its own name and the frozen function is untouched
when an adapter outputs 0.

The two placements (METHOD.md):
- parallel (PHA, HyperDecoders): h <- h + Dropout(FFN(LN(h))) + Adapter(LN(h)), i.e. the
  adapter reads the FFN's (normed) input and its output joins the residual sum without
  dropout.
  * T5 (pre-LN): LN(h) is T5LayerFF.layer_norm's output; the adapter output is added to
    T5LayerFF's output (h + Dropout(FFN(LN h))).
  * LLaMA / GPT-2 (pre-LN): LN(h) is the MLP's input; the adapter output is added to the
    MLP's output (GPT-2's dropout is inside its MLP, so the adapter branch skips it).
  * BERT (post-LN: a = LN1(h + Attn(h)); out = LN2(a + Dropout(FFN(a)))): the FFN input
    `a` is already the output of a LayerNorm, so "LN(h)" is `a`; the adapter output joins
    the residual *inside* LN2: out = LN2(a + Dropout(FFN(a)) + Adapter(a)) (the same
    place as He et al.'s parallel adapters in post-LN models). Implemented by adding it
    to the `input_tensor` argument of BertOutput.
- serial (HyperFormer++): y <- y + f(y) on the output projection of the attention and of
  the FFN, before dropout and the sublayer residual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

SUPPORTED = {
    "t5": "T5-family encoder-decoders (T5ForConditionalGeneration, MT5, ...): split encoder | decoder",
    "bert": "BERT-family encoders (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, ...)",
    "llama": "LLaMA-family decoder-only *ForCausalLM (LLaMA, Mistral, Qwen2, SmolLM2, ...)",
    "gpt2": "GPT-2 (GPT2LMHeadModel)",
}
KINDS = {"t5": "seq2seq", "bert": "encoder", "llama": "decoder", "gpt2": "decoder"}

AdapterFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LayerSites:
    """The attach points of one transformer block."""

    stack: str  # "encoder" or "decoder"
    index: int  # position within its stack
    block: nn.Module
    attention: nn.Module  # the block's self-attention module (for prefixes)
    attention_out: nn.Module  # the attention's output projection (serial adapters)
    ffn_out: nn.Module  # the FFN's output projection (serial adapters)
    ffn: nn.Module  # the module whose input is the FFN input LN(h)


@dataclass
class Backbone:
    """A supported HF model and its attach points.

    layers: every block in execution order (T5: encoder blocks, then decoder blocks);
    split: how many of them form the lower half (T5: the encoder).
    """

    model: nn.Module
    family: str
    kind: str
    d_model: int
    layers: list[LayerSites]
    split: int
    handles: list[RemovableHandle] = field(default_factory=list)

    @property
    def lower(self) -> list[LayerSites]:
        return self.layers[: self.split]

    @property
    def upper(self) -> list[LayerSites]:
        return self.layers[self.split :]

    def stack(self, name: str) -> list[LayerSites]:
        return [layer for layer in self.layers if layer.stack == name]

    @property
    def stacks(self) -> list[str]:
        return list(dict.fromkeys(layer.stack for layer in self.layers))

    def add_parallel_adapter(self, layer: LayerSites, fn: AdapterFn) -> None:
        """h <- h + Dropout(FFN(LN h)) + fn(LN h) (see the module docstring per family)."""
        if self.family == "t5":
            ff = layer.block.layer[-1]
            captured: list[torch.Tensor] = []
            self._keep(ff.layer_norm.register_forward_hook(lambda m, a, out: captured.append(out)))
            self._keep(ff.register_forward_hook(lambda m, a, out: out + fn(captured.pop())))
        elif self.family == "bert":

            def pre_hook(module, args, kwargs):
                if len(args) >= 2:
                    return (args[0], args[1] + fn(args[1]), *args[2:]), kwargs
                a = kwargs["input_tensor"]
                return args, {**kwargs, "input_tensor": a + fn(a)}

            self._keep(layer.block.output.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:  # llama, gpt2: the MLP's input is LN(h) and its output joins the residual
            self._keep(layer.ffn.register_forward_hook(lambda m, a, out: out + fn(a[0])))

    def add_serial_adapter(self, module: nn.Module, fn: AdapterFn) -> None:
        """y <- y + fn(y) on `module`'s output (an output projection)."""
        self._keep(module.register_forward_hook(lambda m, a, out: out + fn(out)))

    def on_split(self, fn: Callable[[torch.Tensor], None]) -> None:
        """Call fn(h_split) with the hidden states where the halves meet: T5's encoder
        output, otherwise the output of the last lower-half layer."""
        module = self.model.encoder if self.family == "t5" else self.lower[-1].block

        def hook(m, args, out):
            fn(_first_tensor(out))

        self._keep(module.register_forward_hook(hook))

    def layer_norms(self) -> list[nn.Module]:
        """The backbone's normalisation modules (LayerNorm, T5LayerNorm, RMSNorm)."""
        return [
            m
            for m in self.model.modules()
            if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))
        ]

    def _keep(self, handle: RemovableHandle) -> None:
        self.handles.append(handle)


def _first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0]


def _t5_layers(model) -> list[LayerSites]:
    layers = []
    for stack in ("encoder", "decoder"):
        for i, block in enumerate(getattr(model, stack).block):
            ff = block.layer[-1]
            attn = block.layer[0].SelfAttention
            layers.append(LayerSites(stack, i, block, attn, attn.o, ff.DenseReluDense.wo, ff))
    return layers


def _bert_layers(base) -> list[LayerSites]:
    return [
        LayerSites(
            "encoder",
            i,
            blk,
            blk.attention.self,
            blk.attention.output.dense,
            blk.output.dense,
            blk.intermediate,
        )
        for i, blk in enumerate(base.encoder.layer)
    ]


def _llama_layers(base) -> list[LayerSites]:
    return [
        LayerSites(
            "decoder", i, blk, blk.self_attn, blk.self_attn.o_proj, blk.mlp.down_proj, blk.mlp
        )
        for i, blk in enumerate(base.layers)
    ]


def _gpt2_layers(base) -> list[LayerSites]:
    return [
        LayerSites("decoder", i, blk, blk.attn, blk.attn.c_proj, blk.mlp.c_proj, blk.mlp)
        for i, blk in enumerate(base.h)
    ]


def detect_family(model: nn.Module) -> str:
    """The family of a HF model, by structure; a clear error for anything else."""
    base = getattr(model, "base_model", model)
    if hasattr(model, "encoder") and hasattr(model, "decoder") and hasattr(model.encoder, "block"):
        if hasattr(model.encoder.block[0].layer[-1], "DenseReluDense"):
            return "t5"
    encoder = getattr(base, "encoder", None)
    layer = getattr(encoder, "layer", None)
    if (
        layer is not None
        and len(layer)
        and all(hasattr(layer[0], a) for a in ("attention", "intermediate", "output"))
    ):
        return "bert"
    layers = getattr(base, "layers", None)
    if (
        layers is not None
        and len(layers)
        and hasattr(layers[0], "mlp")
        and hasattr(layers[0], "self_attn")
    ):
        if hasattr(layers[0].mlp, "down_proj") and hasattr(layers[0], "post_attention_layernorm"):
            return "llama"
    h = getattr(base, "h", None)
    if h is not None and len(h) and hasattr(h[0], "ln_2") and hasattr(h[0], "mlp"):
        return "gpt2"
    supported = "\n  ".join(SUPPORTED.values())
    raise ValueError(
        f"unsupported backbone {type(model).__name__} "
        f"(model_type={getattr(getattr(model, 'config', None), 'model_type', None)!r}); "
        f"pha supports:\n  {supported}"
    )


def attach(model: nn.Module, split_layer: int | None = None) -> Backbone:
    """Describe `model`'s attach points. split_layer: how many layers form the lower half
    (encoder-only and decoder-only models; default half of them, rounded down). T5
    always splits at encoder | decoder."""
    family = detect_family(model)
    kind = KINDS[family]
    base = getattr(model, "base_model", model)
    if kind in ("seq2seq", "decoder") and not hasattr(model, "lm_head"):
        raise ValueError(
            f"a {family} backbone must come with its LM head (e.g. "
            f"{'T5ForConditionalGeneration' if family == 't5' else 'AutoModelForCausalLM'}), "
            f"got {type(model).__name__}"
        )
    layers = {"t5": _t5_layers, "bert": _bert_layers, "llama": _llama_layers, "gpt2": _gpt2_layers}[
        family
    ](model if family == "t5" else base)
    if family == "t5":
        if split_layer is not None:
            raise ValueError("split_layer must be None for T5 (it splits at encoder | decoder)")
        split = len(model.encoder.block)
    else:
        split = len(layers) // 2 if split_layer is None else split_layer
        if not 1 <= split < len(layers):
            raise ValueError(f"split_layer must lie in [1, {len(layers) - 1}], got {split}")
    cfg = model.config
    d_model = getattr(cfg, "d_model", None) or cfg.hidden_size
    return Backbone(model, family, kind, d_model, layers, split)
