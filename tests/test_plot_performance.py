"""benchmarks/plot_performance.py draws the committed benchmark JSONs."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _plot_module():
    spec = importlib.util.spec_from_file_location(
        "plot_performance", ROOT / "benchmarks/plot_performance.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plots_the_committed_results(tmp_path):
    pytest.importorskip("matplotlib")
    out = _plot_module().main(["--out", str(tmp_path / "perf.png")])
    assert out.stat().st_size > 10_000


def test_bars_come_from_the_cpp_rows(tmp_path):
    plot = _plot_module()
    adapter = json.loads((RESULTS / "bench_adapter.json").read_text())
    bars = plot._adapter_bars(adapter)
    cpp = [r for r in adapter["results"] if r["provider"] == "cpp"]
    assert len(bars) == len(cpp) and [b[1] for b in bars] == [
        r["speedup_vs_reference"] for r in cpp
    ]


@pytest.mark.parametrize("with_flops", [True, False])
def test_train_step_panel(tmp_path, with_flops):
    pytest.importorskip("matplotlib")
    for name in ("bench_adapter.json", "bench_contrastive.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    rows = [
        {
            "backbone": "minilm",
            "batch": 32,
            "method": m,
            "median_ms": ms,
            "fraction_of_gemm_peak": f,
        }
        for m, ms, f in [("adapter", 700.0, 0.45), ("pha", 720.0, 0.44), ("release", 9.0, 1.2)]
    ]
    if not with_flops:
        rows = [{"median_ms": 1.0}]
    (tmp_path / "bench_train_step.json").write_text(json.dumps({"results": rows}))
    out = _plot_module().main(["--results", str(tmp_path), "--out", str(tmp_path / "p.png")])
    assert out.stat().st_size > 0


def test_bar_notes_show_the_paired_spans_where_the_rows_have_them():
    plot = _plot_module()
    paired = {"speedup_vs_eager": 4.5, "speedup_vs_eager_q20": 4.21, "speedup_vs_eager_q80": 4.76,
              "fraction_of_gemm_peak": 0.49}  # fmt: skip
    assert plot._note(paired, "speedup_vs_eager") == "[4.21-4.76] 49%"
    assert plot._note({"speedup_vs_eager": 4.5}, "speedup_vs_eager") == ""  # an older JSON
    assert plot._note({"fraction_of_gemm_peak": 0.5}, "speedup_vs_reference") == "50%"


def test_train_step_labels_give_the_paired_ratio_to_the_adapter():
    plot = _plot_module()
    paired = {"median_ms": 789.0, "median_ms_vs_adapter": 1.04, "median_ms_vs_adapter_q20": 0.99,
              "median_ms_vs_adapter_q80": 1.17}  # fmt: skip
    assert plot._vs_adapter(paired, 674.0) == "1.04x adapter [0.99-1.17]"  # not 789 / 674
    assert plot._vs_adapter({"median_ms": 720.0}, 700.0) == "1.03x adapter"  # an older JSON
