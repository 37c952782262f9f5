"""The sample-efficiency study: methods x n_train per task x seeds on the 8-task suite,
few-shot transfer to held-out tasks, and the report (tables, statistics, plots).

Every run is one subprocess of the code users run: `python -m pha.train` for the pha
methods and `linear_probe`, `python benchmarks/baselines.py lora [--shared]` for HF PEFT
LoRA (`lora`: one per task; `lora_shared`: one for all tasks, per-task heads), both on
pha.data.load_tasks's splits with validation-selected checkpoints and the test split read
once. The study passes only what differs per cell (method, n_train, seed; flags after --
for a budget): every other setting is pha.train's per-method default
(pha.train_config.METHOD_DEFAULTS), and the baselines get pha.train's n_eval, max_length
and task prefix. Rows (method,n_train,seed,task,metric,score,split,config; split is
validation or test, config the exact flags of the run as a JSON list) are appended to
the CSV under a lock as runs finish; finished runs are skipped, interrupted pha.train
runs resume from their checkpoint.

    python benchmarks/sample_efficiency.py --plan           # print the runs still to do
    python benchmarks/sample_efficiency.py                  # the grid (long)
    python benchmarks/sample_efficiency.py --methods pha,adapter --n-train 100 --seeds 0
    python benchmarks/sample_efficiency.py --label pha-lr3e-4 --methods pha -- --lr 3e-4
    python benchmarks/sample_efficiency.py --rerun pha,100,0 # one cell again, from its flags
    python benchmarks/sample_efficiency.py --transfer       # few-shot transfer grid
    python benchmarks/sample_efficiency.py --report         # tables, statistics and plots

The default plan: n_train 16, 32, 100, 500 per task; seeds 0-2, and 0-4 at n <= 32 where
the variance is largest (--seeds overrides both). Two workers with one thread each get
more runs per hour than one with two threads on a 2-core machine:

    OMP_NUM_THREADS=1 python benchmarks/sample_efficiency.py --shard 0/2 &
    OMP_NUM_THREADS=1 python benchmarks/sample_efficiency.py --shard 1/2 &

--rerun METHOD,N,SEED trains the cell again from the flags recorded in the CSV, into
RUNS_DIR/rerun/, and prints the old and the new average test macro-F1 (the issue's
reproducibility check: within 1.5 points on another machine of the same kind).

--transfer: k = 4, 16, 32 examples per held-out task (HELD_OUT below), seeds 0-2; arms
`pha_transfer` (the grid's PHA run at --source-n-train of the same seed, new prototypes
per pha.train's --transfer-init / --transfer-tune, settable here), `fresh_adapter` and
`linear_probe` trained on the same k examples; rows to --transfer-out
(method,k_shot,seed,...). Run the grid's PHA cells first.

Task-free inference (the nearest-prototype claim), per PHA run, with and without the
task-name prefix (a run trained with --task-prefix false):

    python benchmarks/sample_efficiency.py --label pha-noprefix --methods pha \\
        --n-train 100 --seeds 0,1,2 -- --task-prefix false
    python benchmarks/sample_efficiency.py --task-free --methods pha --n-train 100 --seeds 0,1,2
    python benchmarks/sample_efficiency.py --task-free --label pha-noprefix --methods pha \\
        --n-train 100 --seeds 0,1,2

which run, per finished run, `python -m pha.evaluate RUN --no-task-ids --csv
results/task_free_inference.csv`.

The paper's regime, on the text-to-text decoder smollm2 (shared LM head), in its own CSV
and run directory, beside the MiniLM grid:

    python benchmarks/sample_efficiency.py --model smollm2 --methods pha,adapter \
        --n-train 32,100 --seeds 0,1,2 --tasks tweet_sentiment,rt_polarity,rt_subjectivity,bbc_topic \
        --out results/smollm2.csv --runs-dir runs/sample_efficiency_smollm2 \
        -- --precision bf16 --n-val 50
    python benchmarks/sample_efficiency.py --report --out results/smollm2.csv \
        --transfer-out none --task-free-csv none

--report reads only the CSVs (--out, and --transfer-out and --task-free-csv when they
exist) and writes, named after --out, results/sample_efficiency.md with
sample_efficiency.png (average over tasks vs n_train, one line per method, 95% CI bands)
sample_efficiency_tasks.png (the same per task), sample_efficiency_differences.png (PHA −
method vs n_train with 95% intervals) and few_shot_transfer.png. Statistics: mean ± sample std and the 95% t interval over seeds;
--reference (pha) − each other method paired by seed (same seed = same training
examples): mean difference, 95% CI, paired t-test p-value, significant at 0.05, and the
p-value Holm-adjusted over every comparison of its table; pooled over all the sizes two
methods share (paired by size and seed); the same per task, and paired by task
(seed-averaged per-task scores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the benchmarks are scripts: import the statistics module
    sys.path.insert(0, str(HERE))

import study_report  # noqa: E402
from study_report import read_rows  # noqa: E402

ROOT = HERE.parent
RESULTS = ROOT / "results"
FIELDS = ["method", "n_train", "seed", "task", "metric", "score", "split", "config"]
TRANSFER_FIELDS = ["method", "k_shot", "seed", "task", "metric", "score", "split", "config"]
TASK_FREE_CSV = RESULTS / "task_free_inference.csv"
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
# Few-shot transfer targets, chosen before any transfer run of this study and never used to
# choose a hyperparameter: BIG-bench tasks outside SUITE with one fixed binary label set
# and at least 68 test examples (a few-shot score on a smaller test split is mostly noise).
# Not intent_recognition / presuppositions_as_nli: the earlier transfer study and the
# warm-start search of the training-protocol issue looked at those. Not
# play_dialog_same_or_different: the same format as a suite task (movie_dialog_...).
HELD_OUT = [
    "bigbench:logical_fallacy_detection",  # Valid / Invalid argument, 283 test examples
    "bigbench:winowhy",  # is the explanation of a Winograd answer correct, 299
    "bigbench:sports_understanding",  # plausible / implausible sports sentence, 96
    "bigbench:metaphor_boolean",  # does the sentence paraphrase the metaphor, 68
]
METHODS = [
    "pha", "hyperformer", "hyperpelt", "hyperdecoder", "adapter", "full", "linear_probe",
    "lora", "lora_shared",
]  # fmt: skip
# Baselines run by benchmarks/baselines.py (its positional and flags), not pha.train.
BASELINES = {"lora": ["lora"], "lora_shared": ["lora", "--shared"]}
N_TRAIN = [16, 32, 100, 500]
SEEDS = [0, 1, 2]
SMALL_N, SMALL_N_SEEDS = 32, [0, 1, 2, 3, 4]  # more seeds where the variance is largest
TRANSFER_ARMS = ("pha_transfer", "fresh_adapter", "linear_probe")


def _csv_list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _int_list(text: str) -> list[int]:
    return [int(x) for x in _csv_list(text)]


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < N, got {text!r}")
    return i, n


def _cell_arg(text: str) -> tuple[str, int, int]:
    try:
        method, n, seed = text.split(",")
        return method, int(n), int(seed)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected METHOD,N,SEED (e.g. pha,100,0), got {text!r}"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", type=_csv_list, default=METHODS)
    p.add_argument("--n-train", type=_int_list, default=N_TRAIN)
    p.add_argument(
        "--seeds",
        type=_int_list,
        help=f"seeds of every cell (default: {SEEDS}, {SMALL_N_SEEDS} at n_train <= {SMALL_N})",
    )
    p.add_argument("--tasks", type=_csv_list, default=SUITE)
    p.add_argument("--held-out", type=_csv_list, default=HELD_OUT, help="tasks for --transfer")
    p.add_argument("--k-shot", type=_int_list, default=[4, 16, 32])
    p.add_argument("--transfer-seeds", type=_int_list, default=SEEDS)
    p.add_argument(
        "--source-n-train",
        type=int,
        default=100,
        help="transfer from the grid's PHA run of this size",
    )
    p.add_argument(
        "--transfer-init", choices=("nearest", "mean"), help="pha.train's default if unset"
    )
    p.add_argument(
        "--transfer-tune", choices=("prototype", "all"), help="pha.train's default if unset"
    )
    p.add_argument(
        "--shard", type=_shard_arg, default=(0, 1), help="I/N: do every N-th run from the I-th"
    )
    p.add_argument(
        "--label",
        help="name a variant in the CSV and run directories (one method; its flags after --)",
    )
    p.add_argument(
        "--reference", default="pha", help="the method the report pairs against the others"
    )
    p.add_argument("--metric", default="macro_f1", help="the per-task score the report averages")
    p.add_argument("--model", default="minilm")
    p.add_argument("--out", type=Path, default=RESULTS / "sample_efficiency.csv")
    p.add_argument("--transfer-out", type=Path, default=RESULTS / "few_shot_transfer.csv")
    p.add_argument("--task-free-csv", type=Path, default=TASK_FREE_CSV, help="read by --report")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "sample_efficiency")
    p.add_argument("--plan", action="store_true", help="print the runs that are still to do")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--transfer", action="store_true", help="run the few-shot transfer grid")
    mode.add_argument("--report", action="store_true", help="write tables and plots from the CSVs")
    mode.add_argument("--rerun", type=_cell_arg, metavar="METHOD,N,SEED", help="re-run one cell")
    mode.add_argument(
        "--task-free",
        action="store_true",
        help="pha.evaluate --no-task-ids on the grid's finished runs of --methods (or --label) "
        "x --n-train x seeds, rows to --task-free-csv",
    )
    p.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        help="after --: extra pha.train flags (the PEFT baselines take from them only the "
        "data settings: --n-eval, --n-val, --max-length, --task-prefix)",
    )
    args = p.parse_args(argv)
    args.train_args = [a for a in args.train_args if a != "--"]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"--methods: unknown {unknown}; valid: {','.join(METHODS)}")
    if args.label and len(args.methods) != 1:
        p.error(f"--label names one method's variant; got --methods {','.join(args.methods)}")
    return args


def seeds_for(n: int, args: argparse.Namespace) -> list[int]:
    if args.seeds is not None:
        return args.seeds
    return SMALL_N_SEEDS if n <= SMALL_N else SEEDS


# ---- the CSV ---------------------------------------------------------------------------


def _done(path: Path, key_fields: tuple[str, ...], tasks: list[str]) -> set[tuple[str, ...]]:
    """Keys of the runs in the CSV that have test rows for every one of `tasks`."""
    if not path.exists():
        return set()
    seen: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for row in read_rows(path):
        if row["split"] == "test":
            seen[tuple(row[k] for k in key_fields)].add(row["task"])
    return {key for key, have in seen.items() if have >= set(tasks)}


def append_rows(path: Path, rows: list[dict], fields: list[str]) -> None:
    """Append under a lock (shards share the file); a file of other columns is refused."""
    from pha.task_free import append_csv

    try:
        append_csv(path, rows, fields)
    except ValueError as e:
        raise SystemExit(f"{e} (--out / --transfer-out)") from None


def metric_rows(metrics: dict, keys: dict, flags: list[str]) -> list[dict]:
    """CSV rows of a metrics.json: the selected checkpoint's validation and test scores."""
    config = json.dumps(flags)
    return [
        {**keys, "task": task, "metric": name, "score": value, "split": split, "config": config}
        for split, per_task in (("validation", metrics["validation"]["tasks"]), ("test", metrics["tasks"]))
        for task, values in per_task.items()
        for name, value in values.items()
    ]  # fmt: skip


# ---- running one cell ------------------------------------------------------------------


def command(flags: list[str], out_dir: Path) -> list[str]:
    """The subprocess of a recorded flag list: baselines.py when it starts with a
    baseline's positional (lora, probe), pha.train otherwise."""
    if flags and not flags[0].startswith("-"):
        return [sys.executable, str(HERE / "baselines.py"), *flags, "--json", str(out_dir / "metrics.json")]  # fmt: skip
    cmd = [sys.executable, "-m", "pha.train", *flags, "--output-dir", str(out_dir), "--quiet"]
    if any(out_dir.glob("checkpoint*")):
        cmd.append("--resume")
    return cmd


def run_flags(flags: list[str], out_dir: Path) -> dict:
    """Run (or resume) one run into out_dir; returns its metrics.json. The flags are kept in
    out_dir/study_flags.json: a finished run with the same flags is not run again, an
    interrupted one resumes, and a directory of another run is refused (its checkpoints
    or metrics would be taken for this run's)."""
    marker = out_dir / "study_flags.json"
    metrics_path = out_dir / "metrics.json"
    same = marker.exists() and json.loads(marker.read_text()) == flags
    if same and metrics_path.exists():
        return json.loads(metrics_path.read_text())
    if not same and out_dir.exists() and any(out_dir.iterdir()):
        raise SystemExit(
            f"{out_dir} holds another run (its study_flags.json is missing or differs from "
            f"{flags}): move it away or pass another --runs-dir"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path.unlink(missing_ok=True)
    study_report.write_text(marker, json.dumps(flags))
    cmd = command(flags, out_dir)
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    print(f"  done in {time.time() - start:.0f} s", flush=True)
    return json.loads(metrics_path.read_text())


def data_settings(train_args: list[str]) -> dict:
    """pha.train's resolved n_eval, n_val, max_length and task_prefix (with the flags after
    --), which the PEFT baselines must share to see the same inputs and splits."""
    from pha.train_config import resolve_config

    cfg = resolve_config(train_args)
    keys = ("n_eval", "n_val", "max_length", "task_prefix")
    return {k: getattr(cfg, k) for k in keys}


def cell_flags(args: argparse.Namespace, method: str, n: int, seed: int, data: dict) -> list[str]:
    """The flags of one grid run: only what differs per cell, the rest is each program's
    default (pha.train's per-method defaults)."""
    common = ["--model", args.model, "--tasks", ",".join(args.tasks), "--n-train", str(n),
              "--seed", str(seed)]  # fmt: skip
    if method in BASELINES:
        flags = [*BASELINES[method], *common, "--n-eval", str(data["n_eval"])]
        flags += ["--max-length", str(data["max_length"])]
        if data["n_val"] is not None:
            flags += ["--n-val", str(data["n_val"])]
        return flags + (["--task-prefix"] if data["task_prefix"] else [])
    return ["--method", method, *common, *args.train_args]


def _name(args: argparse.Namespace, method: str) -> str:
    """The method column of the CSV: the method, or the --label of its variant."""
    return args.label or method


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


def plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(method, n, seed) of the grid, seed-major: an interrupted study still has every
    (method, size) cell, with fewer seeds."""
    seeds = sorted({s for n in args.n_train for s in seeds_for(n, args)})
    return [
        (m, n, s)
        for s in seeds
        for n in args.n_train
        if s in seeds_for(n, args)
        for m in args.methods
    ]


def run_grid(args: argparse.Namespace) -> None:
    done = _done(args.out, ("method", "n_train", "seed"), args.tasks)
    todo = [
        (m, n, s)
        for m, n, s in _shard(plan(args), args, len(args.methods))
        if (_name(args, m), str(n), str(s)) not in done
    ]
    index, count = args.shard
    print(f"{len(todo)} runs to do in shard {index}/{count} ({len(done)} done) -> {args.out}")
    if args.plan:
        for method, n, seed in todo:
            print(f"  {_name(args, method)} n_train={n} seed={seed}")
        return
    data = data_settings(args.train_args) if any(m in BASELINES for m, _, _ in todo) else {}
    for method, n, seed in todo:
        name = _name(args, method)
        flags = cell_flags(args, method, n, seed, data)
        metrics = run_flags(flags, args.runs_dir / f"{name}-n{n}-s{seed}")
        keys = {"method": name, "n_train": n, "seed": seed}
        append_rows(args.out, metric_rows(metrics, keys, flags), FIELDS)


# ---- re-running one cell ---------------------------------------------------------------


def recorded_flags(rows: list[dict], method: str, n: int, seed: int) -> list[str]:
    """The flags the CSV recorded for one cell (one flag list per cell, or an error)."""
    cell = [
        r for r in rows if (r["method"], r["n_train"], r["seed"]) == (method, str(n), str(seed))
    ]
    if not cell:
        have = sorted({(r["method"], int(r["n_train"]), int(r["seed"])) for r in rows})
        raise SystemExit(f"--rerun: no rows for {method},{n},{seed}; cells in the CSV: {have}")
    configs = {r["config"] for r in cell}
    if len(configs) != 1:
        raise SystemExit(f"--rerun: {method},{n},{seed} has {len(configs)} different configs")
    return json.loads(configs.pop())


def average_test(scores: dict[str, dict[str, float]], metric: str) -> float:
    """The average over tasks of `metric` (every task must have it)."""
    missing = sorted(t for t, m in scores.items() if metric not in m)
    if missing:
        raise SystemExit(f"no {metric!r} for tasks {missing}")
    return mean(m[metric] for m in scores.values())


RUN_LOCAL = {"output_dir", "resume", "quiet", "backend"}  # where / how a run ran, not what


def settings_changed(original: Path, again: Path) -> dict:
    """{setting: (original, again)} of two pha.train runs' resolved config.json (empty when
    either has none: a baseline, or the original run directory is not on this machine)."""
    paths = [original / "config.json", again / "config.json"]
    if not all(p.exists() for p in paths):
        return {}
    a, b = (json.loads(p.read_text()) for p in paths)
    return {
        k: (a.get(k), b.get(k))
        for k in sorted((set(a) | set(b)) - RUN_LOCAL)
        if a.get(k) != b.get(k)
    }


def rerun(args: argparse.Namespace) -> dict:
    """Train one cell again from its recorded flags, into RUNS_DIR/rerun/; print the old and
    new average test score."""
    method, n, seed = args.rerun
    rows = read_rows(args.out)
    flags = recorded_flags(rows, method, n, seed)
    old_scores: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if (r["method"], r["n_train"], r["seed"], r["split"]) == (
            method,
            str(n),
            str(seed),
            "test",
        ):
            old_scores[r["task"]][r["metric"]] = float(r["score"])
    out_dir = args.runs_dir / "rerun" / f"{method}-n{n}-s{seed}"
    metrics = run_flags(flags, out_dir)
    changed = settings_changed(args.runs_dir / f"{method}-n{n}-s{seed}", out_dir)
    if changed:  # e.g. a per-method default changed since: the flags no longer say it all
        print(f"resolved settings differ from the recorded run's config.json: {changed}")
    old, new = average_test(old_scores, args.metric), average_test(metrics["tasks"], args.metric)
    print(f"{method} n_train={n} seed={seed}: average test {args.metric} "
          f"old {100 * old:.2f}, new {100 * new:.2f}, new − old {100 * (new - old):+.2f} points")  # fmt: skip
    return {"old": old, "new": new}


# ---- inference without task ids -------------------------------------------------------


def run_task_free(args: argparse.Namespace) -> None:
    """Evaluate the grid's finished runs without task ids (runs already in the CSV skipped)."""
    done = set()
    if args.task_free_csv.exists():
        done = {r["run"] for r in read_rows(args.task_free_csv)}
    for method, n, seed in plan(args):
        run_dir = args.runs_dir / f"{_name(args, method)}-n{n}-s{seed}"
        if str(run_dir) in done:
            continue
        if not (run_dir / "metrics.json").exists():
            print(f"  {run_dir}: not finished, skipped", flush=True)
            continue
        cmd = [sys.executable, "-m", "pha.evaluate", str(run_dir), "--no-task-ids",
               "--csv", str(args.task_free_csv)]  # fmt: skip
        print("$", " ".join(cmd), flush=True)
        if not args.plan:
            subprocess.run(cmd, check=True, cwd=ROOT)


# ---- few-shot transfer -----------------------------------------------------------------


def transfer_flags(args: argparse.Namespace, arm: str, k: int, seed: int) -> list[str]:
    base = ["--tasks", ",".join(args.held_out), "--seed", str(seed)]
    if arm == "pha_transfer":
        source = args.runs_dir / f"pha-n{args.source_n_train}-s{seed}"
        flags = ["--transfer-from", str(source), "--k-shot", str(k), *base]
        for key in ("transfer_init", "transfer_tune"):
            if getattr(args, key) is not None:
                flags += ["--" + key.replace("_", "-"), getattr(args, key)]
        return flags + args.train_args
    method = "adapter" if arm == "fresh_adapter" else arm
    return ["--method", method, "--model", args.model, "--n-train", str(k), *base, *args.train_args]


def run_transfer(args: argparse.Namespace) -> None:
    """Tune on k examples of each held-out task: PHA's new prototypes on the grid's PHA run
    (trained on the suite) vs a fresh adapter and a linear probe on the same k examples."""
    overlap = sorted(set(args.held_out) & set(args.tasks))
    if overlap:
        raise SystemExit(f"--held-out: {overlap} are also training tasks (--tasks)")
    done = _done(args.transfer_out, ("method", "k_shot", "seed"), args.held_out)
    runs = [(a, k, s) for s in args.transfer_seeds for k in args.k_shot for a in TRANSFER_ARMS]
    todo = [
        r
        for r in _shard(runs, args, len(TRANSFER_ARMS))
        if (r[0], str(r[1]), str(r[2])) not in done
    ]
    print(f"{len(todo)} transfer runs to do ({len(done)} done) -> {args.transfer_out}")
    for arm, k, seed in todo:
        if args.plan:
            print(f"  transfer {arm} k={k} seed={seed}")
            continue
        if arm == "pha_transfer":
            source = args.runs_dir / f"pha-n{args.source_n_train}-s{seed}"
            finished = (source / "metrics.json").exists() and (source / "study_flags.json").exists()
            if not finished:  # never trained here: no two workers race
                raise SystemExit(
                    f"transfer source {source} is not finished: run the grid first "
                    f"(--methods pha --n-train {args.source_n_train} --seeds {seed})"
                )
        flags = transfer_flags(args, arm, k, seed)
        metrics = run_flags(flags, args.runs_dir / "transfer" / f"{arm}-k{k}-s{seed}")
        keys = {"method": arm, "k_shot": k, "seed": seed}
        append_rows(args.transfer_out, metric_rows(metrics, keys, flags), TRANSFER_FIELDS)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.report:
        study_report.report(args)
    elif args.rerun:
        return rerun(args)
    elif args.transfer:
        run_transfer(args)
    elif args.task_free:
        run_task_free(args)
    else:
        run_grid(args)


if __name__ == "__main__":
    main()
