"""benchmarks/bench_train_step.py --quick runs end to end and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from method_utils import one_thread  # noqa: F401, E402  (autouse fixture)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"


def test_bench_train_step_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(
        ["--quick", "--backbones", "tiny-t5", "--repeats", "1", "--in-process", "--out", str(out)]
    )
    payload = json.loads(out.read_text())
    rows = payload["results"]
    assert [r["method"] for r in rows] == ["adapter", "pha", "release"]
    assert all(r["median_ms"] > 0 and r["trainable_params"] > 0 for r in rows)
    assert all(r["step_gflop"] > 0 and 0 < r["fraction_of_gemm_peak"] for r in rows)
    assert {r["adapter_backend"] for r in rows if r["method"] == "release"} == {"reference"}
    assert {(r["method"], r["backbone"]) for r in payload["ratios"]} == {
        ("pha", "tiny-t5"),
        ("release", "tiny-t5"),
    }
    assert "| tiny-t5 | 4 | pha |" in capsys.readouterr().out
