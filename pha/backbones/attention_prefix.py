"""Per-instance key/value prefixes for the attention layers of HF transformers (5.x).

Prefix-tuning gives every attention layer P extra learned key/value vectors that each
query may attend to. Here they are injected through transformers' own extension point,
the AttentionInterface: the backbone's attention implementation is switched to
"pha_prefix_<base>" (base = the one it used, "sdpa" or "eager"), a function that, when
the calling attention module holds a prefix, concatenates it in front of the keys and
values and extends the mask (and T5's relative position bias) by P always-visible
columns, then calls the base implementation. No HF modeling code is copied, and:

- The prefix joins *after* the KV cache update and after RoPE, so caches hold only real
  tokens and positions are untouched: real tokens keep positions 0..T-1 (LLaMA's RoPE,
  GPT-2's absolute positions, T5's relative buckets); prefix keys carry no position
  (zero relative bias in T5, no rotation in LLaMA).
- Works in training forward and in `generate` (greedy, beam): generation expands the
  batch with repeat_interleave (num_beams / num_return_sequences copies of each
  instance, contiguous), and beam reordering never mixes instances, so a prefix of batch
  B is repeated to the attention's batch B*n the same way.
- BERT-family models (no past_key_values in their encoders) take prefixes the same way.

Which modules get one (`attention_sites`): the innermost modules whose class name ends in
"Attention" (T5Attention, BertSelfAttention/BertCrossAttention, LlamaAttention,
GPT2Attention, ...). Cross-attention (T5's EncDecAttention, BERT/GPT-2 crossattention)
is included unless `cross_attention=False`: prefix-tuning for encoder-decoders (Li &
Liang 2021) prefixes every attention, and HyperPELT's hypernetwork generates "prefix
vectors in multi-head attention modules", of which a T5 decoder layer has two.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

_PREFIX_ATTR = "_pha_prefix"
_BASES = ("eager", "sdpa")
_NAME = "pha_prefix_{}"


@dataclass(frozen=True)
class PrefixSite:
    """One attention module that can take a prefix, and the shape its prefix must have."""

    name: str  # module path inside the backbone, e.g. "decoder.block.0.layer.1.EncDecAttention"
    module: nn.Module
    num_kv_heads: int
    head_dim: int
    cross: bool  # attends to encoder states (its keys come from another sequence)

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


def _first_attr(module: nn.Module, names: tuple[str, ...]) -> int:
    for name in names:
        value = getattr(module, name, None)
        if isinstance(value, int):
            return value
    raise TypeError(
        f"cannot tell the {names[0]} of {type(module).__name__}: none of {names} is an int attribute"
    )


def _kv_shape(module: nn.Module) -> tuple[int, int]:
    head_dim = _first_attr(module, ("head_dim", "attention_head_size", "key_value_proj_dim"))
    if hasattr(module, "num_key_value_groups"):  # grouped-query attention (LLaMA-family)
        return module.config.num_attention_heads // module.num_key_value_groups, head_dim
    return _first_attr(module, ("num_heads", "num_attention_heads", "n_heads")), head_dim


def attention_sites(model: nn.Module, cross_attention: bool = True) -> list[PrefixSite]:
    """The attention modules of an HF model, in module order (encoder before decoder)."""
    sites = []
    for name, module in model.named_modules():
        if not type(module).__name__.endswith("Attention"):
            continue
        if any(type(child).__name__.endswith("Attention") for child in module.children()):
            continue  # a wrapper (BertAttention, T5LayerSelfAttention): its child is the site
        cross = bool(getattr(module, "is_cross_attention", False)) or any(
            part in name.lower() for part in ("crossattention", "encdecattention")
        )
        if cross and not cross_attention:
            continue
        heads, head_dim = _kv_shape(module)
        sites.append(PrefixSite(name, module, heads, head_dim, cross))
    if not sites:
        raise TypeError(f"found no attention module in {type(model).__name__}")
    return sites


def _base_attention(module: nn.Module, base: str):
    if base == "sdpa":
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise TypeError(f"{type(module).__name__}'s modeling file has no eager_attention_forward")
    return eager


def _repeat_to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    if t.shape[0] == batch:
        return t
    if batch % t.shape[0]:
        raise ValueError(f"prefix batch {t.shape[0]} does not divide the attention batch {batch}")
    return t.repeat_interleave(batch // t.shape[0], dim=0)


def _full_mask(query: torch.Tensor, kv_length: int, causal: bool, base: str) -> torch.Tensor | None:
    """The mask HF left implicit (None): nothing masked, or causal aligned to the end."""
    q_length = query.shape[2]
    if not causal or q_length == 1:
        return None
    q_pos = torch.arange(q_length, device=query.device)[:, None] + (kv_length - q_length)
    allowed = (q_pos >= torch.arange(kv_length, device=query.device)[None, :])[None, None]
    if base == "sdpa":
        return allowed
    zero = torch.zeros((), dtype=query.dtype, device=query.device)
    return torch.where(allowed, zero, torch.finfo(query.dtype).min)


def _prepend_columns(t: torch.Tensor, p: int, value: float | bool) -> torch.Tensor:
    return torch.cat([t.new_full((*t.shape[:-1], p), value), t], dim=-1)


def _prefixed_attention(module, query, key, value, attention_mask, *args, base: str, **kwargs):
    attend = _base_attention(module, base)
    source = getattr(module, _PREFIX_ATTR, None)
    prefix = source() if source is not None else None
    if prefix is None:
        return attend(module, query, key, value, attention_mask, *args, **kwargs)
    prefix_key, prefix_value = (_repeat_to_batch(t, key.shape[0]).to(key.dtype) for t in prefix)
    p = prefix_key.shape[2]
    if attention_mask is None:
        attention_mask = _full_mask(query, key.shape[2], getattr(module, "is_causal", False), base)
    if attention_mask is not None:
        attention_mask = _prepend_columns(
            attention_mask, p, True if attention_mask.dtype == torch.bool else 0.0
        )
    if kwargs.get("position_bias") is not None:  # T5: prefix keys have no relative position
        kwargs["position_bias"] = _prepend_columns(kwargs["position_bias"], p, 0.0)
    key = torch.cat([prefix_key, key], dim=2)
    value = torch.cat([prefix_value, value], dim=2)
    return attend(module, query, key, value, attention_mask, *args, **kwargs)


@functools.cache
def _register() -> None:
    """Register "pha_prefix_<base>" with transformers (on first use: importing pha stays
    free of transformers); the masks are the base implementation's own."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    masks = {"eager": eager_mask, "sdpa": sdpa_mask}
    for base in _BASES:
        name = _NAME.format(base)
        AttentionInterface.register(
            name, lambda *a, _base=base, **k: _prefixed_attention(*a, base=_base, **k)
        )
        AttentionMaskInterface.register(name, masks[base])


class PrefixInjector:
    """Gives the attention modules `sites` of `model` the prefixes `source(i)` returns.

    source(i) is called by site i each time it runs and returns (keys, values), each
    [B, kv_heads, P, head_dim] (B may be the caller's batch before generation expanded
    it), or None for no prefix. It reads whatever per-call state its owner keeps, as the
    methods' adapters do. Switches the model to the "pha_prefix_<base>" attention
    implementation (without prefixes it computes exactly what the base one does);
    `remove()` switches back and removes the sources from the modules.
    """

    def __init__(
        self,
        model: nn.Module,
        sites: Sequence[PrefixSite],
        source: Callable[[int], tuple[torch.Tensor, torch.Tensor] | None],
    ):
        base = str(model.config._attn_implementation).removeprefix("pha_prefix_")
        if base not in _BASES:
            raise ValueError(
                f"prefixes need the model's attn_implementation to be one of {list(_BASES)}, got "
                f"{model.config._attn_implementation!r}; load it with attn_implementation='sdpa' (or 'eager')"
            )
        _register()
        self.model, self.sites, self.base = model, list(sites), base
        for i, site in enumerate(self.sites):
            setattr(site.module, _PREFIX_ATTR, functools.partial(_checked, source, i, site))
        name = _NAME.format(base)
        model.set_attn_implementation(name)
        # HF only warns when a model cannot switch: never let prefixes be silently ignored
        stale = [s.name for s in self.sites if s.module.config._attn_implementation != name]
        if stale:
            self.remove()
            raise TypeError(
                f"{type(model).__name__} did not route {stale[:3]} through the attention "
                "interface, so prefixes cannot reach them"
            )

    def remove(self) -> None:
        """Restore the base attention implementation; the sites take no prefix any more."""
        for site in self.sites:
            if hasattr(site.module, _PREFIX_ATTR):
                delattr(site.module, _PREFIX_ATTR)
        self.model.set_attn_implementation(self.base)


def _checked(source, i: int, site: PrefixSite):
    prefix = source(i)
    if prefix is not None:
        for which, t in zip(("keys", "values"), prefix):
            if t.dim() != 4 or t.shape[1] != site.num_kv_heads or t.shape[3] != site.head_dim:
                raise ValueError(
                    f"prefix {which} for {site.name} must have shape [B, {site.num_kv_heads}, P, "
                    f"{site.head_dim}], got {list(t.shape)}"
                )
    return prefix
