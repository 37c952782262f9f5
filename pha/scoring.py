"""Scoring a PHAModel: predictions for (task id, example) pairs, per-task metrics on a
split, and the plain-text metrics table. Used by pha.train (validation and test),
pha.evaluate and pha.task_free."""

from __future__ import annotations

import torch

from .data import Collator, MultiTaskData, metrics, parse_answer

MAX_NEW_TOKENS = 8  # generated per answer by text-to-text models


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")


@torch.no_grad()
def predict(
    model, collator: Collator, items: list[tuple[int, dict]], batch_size: int, task_ids: bool = True
) -> list:
    """Predictions (class ids, or floats for regression) for [(task_id, example)].

    task_ids=False: the model is not told the task; a method with prototypes retrieves it
    (the nearest prototype picks the adapters and, on encoders, the head). A class the
    instance's own task does not have is predicted as -1 (wrong everywhere)."""
    _check_batch_size(batch_size)
    keys = ("input_ids", "attention_mask") + (("task_ids",) if task_ids else ())
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = collator(chunk, generate=True)
            inputs = {k: batch[k].to(model.device) for k in keys}
            if collator.kind == "encoder":
                logits = model(**inputs).logits  # columns a task does not have hold the dtype's min
                preds = logits.argmax(-1).tolist()
                sizes = [collator.tasks[t].num_labels for t, _ in chunk]
                out.extend(p if p < n else -1 for p, n in zip(preds, sizes))
            else:
                out.extend(_generate(model, collator, chunk, inputs))
    finally:
        model.train(was_training)
    return out


def _generate(model, collator: Collator, chunk, inputs) -> list:
    tok = collator.tokenizer
    ids = model.generate(
        **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id
    )
    if collator.kind == "decoder":  # the output repeats the (left-padded) prompt
        ids = ids[:, inputs["input_ids"].shape[1] :]
    texts = tok.batch_decode(ids, skip_special_tokens=True)
    return [
        parse_answer(collator.tasks[t], text.split("\n")[0]) for (t, _), text in zip(chunk, texts)
    ]


def evaluate(
    model, collator: Collator, data: MultiTaskData, split: str = "test", batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} on `split` of every task with examples there."""
    _check_batch_size(batch_size)
    results = {}
    for task_id, (task, examples) in enumerate(zip(data.tasks, data.split(split))):
        if not examples:
            continue
        preds = predict(model, collator, [(task_id, ex) for ex in examples], batch_size)
        results[task.name] = metrics.compute(task.metrics, preds, [ex["label"] for ex in examples])
    if not results:
        raise ValueError(f"split {split!r} has no examples in any task")
    return results


def metric_means(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the tasks, for the metrics every task has (mcc, binary tasks
    only, has none on a suite with a multi-class task)."""
    names = dict.fromkeys(m for row in per_task.values() for m in row)
    return {
        n: sum(row[n] for row in per_task.values()) / len(per_task)
        for n in names
        if all(n in row for row in per_task.values())
    }


def format_table(per_task: dict[str, dict[str, float]], average: float | None = None) -> str:
    """A plain-text table: one row per task, one column per metric (in %). With `average`
    (metrics.average: each task's metrics averaged, then the tasks) two more rows: each
    metric's mean over the tasks ("average"), and `average` itself ("all metrics")."""
    names = list(dict.fromkeys(m for row in per_task.values() for m in row))
    width = max([len("task"), len("all metrics")] + [len(t) for t in per_task])

    def row(label: str, values: dict[str, float]) -> str:
        cells = [f"{100 * values[n]:9.2f}" if n in values else f"{'':>9}" for n in names]
        return f"{label:<{width}}  " + "  ".join(cells).rstrip()

    lines = [f"{'task':<{width}}  " + "  ".join(f"{n:>9}" for n in names)]
    rule = "-" * len(lines[0])
    lines += [rule, *(row(task, values) for task, values in per_task.items())]
    if average is not None:
        lines += [rule, row("average", metric_means(per_task))]
        lines.append(f"{'all metrics':<{width}}  {100 * average:9.2f}")
    return "\n".join(lines)
