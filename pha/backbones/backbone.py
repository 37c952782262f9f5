"""A supported HF model's attach points (`Backbone`, `LayerSites`) and the hooks that attach
adapters there.

Nothing is copied from the HF modeling code and no module is replaced: the adapters
attach with forward hooks on the models' own submodules (found by structure and name),
so every backbone parameter keeps its own name and the frozen function is untouched
when an adapter outputs 0.

The two placements (docs/METHOD.md):
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
from typing import Protocol

import torch
from torch import nn

AdapterFn = Callable[[torch.Tensor], torch.Tensor]


class Removable(Protocol):
    """A hook handle or anything else a Backbone can undo."""

    def remove(self) -> None: ...


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
    enabled: bool = True  # False: every hook lets the model run as if it were not there
    attached: list[Removable] = field(default_factory=list)

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
            self._hook(ff.layer_norm, lambda m, a, out: captured.append(out))
            self._hook(ff, lambda m, a, out: out + fn(captured.pop()))
        elif self.family == "bert":

            def pre_hook(module, args, kwargs):
                if len(args) >= 2:
                    return (args[0], args[1] + fn(args[1]), *args[2:]), kwargs
                a = kwargs["input_tensor"]
                return args, {**kwargs, "input_tensor": a + fn(a)}

            self._hook(layer.block.output, pre_hook, pre=True)
        else:  # llama, gpt2: the MLP's input is LN(h) and its output joins the residual
            self._hook(layer.ffn, lambda m, a, out: out + fn(a[0]))

    def add_serial_adapter(self, module: nn.Module, fn: AdapterFn) -> None:
        """y <- y + fn(y) on `module`'s output (an output projection)."""
        self._hook(module, lambda m, a, out: out + fn(out))

    def on_split(self, fn: Callable[[torch.Tensor], None]) -> None:
        """Call fn(h_split) with the hidden states where the halves meet: T5's encoder
        output, otherwise the output of the last lower-half layer."""
        module = self.model.encoder if self.family == "t5" else self.lower[-1].block
        self._hook(module, lambda m, args, out: fn(_first_tensor(out)))

    def layer_norms(self) -> list[nn.Module]:
        """The backbone's normalisation modules (LayerNorm, T5LayerNorm, RMSNorm)."""
        return [
            m
            for m in self.model.modules()
            if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))
        ]

    def keep(self, attachment: Removable) -> None:
        """Let remove() undo `attachment` too (e.g. a PrefixInjector)."""
        self.attached.append(attachment)

    def remove(self) -> None:
        """Detach every hook and attachment: the model runs as before it was attached."""
        while self.attached:
            self.attached.pop().remove()

    def _hook(self, module: nn.Module, hook: Callable, pre: bool = False) -> None:
        """Register a forward hook (pre=True: a forward pre-hook with kwargs) that does
        nothing while the backbone is disabled."""

        def gated(*args):
            return hook(*args) if self.enabled else None

        if pre:
            self.keep(module.register_forward_pre_hook(gated, with_kwargs=True))
        else:
            self.keep(module.register_forward_hook(gated))


def _first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out[0]
