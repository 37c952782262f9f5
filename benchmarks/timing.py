"""What every benchmark here shares: one timing loop, in which several callables take
turns round by round (median and 20/80 % quantiles of each one's samples, and paired
per-round ratios between them), a oneDNN GEMM probe of each dtype to time beside them (the
GEMM peak, measured in the same rounds), the facts of the machine a run came from (CPU
model, ISA flags, pha's kernel path, torch, threads, load), and the atomic write of the
results JSON. The benchmarks are scripts: each puts this directory on sys.path to import
it.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from pha.files import atomic_write

CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# /proc/cpuinfo flags that decide which kernels run (the rest is noise in a JSON).
_ISA_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c")


def quantile_summary(values: Sequence[float]) -> dict[str, float]:
    """Median and 20/80 % quantiles (inclusive method; one value is all three)."""
    if not values:
        raise ValueError("quantile_summary: values must not be empty")
    q = (
        statistics.quantiles(values, n=10, method="inclusive")
        if len(values) > 1
        else [values[0]] * 9
    )
    return {"median": statistics.median(values), "q20": q[1], "q80": q[7]}


@dataclass
class Timing:
    """Seconds per call: one sample per repeat; cpu_s is the process CPU time per call
    (all threads), which leaves out time spent waiting for a core on a busy machine."""

    samples: list[float]
    cpu_s: float

    def summary(self) -> dict[str, float]:
        q = quantile_summary(self.samples)
        return {
            "median_ms": q["median"] * 1e3,
            "q20_ms": q["q20"] * 1e3,
            "q80_ms": q["q80"] * 1e3,
            "cpu_ms": self.cpu_s * 1e3,
        }

    def step_fields(self) -> dict[str, float]:
        """summary() under the field names of the step and loss benchmarks' JSON (p20/p80)."""
        s = self.summary()
        return {"median_ms": s["median_ms"], "p20_ms": s["q20_ms"], "p80_ms": s["q80_ms"],
                "cpu_ms": s["cpu_ms"]}  # fmt: skip


def round_order(names: Sequence[Hashable], round_index: int) -> list[Hashable]:
    """The order of one round: `names` shuffled by a generator seeded with the round's
    index (the same every run), so no callable always runs first (cold caches) or right
    after the same neighbour (a rotation would keep each one's predecessor)."""
    order = list(names)
    random.Random(round_index).shuffle(order)
    return order


def measure_interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    min_sample_s: float = 0.0,
    sync: Callable[[], None] = lambda: None,
    clock: str = "wall",
    warmup: int = 1,
) -> dict[str, Timing]:
    """Times several callables round-robin: `warmup` untimed calls of each, then `rounds`
    rounds in which every callable gives one sample (the mean over enough calls to last
    min_sample_s on `clock`: "wall", or "thread", this thread's CPU time). Sample i of every
    callable comes from round i, so ratios between them can be taken per round
    (paired_ratios): drift of a shared machine between rounds cancels out of them."""
    now = CLOCKS[clock]
    if rounds < 1:
        raise ValueError(f"measure_interleaved: rounds must be >= 1, got {rounds}")
    names = list(fns)
    calls = {}
    for name in names:
        fn = fns[name]
        for _ in range(warmup):  # allocations, thread pool, caches, compilation
            fn()
        sync()
        n, start = 0, now()
        while n < 1 or now() - start < min_sample_s:
            fn()
            n += 1
        sync()
        calls[name] = n
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu = dict.fromkeys(names, 0.0)
    for i in range(rounds):
        for name in round_order(names, i):
            fn, n = fns[name], calls[name]
            cpu_start, start = time.process_time(), now()
            for _ in range(n):
                fn()
            sync()
            samples[name].append((now() - start) / n)
            cpu[name] += time.process_time() - cpu_start
    return {name: Timing(samples[name], cpu[name] / (calls[name] * rounds)) for name in names}


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """numerator[i] / denominator[i] for each round i of measure_interleaved."""
    if len(numerator) != len(denominator):
        raise ValueError(
            f"paired_ratios: one value per round on both sides, got {len(numerator)} "
            f"and {len(denominator)}"
        )
    return [a / b for a, b in zip(numerator, denominator)]


def ratio_summary(
    numerator: Sequence[float], denominator: Sequence[float], scale: float = 1.0
) -> dict[str, float]:
    """Median and 20/80 % quantiles of scale * numerator[i] / denominator[i] over rounds."""
    return quantile_summary([scale * v for v in paired_ratios(numerator, denominator)])


def summary_fields(name: str, summary: Mapping[str, float]) -> dict[str, float]:
    """A ratio_summary as JSON fields: name (the median), name_q20, name_q80."""
    return {name: summary["median"], f"{name}_q20": summary["q20"], f"{name}_q80": summary["q80"]}


def gflops(flops: float, timing: Timing) -> float:
    """GFLOP/s of a callable doing `flops` per call, at its median time."""
    return flops / statistics.median(timing.samples) / 1e9


def paired_stats(
    timing: Timing, baseline: Timing | None, peak: Timing, flops: float, peak_flops: float
) -> dict[str, object]:
    """Paired ratios of callables timed together by measure_interleaved, each the median
    (q20, q80) of the per-round ratios: the speed-up of `timing` over `baseline` (left out
    when there is none), and its fraction of the GEMM peak (the probe `peak` doing
    peak_flops per call); and the probe's own GFLOP/s in these rounds."""
    stats: dict[str, object] = {
        # fraction of peak in round i = (flops / t_i) / (peak_flops / t_peak_i)
        "fraction_of_gemm_peak": ratio_summary(peak.samples, timing.samples, flops / peak_flops),
        "gemm_peak_gflops": gflops(peak_flops, peak),
    }
    if baseline is not None:
        stats["speedup"] = ratio_summary(baseline.samples, timing.samples)
    return stats


def paired_fields(
    timing: Timing,
    baseline: Timing | None,
    peak: Timing,
    flops: float,
    peak_flops: float,
    speedup_name: str,
) -> dict[str, float]:
    """paired_stats as a row's JSON fields: gflops, fraction_of_gemm_peak(_q20/_q80),
    gemm_peak_gflops and, beside a baseline, speedup_name(_q20/_q80)."""
    paired = paired_stats(timing, baseline, peak, flops, peak_flops)
    fields = {
        "gflops": gflops(flops, timing),
        **summary_fields("fraction_of_gemm_peak", paired["fraction_of_gemm_peak"]),
        "gemm_peak_gflops": paired["gemm_peak_gflops"],
    }
    if baseline is not None:
        fields.update(summary_fields(speedup_name, paired["speedup"]))
    return fields


def gemm_probe(
    dtype: torch.dtype, device: torch.device, quick: bool = False
) -> tuple[Callable[[], object], float, Callable[[], None]]:
    """(fn, flops per call, sync) of a large vendor GEMM (M=4096, K=N=768; oneDNN on CPU, as
    torch.ops.mkldnn._linear_pointwise, which uses AMX or AVX512_BF16 where they exist):
    the yardstick for "% of peak", timed beside the callables it is compared with."""
    m, k, n = (256, 128, 128) if quick else (4096, 768, 768)
    a = torch.randn(m, k, dtype=dtype, device=device)
    w = torch.randn(n, k, dtype=dtype, device=device)
    if device.type == "cpu":

        def fn():
            return torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")

        sync = lambda: None  # noqa: E731
    else:

        def fn():
            return a @ w.T

        def sync():
            torch.cuda.synchronize(device)

    return fn, 2.0 * m * k * n, sync


def probe_peaks(
    probes: Mapping[str, tuple[object, float, object]], samples: Mapping[str, Sequence[float]]
) -> dict[str, float]:
    """{dtype: GFLOP/s} of each gemm_probe at the median of its samples (seconds per
    call) over every round of a run."""
    return {name: probes[name][1] / statistics.median(samples[name]) / 1e9 for name in samples}


def _cpuinfo() -> tuple[str | None, list[str]]:
    model, flags = None, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    return model, sorted(f for f in flags if f.startswith(_ISA_FLAG_PREFIXES))


def machine_info(device: torch.device | None = None) -> dict[str, object]:
    """The facts a benchmark figure needs beside it."""
    import pha

    device = device or torch.device("cpu")
    model, flags = _cpuinfo()
    info: dict[str, object] = {
        "cpu": model or platform.processor() or platform.machine(),
        "isa_flags": flags,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "load_average_1_5_15": os.getloadavg(),
        "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if pha.ops.backends()["cpp"]:
        info["pha_cpu_isa"] = pha.ops.cpu_isa()
        info["pha_cpu_features"] = list(pha.ops.cpu_features())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json(path: Path, payload: object) -> Path:
    """The results JSON, written atomically (pha.files.atomic_write: a temporary file
    beside it, then os.replace), so a killed or failed run never leaves a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, (json.dumps(payload, indent=2) + "\n").encode())
