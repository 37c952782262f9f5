"""Tiny random HF backbones built from configs (no downloads) for the method tests."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

VOCAB, D = 64, 32
FAMILIES = ("t5", "bert", "llama", "gpt2")
LAYERS = {"t5": (2, 2), "bert": 4, "llama": 4, "gpt2": 4}  # T5: encoder, decoder


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "t5":
        cfg = T5Config(
            vocab_size=VOCAB, d_model=D, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
            num_decoder_layers=2, dropout_rate=0.0, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=1,
        )  # fmt: skip
        model = T5ForConditionalGeneration(cfg)
    elif family == "bert":
        cfg = BertConfig(
            vocab_size=VOCAB, hidden_size=D, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=48, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        model = BertModel(cfg, add_pooling_layer=False)
    elif family == "llama":
        cfg = LlamaConfig(
            vocab_size=VOCAB, hidden_size=D, intermediate_size=48, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            pad_token_id=0, bos_token_id=2, eos_token_id=1,
        )  # fmt: skip
        model = LlamaForCausalLM(cfg)
    elif family == "gpt2":
        cfg = GPT2Config(
            vocab_size=VOCAB, n_embd=D, n_layer=4, n_head=4, n_positions=64, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=2, eos_token_id=1, pad_token_id=0,
        )  # fmt: skip
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(family)
    return model.eval()


def batch(family: str, b: int = 6, t: int = 7, seed: int = 1, task_ids=None):
    """input_ids, attention_mask (padded rows), labels for `family`."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t - 2 :] = 0  # right padding in one row
    if family in ("llama", "gpt2"):
        mask[0] = 1
        mask[1, :2] = 0  # left padding, as in decoder-only generation
    input_ids = input_ids.masked_fill(mask == 0, 0)
    if family == "bert":
        labels = torch.randint(0, 2, (b,), generator=g)
    elif family == "t5":
        labels = torch.randint(3, VOCAB, (b, 4), generator=g)
        labels[0, 3] = -100
    else:
        labels = input_ids.masked_fill(mask == 0, -100)
        labels[:, : t // 2] = -100  # the prompt: the retriever pools these tokens
    return input_ids, mask, labels
