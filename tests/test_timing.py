"""benchmarks/timing.py's pure logic: interleaved rounds, paired ratios and their quantiles
(no assertion on a measured time), and bench_adapter's rows built from them."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # the bench scripts import timing as a sibling module
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


timing = _load("timing")


def test_quantile_summary():
    assert timing.quantile_summary([5.0, 1.0, 3.0, 2.0, 4.0]) == pytest.approx(
        {"median": 3.0, "q20": 1.8, "q80": 4.2}
    )
    assert timing.quantile_summary([7.0]) == {"median": 7.0, "q20": 7.0, "q80": 7.0}
    with pytest.raises(ValueError, match="values"):
        timing.quantile_summary([])


def test_round_order_varies_who_leads_and_who_precedes_whom():
    names = ["eager", "cpp avx512", "cpp amx", "peak"]
    orders = [timing.round_order(names, i) for i in range(16)]
    assert all(sorted(o) == sorted(names) for o in orders)
    assert orders == [timing.round_order(names, i) for i in range(16)]  # same every run
    assert {o[0] for o in orders} == set(names)
    for name in names:  # a rotation would give each callable one fixed predecessor
        before = {o[o.index(name) - 1] for o in orders if o.index(name) > 0}
        assert len(before) >= 2
    assert timing.round_order([], 2) == []


def test_paired_ratios_cancel_drift_between_rounds():
    # The machine slows down 10x in round 2: both sides slow together, the ratio is steady.
    eager = [1.0, 10.0, 1.1, 2.0]
    backend = [0.5, 5.0, 0.55, 1.0]
    assert timing.paired_ratios(eager, backend) == pytest.approx([2.0] * 4)
    assert timing.ratio_summary(eager, backend) == pytest.approx(
        {"median": 2.0, "q20": 2.0, "q80": 2.0}
    )
    assert timing.ratio_summary(eager, backend, scale=0.25)["median"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one value per round"):
        timing.paired_ratios([1.0, 2.0], [1.0])


def test_measure_interleaved_takes_one_sample_of_each_per_round():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    result = timing.measure_interleaved(fns, rounds=4, warmup=2)
    assert set(result) == {"a", "b", "c"}
    assert all(len(t.samples) == 4 for t in result.values())
    # warm-up and calibration (min_sample_s=0: one call) per callable, then the rounds
    setup, timed = calls[:9], calls[9:]
    assert setup == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert timed == [n for i in range(4) for n in timing.round_order(["a", "b", "c"], i)]
    with pytest.raises(ValueError, match="rounds"):
        timing.measure_interleaved(fns, rounds=0)


def test_bench_adapter_rows_use_per_round_ratios():
    bench = _load("bench_adapter")
    # Rounds 1 and 3 ran on a slower machine: every callable took twice as long.
    reference = timing.Timing([4.0, 8.0, 4.0, 8.0, 4.0], cpu_s=0.0)
    backend = timing.Timing([2.0, 4.0, 2.0, 4.0, 2.0], cpu_s=0.0)
    peak = timing.Timing([1.0, 2.0, 1.0, 2.0, 1.0], cpu_s=0.0)
    shared = timing.Timing([3.0, 6.0, 3.0, 6.0, 3.0], cpu_s=0.0)
    row = bench.case_stats(backend, reference, shared, peak, flops=3e9, peak_flops=4e9)
    assert row["speedup_vs_reference"] == row["speedup_vs_reference_q20"] == pytest.approx(2.0)
    assert row["speedup_vs_shared"] == row["speedup_vs_shared_q80"] == pytest.approx(1.5)
    assert row["speedup_vs_reference_q80"] == pytest.approx(2.0)
    # fraction of peak per round: (3e9 / t) / (4e9 / t_peak) = 0.75 * t_peak / t = 0.375
    assert row["fraction_of_gemm_peak"] == pytest.approx(0.375)
    assert row["median_ms"] == pytest.approx(2000.0)
    assert row["gflops"] == pytest.approx(1.5) and row["gemm_peak_gflops"] == pytest.approx(4.0)


def test_paired_stats_without_a_baseline_and_probe_peaks():
    backend = timing.Timing([2.0, 4.0, 2.0], cpu_s=0.0)
    peak = timing.Timing([1.0, 2.0, 1.0], cpu_s=0.0)
    stats = timing.paired_stats(backend, None, peak, flops=3e9, peak_flops=4e9)
    assert "speedup" not in stats
    assert stats["fraction_of_gemm_peak"]["median"] == pytest.approx(0.375)
    assert timing.summary_fields("x", {"median": 1.0, "q20": 0.5, "q80": 2.0}) == {
        "x": 1.0, "x_q20": 0.5, "x_q80": 2.0
    }  # fmt: skip
    probes = {"fp32": (None, 4e9, None), "bf16": (None, 8e9, None)}
    peaks = timing.probe_peaks(probes, {"fp32": [1.0, 2.0, 4.0], "bf16": [1.0]})
    assert peaks == pytest.approx({"fp32": 2.0, "bf16": 8.0})  # at the median sample


def test_bench_contrastive_rows_use_per_round_ratios():
    bench = _load("bench_contrastive")
    assert bench.step_flops("supcon", 128, 8) == 6 * 128 * 128 * bench.D
    assert bench.step_flops("prototype", 128, 8) == 6 * 128 * 8 * bench.D
    # Round 1 ran on a slower machine: every callable took three times as long.
    eager = timing.Timing([6.0, 18.0, 6.0], cpu_s=6.0)
    cpp = timing.Timing([2.0, 6.0, 2.0], cpu_s=3.0)
    peak = timing.Timing([1.0, 3.0, 1.0], cpu_s=1.0)
    row = bench.case_row(cpp, eager, peak, flops=1e9, peak_flops=4e9)
    assert row["speedup_vs_eager"] == row["speedup_vs_eager_q20"] == pytest.approx(3.0)
    assert row["speedup_vs_eager_q80"] == pytest.approx(3.0)
    assert row["cpu_speedup_vs_eager"] == pytest.approx(2.0)
    assert row["fraction_of_gemm_peak"] == pytest.approx(0.125)  # (1e9 / 2) / (4e9 / 1)
    assert row["median_ms"] == pytest.approx(2000.0) and row["p80_ms"] > row["p20_ms"]
    assert row["gemm_peak_gflops"] == pytest.approx(4.0)
    own = bench.case_row(eager, None, peak, flops=1e9, peak_flops=4e9)  # eager's own row
    assert "speedup_vs_eager" not in own and "cpu_speedup_vs_eager" not in own


def test_write_json_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "results" / "bench.json"
    assert timing.write_json(out, {"rows": [1, 2]}) == out  # makes the directory
    assert json.loads(out.read_text()) == {"rows": [1, 2]}

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="disk is full"):
        timing.write_json(out, {"rows": [3]})
    assert json.loads(out.read_text()) == {"rows": [1, 2]}  # the old file, whole
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temporary left
