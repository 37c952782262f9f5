"""Inference without task ids (pha.task_free, `python -m pha.evaluate RUN --no-task-ids`) on
a tiny random BERT: the retrieved task picks the adapters and the head, retrieval accuracy
is counted against the true task, and the CLI writes the CSV."""

from __future__ import annotations

import csv

import pytest
import torch
from train_utils import pha_cache, run_train, tiny_bert  # noqa: F401

from pha import get_model
from pha.backbones import load_backbone
from pha.data import Collator, load_tasks
from pha.evaluate import main as evaluate_main
from pha.methods import METHODS
from pha.scoring import evaluate, predict
from pha.task_free import CSV_FIELDS, evaluate_task_free, format_task_free, retrieval_accuracy

TASKS = ["rt_polarity", "bbc_topic"]  # 2 and 5 classes


@pytest.fixture
def setup(tiny_bert, pha_cache):  # noqa: F811
    base, tokenizer, kind = load_backbone(str(tiny_bert))
    data = load_tasks(TASKS, 8, 12, seed=0)
    model = get_model(base, METHODS["pha"](tasks=TASKS, num_labels=[2, 5])).eval()
    return model, Collator(tokenizer, kind, data.tasks, 32, False), data


def _items(data, split="test"):
    return [(k, ex) for k, exs in enumerate(data.split(split)) for ex in exs]


def test_without_task_ids_the_retrieved_task_picks_adapters_and_head(setup):
    model, collator, data = setup
    items = _items(data)
    batch = collator(items, generate=True)
    z = model.embed(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():  # prototypes at the first and the last instance: both retrieved
        model.prototypes.weight.copy_(torch.stack([z[0], z[-1]]))
    found, _ = model.retrieve(batch["input_ids"], batch["attention_mask"])
    assert found[0] == 0 and found[-1] == 1
    as_retrieved = [(int(t), ex) for t, (_, ex) in zip(found, items)]
    expected = predict(model, collator, as_retrieved, 5)  # told the retrieved task
    got = predict(model, collator, items, 5, task_ids=False)  # told nothing
    sizes = [2 if k == 0 else 5 for k, _ in items]  # the true task's class count
    assert got == [p if p < n else -1 for p, n in zip(expected, sizes)]
    hits = sum(int(t) == k for t, (k, _) in zip(found, items))
    assert retrieval_accuracy(model, collator, items, 4) == pytest.approx(hits / len(items))


def test_a_class_the_true_task_lacks_is_wrong(setup, monkeypatch):
    model, collator, data = setup
    # every instance retrieves bbc_topic (5 classes), whose head always says class 4
    monkeypatch.setattr(
        model.prototypes, "nearest", lambda z: (torch.ones(len(z), dtype=torch.long), None)
    )
    with torch.no_grad():
        model.heads[1].bias.copy_(torch.tensor([0.0, 0, 0, 0, 1e4]))
    results = evaluate_task_free(model, collator, data, "test", 8)
    polarity, topic = results["rt_polarity"], results["bbc_topic"]
    assert polarity["retrieval_accuracy"] == 0.0 and topic["retrieval_accuracy"] == 1.0
    assert polarity["with_retrieval"]["accuracy"] == 0.0  # class 4 of 2: -1, wrong
    labels = [ex["label"] for ex in data.test[1]]
    assert topic["with_retrieval"]["accuracy"] == pytest.approx(labels.count(4) / len(labels))
    given = evaluate(model, collator, data, "test", 8)
    assert {t: r["with_task_ids"] for t, r in results.items()} == given


def test_methods_without_prototypes_are_refused(tiny_bert, pha_cache):  # noqa: F811
    base, tokenizer, kind = load_backbone(str(tiny_bert))
    data = load_tasks(TASKS, 8, 4, seed=0)
    model = get_model(base, METHODS["adapter"](tasks=TASKS, num_labels=[2, 5]))
    collator = Collator(tokenizer, kind, data.tasks, 32, False)
    with pytest.raises(ValueError, match="'adapter' has no prototypes"):
        evaluate_task_free(model, collator, data)


def test_cli_writes_the_task_free_csv(tiny_bert, pha_cache, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    args = ["--model", str(tiny_bert), "--tasks", *TASKS, "--n-train", "8", "--n-eval", "8",
            "--max-steps", "2", "--max-length", "32", "--task-prefix", "false",
            "--output-dir", str(run), "--quiet"]  # fmt: skip
    assert run_train(args, pha_cache).returncode == 0
    out = tmp_path / "free.csv"
    for _ in range(2):  # appends, one header
        result = evaluate_main([str(run), "--no-task-ids", "--csv", str(out)])
    assert "retrieval" in capsys.readouterr().out
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_FIELDS and len(rows) == 2 * 2 * 2  # 2 tasks x 2 metrics
    assert {r["prefix"] for r in rows} == {"False"} and {r["run"] for r in rows} == {str(run)}
    given = evaluate_main([str(run)])["tasks"]
    for r in rows:
        assert float(r["with_task_ids"]) == pytest.approx(given[r["task"]][r["metric"]])
        found = result["tasks"][r["task"]]
        assert float(r["with_retrieval"]) == pytest.approx(found["with_retrieval"][r["metric"]])
        assert 0.0 <= float(r["retrieval_accuracy"]) <= 1.0
    with pytest.raises(SystemExit):
        evaluate_main([str(run), "--csv", str(out)])  # --csv only with --no-task-ids


def test_the_table_leaves_a_metric_blank_for_a_task_without_it():
    """mcc exists for binary tasks only: a suite that mixes them printed a KeyError."""
    binary = {"accuracy": 0.9, "macro_f1": 0.8, "mcc": 0.7}
    multi = {"accuracy": 0.6, "macro_f1": 0.5}
    results = {
        "rt_subjectivity": dict(
            retrieval_accuracy=1.0, with_task_ids=binary, with_retrieval=binary
        ),
        "bbc_topic": dict(retrieval_accuracy=0.5, with_task_ids=multi, with_retrieval=multi),
    }
    head, _, subj, bbc, _, average = format_task_free(results).splitlines()
    assert "mcc ids" in head and subj.split()[-2:] == ["70.00", "70.00"]
    assert bbc.split() == ["bbc_topic", "50.00", "60.00", "60.00", "50.00", "50.00"]
    # the means over the two tasks; mcc, which bbc_topic lacks, has none
    assert average.split() == ["average", "75.00", "75.00", "75.00", "65.00", "65.00"]
