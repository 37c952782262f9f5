"""Tasks, splits, tokenisation, task sampling and metrics for multi-task training."""

from __future__ import annotations

from dataclasses import dataclass

from . import bigbench, metrics
from .collate import Collator, parse_answer, target_text, task_prefix
from .sampling import MixedTaskSampler
from .splits import SPLITS, head, split_examples, stable_hash, subsample
from .tasks import DEFAULT_TASKS, OFFLINE_TASKS, Task, get_task, task_names


@dataclass
class MultiTaskData:
    """The splits of several tasks, in task-id order."""

    tasks: list[Task]
    train: list[list[dict]]
    validation: list[list[dict]]
    test: list[list[dict]]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def split(self, name: str) -> list[list[dict]]:
        if name not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {name!r}")
        return getattr(self, name)


def load_tasks(
    names: list[str],
    n_train: int | float | None = None,
    n_eval: int | float | None = None,
    seed: int = 0,
) -> MultiTaskData:
    """Load the tasks called `names` (in this order: task id = position) with n_train
    training examples each (count, fraction or None = all; drawn with `seed`) and at most
    n_eval validation and test examples each (seed-independent)."""
    if (
        isinstance(names, str)
        or not isinstance(names, list | tuple)
        or not all(isinstance(n, str) for n in names)
    ):
        raise TypeError(f"tasks: expected a list of task names (strings), got {names!r}")
    if not names:
        raise ValueError("tasks: expected at least one task")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"tasks: duplicates in {names}")
    bigbench.prefetch([n.split(":", 1)[1] for n in names if n.startswith("bigbench:")])
    tasks = [get_task(n) for n in names]
    data = MultiTaskData(tasks, [], [], [])
    for task in tasks:
        parts = split_examples(task.name, task.load())
        if not parts["train"]:
            raise ValueError(f"task {task.name!r}: no training examples")
        data.train.append(subsample(parts["train"], n_train, seed))
        data.validation.append(head(parts["validation"], n_eval))
        data.test.append(head(parts["test"], n_eval))
    return data


__all__ = [
    "DEFAULT_TASKS", "OFFLINE_TASKS", "SPLITS", "Collator", "MixedTaskSampler", "MultiTaskData",
    "Task", "get_task", "head", "load_tasks", "metrics", "parse_answer", "split_examples",
    "stable_hash", "subsample", "target_text", "task_names", "task_prefix",
]  # fmt: skip
