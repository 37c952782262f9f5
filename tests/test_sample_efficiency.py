"""The sample-efficiency study's bookkeeping: resumable CSV, planning, tables and plots."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

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
    study._append(path, [dict(zip(study.FIELDS, row)) for row in rows], study.FIELDS)


def _plan(out: Path, methods: str, n_train: str = "32") -> list[str]:
    """Flags of a --plan over seed 0 of `methods` x `n_train` (one task by default)."""
    return ["--plan", "--out", str(out), "--methods", methods, "--n-train", n_train, "--seeds", "0"]


def test_plan_skips_runs_already_in_the_csv(study, tmp_path, capsys):
    out = tmp_path / "se.csv"
    _write(study, out, [("pha", 32, 0, "a", "accuracy", 0.5, "{}")])
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
        planned.append([line.strip() for line in capsys.readouterr().out.splitlines()[1:]])
    assert sorted(planned[0] + planned[1]) == sorted(
        f"{m} n_train={n} seed=0" for m in ("pha", "adapter") for n in (32, 100)
    )
    assert not set(planned[0]) & set(planned[1])
    assert {p.split()[0] for p in planned[0]} == {"pha", "adapter"}  # not one method per worker
    _write(study, out, [("pha", 32, 0, "a", "accuracy", 0.5, "{}")])  # shard 0's first run
    study.main(["--shard", "1/2", *grid])
    assert [line.strip() for line in capsys.readouterr().out.splitlines()[1:]] == planned[1]
    with pytest.raises(SystemExit):
        study.parse_args(["--shard", "2/2"])


def test_label_names_a_variant_of_one_method(study, tmp_path, capsys):
    out = tmp_path / "se.csv"
    _write(study, out, [("hyperformer", 32, 0, "a", "accuracy", 0.5, "{}")])
    grid = [*_plan(out, "hyperformer"), "--tasks", "a"]
    study.main([*grid, "--label", "hf-zero", "--", "--lr", "1e-4"])
    assert "hf-zero n_train=32 seed=0" in capsys.readouterr().out  # not the plain method's run
    with pytest.raises(SystemExit):
        study.parse_args(["--methods", "pha,adapter", "--label", "x"])


def test_transfer_refuses_held_out_tasks_that_are_trained_on(study, tmp_path):
    with pytest.raises(SystemExit, match="also training tasks"):
        study.main(["--transfer", "--plan", "--tasks", "a,b", "--held-out", "b"])


def test_transfer_needs_the_finished_grid_run_as_source(study, tmp_path):
    args = ["--transfer", "--tasks", "a", "--held-out", "b", "--seeds", "0", "--k-shot", "4"]
    args += ["--runs-dir", str(tmp_path), "--transfer-out", str(tmp_path / "t.csv")]
    with pytest.raises(SystemExit, match="pha-n100-s0 is not finished: run the grid first"):
        study.main(args)


def _report_rows() -> list[tuple]:
    rows = []
    # pha: seed 0 averages (0.6 + 0.8) / 2 = 0.7, seed 1 (0.8 + 1.0) / 2 = 0.9 -> 80.0 ± 14.1
    # adapter: 0.5 and 0.6 -> paired differences 0.2, 0.3 -> 25.0 ± 7.1
    for seed, (a, b, c) in enumerate([(0.6, 0.8, 0.5), (0.8, 1.0, 0.6)]):
        rows += [
            ("pha", 32, seed, "t1", "accuracy", a, "{}"),
            ("pha", 32, seed, "t1", "macro_f1", 0.0, "{}"),
            ("pha", 32, seed, "t2", "accuracy", b, "{}"),
            ("adapter", 32, seed, "t1", "accuracy", c, "{}"),
            ("adapter", 32, seed, "t2", "accuracy", c, "{}"),
        ]
    return rows


def test_report_averages_tasks_per_seed_then_seeds(study, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "se.csv"
    _write(study, out, _report_rows())
    args = ["--report", "--out", str(out), "--transfer-out", str(tmp_path / "none.csv")]
    study.main([*args, "--metric", "accuracy"])
    table = capsys.readouterr().out
    assert "| pha | 80.0 ± 14.1 |" in table
    assert "| adapter | 55.0 ± 7.1 |" in table
    assert "| pha − adapter | 25.0 ± 7.1 (2 seeds) |" in table
    assert "| t2 | 32 | 55.0 ± 7.1 | 90.0 ± 14.1 |" in table  # per task, methods sorted
    assert table in (tmp_path / "sample_efficiency.md").read_text() + "\n"
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 0
    assert (tmp_path / "sample_efficiency_tasks.png").stat().st_size > 0
    with out.open() as f:
        assert next(csv.reader(f)) == study.FIELDS
    with pytest.raises(SystemExit, match="has no 'macro_f1' score"):
        study.main([*args, "--metric", "macro_f1"])


def test_a_run_missing_the_metric_for_one_task_is_an_error(study):
    rows = [
        {
            "method": "pha",
            "n_train": "32",
            "seed": seed,
            "task": task,
            "metric": "macro_f1",
            "score": "0.5",
        }
        for seed, task in [("0", "t1"), ("0", "t2"), ("1", "t1")]
    ]
    rows.append({**rows[-1], "task": "t2", "metric": "accuracy"})  # seed 1: t2 only has accuracy
    with pytest.raises(
        SystemExit, match=r"run \('pha', 32, '1'\) has no 'macro_f1' score for tasks \['t2'\]"
    ):
        study._averages(rows, "method", "n_train", "macro_f1")


def test_paired_difference_uses_the_seeds_both_methods_have(study):
    avg = {("pha", 32): {"0": 0.7, "1": 0.9, "2": 0.5}, ("adapter", 32): {"1": 0.6, "2": 0.4}}
    assert study._paired(avg, "pha", "adapter") == ["| pha − adapter | 20.0 ± 14.1 (2 seeds) |"]
