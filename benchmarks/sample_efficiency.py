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
from collections.abc import Iterable
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


def _shard_arg(text: str) -> tuple[int, int]:
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
        default=100,
        help="transfer from the grid's PHA run of this size",
    )
    p.add_argument(
        "--transfer-steps", type=int, default=50, help="training steps of a transfer run"
    )
    p.add_argument(
        "--shard", type=_shard_arg, default=(0, 1), help="I/N: do every N-th run from the I-th"
    )
    p.add_argument(
        "--label",
        help="name a variant in the CSV and run directories (one method; its flags after --)",
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
    if args.label and len(args.methods) != 1:
        p.error(f"--label names one method's variant; got --methods {','.join(args.methods)}")
    return args


def _done(path: Path, key_fields: tuple[str, ...], tasks: list[str]) -> set[tuple[str, ...]]:
    """Keys of the runs in the CSV that have rows for every one of `tasks`."""
    if not path.exists():
        return set()
    seen: dict[tuple[str, ...], set[str]] = defaultdict(set)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            seen[tuple(row[k] for k in key_fields)].add(row["task"])
    return {key for key, have in seen.items() if have >= set(tasks)}


def _shard(runs: list[tuple], args: argparse.Namespace, per_cell: int) -> list[tuple]:
    """This worker's share: every N-th run, with the order inside each cell of `per_cell`
    runs rotated from cell to cell so that no worker gets all runs of one method.
    Computed before skipping finished runs, so it stays the same across restarts."""
    index, count = args.shard
    rotated = []
    for c in range(0, len(runs), per_cell):
        cell = runs[c : c + per_cell]
        shift = (c // per_cell) % len(cell)
        rotated += cell[shift:] + cell[:shift]
    return rotated[index::count]


def _append(path: Path, rows: list[dict], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # shards append to the same file
        writer = csv.DictWriter(f, fieldnames=fields)
        if f.seek(0, os.SEEK_END) == 0:  # the size now, under the lock
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


def _name(args: argparse.Namespace, method: str) -> str:
    """The method column of the CSV: the method, or the --label of its variant."""
    return args.label or method


def _grid_run(args: argparse.Namespace, method: str, n: int, seed: int) -> None:
    """Train one grid run (resuming it if interrupted) and append its rows."""
    flags = [
        "--method", method, "--model", args.model, "--tasks", ",".join(args.tasks),
        "--n-train", str(n), "--seed", str(seed), *args.train_args,
    ]  # fmt: skip
    name = _name(args, method)
    run_dir = args.runs_dir / f"{name}-n{n}-s{seed}"
    metrics = _train(flags, run_dir)
    config = {"flags": flags, "step": metrics.get("step")}
    keys = {"method": name, "n_train": n, "seed": seed}
    _append(args.out, _rows(metrics, keys, config), FIELDS)


def run_grid(args: argparse.Namespace) -> None:
    done = _done(args.out, ("method", "n_train", "seed"), args.tasks)
    # Seed-major: an interrupted study still has every (method, size) cell with fewer seeds.
    runs = [(m, n, s) for s in args.seeds for n in args.n_train for m in args.methods]
    todo = [
        (m, n, s)
        for m, n, s in _shard(runs, args, len(args.methods))
        if (_name(args, m), str(n), str(s)) not in done
    ]
    index, count = args.shard
    print(f"{len(todo)} runs to do in shard {index}/{count} ({len(done)} done) -> {args.out}")
    for method, n, seed in todo:
        if args.plan:
            print(f"  {_name(args, method)} n_train={n} seed={seed}")
        else:
            _grid_run(args, method, n, seed)


def run_transfer(args: argparse.Namespace) -> None:
    """Tune on k examples of each held-out task: PHA's prototype initialisation from the
    grid's PHA run (trained on the suite) vs a fresh adapter trained on the same k.
    --transfer-steps sets the steps (it wins over a --max-steps after --)."""
    overlap = sorted(set(args.held_out) & set(args.tasks))
    if overlap:
        raise SystemExit(f"--held-out: {overlap} are also training tasks (--tasks)")
    fields = ["init", "k_shot", "seed", "task", "metric", "score", "config"]
    done = _done(args.transfer_out, ("init", "k_shot", "seed"), args.held_out)
    inits = ("pha_prototype", "fresh_adapter")
    runs = [(i, k, s) for s in args.seeds for k in args.k_shot for i in inits]
    for init, k, seed in _shard(runs, args, len(inits)):
        if (init, str(k), str(seed)) in done:
            continue
        if args.plan:
            print(f"  transfer {init} k={k} seed={seed}")
            continue
        base = ["--tasks", ",".join(args.held_out), "--seed", str(seed)]
        if init == "pha_prototype":
            source = args.runs_dir / f"pha-n{args.source_n_train}-s{seed}"
            if not (source / "metrics.json").exists():  # never trained here: no two workers race
                raise SystemExit(
                    f"transfer source {source} is not finished: run the grid first "
                    f"(--methods pha --n-train {args.source_n_train} --seeds {seed})"
                )
            flags = ["--transfer-from", str(source), "--k-shot", str(k), *base]
            run_name = f"transfer-{init}-from-n{args.source_n_train}-k{k}-s{seed}"
        else:  # the same k examples per task, a plain adapter from scratch
            flags = ["--method", "adapter", "--model", args.model, "--n-train", str(k), *base]
            run_name = f"transfer-{init}-k{k}-s{seed}"
        flags += [*args.train_args, "--max-steps", str(args.transfer_steps)]
        metrics = _train(flags, args.runs_dir / run_name)
        keys = {"init": init, "k_shot": k, "seed": seed}
        _append(args.transfer_out, _rows(metrics, keys, {"flags": flags}), fields)


def _read(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _sd(values: list[float]) -> float:
    """Sample std (0 for a single seed)."""
    return stdev(values) if len(values) > 1 else 0.0


def _pct(values: Iterable[float]) -> str:
    """Mean ± sample std over seeds, in points."""
    values = list(values)
    return f"{100 * mean(values):.1f} ± {100 * _sd(values):.1f}"


Averages = dict[tuple[str, int], dict[str, float]]  # (group, size) -> seed -> task average


def _averages(rows: list[dict], group: str, size: str, metric: str) -> Averages:
    """Per (group, size) and seed, the average over tasks of `metric`; every task of a run
    must have it (no silent averaging over fewer tasks)."""
    scores: dict[tuple[str, int, str], dict[str, float]] = defaultdict(dict)
    tasks: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    for r in rows:
        key = (r[group], int(r[size]), r["seed"])
        tasks[key].add(r["task"])
        if r["metric"] == metric:
            scores[key][r["task"]] = float(r["score"])
    out: Averages = defaultdict(dict)
    for key, names in sorted(tasks.items()):
        missing = sorted(names - set(scores[key]))
        if missing:
            raise SystemExit(f"--metric: run {key} has no {metric!r} score for tasks {missing}")
        out[key[:2]][key[2]] = mean(scores[key].values())
    return out


def _table(avg: Averages, group: str, size: str) -> list[str]:
    groups = sorted({g for g, _ in avg})
    sizes = sorted({n for _, n in avg})
    lines = [f"| {group} | " + " | ".join(f"{size}={n}" for n in sizes) + " |"]
    lines.append("|---" * (len(sizes) + 1) + "|")
    for g in groups:
        cells = [_pct(avg[(g, n)].values()) if (g, n) in avg else "" for n in sizes]
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return lines


def _paired(avg: Averages, a: str, b: str) -> list[str]:
    """a − b per size: mean ± std of the per-seed differences, over the seeds both have
    (same seed, same training examples)."""
    cells = []
    for n in sorted({n for _, n in avg}):
        seeds = sorted(set(avg.get((a, n), {})) & set(avg.get((b, n), {})))
        diffs = [avg[(a, n)][s] - avg[(b, n)][s] for s in seeds]
        cells.append(_pct(diffs) + f" ({len(seeds)} seeds)" if diffs else "")
    return [f"| {a} − {b} | " + " | ".join(cells) + " |"]


def _mean_sd(avg: Averages, group: str, sizes: list[int]) -> tuple[list[float], list[float]]:
    """Points to plot: per size the mean over seeds and the sample std (0 for one seed)."""
    values = [list(avg[(group, n)].values()) for n in sizes]
    return [100 * mean(v) for v in values], [100 * _sd(v) for v in values]


def _size_axis(ax, sizes: list[int]) -> None:
    """Log x axis labelled with the sizes themselves (no 3x10^1 minor labels)."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(n) for n in sizes])


def _plot_average(plt, avg, path: Path, ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m in sorted({m for m, _ in avg}):
        ns = sorted(n for g, n in avg if g == m)
        ax.errorbar(ns, *_mean_sd(avg, m, ns), marker="o", capsize=3, label=m)
    _size_axis(ax, sorted({n for _, n in avg}))
    ax.set_xlabel("training examples per task")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _plot_tasks(plt, per_task: dict[str, Averages], metric: str, path: Path) -> None:
    tasks = list(per_task)
    cols = 4
    nrows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        task_avg = per_task[task]
        for m in sorted({m for m, _ in task_avg}):
            ns = sorted(n for g, n in task_avg if g == m)
            ax.errorbar(ns, *_mean_sd(task_avg, m, ns), marker="o", capsize=2, label=m)
        _size_axis(ax, sorted({n for _, n in task_avg}))
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supylabel(f"{metric} (%)")
    fig.supxlabel("training examples per task")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(args: argparse.Namespace) -> None:
    """Markdown tables (printed and written next to the CSV) and the two plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read(args.out)
    avg = _averages(rows, "method", "n_train", args.metric)
    lines = [f"Average {args.metric} over tasks (%), mean ± std over seeds", ""]
    lines += _table(avg, "method", "n")
    groups = sorted({m for m, _ in avg})
    if "adapter" in groups:  # the paper's claim: PHA (and its variants) over plain adapters
        for g in groups:
            if g.startswith("pha"):
                lines += _paired(avg, g, "adapter")
    if args.metric != "accuracy":
        acc = _averages(rows, "method", "n_train", "accuracy")
        lines += ["", "Average accuracy over tasks (%), mean ± std over seeds", ""]
        lines += _table(acc, "method", "n")
    lines += ["", f"Per task {args.metric} (%), mean ± std over seeds", ""]
    sizes = sorted({n for _, n in avg})
    methods = sorted({m for m, _ in avg})
    lines.append("| task | n | " + " | ".join(methods) + " |")
    lines.append("|---" * (len(methods) + 2) + "|")
    per_task = {
        task: _averages([r for r in rows if r["task"] == task], "method", "n_train", args.metric)
        for task in dict.fromkeys(r["task"] for r in rows)
    }
    for task, t_avg in per_task.items():
        for n in sizes:
            cells = [_pct(t_avg[(m, n)].values()) if (m, n) in t_avg else "" for m in methods]
            lines.append(f"| {task} | {n} | " + " | ".join(cells) + " |")
    _plot_average(plt, avg, args.out.parent / "sample_efficiency.png", f"average {args.metric} (%)")
    _plot_tasks(plt, per_task, args.metric, args.out.parent / "sample_efficiency_tasks.png")

    if args.transfer_out.exists():
        t_rows = _read(args.transfer_out)
        t_avg = _averages(t_rows, "init", "k_shot", args.metric)
        lines += ["", f"Few-shot transfer to held-out tasks, average {args.metric} (%)", ""]
        lines += _table(t_avg, "init", "k")
        lines += _paired(t_avg, "pha_prototype", "fresh_adapter")
        for task in dict.fromkeys(r["task"] for r in t_rows):
            sub = [r for r in t_rows if r["task"] == task]
            lines += ["", f"{task} ({args.metric}, %)", ""]
            lines += _table(_averages(sub, "init", "k_shot", args.metric), "init", "k")
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out.parent / "sample_efficiency.md").write_text(text)


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
