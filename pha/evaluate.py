"""The evaluation command: re-load a pha.train run and score it (the scoring itself is
pha.scoring; inference without task ids is pha.task_free).

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

from .checkpoint import CheckpointError
from .data import Collator, MultiTaskData, metrics
from .pypi_cache import CacheError
from .scoring import evaluate, format_table
from .task_free import append_csv, csv_rows, evaluate_task_free, format_task_free

# What pha.evaluate reads from a run's config.json.
RUN_KEYS = ("method", "model", "tasks", "n_train", "n_eval", "seed", "max_length", "task_prefix")


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
    results = evaluate_task_free(model, collator, data, args.split, args.batch_size)
    print(format_task_free(results), file=sys.stdout)
    if args.csv:
        append_csv(args.csv, csv_rows(args.run_dir, cfg["task_prefix"], results))
    return {"tasks": results}


if __name__ == "__main__":
    main()
