"""The sample-efficiency study: methods x n_train per task x seeds on a multi-task suite.

Every run is one `python -m pha.train` subprocess (the same code path users run), so the
study measures exactly what the CLI does. Rows are appended to a CSV as runs finish,
and runs already in the CSV are skipped: the study is resumable, and safe to run in the
background (`nohup python benchmarks/sample_efficiency.py &`).

    python benchmarks/sample_efficiency.py                  # the grid (long)
    python benchmarks/sample_efficiency.py --plan           # print the runs, do nothing
    python benchmarks/sample_efficiency.py --transfer       # few-shot transfer table
    python benchmarks/sample_efficiency.py --report         # tables + plots from the CSVs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
FIELDS = ["method", "n_train", "seed", "task", "metric", "score", "config"]
SUITE = [
    "tweet_sentiment",
    "rt_polarity",
    "rt_subjectivity",
    "bbc_topic",
    "bigbench:vitaminc_fact_verification",
    "bigbench:multiemo",
    "bigbench:epistemic_reasoning",
    "bigbench:movie_dialog_same_or_different",
]
HELD_OUT = ["bigbench:movie_dialog_same_or_different"]


def _csv_list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--methods", type=_csv_list, default=["pha", "hyperformer", "hyperdecoder", "adapter"]
    )
    p.add_argument(
        "--n-train", type=lambda s: [int(x) for x in _csv_list(s)], default=[32, 100, 500]
    )
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _csv_list(s)], default=[0, 1, 2])
    p.add_argument("--tasks", type=_csv_list, default=SUITE)
    p.add_argument("--held-out", type=_csv_list, default=HELD_OUT, help="tasks for --transfer")
    p.add_argument("--k-shot", type=lambda s: [int(x) for x in _csv_list(s)], default=[4, 16, 32])
    p.add_argument("--model", default="minilm")
    p.add_argument("--out", type=Path, default=RESULTS / "sample_efficiency.csv")
    p.add_argument("--transfer-out", type=Path, default=RESULTS / "few_shot_transfer.csv")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "sample_efficiency")
    p.add_argument("--plan", action="store_true", help="print the runs that are still to do")
    p.add_argument("--transfer", action="store_true", help="run the few-shot transfer grid")
    p.add_argument("--report", action="store_true", help="write tables and plots from the CSVs")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: extra pha.train flags")
    args = p.parse_args(argv)
    args.train_args = [a for a in args.train_args if a != "--"]
    return args


def _done(path: Path, key_fields: tuple[str, ...]) -> set[tuple[str, ...]]:
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {tuple(row[k] for k in key_fields) for row in csv.DictReader(f)}


def _append(path: Path, rows: list[dict], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def _train(cmd_args: list[str], out_dir: Path) -> dict:
    """One pha.train run (resumed if a checkpoint exists); returns its metrics.json."""
    cmd = [sys.executable, "-m", "pha.train", *cmd_args, "--output-dir", str(out_dir), "--quiet"]
    if any(out_dir.glob("checkpoint*")):
        cmd.append("--resume")
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"  done in {time.time() - start:.0f} s", flush=True)
    return json.loads((out_dir / "metrics.json").read_text())


def _rows(metrics: dict, keys: dict, config: dict) -> list[dict]:
    return [
        {
            **keys,
            "task": task,
            "metric": metric,
            "score": value,
            "config": json.dumps(config, sort_keys=True),
        }
        for task, values in metrics["tasks"].items()
        for metric, value in values.items()
    ]


def run_grid(args: argparse.Namespace) -> None:
    done = _done(args.out, ("method", "n_train", "seed"))
    todo = [
        (m, n, s)
        for n in args.n_train
        for s in args.seeds
        for m in args.methods
        if (m, str(n), str(s)) not in done
    ]
    print(f"{len(todo)} runs to do ({len(done)} done) -> {args.out}")
    for method, n, seed in todo:
        if args.plan:
            print(f"  {method} n_train={n} seed={seed}")
            continue
        flags = [
            "--method",
            method,
            "--model",
            args.model,
            "--tasks",
            ",".join(args.tasks),
            "--n-train",
            str(n),
            "--seed",
            str(seed),
            *args.train_args,
        ]
        metrics = _train(flags, args.runs_dir / f"{method}-n{n}-s{seed}")
        config = {"flags": flags, "step": metrics.get("step")}
        _append(
            args.out, _rows(metrics, {"method": method, "n_train": n, "seed": seed}, config), FIELDS
        )


def run_transfer(args: argparse.Namespace) -> None:
    """Train PHA on the suite minus the held-out tasks, then tune on k examples of each
    held-out task: PHA's prototype initialisation vs a fresh adapter trained on the same k."""
    fields = ["init", "k_shot", "seed", "task", "metric", "score", "config"]
    source_tasks = [t for t in args.tasks if t not in args.held_out]
    done = _done(args.transfer_out, ("init", "k_shot", "seed"))
    for seed in args.seeds:
        source = args.runs_dir / f"source-pha-s{seed}"
        for k in args.k_shot:
            for init in ("pha_prototype", "fresh_adapter"):
                if (init, str(k), str(seed)) in done:
                    continue
                if args.plan:
                    print(f"  transfer {init} k={k} seed={seed}")
                    continue
                if not (source / "metrics.json").exists():
                    _train(
                        [
                            "--method",
                            "pha",
                            "--model",
                            args.model,
                            "--tasks",
                            ",".join(source_tasks),
                            "--seed",
                            str(seed),
                            *args.train_args,
                        ],
                        source,
                    )
                base = ["--tasks", ",".join(args.held_out), "--seed", str(seed)]
                if init == "pha_prototype":
                    flags = ["--transfer-from", str(source), "--k-shot", str(k), *base]
                else:  # the same k examples per task, a plain adapter from scratch
                    flags = [
                        "--method",
                        "adapter",
                        "--model",
                        args.model,
                        "--n-train",
                        str(k),
                        *base,
                    ]
                metrics = _train(
                    [*flags, *args.train_args], args.runs_dir / f"transfer-{init}-k{k}-s{seed}"
                )
                keys = {"init": init, "k_shot": k, "seed": seed}
                _append(args.transfer_out, _rows(metrics, keys, {"flags": flags}), fields)


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _mean_std(values: list[float]) -> str:
    return f"{100 * mean(values):.1f} ± {100 * (stdev(values) if len(values) > 1 else 0.0):.1f}"


def _averages(rows: list[dict], group: str, size: str) -> dict[tuple[str, int], list[float]]:
    """Per (group, size): one number per seed, the average over tasks of each task's first metric."""
    first_metric: dict[str, str] = {}
    per_run: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    for r in rows:
        first_metric.setdefault(r["task"], r["metric"])
        if r["metric"] == first_metric[r["task"]]:
            per_run[(r[group], int(r[size]), r["seed"])].append(float(r["score"]))
    out: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (g, n, _), scores in sorted(per_run.items()):
        out[(g, n)].append(mean(scores))
    return out


def report(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read(args.out)
    avg = _averages(rows, "method", "n_train")
    methods = sorted({m for m, _ in avg})
    sizes = sorted({n for _, n in avg})
    print("average score (%), mean ± std over seeds\n")
    print("| method | " + " | ".join(f"n={n}" for n in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    for m in methods:
        cells = [_mean_std(avg[(m, n)]) if (m, n) in avg else "" for n in sizes]
        print(f"| {m} | " + " | ".join(cells) + " |")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in methods:
        ns = [n for n in sizes if (m, n) in avg]
        mu = [100 * mean(avg[(m, n)]) for n in ns]
        sd = [100 * (stdev(avg[(m, n)]) if len(avg[(m, n)]) > 1 else 0) for n in ns]
        ax.errorbar(ns, mu, yerr=sd, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xlabel("training examples per task")
    ax.set_ylabel("average score (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.parent / "sample_efficiency.png", dpi=120)

    tasks = sorted({r["task"] for r in rows})
    cols = 4
    fig, axes = plt.subplots(
        (len(tasks) + cols - 1) // cols,
        cols,
        figsize=(4 * cols, 3 * ((len(tasks) + cols - 1) // cols)),
        squeeze=False,
    )
    for ax, task in zip(axes.flat, tasks):
        task_avg = _averages([r for r in rows if r["task"] == task], "method", "n_train")
        for m in methods:
            ns = [n for n in sizes if (m, n) in task_avg]
            ax.errorbar(
                ns,
                [100 * mean(task_avg[(m, n)]) for n in ns],
                yerr=[
                    100 * (stdev(task_avg[(m, n)]) if len(task_avg[(m, n)]) > 1 else 0) for n in ns
                ],
                marker="o",
                capsize=2,
                label=m,
            )
        ax.set_xscale("log")
        ax.set_title(task, fontsize=9)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out.parent / "sample_efficiency_tasks.png", dpi=110)

    if args.transfer_out.exists():
        t_avg = _averages(_read(args.transfer_out), "init", "k_shot")
        ks = sorted({k for _, k in t_avg})
        print("\nfew-shot transfer to held-out tasks (%), mean ± std over seeds\n")
        print("| init | " + " | ".join(f"k={k}" for k in ks) + " |")
        print("|---" * (len(ks) + 1) + "|")
        for init in sorted({i for i, _ in t_avg}):
            print(
                f"| {init} | "
                + " | ".join(_mean_std(t_avg[(init, k)]) if (init, k) in t_avg else "" for k in ks)
                + " |"
            )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report:
        report(args)
    elif args.transfer:
        run_transfer(args)
    else:
        run_grid(args)


if __name__ == "__main__":
    main()
