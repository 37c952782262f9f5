"""Inference without task ids (`python -m pha.evaluate RUN --no-task-ids`): the paper's
claim that an instance's task is found as its nearest prototype.

Per task: the retrieval accuracy (the nearest prototype is the instance's own task) and
the task metrics when the model is not told the task (it retrieves it: the retrieved
task's adapters, and on encoders its classification head), next to the metrics with the
given task ids. With the task-name prefix in the inputs retrieval is close to trivial:
compare with a run trained with --task-prefix false.
"""

from __future__ import annotations

import csv
import fcntl
import os
from pathlib import Path

import torch

from .data import Collator, MultiTaskData, metrics
from .scoring import metric_means, predict

CSV_FIELDS = ["run", "task", "prefix", "retrieval_accuracy", "metric", "with_task_ids",
              "with_retrieval"]  # fmt: skip


@torch.no_grad()
def retrieval_accuracy(
    model, collator: Collator, items: list[tuple[int, dict]], batch_size: int
) -> float:
    """The fraction of items whose nearest prototype is their own task."""
    if not getattr(model, "can_retrieve", False):
        raise ValueError(
            f"--no-task-ids: method {model.method_config.method!r} has no prototypes to retrieve "
            "tasks with (only pha can infer without task ids)"
        )
    was_training = model.training
    model.eval()
    hits = 0
    try:
        for start in range(0, len(items), batch_size):
            batch = collator(items[start : start + batch_size], generate=True)
            found, _ = model.retrieve(
                batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)
            )
            hits += int((found.cpu() == batch["task_ids"]).sum())
    finally:
        model.train(was_training)
    return hits / len(items)


def evaluate_task_free(
    model, collator: Collator, data: MultiTaskData, split: str = "test", batch_size: int = 64
) -> dict[str, dict]:
    """{task: {"retrieval_accuracy": float, "with_task_ids": {metric: value},
    "with_retrieval": {metric: value}}} on `split`."""
    results = {}
    for task_id, (task, examples) in enumerate(zip(data.tasks, data.split(split))):
        if not examples:
            continue
        items = [(task_id, ex) for ex in examples]
        labels = [ex["label"] for ex in examples]
        accuracy = retrieval_accuracy(model, collator, items, batch_size)
        given = predict(model, collator, items, batch_size)
        found = predict(model, collator, items, batch_size, task_ids=False)
        results[task.name] = {
            "retrieval_accuracy": accuracy,
            "with_task_ids": metrics.compute(task.metrics, given, labels),
            "with_retrieval": metrics.compute(task.metrics, found, labels),
        }
    if not results:
        raise ValueError(f"split {split!r} has no examples in any task")
    return results


def csv_rows(run: str, prefix: bool, results: dict[str, dict]) -> list[dict]:
    """One row per task and metric (CSV_FIELDS)."""
    return [
        {"run": run, "task": task, "prefix": prefix, "retrieval_accuracy": r["retrieval_accuracy"],
         "metric": name, "with_task_ids": value, "with_retrieval": r["with_retrieval"][name]}
        for task, r in results.items()
        for name, value in r["with_task_ids"].items()
    ]  # fmt: skip


def append_csv(path: str | os.PathLike, rows: list[dict], fields: list[str] = CSV_FIELDS) -> None:
    """Append rows under an exclusive lock (several processes may share the file); the
    header is written by whoever finds the file empty, and a file with other columns is
    refused."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        if f.seek(0, os.SEEK_END) == 0:  # the size now, under the lock
            csv.writer(f).writerow(fields)
        else:
            f.seek(0)
            header = next(csv.reader(f), [])
            if header != fields:
                raise ValueError(
                    f"{path} has columns {header}, expected {fields}: move the old file away "
                    "or write to another one"
                )
            f.seek(0, os.SEEK_END)
        csv.DictWriter(f, fieldnames=fields).writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def format_task_free(results: dict[str, dict]) -> str:
    """A plain-text table: retrieval accuracy, then each metric with ids / by retrieval (%),
    and their means over the tasks (a metric some task lacks has none)."""
    names = list(dict.fromkeys(m for r in results.values() for m in r["with_task_ids"]))
    width = max([len("task"), len("average")] + [len(t) for t in results])
    head = [f"{'retrieval':>9}"] + [f"{n + ' ids':>14}  {n + ' found':>14}" for n in names]
    lines = [f"{'task':<{width}}  " + "  ".join(head)]
    rule = "-" * len(lines[0])

    def row(label: str, r: dict) -> str:
        cells = [f"{100 * r['retrieval_accuracy']:9.2f}"]
        for n in names:  # a task may lack a metric (mcc: binary tasks only): blank cells
            if n in r["with_task_ids"]:
                given, found = r["with_task_ids"][n], r["with_retrieval"][n]
                cells.append(f"{100 * given:14.2f}  {100 * found:14.2f}")
            else:
                cells.append(f"{'':14}  {'':14}")
        return f"{label:<{width}}  " + "  ".join(cells).rstrip()

    lines += [rule, *(row(task, r) for task, r in results.items()), rule]
    lines.append(row("average", {
        "retrieval_accuracy": sum(r["retrieval_accuracy"] for r in results.values()) / len(results),
        **{key: metric_means({t: r[key] for t, r in results.items()})
           for key in ("with_task_ids", "with_retrieval")},
    }))  # fmt: skip
    return "\n".join(lines)
