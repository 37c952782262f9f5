"""Deterministic train/validation/test splits and low-data subsampling.

An example's split depends only on a stable hash (sha256) of its task and its input, so
it is the same in every run, process and Python version, whatever the seed or the order
the corpus was read in; duplicates of one input always land in the same split. Only the
choice of the n training examples depends on the seed.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

SPLITS = ("train", "validation", "test")


def stable_hash(task: str, example: dict) -> float:
    """A number in [0, 1) fixed by the task name and the example's input."""
    key = f"{task}\x00{example['text']}\x00{example.get('text_pair') or ''}"
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_examples(
    task: str, examples: list[dict], validation_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, list[dict]]:
    """{'train', 'validation', 'test'} -> examples, each split ordered by hash.

    Examples marked `split="test"` by their loader (an official test set) form the test
    split; the rest is cut by hash into test (if no official one), validation and train.
    """
    for name, frac in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0.0 < frac < 0.5:
            raise ValueError(f"{name}: expected a fraction in (0, 0.5), got {frac}")
    fixed_test = any(ex.get("split") == "test" for ex in examples)
    out: dict[str, list[tuple[float, dict]]] = {s: [] for s in SPLITS}
    for ex in examples:
        u = stable_hash(task, ex)
        if ex.get("split") == "test":
            out["test"].append((u, ex))
        elif not fixed_test and u < test_fraction:
            out["test"].append((u, ex))
        elif u < test_fraction + validation_fraction:
            out["validation"].append((u, ex))
        else:
            out["train"].append((u, ex))
    return {s: [ex for _, ex in sorted(pairs, key=lambda p: p[0])] for s, pairs in out.items()}


def resolve_count(n: int | float | None, available: int, what: str = "n_train") -> int:
    """A count (int >= 1) or a fraction (float in (0, 1]) of `available`; None = all."""
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, int | float):
        raise TypeError(f"{what}: expected a count or a fraction, got {n!r}")
    if isinstance(n, float) and (n <= 1.0 or not n.is_integer()):
        if not 0.0 < n <= 1.0:
            raise ValueError(f"{what}: a fraction must be in (0, 1], got {n}")
        return max(1, math.floor(n * available))
    if n < 1:
        raise ValueError(f"{what}: expected a count >= 1 or a fraction in (0, 1], got {n}")
    return min(int(n), available)


def subsample(examples: list[dict], n: int | float | None, seed: int) -> list[dict]:
    """n examples (count or fraction) drawn without replacement; depends on the seed."""
    k = resolve_count(n, len(examples))
    order = np.random.default_rng([seed, 0x5A17]).permutation(len(examples))[:k]
    return [examples[i] for i in sorted(order)]


def head(examples: list[dict], n: int | float | None, what: str = "n_eval") -> list[dict]:
    """The first n examples in hash order: a seed-independent evaluation subset."""
    return examples[: resolve_count(n, len(examples), what)]
