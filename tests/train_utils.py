"""Helpers for the data / train tests: tiny random backbones with a character-level
tokenizer (built offline), the per-session download cache, and running pha.train."""

from __future__ import annotations

import os
import signal
import string
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_CHARS = list(string.ascii_lowercase + string.digits + string.punctuation)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + _CHARS + ["##" + c for c in _CHARS]


def tiny_tokenizer():
    """A lowercase character-level WordPiece tokenizer (BERT conventions: [CLS] ... [SEP])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tk.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
    )


def save_tiny_backbone(path: Path, kind: str = "encoder") -> Path:
    """A tiny random BERT / T5 / LLaMA (no dropout) + the tiny tokenizer, saved at path."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    n = len(VOCAB)
    if kind == "encoder":
        model = BertModel(
            BertConfig(
                vocab_size=n,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=128,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
            )  # fmt: skip
        )
    elif kind == "seq2seq":
        model = T5ForConditionalGeneration(
            T5Config(
                vocab_size=n,
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                dropout_rate=0.0,
                pad_token_id=0,
                eos_token_id=3,
                decoder_start_token_id=0,
            )  # fmt: skip
        )
    elif kind == "decoder":
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=n,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=256,
                pad_token_id=0,
                bos_token_id=2,
                eos_token_id=3,
            )  # fmt: skip
        )
    else:
        raise ValueError(kind)
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def pha_cache(tmp_path_factory):
    """A per-session download cache (PHA_CACHE) shared by the tests and their subprocesses.
    PHA_TEST_CACHE names a cache to reuse across sessions instead."""
    path = os.environ.get("PHA_TEST_CACHE") or str(tmp_path_factory.mktemp("pha_cache"))
    old = os.environ.get("PHA_CACHE")
    os.environ["PHA_CACHE"] = path
    yield Path(path)
    if old is None:
        del os.environ["PHA_CACHE"]
    else:
        os.environ["PHA_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_backbone(tmp_path_factory.mktemp("tiny_bert"), "encoder")


def run_train(
    args: list[str],
    cache: Path,
    launcher: list[str] | None = None,
    entry: tuple[str, ...] = ("-m", "pha.train"),
    **kw,
) -> subprocess.CompletedProcess:
    """python -m pha.train in a subprocess (launcher: e.g. torchrun's argv prefix; entry: a
    script that runs pha.train instead of the module)."""
    env = {**os.environ, "PHA_CACHE": str(cache), "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1"}
    cmd = (launcher or [sys.executable]) + [*entry, *args]
    # A session of its own, so that a timeout ends torchrun's workers too.
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kw)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"pha.train timed out: {err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
