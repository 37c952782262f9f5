"""Which HF models pha supports and where their blocks are: `detect_family` tells a model's
family by structure, `attach` describes its attach points as a `Backbone`."""

from __future__ import annotations

from torch import nn

from .backbone import Backbone, LayerSites

SUPPORTED = {
    "t5": "T5-family encoder-decoders (T5ForConditionalGeneration, MT5, ...): split encoder | decoder",
    "bert": "BERT-family encoders (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM, ...)",
    "llama": "LLaMA-family decoder-only *ForCausalLM (LLaMA, Mistral, Qwen2, SmolLM2, ...)",
    "gpt2": "GPT-2 (GPT2LMHeadModel)",
}
KINDS = {"t5": "seq2seq", "bert": "encoder", "llama": "decoder", "gpt2": "decoder"}


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
