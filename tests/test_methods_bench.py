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
    assert "median_ms_vs_adapter" in ratios[("fp32", "pha")]
    assert "| tiny-t5 | 4 | pha | bf16 |" in capsys.readouterr().out


def test_bench_train_step_thread_timer(tmp_path):
    """--timer thread (CPU time of the stepping thread) is recorded; it needs --threads 1."""
    bench = load_bench()
    out = tmp_path / "bench.json"
    common = ["--quick", "--backbones", "tiny-bert", "--repeats", "1", "--in-process"]
    with pytest.raises(SystemExit):
        bench.main([*common, "--timer", "thread", "--out", str(out)])
    assert not out.exists()
    bench.main([*common, "--timer", "thread", "--threads", "1", "--variants", "fp32",
                "--out", str(out)])  # fmt: skip
    payload = json.loads(out.read_text())
    assert payload["machine"]["timer"] == "thread"
    assert all(r["timer"] == "thread" and r["median_ms"] > 0 for r in payload["results"])
