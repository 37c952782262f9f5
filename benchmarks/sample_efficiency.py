"""The sample-efficiency study: methods x n_train per task x seeds on a multi-task suite.

Every run is one `python -m pha.train` subprocess (the same code path users run), so the
study measures exactly what the CLI does. Rows are appended to a CSV as runs finish,
and runs already in the CSV are skipped: the study is resumable, and safe to run in the
background (`nohup python benchmarks/sample_efficiency.py &`).

    python benchmarks/sample_efficiency.py                  # the grid (long)
    python benchmarks/sample_efficiency.py --plan           # print the runs, do nothing
    python benchmarks/sample_efficiency.py --transfer       # few-shot transfer table
    python benchmarks/sample_efficiency.py --report         # tables + plots from the CSVs

Two workers with one thread each get ~25% more runs per hour than one with two threads
on a 2-core machine (the Python side of a step is serial):

    OMP_NUM_THREADS=1 python benchmarks/sample_efficiency.py --shard 0/2 &
    OMP_NUM_THREADS=1 python benchmarks/sample_efficiency.py --shard 1/2 &
"""

from __future__ import annotations

import argparse
import csv
import fcntl
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
    "bigbench:multiemo/all_text_en",
    "bigbench:epistemic_reasoning",
    "bigbench:movie_dialog_same_or_different",
]
# Few-shot transfer targets: tasks outside SUITE, so the grid's PHA runs are the sources.
HELD_OUT = ["bigbench:intent_recognition", "bigbench:presuppositions_as_nli"]


def _csv_list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < N, got {text!r}")
    return i, n


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
    p.add_argument(
        "--source-n-train",
        type=int,
        default=500,
        help="transfer from the grid's PHA run of this size",
    )
    p.add_argument(
        "--transfer-steps", type=int, default=50, help="training steps of a transfer run"
    )
    p.add_argument(
        "--shard", type=_shard, default=(0, 1), help="I/N: do every N-th run from the I-th"
    )
    p.add_argument("--metric", default="macro_f1", help="the per-task score the report averages")
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
    with path.open("a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # shards append to the same file
        writer = csv.DictWriter(f, fieldnames=fields)
        if f.tell() == 0:
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


def _grid_flags(args: argparse.Namespace, method: str, n: int, seed: int) -> list[str]:
    return [
        "--method", method, "--model", args.model, "--tasks", ",".join(args.tasks),
        "--n-train", str(n), "--seed", str(seed), *args.train_args,
    ]  # fmt: skip


def _grid_run(args: argparse.Namespace, method: str, n: int, seed: int) -> Path:
    """Train one grid run (resuming it if interrupted) and append its rows; its directory."""
    flags = _grid_flags(args, method, n, seed)
    run_dir = args.runs_dir / f"{method}-n{n}-s{seed}"
    metrics = _train(flags, run_dir)
    config = {"flags": flags, "step": metrics.get("step")}
    keys = {"method": method, "n_train": n, "seed": seed}
    _append(args.out, _rows(metrics, keys, config), FIELDS)
    return run_dir


def run_grid(args: argparse.Namespace) -> None:
    done = _done(args.out, ("method", "n_train", "seed"))
    # Seed-major: an interrupted study still has every (method, size) cell with fewer seeds.
    index, count = args.shard  # sharded before skipping done runs: stable across restarts
    runs = [(m, n, s) for s in args.seeds for n in args.n_train for m in args.methods]
    todo = [(m, n, s) for m, n, s in runs[index::count] if (m, str(n), str(s)) not in done]
    print(f"{len(todo)} runs to do in shard {index}/{count} ({len(done)} done) -> {args.out}")
    for method, n, seed in todo:
        if args.plan:
            print(f"  {method} n_train={n} seed={seed}")
        else:
            _grid_run(args, method, n, seed)


def run_transfer(args: argparse.Namespace) -> None:
    """Tune on k examples of each held-out task: PHA's prototype initialisation from the
    grid's PHA run (trained on the suite) vs a fresh adapter trained on the same k."""
    overlap = sorted(set(args.held_out) & set(args.tasks))
    if overlap:
        raise SystemExit(f"--held-out: {overlap} are also training tasks (--tasks)")
    fields = ["init", "k_shot", "seed", "task", "metric", "score", "config"]
    done = _done(args.transfer_out, ("init", "k_shot", "seed"))
    index, count = args.shard
    runs = [
        (i, k, s)
        for s in args.seeds
        for k in args.k_shot
        for i in ("pha_prototype", "fresh_adapter")
    ]
    for init, k, seed in runs[index::count]:
        if (init, str(k), str(seed)) in done:
            continue
        if args.plan:
            print(f"  transfer {init} k={k} seed={seed}")
            continue
        base = ["--tasks", ",".join(args.held_out), "--seed", str(seed)]
        if init == "pha_prototype":
            source = args.runs_dir / f"pha-n{args.source_n_train}-s{seed}"
            if not (source / "metrics.json").exists():
                _grid_run(args, "pha", args.source_n_train, seed)
            flags = ["--transfer-from", str(source), "--k-shot", str(k), *base]
        else:  # the same k examples per task, a plain adapter from scratch
            flags = ["--method", "adapter", "--model", args.model, "--n-train", str(k), *base]
        flags += [*args.train_args, "--max-steps", str(args.transfer_steps)]
        metrics = _train(flags, args.runs_dir / f"transfer-{init}-k{k}-s{seed}")
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
