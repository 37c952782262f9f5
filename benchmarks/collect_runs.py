"""Finished pha.train runs -> CSV rows (method,n_train,seed,task,metric,score,split,config).

    python benchmarks/collect_runs.py RUN_DIR [RUN_DIR ...] --csv results/method_defaults.csv
        [--label NAME]

Each run contributes its selected checkpoint's validation and test metrics (metrics.json)
and, in the config column, the run's resolved settings that differ from pha.train's
defaults (JSON), so a row can be re-run from the CSV alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

COLUMNS = ["method", "n_train", "seed", "task", "metric", "score", "split", "config"]


def run_rows(run_dir: str | os.PathLike, label: str | None = None) -> list[list]:
    from pha.train_config import TrainConfig

    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    result = json.loads((run_dir / "metrics.json").read_text())
    defaults = TrainConfig().to_dict()
    ignored = {"output_dir", "quiet", "resume", "save_every", "keep_last", "log_every"}
    changed = {k: v for k, v in config.items() if k not in ignored and defaults.get(k) != v}
    method = label or config["method"]
    rows = []
    for split, per_task in (
        ("validation", result["validation"]["tasks"]),
        ("test", result["tasks"]),
    ):
        for task, values in per_task.items():
            for metric, score in values.items():
                rows.append([method, config["n_train"], config["seed"], task, metric, score, split,
                             json.dumps(changed, sort_keys=True)])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="pha.train output directories with metrics.json")
    p.add_argument("--csv", required=True, help="append rows here (header written when new)")
    p.add_argument("--label", help="method name in the CSV (default: the run's method)")
    args = p.parse_args(argv)
    rows = [row for run in args.runs for row in run_rows(run, args.label)]
    new = not os.path.exists(args.csv)
    with open(args.csv, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"{len(rows)} rows from {len(args.runs)} runs -> {args.csv}", file=sys.stderr)


if __name__ == "__main__":
    main()
