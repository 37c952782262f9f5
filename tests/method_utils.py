"""Method configs at tiny sizes, the trainable-parameter formulas of docs/METHOD.md, helpers."""

from __future__ import annotations

import pytest
import torch
from tiny_backbones import LAYERS, D

import pha

TASKS = ["sst", "nli", "para"]
NUM_LABELS = [2, 3, 2]
METHOD_NAMES = ("pha", "hyperformer", "hyperdecoder", "adapter", "adapter_per_task", "full")
CONDITIONED = ("pha", "hyperformer", "hyperdecoder", "adapter_per_task")

# small widths so that every formula term is distinguishable
R, E, H, OUT = 8, 16, 20, 12


def make_config(method: str, family: str, **overrides) -> pha.methods.MethodConfig:
    common = dict(tasks=list(TASKS), num_labels=list(NUM_LABELS) if family == "bert" else None)
    common.update(overrides)
    if method == "pha":
        return pha.PHAConfig(
            **common, adapter_dim=R, hyper_embed_dim=E, retriever_hidden_dim=24,
            hypernet_hidden_dim=H, hypernet_out_dim=OUT,
        )  # fmt: skip
    if method == "hyperformer":
        return pha.HyperFormerConfig(
            **common, embed_dim=E, hypernet_hidden_dim=H, hypernet_out_dim=OUT
        )
    if method == "hyperdecoder":
        return pha.HyperDecoderConfig(
            **common, adapter_dim=R, hypernet_hidden_dim=H, hypernet_out_dim=OUT
        )
    if method in ("adapter", "adapter_per_task"):
        return pha.AdapterConfig(**common, adapter_dim=R, per_task=method == "adapter_per_task")
    if method == "full":
        return pha.FullFinetuneConfig(**common)
    raise ValueError(method)


def halves(family: str) -> tuple[int, int]:
    layers = LAYERS[family]
    return layers if isinstance(layers, tuple) else (layers // 2, layers - layers // 2)


def adapter_params(d: int, r: int) -> int:
    return 2 * d * r + r + d


def heads_params(o: int, shapes: list[int]) -> int:
    """A hypernetwork's output heads: Linear(o, n) per generated tensor of n numbers."""
    return sum(o * n + n for n in shapes)


def norm_params(family: str, d: int) -> int:
    """The backbone's LayerNorm / RMSNorm parameters (HyperFormer trains them)."""
    if family == "t5":  # weight only; encoder blocks 2 norms, decoder blocks 3, + 2 final
        enc, dec = LAYERS["t5"]
        return (2 * enc + 3 * dec + 2) * d
    if family == "bert":  # embeddings LN + 2 per layer, weight and bias
        return (1 + 2 * LAYERS["bert"]) * 2 * d
    if family == "llama":  # RMSNorm weight: 2 per layer + final
        return (2 * LAYERS["llama"] + 1) * d
    return (2 * LAYERS["gpt2"] + 1) * 2 * d  # GPT-2 LayerNorms + ln_f


def expected_trainable(method: str, family: str, backbone_params: int, k: int = len(TASKS)) -> int:
    d = D
    low, up = halves(family)
    heads = sum(d * n + n for n in NUM_LABELS) if family == "bert" else 0
    trunk = lambda inp: (inp * H + H) + (H * OUT + OUT) + 2 * OUT  # noqa: E731  Linear, Linear, LN
    adapter_heads = [d * R, R, R * d, d]
    if method == "pha":
        lower = low * adapter_params(d, R)
        retriever = (d * 24 + 24) + (24 * E + E)
        prototypes = k * E
        hypernet = up * E + trunk(2 * E) + heads_params(OUT, adapter_heads)
        return lower + retriever + prototypes + hypernet + heads
    if method == "hyperformer":
        r = d // 32
        stacks = [LAYERS["t5"][0], LAYERS["t5"][1]] if family == "t5" else [low + up]
        per_stack = [
            (n_layers * E + 2 * E) + trunk(3 * E)
            + heads_params(OUT, [d * r, r, r * d, d, d, d])
            for n_layers in stacks
        ]  # fmt: skip
        return k * E + sum(per_stack) + norm_params(family, d) + heads
    if method == "hyperdecoder":
        lower = low * adapter_params(d, R)
        retriever = 2 * (d * d + d)
        hypernet = up * 10 + trunk(d + 10) + heads_params(OUT, adapter_heads)
        return lower + retriever + hypernet + heads
    if method == "adapter":
        return (low + up) * adapter_params(d, R) + heads
    if method == "adapter_per_task":
        return (low + up) * k * adapter_params(d, R) + heads
    if method == "full":
        return backbone_params + heads
    raise ValueError(method)


@torch.no_grad()
def scramble(model: pha.PHAModel, std: float = 0.3, seed: int = 0) -> None:
    """Give the (near-zero-initialised) method parameters values large enough that the
    adapters change the outputs, so that equality tests cannot pass vacuously."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.requires_grad and not name.startswith("base_model."):
            p.add_(torch.randn(p.shape, generator=g) * std)


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread: with OpenMP threads on a busy 2-core machine
    a tiny step can take 40x longer. Import this fixture into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
