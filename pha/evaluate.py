"""Evaluation: per-task metrics of a PHAModel on a split, and the metrics table.

    python -m pha.evaluate RUN_DIR [--split test|validation] [--batch-size N]
    python -m pha.evaluate RUN_DIR --no-task-ids [--csv results/task_free_inference.csv]

re-loads a run written by `python -m pha.train` (its resolved config and adapter) and
prints the table; --no-task-ids: inference without task ids (pha.task_free).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .data import Collator, MultiTaskData, metrics, parse_answer
from .pypi_cache import CacheError

MAX_NEW_TOKENS = 8  # generated per answer by text-to-text models

# What pha.evaluate reads from a run's config.json.
RUN_KEYS = ("method", "model", "tasks", "n_train", "n_eval", "seed", "max_length", "task_prefix")


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


def format_table(per_task: dict[str, dict[str, float]], average: float | None = None) -> str:
    """A plain-text table: one row per task, one column per metric (in %)."""
    names = list(dict.fromkeys(m for row in per_task.values() for m in row))
    width = max([len("task"), len("average")] + [len(t) for t in per_task])
    lines = [f"{'task':<{width}}  " + "  ".join(f"{n:>9}" for n in names)]
    lines.append("-" * len(lines[0]))
    for task, row in per_task.items():
        cells = [f"{100 * row[n]:9.2f}" if n in row else f"{'':>9}" for n in names]
        lines.append(f"{task:<{width}}  " + "  ".join(cells))
    if average is not None:
        lines.append("-" * len(lines[0]))
        lines.append(f"{'average':<{width}}  {100 * average:9.2f}")
    return "\n".join(lines)


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value!r}")
    return n


def read_run_config(run_dir: str | os.PathLike) -> dict:
    """The resolved settings a pha.train run wrote to RUN_DIR/config.json; a ValueError
    naming the file if it is missing, malformed or lacks a setting pha.evaluate needs."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no config.json: not a pha.train output directory")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object of settings, got {type(cfg).__name__}")
    missing = [k for k in RUN_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"{path} lacks the settings {missing}: not written by pha.train")
    return cfg


def load_adapter(base_model, directory: str | os.PathLike, is_trainable: bool = False):
    """PHAModel.from_pretrained (frozen, eval mode unless is_trainable), a damaged file
    ending in a CheckpointError that names the directory (safetensors and json name no
    file)."""
    from safetensors import SafetensorError

    from . import PHAModel

    try:
        return PHAModel.from_pretrained(base_model, directory, is_trainable=is_trainable)
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"the saved adapter in {directory} cannot be read ({type(e).__name__}: {e}): "
            "a file is truncated or corrupt"
        ) from e


def _check_run_matches_adapter(run_dir: str, cfg: dict, model) -> None:
    """config.json and adapter/ must describe the same run (a later run that failed may
    have left its own config.json beside an older adapter)."""
    tasks = [t for item in cfg["tasks"] for t in str(item).split(",") if t]
    if cfg["method"] != model.method_config.method or not set(tasks) <= set(model.tasks):
        raise ValueError(
            f"{run_dir}: config.json (method {cfg['method']!r}, tasks {tasks}) does not "
            f"describe adapter/ (method {model.method_config.method!r}, tasks {model.tasks})"
        )


def main(argv: list[str] | None = None) -> dict:
    """The command line: a missing or damaged run ends with its message and exit code 2
    (PHA_DEBUG=1 shows the traceback)."""
    from .backbones import load_backbone
    from .data import load_tasks

    p = argparse.ArgumentParser(prog="python -m pha.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="an output directory of python -m pha.train")
    p.add_argument("--split", choices=("test", "validation"), default="test")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument(
        "--no-task-ids",
        action="store_true",
        help="pha: per task the nearest-prototype retrieval accuracy and the metrics with the "
        "task retrieved, beside those with the task ids given (pha.task_free)",
    )
    p.add_argument("--csv", help="--no-task-ids: append the rows to this CSV")
    args = p.parse_args(argv)
    if args.csv and not args.no_task_ids:
        p.error("--csv goes with --no-task-ids")
    try:
        cfg = read_run_config(args.run_dir)
        base, tokenizer, kind = load_backbone(cfg["model"])
        model = load_adapter(base, os.path.join(args.run_dir, "adapter"))
        _check_run_matches_adapter(args.run_dir, cfg, model)
        data = load_tasks(model.tasks, cfg["n_train"], cfg["n_eval"], cfg["seed"])
        collator = Collator(tokenizer, kind, data.tasks, cfg["max_length"], cfg["task_prefix"])
        if args.no_task_ids:
            return _task_free(args, cfg, model, collator, data)
        per_task = evaluate(model, collator, data, args.split, args.batch_size)
    except (ValueError, OSError, CheckpointError, CacheError) as e:
        if os.environ.get("PHA_DEBUG") == "1":
            raise
        p.exit(2, f"{p.prog}: error: {e}\n")
    avg = metrics.average(per_task)
    print(format_table(per_task, avg), file=sys.stdout)
    return {"tasks": per_task, "average": avg}


def _task_free(args, cfg: dict, model, collator: Collator, data: MultiTaskData) -> dict:
    from .task_free import append_csv, csv_rows, evaluate_task_free, format_task_free

    results = evaluate_task_free(model, collator, data, args.split, args.batch_size)
    print(format_task_free(results), file=sys.stdout)
    if args.csv:
        append_csv(args.csv, csv_rows(args.run_dir, cfg["task_prefix"], results))
    return {"tasks": results}


if __name__ == "__main__":
    main()
