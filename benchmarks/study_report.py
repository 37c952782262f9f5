"""The sample-efficiency study's report (`benchmarks/sample_efficiency.py --report`):
markdown tables, paired statistics and plots, computed from the CSVs only."""

from __future__ import annotations

import argparse
import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from statistics import mean

from study_stats import Paired, Summary, fmt_p, fmt_paired, fmt_summary, holm, paired, summarize

# (method, size) -> seed -> task -> score
Cells = dict[tuple[str, int], dict[str, dict[str, float]]]
# (method, size) -> seed (or task) -> score
Scores = dict[tuple[str, int], dict[str, float]]


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_text(path: Path, text: str) -> None:
    """Atomically: a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def collect(rows: list[dict], size: str, metric: str, split: str = "test") -> Cells:
    """Per (method, size), seed and task the score of `metric` on `split`; every task of a
    run must have it (no silent averaging over fewer tasks)."""
    cells: Cells = defaultdict(lambda: defaultdict(dict))
    tasks: dict[tuple[str, int, str], set[str]] = defaultdict(set)
    for r in rows:
        if r["split"] != split:
            continue
        key = (r["method"], int(r[size]))
        tasks[(*key, r["seed"])].add(r["task"])
        if r["metric"] == metric:
            cells[key][r["seed"]][r["task"]] = float(r["score"])
    for (method, n, seed), names in sorted(tasks.items()):
        missing = sorted(names - set(cells[(method, n)][seed]))
        if missing:
            raise SystemExit(
                f"--metric: run ({method!r}, {n}, seed {seed}) has no {metric!r} score for tasks {missing}"
            )
    return cells


def task_average(cells: Cells) -> Scores:
    """Per (method, size) and seed the average over tasks."""
    return {key: {s: mean(t.values()) for s, t in seeds.items()} for key, seeds in cells.items()}


def one_task(cells: Cells, task: str) -> Scores:
    """Per (method, size) and seed the score of one task."""
    out = {key: {s: t[task] for s, t in seeds.items() if task in t} for key, seeds in cells.items()}
    return {key: v for key, v in out.items() if v}


def by_task(cells: Cells, key: tuple[str, int], seeds: set[str]) -> dict[str, float]:
    """Per task the mean over `seeds` (pairs methods by task, on the seeds both have)."""
    scores: dict[str, list[float]] = defaultdict(list)
    for seed, per_task in cells.get(key, {}).items():
        if seed in seeds:
            for task, value in per_task.items():
                scores[task].append(value)
    return {t: mean(v) for t, v in scores.items()}


def _methods(scores: Scores, reference: str) -> list[str]:
    """The reference first, then the others sorted."""
    names = {m for m, _ in scores}
    return ([reference] if reference in names else []) + sorted(names - {reference})


def plotted(scores: Scores, reference: str) -> list[str]:
    """The methods drawn as curves: those measured at two sizes or more (one-size variants,
    such as ablations, stay in the tables only), or every method if none has two sizes."""
    methods = _methods(scores, reference)
    curves = [m for m in methods if len({n for mm, n in scores if mm == m}) > 1]
    return curves or methods


def _sizes(scores: Scores) -> list[int]:
    return sorted({n for _, n in scores})


def summary_table(scores: Scores, size_label: str, reference: str) -> list[str]:
    """Methods x sizes: mean ± std [95% CI] over seeds."""
    sizes = _sizes(scores)
    lines = ["| method | " + " | ".join(f"{size_label}={n}" for n in sizes) + " |"]
    lines.append("|---" * (len(sizes) + 1) + "|")
    for m in _methods(scores, reference):
        cells = [fmt_summary(summarize(list(scores[(m, n)].values()))) if (m, n) in scores else ""
                 for n in sizes]  # fmt: skip
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


PAIRED_HEADER = "| mean difference | 95% CI | p (paired t) | significant at 0.05 | pairs | p, Holm over the table |"


def paired_table(pairs: dict, size_label: str, reference: str, what: str) -> list[str]:
    """One row per (other method, size) of the reference − other difference, with its p
    adjusted for every comparison of the table (Holm)."""
    rows = [(other, n, d) for (other, n), d in pairs.items() if d is not None]
    if not rows:
        return []
    adjusted = holm([d.p for _, _, d in rows])
    lines = [f"| {reference} − | {size_label} " + PAIRED_HEADER, "|---" * 8 + "|"]
    for (other, n, d), p_holm in zip(rows, adjusted, strict=True):
        lines.append(f"| {other} | {n} | " + " | ".join([*fmt_paired(d), fmt_p(p_holm)]) + " |")
    return [f"{reference} − each other method, paired by {what}:", "", *lines]


POOLED = "pooled"


def seed_pairs(scores: Scores, reference: str) -> dict:
    """(other, size) -> the reference − other difference paired by seed; with two sizes or
    more in common, also (other, POOLED): paired by (size, seed) over all of them, one test
    of the average difference across sizes with the power of every run."""
    out = {}
    for m in _methods(scores, reference)[1:]:
        shared = [n for n in _sizes(scores) if (reference, n) in scores and (m, n) in scores]
        for n in shared:
            out[(m, n)] = paired(scores[(reference, n)], scores[(m, n)])
        if len(shared) > 1:
            ref, other = ({(n, s): v for n in shared for s, v in scores[(k, n)].items()}
                          for k in (reference, m))  # fmt: skip
            out[(m, POOLED)] = paired(ref, other)
    return out


def task_pairs(cells: Cells, reference: str) -> dict:
    """(other, size) -> the reference − other difference paired by task (means over the
    seeds both have)."""
    scores = task_average(cells)
    out = {}
    for m in _methods(scores, reference)[1:]:
        for n in _sizes(scores):
            if (reference, n) in scores and (m, n) in scores:
                seeds = set(cells[(reference, n)]) & set(cells[(m, n)])
                ref, other = by_task(cells, (reference, n), seeds), by_task(cells, (m, n), seeds)
                out[(m, n)] = paired(ref, other)
    return out


def _seeds_cell(seeds: dict[str, float] | None) -> str:
    if not seeds:
        return "—"
    s = summarize(list(seeds.values()))
    return fmt_summary(s) + ("" if s.n == 1 else f" ({s.n})")


def _pair_cell(d: Paired | None) -> str:
    if d is None:
        return "—"
    s = d.diff
    if s.n == 1:
        return f"{100 * s.mean:+.1f} (1 seed)"
    return f"{100 * s.mean:+.1f} [{100 * s.low:+.1f}, {100 * s.high:+.1f}], p {fmt_p(d.p)}"


def glance_table(scores: Scores, size_label: str, reference: str, methods: list[str]) -> list[str]:
    """The headline: `methods` (in that order; those without runs left out) x sizes, mean ±
    std [95% CI] (seeds), then the reference − method paired by seed at each size and
    pooled over sizes."""
    sizes = _sizes(scores)
    pairs = seed_pairs(scores, reference)
    head = [f"{size_label}={n}" for n in sizes]
    diffs = [f"{reference} − method, {size_label}={n}" for n in sizes] + [
        f"{reference} − method, pooled"
    ]
    lines = [
        "| method | " + " | ".join(head + diffs) + " |",
        "|---" * (1 + len(head + diffs)) + "|",
    ]
    for m in (m for m in methods if any(mm == m for mm, _ in scores)):
        cells = [_seeds_cell(scores.get((m, n))) for n in sizes]
        if m != reference:
            cells += [_pair_cell(pairs.get((m, n))) for n in [*sizes, POOLED]]
        else:
            cells += [""] * (len(sizes) + 1)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def per_task_tables(cells: Cells, size_label: str, reference: str) -> list[str]:
    """Per task and size: every method's mean ± std over seeds, then the reference − each
    other method (paired by seed) with its p-value; * marks p < 0.05."""
    scores = task_average(cells)
    methods, sizes = _methods(scores, reference), _sizes(scores)
    others = methods[1:] if methods and methods[0] == reference else []
    tasks = sorted({t for seeds in cells.values() for per in seeds.values() for t in per})
    lines = ["| task | " + size_label + " | " + " | ".join(methods) + " |"]
    lines.append("|---" * (len(methods) + 2) + "|")
    diff_lines = [
        f"| task | {size_label} | " + " | ".join(f"{reference} − {m}" for m in others) + " |"
    ]
    diff_lines.append("|---" * (len(others) + 2) + "|")
    for task in tasks:
        t_scores = one_task(cells, task)
        for n in sizes:
            row = [_mean_std(t_scores.get((m, n))) for m in methods]
            lines.append(f"| {task} | {n} | " + " | ".join(row) + " |")
            if (reference, n) in t_scores:
                diffs = [_diff_cell(t_scores, reference, m, n) for m in others]
                diff_lines.append(f"| {task} | {n} | " + " | ".join(diffs) + " |")
    out = ["Mean ± std over seeds:", "", *lines]
    if others:
        out += ["", f"{reference} − each method, paired by seed (p-value; * p < 0.05):", ""]
        out += diff_lines
    return out


def _mean_std(seeds: dict[str, float] | None) -> str:
    if not seeds:
        return ""
    s = summarize(list(seeds.values()))
    return f"{100 * s.mean:.1f}" + ("" if s.n == 1 else f" ± {100 * s.std:.1f}")


def _diff_cell(scores: Scores, a: str, b: str, n: int) -> str:
    d = paired(scores[(a, n)], scores[(b, n)]) if (b, n) in scores else None
    if d is None:
        return ""
    mark = "*" if d.significant else ""
    return f"{100 * d.diff.mean:+.1f} (p {fmt_p(d.p)}{mark})"


# ---- plots -----------------------------------------------------------------------------


def _size_axis(ax, sizes: list[int]) -> None:
    """Log x axis labelled with the sizes themselves (no 3x10^1 minor labels)."""
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [str(n) for n in sizes])


def band(scores: Scores, method: str) -> tuple[list[int], list[Summary]]:
    """The sizes a method has and the summary over seeds at each (to plot)."""
    sizes = sorted(n for m, n in scores if m == method)
    return sizes, [summarize(list(scores[(method, n)].values())) for n in sizes]


def _draw(ax, scores: Scores, reference: str, linewidth: float) -> None:
    for m in plotted(scores, reference):
        sizes, sums = band(scores, m)
        (line,) = ax.plot(sizes, [100 * s.mean for s in sums], marker="o", lw=linewidth, label=m)
        with_ci = [(n, s) for n, s in zip(sizes, sums) if not math.isnan(s.low)]
        if with_ci:
            ax.fill_between([n for n, _ in with_ci], [100 * s.low for _, s in with_ci],
                            [100 * s.high for _, s in with_ci], color=line.get_color(), alpha=0.15)  # fmt: skip
    _size_axis(ax, _sizes(scores))
    ax.grid(alpha=0.3)


def plot_average(plt, scores: Scores, reference: str, path: Path, xlabel: str, ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    _draw(ax, scores, reference, 1.5)
    _save_single(plt, fig, ax, path, xlabel, ylabel, "mean over seeds, 95% t interval bands")


def _save_single(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Label, title, legend and write a one-axes figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_differences(
    plt, scores: Scores, reference: str, path: Path, xlabel: str, ylabel: str
) -> None:
    """reference − method paired by seed vs size, one line per plotted method with its 95%
    interval as error bars: whether the reference's lead grows as the data shrinks."""
    pairs = seed_pairs(scores, reference)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    others = [m for m in plotted(scores, reference) if m != reference]
    for k, m in enumerate(others):
        sizes = [n for n in _sizes(scores) if pairs.get((m, n)) is not None]
        diffs = [pairs[(m, n)].diff for n in sizes]
        # nudge each method sideways (log axis: a factor) so the error bars do not overlap
        xs = [n * 1.03 ** (k - (len(others) - 1) / 2) for n in sizes]
        ys = [100 * d.mean for d in diffs]
        err = [[100 * (d.mean - d.low) if d.n > 1 else 0.0 for d in diffs],
               [100 * (d.high - d.mean) if d.n > 1 else 0.0 for d in diffs]]  # fmt: skip
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, lw=1.2, label=f"{reference} − {m}")
    ax.axhline(0, color="black", lw=0.8)
    _size_axis(ax, _sizes(scores))
    ax.grid(alpha=0.3)
    _save_single(
        plt, fig, ax, path, xlabel, ylabel, "paired by seed: mean difference, 95% t interval"
    )


def plot_tasks(plt, cells: Cells, reference: str, path: Path, xlabel: str, ylabel: str) -> None:
    tasks = sorted({t for seeds in cells.values() for per in seeds.values() for t in per})
    cols = min(4, len(tasks))
    nrows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        _draw(ax, one_task(cells, task), reference, 1.0)
        ax.set_title(task, fontsize=9)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supylabel(ylabel)
    fig.supxlabel(xlabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the report ------------------------------------------------------------------------


def study_section(
    rows: list[dict], size: str, size_label: str, reference: str, metric: str
) -> list[str]:
    """Tables of one study (the grid, or transfer): averages, paired differences, per task."""
    cells = collect(rows, size, metric)
    scores = task_average(cells)
    lines = [f"Average test {metric} over tasks (%): mean ± std [95% CI] over seeds", ""]
    lines += summary_table(scores, size_label, reference)
    for pairs, what in ((seed_pairs(scores, reference), "seed (task averages)"),
                        (task_pairs(cells, reference), "task (seed means)")):  # fmt: skip
        table = paired_table(pairs, size_label, reference, what)
        lines += ["", *table] if table else []
    if metric != "accuracy" and any(r["metric"] == "accuracy" for r in rows):
        acc = task_average(collect(rows, size, "accuracy"))
        lines += ["", "Average test accuracy over tasks (%): mean ± std [95% CI] over seeds", ""]
        lines += summary_table(acc, size_label, reference)
    val = task_average(collect(rows, size, metric, "validation"))
    if val:
        lines += ["", f"Average validation {metric} of the selected checkpoints (%)", ""]
        lines += summary_table(val, size_label, reference)
    lines += ["", f"Per task test {metric} (%)", ""]
    lines += per_task_tables(cells, size_label, reference)
    return lines


def _task_free_table(rows: list[dict], metric: str) -> list[str]:
    """One task-free table: per input prefix and task, the mean over runs of the retrieval
    accuracy and of `metric` with the task ids given / found by retrieval ([] if no rows)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["metric"] == metric:
            groups[(r["prefix"], r["task"])].append(r)
            groups[(r["prefix"], "average")].append(r)
    if not groups:
        return []
    lines = [f"Mean over runs (%); {metric} with the task ids given and with the task found "
             "by the nearest prototype:", "",
             f"| task-name prefix | task | runs | retrieval accuracy | {metric}, ids given | "
             f"{metric}, task retrieved |", "|---" * 6 + "|"]  # fmt: skip
    for (prefix, task), group in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "average", kv[0][1])
    ):
        runs = len({r["run"] for r in group})
        cells = [prefix, task, str(runs)] + [
            f"{100 * mean(float(r[k]) for r in group):.1f}"
            for k in ("retrieval_accuracy", "with_task_ids", "with_retrieval")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def task_free_section(rows: list[dict], metric: str) -> list[str]:
    """pha.evaluate --no-task-ids rows: the table for `metric`, then the same for accuracy,
    which a misrouted answer moves less than a macro average does."""
    tables = [
        t for name in dict.fromkeys((metric, "accuracy")) if (t := _task_free_table(rows, name))
    ]
    return [line for i, t in enumerate(tables) for line in ([""] if i else []) + t]


def report(args: argparse.Namespace) -> str:
    """STEM.md (printed too), STEM.png and STEM_tasks.png next to --out (STEM: its name
    without .csv, so results/sample_efficiency.md by default), and the transfer plot
    next to --transfer-out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = args.out.with_suffix("")
    rows = read_rows(args.out)
    lines = ["# Sample efficiency", "", f"From {args.out.name}; {args.reference} is paired "
             "against each method on the same seeds (the same training examples).", ""]  # fmt: skip
    cells = collect(rows, "n_train", args.metric)
    lines += [f"At a glance: average test {args.metric} over tasks (%), mean ± std [95% CI] "
              f"(seeds); {args.reference} − method paired by seed [95% CI], p", ""]  # fmt: skip
    lines += glance_table(task_average(cells), "n", args.reference, args.methods)
    lines += ["", *study_section(rows, "n_train", "n", args.reference, args.metric)]
    ylabel = f"test {args.metric} (%)"
    plot_average(plt, task_average(cells), args.reference, stem.with_name(stem.name + ".png"),
                 "training examples per task", f"average {ylabel}")  # fmt: skip
    plot_differences(plt, task_average(cells), args.reference,
                     stem.with_name(stem.name + "_differences.png"), "training examples per task",
                     f"{args.reference} − method, average {ylabel}")  # fmt: skip
    plot_tasks(plt, cells, args.reference, stem.with_name(stem.name + "_tasks.png"),
               "training examples per task", ylabel)  # fmt: skip
    if args.transfer_out.exists():
        t_rows = read_rows(args.transfer_out)
        t_scores = task_average(collect(t_rows, "k_shot", args.metric))
        lines += ["", "## Few-shot transfer to held-out tasks", ""]
        lines += glance_table(t_scores, "k", "pha_transfer", _methods(t_scores, "pha_transfer"))
        lines += ["", *study_section(t_rows, "k_shot", "k", "pha_transfer", args.metric)]
        plot_average(plt, t_scores, "pha_transfer",
                     args.transfer_out.with_suffix(".png"), "examples per held-out task (k)",
                     f"average {ylabel}")  # fmt: skip
    if args.task_free_csv.exists():
        lines += ["", "## Inference without task ids (nearest prototype)", ""]
        lines += task_free_section(read_rows(args.task_free_csv), args.metric)
    text = "\n".join(lines) + "\n"
    print(text)
    write_text(stem.with_name(stem.name + ".md"), text)
    return text
