"""Forward+backward time and extra peak memory of PHA's contrastive losses.

Providers: "eager" is the PHA release's formulation (B x B score matrix and masks,
pha.ops.reference) and every available kernel backend (cpp on CPU). Each case times
loss.backward() on fresh leaves of every provider and a oneDNN GEMM probe of each dtype
round-robin, one sample of each per round (timing.measure_interleaved): median and 20/80 %
quantiles of each one's time, and two paired ratios, the speed-up over eager and the
fraction of the fp32 GEMM peak, each the median (q20-q80) of the per-round ratios, so that
drift of a shared machine between rounds cancels out. Freed memory is kept for reuse
while timing, as pha.train runs (pha/allocator.py): eager's B x B matrices come from the
heap rather than from freshly faulted pages. It also measures the extra peak resident
memory of one forward+backward over the inputs.

Memory method: one child process (so that the parent's timing runs leave no freed pages
behind) with MALLOC_MMAP_THRESHOLD_=65536, so that every allocation of 64 KiB or more
(torch tensors and the kernels' own buffers alike) is its own mapping, returned to the OS
on free. Per case: build the inputs, reset the peak (writing 5 to /proc/self/clear_refs
sets VmHWM to the current RSS), read VmHWM, run forward+backward, read VmHWM again; extra
= the difference. The kernel updates VmHWM lazily (at unmap time), so a case that
allocates nothing reads a few KiB either side of 0.

    python benchmarks/bench_contrastive.py            # the full table (minutes)
    python benchmarks/bench_contrastive.py --quick    # a smoke run (seconds)
For stable timings run on an idle machine; the table's ratios come from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import pha
from pha.allocator import keep_freed_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import timing  # noqa: E402

D = 64
FULL = {"B": (128, 1024, 4096, 16384), "K": (8, 1000), "repeats": 9, "min_sample_s": 0.05}
QUICK = {"B": (128,), "K": (8,), "repeats": 2, "min_sample_s": 0.002}
LOSSES = ("supcon", "prototype")
# The eager release formulation holds several [B, B] (supcon) or [B, K] fp32 matrices at
# once (~25 bytes per score); past this budget (B = 16384: 6+ GiB) it does not fit beside
# the other jobs of this shared machine.
EAGER_MAX_BYTES = 2 * 2**30
MIN_MIB_FOR_RATIO = 4.0  # below this, page granularity and noise dominate a memory ratio
DEFAULT_JSON = Path(__file__).parent / "results" / "bench_contrastive.json"


def providers() -> list[str]:
    available = pha.ops.backends()
    return ["eager"] + [b for b in ("cpp", "triton", "cuda") if b != "triton" and available[b]]


def skip_reason(loss: str, provider: str, b: int, k: int) -> str | None:
    need = 25 * b * (b if loss == "supcon" else k)
    if provider == "eager" and need > EAGER_MAX_BYTES:
        return f"skipped: eager needs ~{need / 2**30:.0f} GiB"
    return None


def make_case(b: int, k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(b, D, generator=gen)
    protos = torch.randn(k, D, generator=gen)
    labels = torch.randint(0, k, (b,), generator=gen)
    return z, protos, labels


def step(loss: str, provider: str, z, protos, labels) -> None:
    """One forward+backward on fresh leaves."""
    backend = "reference" if provider == "eager" else provider
    z = z.detach().requires_grad_(True)
    protos = protos.detach().requires_grad_(True)
    if loss == "supcon":
        out = pha.ops.supcon_loss(z, labels, 0.1, backend=backend)
    else:
        out = pha.ops.prototype_loss(z, protos, labels, 0.1, backend=backend)
    out.backward()


def step_flops(loss: str, b: int, k: int) -> float:
    """Forward+backward FLOPs of the loss's score GEMM: B x N x D forward (N = B for
    supcon, K for prototype) and two of that size backward, 2 per multiply-add."""
    return 6.0 * b * (b if loss == "supcon" else k) * D


def case_row(
    measured: timing.Timing,
    eager: timing.Timing | None,
    peak: timing.Timing,
    flops: float,
    peak_flops: float,
) -> dict[str, float]:
    """One provider's timing fields: its times (old field names: p20/p80), GFLOP/s, and
    the paired ratios over rounds of the fraction of the fp32 GEMM peak and, beside an
    eager timing of the same case (not for eager itself), the speed-up over it."""
    row = {
        # cpu_ms is the CPU time of the process (all threads): on a busy machine it leaves
        # out the time spent waiting for a core, which the wall-clock median does not.
        **measured.step_fields(),
        **timing.paired_fields(measured, eager, peak, flops, peak_flops, "speedup_vs_eager"),
    }
    if eager is not None:
        row["cpu_speedup_vs_eager"] = eager.cpu_s / measured.cpu_s
    return row


def time_case(loss: str, b: int, k: int, config: dict, probes: dict) -> tuple[dict, dict]:
    """Every provider of one case that fits, and the GEMM probes, timed interleaved:
    ({provider: row fields or a skip reason}, {dtype: probe Timing})."""
    inputs = make_case(b, k)
    skipped = {p: r for p in providers() if (r := skip_reason(loss, p, b, k))}
    fns = {p: (lambda p=p: step(loss, p, *inputs)) for p in providers() if p not in skipped}
    fns.update({f"gemm_{dname}": probe[0] for dname, probe in probes.items()})
    timings = timing.measure_interleaved(fns, config["repeats"], config["min_sample_s"])
    eager = timings.get("eager")
    rows = {p: {"skipped": reason} for p, reason in skipped.items()}
    for p in providers():
        if p not in skipped:
            rows[p] = case_row(
                timings[p],
                eager if p != "eager" else None,
                timings["gemm_fp32"],
                step_flops(loss, b, k),
                probes["fp32"][1],
            )
    return rows, {dname: timings[f"gemm_{dname}"] for dname in probes}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(cases: list[tuple[str, str, int, int]]) -> list[float]:
    """In this (child) process: extra peak MiB of each case's forward+backward."""
    for loss in LOSSES:  # load every library and code path once
        for provider in providers():
            step(loss, provider, *make_case(16, 4))
    extra = []
    for loss, provider, b, k in cases:
        inputs = make_case(b, k)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        # The baseline is the reset high-water mark itself, not a VmRSS read before the
        # reset: RSS can shrink in between (freed pages), which made the extra negative.
        before = _status_kib("VmHWM")
        step(loss, provider, *inputs)
        extra.append((_status_kib("VmHWM") - before) / 1024)
        del inputs
    return extra


def memory_in_child(cases) -> list[float]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", json.dumps(cases)]
        + ["--threads", str(torch.get_num_threads())],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(config: dict, json_path: Path) -> list[dict]:
    freed_memory_kept = keep_freed_memory()  # the memory child sets MALLOC_* itself
    cpu = torch.device("cpu")
    probes = {
        dname: timing.gemm_probe(dtype, cpu, config is QUICK)
        for dname, dtype in timing.DTYPES.items()
    }
    peak_samples = {dname: [] for dname in timing.DTYPES}  # seconds per probe call, all rounds
    records, mem_cases = [], []
    for b in config["B"]:
        for k in config["K"]:
            for loss in LOSSES:
                rows, probe_timings = time_case(loss, b, k, config, probes)
                for dname, probe_timing in probe_timings.items():
                    peak_samples[dname] += probe_timing.samples
                for provider in providers():
                    rec = {"loss": loss, "B": b, "K": k, "D": D, "provider": provider}
                    rec.update(rows[provider])
                    if "skipped" not in rec:
                        mem_cases.append((loss, provider, b, k))
                    records.append(rec)
                    print(_progress(rec), file=sys.stderr, flush=True)
    for (loss, provider, b, k), mib in zip(mem_cases, memory_in_child(mem_cases)):
        rec = next(
            r
            for r in records
            if (r["loss"], r["provider"], r["B"], r["K"]) == (loss, provider, b, k)
        )
        rec["extra_peak_mib"] = mib
    for rec in records:
        eager = next(
            r
            for r in records
            if (r["loss"], r["B"], r["K"], r["provider"])
            == (rec["loss"], rec["B"], rec["K"], "eager")
        )
        big_enough = eager.get("extra_peak_mib", 0) >= MIN_MIB_FOR_RATIO
        if rec["provider"] != "eager" and "extra_peak_mib" in rec and big_enough:
            rec["memory_vs_eager"] = rec["extra_peak_mib"] / eager["extra_peak_mib"]
    meta = {
        **timing.machine_info(),
        "freed_memory_kept": freed_memory_kept,
        "gemm_peak_gflops": timing.probe_peaks(probes, peak_samples),
        "gemm_peak_note": "median over every round of the run's GEMM probes of that dtype",
        "ratios_note": "speedup_vs_eager and fraction_of_gemm_peak (fp32) are medians of "
        "per-round ratios (eager, each backend and the GEMM probes timed round-robin), with "
        "their 20/80 % quantiles in *_q20 / *_q80; cpu_speedup_vs_eager is a ratio of means",
        "flops_note": "6*B*N*D per forward+backward, N = B (supcon) or K (prototype)",
        "memory_method": "child process, MALLOC_MMAP_THRESHOLD_=65536, VmHWM after - VmHWM at reset",
    }
    timing.write_json(json_path, {"meta": meta, "results": records})
    return records


def _progress(rec: dict) -> str:
    what = rec.get("skipped") or f"{rec['median_ms']:.2f} ms"
    return f"{rec['loss']} B={rec['B']} K={rec['K']} {rec['provider']}: {what}"


def _with_span(r: dict, key: str, scale: float = 1.0, digits: int = 2) -> str:
    """ "median (q20-q80)" of a paired ratio's fields."""
    m, lo, hi = (scale * r[key + q] for q in ("", "_q20", "_q80"))
    return f"{m:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def table(records: list[dict]) -> str:
    head = (
        "| loss | B | K | provider | fwd+bwd ms (p20-p80) | CPU ms | extra peak MiB "
        "| speed-up (q20-q80) | CPU-time speed-up | % fp32 peak (q20-q80) | memory vs eager |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in records:
        row = f"| {r['loss']} | {r['B']} | {r['K']} | {r['provider']} "
        if "skipped" in r:
            lines.append(row + f"| {r['skipped']} |" + " |" * 6)
            continue
        speed = _with_span(r, "speedup_vs_eager") if "speedup_vs_eager" in r else ""
        peak = _with_span(r, "fraction_of_gemm_peak", scale=100, digits=1)
        cpu_speed = f"{r['cpu_speedup_vs_eager']:.1f}x" if "cpu_speedup_vs_eager" in r else ""
        mem = f"{100 * r['memory_vs_eager']:.1f} %" if "memory_vs_eager" in r else ""
        lines.append(
            row + f"| {r['median_ms']:.2f} ({r['p20_ms']:.2f}-{r['p80_ms']:.2f}) "
            f"| {r['cpu_ms']:.2f} | {r['extra_peak_mib']:.1f} | {speed} | {cpu_speed} | {peak} "
            f"| {mem} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, two repeats")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(measure_memory([tuple(c) for c in json.loads(args.memory_child)])))
        return
    records = run(QUICK if args.quick else FULL, args.json)
    print(table(records))
    print(f"\nthreads={torch.get_num_threads()} load average={os.getloadavg()} -> {args.json}")


if __name__ == "__main__":
    main()
