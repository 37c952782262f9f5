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


def test_plan_skips_runs_already_in_the_csv(study, tmp_path, capsys):
    out = tmp_path / "se.csv"
    _write(study, out, [("pha", 32, 0, "a", "accuracy", 0.5, "{}")])
    study.main(
        ["--plan", "--out", str(out), "--methods", "pha,adapter", "--n-train", "32", "--seeds", "0"]
    )
    printed = capsys.readouterr().out
    assert "1 runs to do (1 done)" in printed
    assert "adapter n_train=32 seed=0" in printed and "pha n_train=32" not in printed


def test_report_averages_tasks_per_seed_then_seeds(study, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "se.csv"
    rows = []
    # pha: seed 0 averages (0.6 + 0.8) / 2 = 0.7, seed 1 (0.8 + 1.0) / 2 = 0.9 -> 80.0 ± 14.1
    for seed, (a, b) in enumerate([(0.6, 0.8), (0.8, 1.0)]):
        rows += [
            ("pha", 32, seed, "t1", "accuracy", a, "{}"),
            ("pha", 32, seed, "t1", "macro_f1", 0.0, "{}"),
        ]
        rows += [("pha", 32, seed, "t2", "accuracy", b, "{}")]
    rows += [
        ("adapter", 32, 0, "t1", "accuracy", 0.5, "{}"),
        ("adapter", 32, 0, "t2", "accuracy", 0.5, "{}"),
    ]
    _write(study, out, rows)
    study.main(["--report", "--out", str(out), "--transfer-out", str(tmp_path / "none.csv")])
    table = capsys.readouterr().out
    assert "| pha | 80.0 ± 14.1 |" in table
    assert "| adapter | 50.0 ± 0.0 |" in table
    assert (tmp_path / "sample_efficiency.png").stat().st_size > 0
    assert (tmp_path / "sample_efficiency_tasks.png").stat().st_size > 0
    with out.open() as f:
        assert next(csv.reader(f)) == study.FIELDS
