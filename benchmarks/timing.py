"""What every benchmark here shares: one timing loop (median and 20/80 % quantiles of
repeats), the oneDNN GEMM peak of each dtype measured in the same run, and the facts of
the machine a run came from (CPU model, ISA flags, pha's kernel path, torch, threads,
load). The benchmarks are scripts: each puts this directory on sys.path to import it.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# /proc/cpuinfo flags that decide which kernels run (the rest is noise in a JSON).
_ISA_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c")


@dataclass
class Timing:
    """Seconds per call: one sample per repeat; cpu_s is the process CPU time per call
    (all threads), which leaves out time spent waiting for a core on a busy machine."""

    samples: list[float]
    cpu_s: float

    def summary(self) -> dict[str, float]:
        s = self.samples
        q = statistics.quantiles(s, n=10, method="inclusive") if len(s) > 1 else s * 9
        return {
            "median_ms": statistics.median(s) * 1e3,
            "q20_ms": q[1] * 1e3,
            "q80_ms": q[7] * 1e3,
            "cpu_ms": self.cpu_s * 1e3,
        }


def measure(
    fn: Callable[[], object],
    repeats: int,
    min_sample_s: float = 0.0,
    sync: Callable[[], None] = lambda: None,
    clock: str = "wall",
    warmup: int = 1,
) -> Timing:
    """Times fn(): `warmup` untimed calls, then `repeats` samples, each averaging enough
    calls to last min_sample_s on `clock` ("wall", or "thread": this thread's CPU time)."""
    now = CLOCKS[clock]
    for _ in range(warmup):  # allocations, thread pool, caches, compilation
        fn()
    sync()
    calls, start = 0, now()
    while calls < 1 or now() - start < min_sample_s:
        fn()
        calls += 1
    sync()
    samples, cpu_start = [], time.process_time()
    for _ in range(repeats):
        start = now()
        for _ in range(calls):
            fn()
        sync()
        samples.append((now() - start) / calls)
    return Timing(samples, (time.process_time() - cpu_start) / (calls * repeats))


def gemm_peak(dtype: torch.dtype, device: torch.device, quick: bool = False) -> float:
    """GFLOP/s of a large vendor GEMM (M=4096, K=N=768; oneDNN on CPU, as
    torch.ops.mkldnn._linear_pointwise, which uses AMX or AVX512_BF16 where they exist):
    the yardstick for "% of peak"."""
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

    timing = measure(fn, 3 if quick else 9, 0.002 if quick else 0.1, sync)
    return 2 * m * k * n / statistics.median(timing.samples) / 1e9


def gemm_peaks(device: torch.device, quick: bool = False) -> dict[str, float]:
    """{"fp32": GFLOP/s, "bf16": GFLOP/s} measured now."""
    return {name: gemm_peak(dtype, device, quick) for name, dtype in DTYPES.items()}


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
