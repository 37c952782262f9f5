"""The sample-efficiency study's bookkeeping: planning, shards, the resumable CSV, the flags
of each cell and their recovery for --rerun, transfer arms, and the report's arithmetic."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from train_utils import pha_cache, tiny_bert  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location(
        "sample_efficiency", ROOT / "benchmarks/sample_efficiency.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["sample_efficiency"] = module
    spec.loader.exec_module(module)
    return module


def _write(study, path: Path, rows: list[tuple]) -> None:
    study.append_rows(path, [dict(zip(study.FIELDS, row)) for row in rows], study.FIELDS)


def _row(method, n, seed, task, metric, score, split="test", config='["--seed", "0"]'):
    return (method, n, seed, task, metric, score, split, config)


def _plan(out: Path, methods: str, n_train: str = "32") -> list[str]:
    """Flags of a --plan over seed 0 of `methods` x `n_train` (one task by default)."""
    return ["--plan", "--out", str(out), "--methods", methods, "--n-train", n_train, "--seeds", "0"]


def _planned(capsys) -> list[str]:
    return [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]


def test_default_plan_has_more_seeds_at_small_n_and_is_seed_major(study):
    args = study.parse_args([])
    runs = study.plan(args)
    methods = len(study.METHODS)
    assert {m for m, _, _ in runs} == {"pha", "adapter", "full", "linear_probe", "lora", "lora_shared",
                                       "hyperformer", "hyperpelt", "hyperdecoder"}  # fmt: skip
    assert len(runs) == methods * (2 * 5 + 2 * 3)  # n 16, 32: seeds 0-4; n 100, 500: 0-2
    assert {s for m, n, s in runs if n == 16} == {0, 1, 2, 3, 4}
    assert {s for m, n, s in runs if n == 500} == {0, 1, 2}
    assert [s for _, _, s in runs] == sorted(s for _, _, s in runs)  # every size before seed+1
    explicit = study.plan(study.parse_args(["--seeds", "7", "--n-train", "16,500"]))
    assert {(n, s) for _, n, s in explicit} == {(16, 7), (500, 7)}
    with pytest.raises(SystemExit):
        study.parse_args(["--methods", "pha,nope"])


def test_plan_skips_runs_with_test_rows_for_every_task(study, tmp_path, capsys):
    out = tmp_path / "se.csv"
    _write(study, out, [_row("pha", 32, 0, "a", "accuracy", 0.5)])
    _write(study, out, [_row("adapter", 32, 0, "a", "accuracy", 0.5, "validation")])
    grid = _plan(out, "pha,adapter")
    study.main([*grid, "--tasks", "a"])
    printed = capsys.readouterr().out
    assert "1 runs to do in shard 0/1 (1 done)" in printed
    assert "adapter n_train=32 seed=0" in printed and "pha n_train=32" not in printed
    study.main([*grid, "--tasks", "a,b"])  # a run without rows for every task is not done
    assert "2 runs to do" in capsys.readouterr().out


def test_shards_split_the_grid_and_stay_stable_when_runs_finish(study, tmp_path, capsys):
    out = tmp_path / "se.csv"
    grid = [*_plan(out, "pha,adapter", "32,100"), "--tasks", "a"]
    planned = []
    for shard in ("0/2", "1/2"):
        study.main(["--shard", shard, *grid])
        planned.append(_planned(capsys))
    assert sorted(planned[0] + planned[1]) == sorted(
        f"{m} n_train={n} seed=0" for m in ("pha", "adapter") for n in (32, 100)
    )
    assert not set(planned[0]) & set(planned[1])
    assert {p.split()[0] for p in planned[0]} == {"pha", "adapter"}  # not one method per worker
    _write(study, out, [_row("pha", 32, 0, "a", "accuracy", 0.5)])  # shard 0's first run
    study.main(["--shard", "1/2", *grid])
    assert _planned(capsys) == planned[1]
    with pytest.raises(SystemExit):
        study.parse_args(["--shard", "2/2"])


def test_label_names_a_variant_of_one_method(study, tmp_path, capsys):
    out = tmp_path / "se.csv"
    _write(study, out, [_row("hyperformer", 32, 0, "a", "accuracy", 0.5)])
    grid = [*_plan(out, "hyperformer"), "--tasks", "a"]
    study.main([*grid, "--label", "hf-zero", "--", "--lr", "1e-4"])
    assert "hf-zero n_train=32 seed=0" in capsys.readouterr().out  # not the plain method's run
    with pytest.raises(SystemExit):
        study.parse_args(["--methods", "pha,adapter", "--label", "x"])


def test_cell_flags_pass_only_what_differs_per_cell(study):
    args = study.parse_args(["--tasks", "a,b", "--", "--max-steps", "5"])
    data = {"n_eval": 300, "n_val": None, "max_length": 64, "task_prefix": True}
    assert study.cell_flags(args, "pha", 16, 3, data) == [
        "--method", "pha", "--model", "minilm", "--tasks", "a,b", "--n-train", "16",
        "--seed", "3", "--max-steps", "5",
    ]  # fmt: skip
    args = study.parse_args(["--tasks", "a,b"])
    shared = study.cell_flags(args, "lora_shared", 100, 1, {**data, "n_val": 50})
    assert shared == [
        "lora", "--shared", "--model", "minilm", "--tasks", "a,b", "--n-train", "100",
        "--seed", "1", "--n-eval", "300", "--max-length", "64", "--n-val", "50", "--task-prefix",
    ]  # fmt: skip
    lora = study.cell_flags(args, "lora", 100, 1, {**data, "task_prefix": False})
    assert lora[:2] == ["lora", "--model"] and "--task-prefix" not in lora and "--n-val" not in lora
    # the program is recovered from the flags alone
    assert study.command(lora, Path("r"))[1].endswith("baselines.py")
    assert study.command(study.cell_flags(args, "pha", 16, 0, data), Path("r"))[1:3] == [
        "-m",
        "pha.train",
    ]


def test_baselines_get_pha_trains_data_settings(study):
    pytest.importorskip("torch")
    assert study.data_settings([]) == {"n_eval": 300, "n_val": None, "max_length": 64,
                                       "task_prefix": True}  # fmt: skip
    changed = study.data_settings(["--task-prefix", "false", "--n-val", "100"])
    assert changed["task_prefix"] is False and changed["n_val"] == 100


def test_rows_hold_validation_and_test_with_the_flags(study, tmp_path):
    metrics = {"tasks": {"a": {"accuracy": 0.5, "macro_f1": 0.4}},
               "validation": {"tasks": {"a": {"accuracy": 0.6, "macro_f1": 0.55}}}}  # fmt: skip
    flags = ["--method", "pha", "--seed", "0"]
    rows = study.metric_rows(metrics, {"method": "pha", "n_train": 16, "seed": 0}, flags)
    assert {(r["split"], r["metric"], r["score"]) for r in rows} == {
        ("test", "accuracy", 0.5), ("test", "macro_f1", 0.4),
        ("validation", "accuracy", 0.6), ("validation", "macro_f1", 0.55),
    }  # fmt: skip
    assert all(json.loads(r["config"]) == flags for r in rows)
    out = tmp_path / "se.csv"
    study.append_rows(out, rows, study.FIELDS)
    study.append_rows(out, rows, study.FIELDS)
    with out.open() as f:
        lines = list(csv.reader(f))
    assert lines[0] == study.FIELDS and len(lines) == 9  # one header
    old = tmp_path / "old.csv"
    old.write_text("method,n_train,seed,task,metric,score,config\n")
    with pytest.raises(SystemExit, match="move the old file away"):
        study.append_rows(old, rows, study.FIELDS)


def test_rerun_recovers_the_recorded_flags(study, tmp_path, monkeypatch, capsys):
    out = tmp_path / "se.csv"
    flags = ["--method", "pha", "--tasks", "a,b", "--n-train", "16", "--seed", "1"]
    config = json.dumps(flags)
    _write(study, out, [
        _row("pha", 16, 1, "a", "macro_f1", 0.5, config=config),
        _row("pha", 16, 1, "b", "macro_f1", 0.7, config=config),
        _row("pha", 16, 1, "a", "macro_f1", 0.9, "validation", config),
        _row("pha", 16, 0, "a", "macro_f1", 0.1, config='["other"]'),
    ])  # fmt: skip
    calls = []

    def fake_run(run_flags, out_dir):
        calls.append((run_flags, out_dir))
        return {"tasks": {"a": {"macro_f1": 0.52}, "b": {"macro_f1": 0.71}}}

    monkeypatch.setattr(study, "run_flags", fake_run)
    result = study.main(["--rerun", "pha,16,1", "--out", str(out), "--runs-dir", str(tmp_path)])
    assert calls == [(flags, tmp_path / "rerun" / "pha-n16-s1")]
    assert "old 60.00, new 61.50, new − old +1.50 points" in capsys.readouterr().out
    assert result == pytest.approx({"old": 0.6, "new": 0.615})
    with pytest.raises(
        SystemExit, match=r"no rows for pha,500,1; cells in the CSV: \[\('pha', 16, 0\)"
    ):
        study.main(["--rerun", "pha,500,1", "--out", str(out)])
    _write(study, out, [_row("pha", 16, 1, "b", "accuracy", 0.7, config='["changed"]')])
    with pytest.raises(SystemExit, match="2 different configs"):
        study.main(["--rerun", "pha,16,1", "--out", str(out)])
    with pytest.raises(SystemExit):
        study.parse_args(["--rerun", "pha,16"])


def test_transfer_arms_train_on_the_same_k_examples(study, tmp_path):
    args = study.parse_args(["--runs-dir", str(tmp_path), "--transfer-init", "mean"])
    held = ",".join(study.HELD_OUT)
    pha = study.transfer_flags(args, "pha_transfer", 16, 2)
    assert pha == ["--transfer-from", str(tmp_path / "pha-n100-s2"), "--k-shot", "16",
                   "--tasks", held, "--seed", "2", "--transfer-init", "mean"]  # fmt: skip
    assert study.transfer_flags(args, "fresh_adapter", 16, 2) == [
        "--method", "adapter", "--model", "minilm", "--n-train", "16", "--tasks", held,
        "--seed", "2",
    ]  # fmt: skip
    assert study.transfer_flags(args, "linear_probe", 4, 0)[:2] == ["--method", "linear_probe"]
    assert len(study.HELD_OUT) >= 4 and not set(study.HELD_OUT) & set(study.SUITE)


def test_transfer_refuses_held_out_tasks_that_are_trained_on(study):
    with pytest.raises(SystemExit, match="also training tasks"):
        study.main(["--transfer", "--plan", "--tasks", "a,b", "--held-out", "b"])


def test_transfer_needs_the_finished_grid_run_as_source(study, tmp_path):
    args = ["--transfer", "--tasks", "a", "--held-out", "b", "--transfer-seeds", "0"]
    args += [
        "--k-shot",
        "4",
        "--runs-dir",
        str(tmp_path),
        "--transfer-out",
        str(tmp_path / "t.csv"),
    ]
    with pytest.raises(SystemExit, match="pha-n100-s0 is not finished: run the grid first"):
        study.main(args)


# ---- the report ------------------------------------------------------------------------


def _report_rows() -> list[tuple]:
    """pha: seed 0 averages (0.6 + 0.8) / 2 = 0.7, seed 1 0.9, seed 2 0.8; adapter 0.5, 0.6,
    0.65 -> paired differences 0.2, 0.3, 0.15."""
    rows = []
    for seed, (a, b, c) in enumerate([(0.6, 0.8, 0.5), (0.8, 1.0, 0.6), (0.7, 0.9, 0.65)]):
        rows += [
            _row("pha", 32, seed, "t1", "accuracy", a),
            _row("pha", 32, seed, "t1", "macro_f1", 0.0),
            _row("pha", 32, seed, "t2", "accuracy", b),
            _row("pha", 32, seed, "t1", "accuracy", 0.99, "validation"),  # not in test tables
            _row("adapter", 32, seed, "t1", "accuracy", c),
            _row("adapter", 32, seed, "t2", "accuracy", c),
        ]
    return rows


def test_report_averages_tasks_per_seed_then_seeds_and_pairs_by_seed(study, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    stats = pytest.importorskip("scipy.stats")
    out = tmp_path / "se.csv"
    _write(study, out, _report_rows())
    args = ["--report", "--out", str(out), "--transfer-out", str(tmp_path / "none.csv")]
    args += ["--task-free-csv", str(tmp_path / "none.csv")]
    study.main([*args, "--metric", "accuracy"])
    table = capsys.readouterr().out
    pha, adapter = [0.7, 0.9, 0.8], [0.5, 0.6, 0.65]

    def summary(v):
        lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
        return f"{100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1):.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"

    assert f"| pha | {summary(pha)} |" in table and "| pha | 80.0 ± 10.0 [" in table
    assert f"| adapter | {summary(adapter)} |" in table
    diffs = np.subtract(pha, adapter)
    lo, hi = stats.t.interval(0.95, 2, loc=diffs.mean(), scale=stats.sem(diffs))
    p = stats.ttest_rel(pha, adapter).pvalue
    assert (
        f"| adapter | 32 | +21.7 | [{100 * lo:+.1f}, {100 * hi:+.1f}] | {p:.3f} | yes | 3 |"
        in table
    )
    # paired by task: seed means pha t1 0.7, t2 0.9; adapter 0.5833 both -> diffs 0.1167, 0.3167
    p_task = stats.ttest_rel([0.7, 0.9], [0.5833333333, 0.5833333333]).pvalue
    assert "| adapter | 32 | +21.7 | " in table and f"| {p_task:.3f} | no | 2 |" in table
    assert "| t2 | 32 | 90.0 ± 10.0 | 58.3 ± 7.6 |" in table  # per task, reference first
    assert "Average validation accuracy" in table and "99.0" in table  # the validation table
    assert table in (tmp_path / "se.md").read_text() + "\n"  # named after the CSV
    assert (tmp_path / "se.png").stat().st_size > 0
    assert (tmp_path / "se_tasks.png").stat().st_size > 0
    assert (tmp_path / "se_differences.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="has no 'macro_f1' score"):
        study.main([*args, "--metric", "macro_f1"])


def test_report_includes_transfer_and_task_free_tables(study, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, t_out, free = tmp_path / "se.csv", tmp_path / "t.csv", tmp_path / "free.csv"
    _write(study, out, _report_rows())
    t_rows = [dict(zip(study.TRANSFER_FIELDS, (arm, 4, seed, "h", "accuracy", score, "test", "[]")))
              for seed in (0, 1) for arm, score in (("pha_transfer", 0.6 + seed / 10), ("fresh_adapter", 0.5))]  # fmt: skip
    study.append_rows(t_out, t_rows, study.TRANSFER_FIELDS)
    free.write_text("run,task,prefix,retrieval_accuracy,metric,with_task_ids,with_retrieval\n"
                    "runs/a,t1,True,0.95,accuracy,0.8,0.78\nruns/b,t1,True,0.85,accuracy,0.7,0.6\n"
                    "runs/a,t2,True,1.0,accuracy,0.6,0.6\nruns/a,t1,True,0.95,macro_f1,0.1,0.1\n"
                    "runs/c,t1,False,0.5,accuracy,0.8,0.4\n")  # fmt: skip
    study.main(["--report", "--out", str(out), "--transfer-out", str(t_out), "--task-free-csv",
                str(free), "--metric", "accuracy"])  # fmt: skip
    text = capsys.readouterr().out
    assert (
        "| pha_transfer | 65.0 ± 7.1 [" in text
        and "| fresh_adapter | 50.0 ± 0.0 [50.0, 50.0] |" in text
    )
    assert "| fresh_adapter | 4 | +15.0 |" in text
    assert "| True | t1 | 2 | 90.0 | 75.0 | 69.0 |" in text  # mean over runs a and b
    assert "| True | average | 2 | 93.3 | 70.0 | 66.0 |" in text  # over (run, task) rows
    assert "| False | t1 | 1 | 50.0 | 80.0 | 40.0 |" in text
    tables = "\n".join(study.study_report.task_free_section(study.read_rows(free), "macro_f1"))
    assert "macro_f1, ids given" in tables and "| True | t1 | 1 | 95.0 | 10.0 | 10.0 |" in tables
    assert "accuracy, ids given" in tables and "| True | t1 | 2 | 90.0 | 75.0 | 69.0 |" in tables
    assert (tmp_path / "t.png").stat().st_size > 0


def test_report_defaults_name_the_committed_results(study):
    """A bare --report reads the CSVs in results/: a default naming a file that is not there
    drops its section from the report without a word (the task-free one did)."""
    args = study.parse_args(["--report"])
    for path in (args.out, args.transfer_out, args.task_free_csv):
        assert path.exists(), f"{path} is a --report default but is not in results/"


def test_a_run_missing_the_metric_for_one_task_is_an_error(study):
    rows = [dict(zip(study.FIELDS, _row("pha", 32, seed, task, "macro_f1", 0.5)))
            for seed, task in [("0", "t1"), ("0", "t2"), ("1", "t1")]]  # fmt: skip
    rows.append({**rows[-1], "task": "t2", "metric": "accuracy"})  # seed 1: t2 only has accuracy
    with pytest.raises(
        SystemExit, match=r"run \('pha', 32, seed 1\) has no 'macro_f1' score for tasks \['t2'\]"
    ):
        study.study_report.collect(rows, "n_train", "macro_f1")


def test_plots_draw_curves_and_leave_one_size_variants_to_the_tables(study):
    seeds = {"0": 0.5}
    scores = {("pha", 32): seeds, ("pha", 100): seeds, ("adapter", 32): seeds,
              ("adapter", 100): seeds, ("pha_ablation", 100): seeds}  # fmt: skip
    assert study.study_report.plotted(scores, "pha") == ["pha", "adapter"]
    one_size = {k: v for k, v in scores.items() if k[1] == 100}
    assert study.study_report.plotted(one_size, "pha") == ["pha", "adapter", "pha_ablation"]


# ---- end to end on a tiny model --------------------------------------------------------


def test_grid_cell_and_its_rerun_from_the_recorded_flags(
    study,
    tiny_bert,  # noqa: F811
    pha_cache,  # noqa: F811
    tmp_path,
    capsys,
):
    out, runs = tmp_path / "se.csv", tmp_path / "runs"
    grid = ["--out", str(out), "--runs-dir", str(runs), "--model", str(tiny_bert), "--tasks",
            "rt_polarity,bbc_topic", "--methods", "pha", "--n-train", "8", "--seeds", "0",
            "--", "--max-steps", "2", "--n-eval", "8", "--max-length", "32"]  # fmt: skip
    study.main(grid)
    rows = study.read_rows(out)
    assert {(r["split"], r["task"]) for r in rows} == {
        (s, t) for s in ("validation", "test") for t in ("rt_polarity", "bbc_topic")
    }
    flags = json.loads(rows[0]["config"])
    assert flags == ["--method", "pha", "--model", str(tiny_bert), "--tasks",
                     "rt_polarity,bbc_topic", "--n-train", "8", "--seed", "0",
                     "--max-steps", "2", "--n-eval", "8", "--max-length", "32"]  # fmt: skip
    study.main(grid)  # resumable: a finished cell is not run again
    assert "0 runs to do" in capsys.readouterr().out and len(study.read_rows(out)) == len(rows)
    result = study.main(["--rerun", "pha,8,0", "--out", str(out), "--runs-dir", str(runs)])
    assert (runs / "rerun" / "pha-n8-s0" / "metrics.json").exists()
    assert result["new"] == pytest.approx(result["old"], abs=1e-9)  # same machine: identical
    assert "resolved settings differ" not in capsys.readouterr().out
    config = runs / "pha-n8-s0" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "lr": 0.5}))
    changed = study.settings_changed(runs / "pha-n8-s0", runs / "rerun" / "pha-n8-s0")
    assert set(changed) == {"lr"} and changed["lr"][0] == 0.5
    with pytest.raises(SystemExit, match="holds another run"):  # never mixed with other flags
        study.run_flags([*flags, "--lr", "1e-4"], runs / "pha-n8-s0")


def test_a_directory_of_another_run_is_refused(study, tmp_path):
    old = tmp_path / "pha-n100-s0"
    old.mkdir()
    (old / "checkpoint-00000050.pt").write_text("")  # e.g. a run of an earlier study
    with pytest.raises(SystemExit, match="holds another run"):
        study.run_flags(["--method", "pha"], old)


def test_task_free_evaluates_each_finished_run_once(study, tmp_path, capsys):
    runs, free = tmp_path / "runs", tmp_path / "free.csv"
    (runs / "pha-noprefix-n100-s0").mkdir(parents=True)
    (runs / "pha-noprefix-n100-s0" / "metrics.json").write_text("{}")
    args = ["--task-free", "--plan", "--label", "pha-noprefix", "--methods", "pha", "--n-train",
            "100", "--seeds", "0,1", "--runs-dir", str(runs), "--task-free-csv", str(free)]  # fmt: skip
    study.main(args)
    printed = capsys.readouterr().out
    assert f"pha.evaluate {runs / 'pha-noprefix-n100-s0'} --no-task-ids --csv {free}" in printed
    assert "pha-noprefix-n100-s1: not finished, skipped" in printed
    free.write_text(f"run,task\n{runs / 'pha-noprefix-n100-s0'},t\n")
    study.main(args)
    assert "pha.evaluate" not in capsys.readouterr().out  # already in the CSV


def test_pairing_by_task_uses_the_seeds_both_methods_have(study):
    report = study.study_report
    cells = {
        ("pha", 16): {"0": {"t1": 0.6, "t2": 0.8}},
        ("adapter", 16): {"0": {"t1": 0.5, "t2": 0.5}, "1": {"t1": 0.9, "t2": 0.9}},
    }
    d = report.task_pairs(cells, "pha")[("adapter", 16)]
    assert d.diff.n == 2 and d.diff.mean == pytest.approx(0.2)  # seed 1 left out: 0.1, 0.3
    by_seed = report.seed_pairs(report.task_average(cells), "pha")[("adapter", 16)]
    assert by_seed.diff.n == 1 and by_seed.diff.mean == pytest.approx(0.2)


def test_pooled_pairs_span_every_size_both_methods_have(study):
    """The pooled row pairs by (size, seed) over the shared sizes only; a method at one size
    gets no pooled row (it would repeat that size's)."""
    report = study.study_report
    scores = {
        ("pha", 16): {"0": 0.5, "1": 0.6},
        ("pha", 32): {"0": 0.7, "1": 0.8},
        ("pha", 100): {"0": 0.9},
        ("adapter", 16): {"0": 0.4, "1": 0.6},
        ("adapter", 32): {"0": 0.6, "1": 0.5},
        ("probe", 100): {"0": 0.8},
    }
    pairs = report.seed_pairs(scores, "pha")
    pooled = pairs[("adapter", report.POOLED)]
    assert pooled.diff.n == 4 and pooled.diff.mean == pytest.approx((0.1 + 0.0 + 0.1 + 0.3) / 4)
    assert ("probe", report.POOLED) not in pairs and ("probe", 100) in pairs


def test_glance_table_rows_follow_the_methods_given(study):
    """Rows in --methods order, methods without runs left out; the reference row has no
    differences; a method at one seed gets the single difference, not an interval."""
    report = study.study_report
    scores = {
        ("pha", 16): {"0": 0.5, "1": 0.6},
        ("pha", 32): {"0": 0.7, "1": 0.8},
        ("adapter", 16): {"0": 0.4, "1": 0.6},
        ("adapter", 32): {"0": 0.6, "1": 0.5},
        ("lora", 32): {"0": 0.9},
    }
    lines = report.glance_table(scores, "n", "pha", ["lora", "pha", "full", "adapter"])
    assert lines[0].endswith("| pha − method, pooled |")
    lora, pha, adapter = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    assert [lora[0], pha[0], adapter[0]] == ["lora", "pha", "adapter"]  # full: no runs
    assert lora[1:3] == ["—", "90.0 (1 seed)"] and lora[4] == "-20.0 (1 seed)"
    assert pha[3:] == ["", "", ""]
    assert adapter[1] == "50.0 ± 14.1 [-77.1, 177.1] (2)"
    assert adapter[5].startswith("+12.5 [")  # pooled: 0.1, 0.0 at n=16; 0.1, 0.3 at n=32


def test_lora_baseline_takes_pha_trains_step_floor():
    """baselines.py lora: --epochs is raised until each LoRA takes --min-steps steps (at
    n=16 a fixed 15 epochs would be 15 steps); a budget already past the floor is kept."""
    spec = importlib.util.spec_from_file_location("baselines", ROOT / "benchmarks/baselines.py")
    baselines = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baselines)
    assert baselines.lora_budget(15, 150, 16, 16) == (150, 150)  # 1 batch per epoch
    assert baselines.lora_budget(15, 150, 100, 16) == (22, 154)  # 7 batches per epoch
    assert baselines.lora_budget(15, 150, 300, 16) == (15, 285)  # the floor does not bind
    assert baselines.lora_budget(15, 0, 17, 16) == (15, 30)
