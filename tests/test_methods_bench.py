"""benchmarks/bench_train_step.py --quick runs end to end and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from method_utils import one_thread  # noqa: F401, E402  (autouse fixture)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_bench_train_step_quick(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "bench.json"
    bench.main(
        [
            "--quick",
            "--backbones",
            "tiny-t5",
            "--repeats",
            "1",
            "--in-process",
            "--out",
            str(out),
            "--variants",
            "fp32,bf16",
        ]  # fmt: skip
    )
    payload = json.loads(out.read_text())
    rows = payload["results"]
    assert [(r["variant"], r["method"]) for r in rows] == [
        (v, m) for v in ("fp32", "bf16") for m in ("adapter", "pha", "release")
    ]
    assert all(r["median_ms"] > 0 and r["trainable_params"] > 0 for r in rows)
    assert all(r["step_gflop"] > 0 and 0 < r["fraction_of_gemm_peak"] for r in rows)
    assert {r["adapter_backend"] for r in rows if r["method"] == "release"} == {"reference"}
    assert set(payload["gemm_peak_gflops"]) == {"fp32", "bf16"} and payload["machine"]["cpu"]
    ratios = {(r["variant"], r["method"]): r for r in payload["ratios"]}
    assert set(ratios) == {(v, m) for v in ("fp32", "bf16") for m in ("pha", "release")} | {
        ("bf16", "adapter")
    }
    assert ratios[("bf16", "adapter")]["speedup_vs_fp32"] > 0
    vs_adapter = [ratios[("fp32", "pha")][f"median_ms_vs_adapter{q}"] for q in ("_q20", "", "_q80")]
    assert 0 < vs_adapter[0] <= vs_adapter[1] <= vs_adapter[2]  # paired per round
    assert "| tiny-t5 | 4 | pha | bf16 |" in capsys.readouterr().out


def test_bench_train_step_thread_timer(tmp_path):
    """--timer thread (CPU time of the stepping thread) is recorded; it needs --threads 1.
    --methods times only the methods named."""
    bench = load_bench()
    out = tmp_path / "bench.json"
    common = ["--quick", "--backbones", "tiny-bert", "--repeats", "1", "--in-process"]
    with pytest.raises(SystemExit):
        bench.main([*common, "--timer", "thread", "--out", str(out)])
    with pytest.raises(SystemExit):
        bench.main([*common, "--methods", "adapter,lora", "--out", str(out)])
    assert not out.exists()
    bench.main([*common, "--timer", "thread", "--threads", "1", "--variants", "fp32",
                "--methods", "adapter,pha", "--out", str(out)])  # fmt: skip
    payload = json.loads(out.read_text())
    assert payload["machine"]["timer"] == "thread"
    assert all(r["timer"] == "thread" and r["median_ms"] > 0 for r in payload["results"])
    assert [r["method"] for r in payload["results"]] == ["adapter", "pha"]
    assert payload["results"][1]["median_ms_vs_adapter"] > 0


def test_step_rows_use_per_round_ratios():
    bench = load_bench()
    timing = bench.timing
    # Round 1 ran on a slower machine: every step and probe took twice as long.
    t = lambda *s: timing.Timing(list(s), cpu_s=0.0)  # noqa: E731
    timings = {
        "adapter/fp32": t(1.0, 2.0, 1.0),
        "pha/fp32": t(1.1, 2.2, 1.1),
        "adapter/bf16": t(0.5, 1.0, 0.5),
        "pha/bf16": t(0.4, 0.8, 0.4),
        "gemm_fp32": t(0.1, 0.2, 0.1),
        "gemm_bf16": t(0.01, 0.02, 0.01),
    }
    row = bench.step_row("pha/bf16", timings, flops=2e9, peak_flops=1e9)
    assert row["median_ms_vs_adapter"] == row["median_ms_vs_adapter_q80"] == pytest.approx(0.8)
    assert row["speedup_vs_fp32"] == row["speedup_vs_fp32_q20"] == pytest.approx(2.75)
    # against the bf16 probe: (2e9 / 0.4) / (1e9 / 0.01) per round
    assert row["fraction_of_gemm_peak"] == pytest.approx(0.05)
    assert row["gemm_peak_gflops"] == pytest.approx(100.0) and row["step_gflop"] == 2.0
    base = bench.step_row("adapter/fp32", timings, flops=2e9, peak_flops=1e9)
    assert "median_ms_vs_adapter" not in base and "speedup_vs_fp32" not in base
    assert base["fraction_of_gemm_peak"] == pytest.approx(0.2)  # the fp32 probe
    # bench.ratios carries the paired ratios over, beside the memory ratios
    common = dict(backbone="b", batch=4, peak_mib=10.0, step_peak_mib=0.0)
    rows = [
        {**common, "method": "adapter", "variant": "bf16", **bench.step_row("adapter/bf16", timings, 2e9, 1e9)},
        {**common, "method": "pha", "variant": "bf16", **row},
    ]  # fmt: skip
    (adapter, pha) = bench.ratios(rows)
    assert adapter["speedup_vs_fp32_q80"] == pytest.approx(2.0)
    assert pha["median_ms_vs_adapter_q20"] == pytest.approx(0.8)
    assert pha["peak_mib_vs_adapter"] == 1.0 and pha["step_peak_mib_vs_adapter"] is None
