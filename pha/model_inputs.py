"""Argument checks of the model API (forward, generate, retrieve, add_task): a clear
TypeError / ValueError naming the argument before torch or transformers see it."""

from __future__ import annotations

import torch


def _integer_tensor(name: str, t: object, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor {what}, got {t.dtype}")
    return t


def check_tokens(
    input_ids: object, attention_mask: object | None, vocab_size: int, name: str = "input_ids"
) -> None:
    """input_ids: an integer tensor [B, T] (B, T >= 1) of ids in [0, vocab_size);
    attention_mask: None or a tensor of the same shape."""
    _integer_tensor(name, input_ids, "[B, T]")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape [B, T], got {list(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise ValueError(
            f"{name}: expected at least one instance and one token, got shape {list(input_ids.shape)}"
        )
    if not torch.compiler.is_compiling():  # data-dependent: it would break a compiled graph
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name} values must lie in [0, {vocab_size}) (the backbone's vocabulary), got "
                f"min {lo}, max {hi}"
            )
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(
                f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}"
            )
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of {name} {list(input_ids.shape)}, "
                f"got {list(attention_mask.shape)}"
            )


def check_labels(labels: object, batch: int, kind: str) -> None:
    """labels: class ids [B] (encoder backbones) or token ids [B, L] (-100 ignored)."""
    what = "[B] of class ids" if kind == "encoder" else "[B, L] of token ids"
    _integer_tensor("labels", labels, what)
    if labels.dim() == 0 or labels.shape[0] != batch:
        raise ValueError(
            f"labels must have one row per instance of input_ids ({batch}), got "
            f"{labels.shape[0] if labels.dim() else 'a scalar'}"
        )
    if kind == "encoder" and labels.dim() != 1:
        raise ValueError(
            f"labels must have shape [B] = [{batch}] (one class id per instance), "
            f"got {list(labels.shape)}"
        )
    if kind != "encoder" and labels.dim() != 2:
        raise ValueError(f"labels must have shape [B, L] (token ids), got {list(labels.shape)}")


def check_examples(examples: object, vocab_size: int) -> None:
    """add_task's examples: {"input_ids": [K, T], "attention_mask": [K, T] (optional)}."""
    if not isinstance(examples, dict) or "input_ids" not in examples:
        got = sorted(examples) if isinstance(examples, dict) else type(examples).__name__
        raise ValueError(
            "examples must hold input_ids (an integer tensor [K, T] of K >= 1 tokenised "
            f"examples) and optionally attention_mask, got {got}"
        )
    check_tokens(examples["input_ids"], examples.get("attention_mask"), vocab_size)
