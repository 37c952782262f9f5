"""One figure of the op and train-step benchmarks, from their JSON files.

    python benchmarks/plot_performance.py     # -> benchmarks/results/performance.png

Left: the fused C++ ops' speed-up over the eager reference (bars) with the hyper-adapter
kernels' fraction of the machine's GEMM peak written on the bars. Right: the train step's
fraction of GEMM peak and its time relative to plain adapters.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "results"


def _adapter_bars(data: dict) -> list[tuple[str, float, str]]:
    bars = []
    for r in data["results"]:
        if r["provider"] != "cpp":
            continue
        s = r["shape"]
        kind = f"{s['G']} sets" if s["G"] else "per-inst."
        isa = f" ({r['isa']})" if r.get("isa") else ""
        label = (
            f"adapter {s['B']}x{s['T']}x{s['d']} r{s['r']} {kind}\n{r['dtype']} {r['mode']}{isa}"
        )
        bars.append((label, r["speedup_vs_reference"], _note(r, "speedup_vs_reference")))
    return bars


def _note(r: dict, speedup: str) -> str:
    """ "[q20-q80] NN%" of a row's paired speed-up and fraction of peak, where it has them
    (the benchmarks' paired per-round ratios since issue 13)."""
    parts = []
    if f"{speedup}_q20" in r:
        parts.append(f"[{r[f'{speedup}_q20']:.2f}-{r[f'{speedup}_q80']:.2f}]")
    if "fraction_of_gemm_peak" in r:
        parts.append(f"{100 * r['fraction_of_gemm_peak']:.0f}%")
    return " ".join(parts)


def _contrastive_bars(data: dict) -> list[tuple[str, float, str]]:
    name = {"supcon": "L_ins", "prototype": "L_pro"}
    return [
        (
            f"{name[r['loss']]} B={r['B']} K={r['K']}\nfp32 fwd+bwd",
            r["speedup_vs_eager"],
            _note(r, "speedup_vs_eager"),
        )
        for r in data["results"]
        if r["provider"] == "cpp" and "speedup_vs_eager" in r
    ]


def _vs_adapter(r: dict, adapter_ms: float) -> str:
    """A step's time relative to the adapter step: the paired per-round ratio with its
    q20-q80 where the row has it, else (an older JSON) the ratio of the medians."""
    if "median_ms_vs_adapter" in r:
        return (f"{r['median_ms_vs_adapter']:.2f}x adapter [{r['median_ms_vs_adapter_q20']:.2f}"
                f"-{r['median_ms_vs_adapter_q80']:.2f}]")  # fmt: skip
    return f"{r['median_ms'] / adapter_ms:.2f}x adapter"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", type=Path, default=HERE, help="directory of the bench JSONs")
    p.add_argument("--out", type=Path, default=HERE / "performance.png")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = lambda name: json.loads((args.results / name).read_text())  # noqa: E731
    adapter = load("bench_adapter.json")
    bars = _adapter_bars(adapter) + _contrastive_bars(load("bench_contrastive.json"))
    steps = [r for r in load("bench_train_step.json")["results"] if "fraction_of_gemm_peak" in r]

    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(15, 0.32 * len(bars) + 2), gridspec_kw={"width_ratios": [3, 2]}
    )
    y = list(range(len(bars)))[::-1]
    colors = ["tab:blue" if b[0].startswith("adapter") else "tab:orange" for b in bars]
    ax.barh(y, [b[1] for b in bars], color=colors)
    for yi, (_, speedup, note) in zip(y, bars):
        ax.text(speedup, yi, f" {speedup:.2f}x {note}", va="center", fontsize=7)
    ax.set_yticks(y, [b[0] for b in bars], fontsize=7)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(right=max(b[1] for b in bars) * 3)  # room for the labels
    ax.set_xlabel(
        "C++ speed-up over the eager reference (log) [q20-q80 of per-round ratios]; "
        "% = share of the same dtype's GEMM peak"
    )
    ax.set_title(f"fused ops ({adapter['machine']['threads']} threads)", fontsize=10)

    if steps:
        key = lambda r: (r["backbone"], r["batch"], r.get("variant", "fp32"))  # noqa: E731
        labels = [f"{r['backbone']} B={r['batch']} {r['method']} {key(r)[2]}" for r in steps]
        y2 = list(range(len(steps)))[::-1]
        ax2.barh(y2, [100 * r["fraction_of_gemm_peak"] for r in steps], color="tab:green")
        base = {key(r): r["median_ms"] for r in steps if r["method"] == "adapter"}
        for yi, r in zip(y2, steps):
            text = f" {r['median_ms']:.0f} ms"
            if key(r) in base and r["method"] != "adapter":
                text += f" ({_vs_adapter(r, base[key(r)])})"
            ax2.text(100 * r["fraction_of_gemm_peak"], yi, text, va="center", fontsize=7)
        ax2.set_yticks(y2, labels, fontsize=7)
        ax2.set_xlim(0, max(100, 130 * max(r["fraction_of_gemm_peak"] for r in steps)))
        ax2.set_xlabel("train step: % of GEMM peak (forward+backward FLOPs / step time)")
        ax2.set_title("train step", fontsize=10)
    else:
        ax2.axis("off")
        ax2.text(0.5, 0.5, "bench_train_step.json has no FLOP counts:\nre-run bench_train_step.py",
                 ha="center", va="center")  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
