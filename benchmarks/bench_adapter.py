"""Benchmark pha.ops.hyper_adapter: the eager reference against every available backend.

For each shape, dtype (fp32, bf16) and mode (forward; forward+backward) it times the
reference, every backend and a GEMM probe of that dtype (oneDNN via
torch.ops.mkldnn._linear_pointwise on CPU, torch.mm on GPU) round-robin, one sample of each
per round (timing.measure_interleaved), and reports each one's median time with its 20/80 %
quantiles and GFLOP/s, and two paired ratios: the speed-up over the reference and the
fraction of the GEMM peak, each the median (q20-q80) of the per-round ratios, so that
drift of a shared machine between rounds cancels out. A third paired ratio,
speedup_vs_shared, is against the plain shared adapter (one weight set for every
instance: two oneDNN GEMMs of the same FLOPs, as pha/modules/adapter.py runs it), timed
in the same rounds: what a generated adapter costs over a shared one. Prints a table and
writes JSON.
Freed memory is kept for reuse, as pha.train runs (pha/allocator.py): the outputs of every
call come from the heap rather than from freshly faulted pages, for eager and C++ alike.

    python benchmarks/bench_adapter.py [--quick] [--out FILE] [--shapes B,T,d,r,G;...]

G=0 means one weight set per instance (no index); G>0 means index=LongTensor[B] over G sets.
On a shared, loaded machine `--threads 1 --timer thread` (CPU time of the one thread doing
the work) is far less noisy than wall time; the default is 2 threads and wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

import pha
from pha.allocator import keep_freed_memory
from pha.ops import _backend, reference
from pha.ops.reference import activate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    CLOCKS,
    DTYPES,
    Timing,
    gemm_probe,
    machine_info,
    measure_interleaved,
    paired_fields,
    probe_peaks,
    ratio_summary,
    summary_fields,
    write_json,
)

# (B, T, d, r, G): per-instance encoder-style, the PHA decoder (task-indexed), long thin,
# and the upper adapters of PHA's MiniLM train step (pha.train defaults: batch 32, 64
# tokens, 8 tasks, r = 64).
DEFAULT_SHAPES = (
    (32, 128, 768, 64, 0),
    (128, 8, 768, 64, 8),
    (8, 512, 2048, 16, 0),
    (32, 64, 384, 64, 8),
)
DEFAULT_OUT = Path(__file__).parent / "results" / "bench_adapter.json"


def parse_shapes(text: str) -> tuple[tuple[int, ...], ...]:
    shapes = tuple(tuple(int(v) for v in s.split(",")) for s in text.split(";") if s)
    if not shapes or any(len(s) != 5 for s in shapes):
        raise argparse.ArgumentTypeError("--shapes wants 'B,T,d,r,G;...' (G=0: per instance)")
    return shapes


def make_case(shape, dtype, device, backward: bool):
    b, t, d, r, g = shape
    gen = torch.Generator().manual_seed(0)
    sets = g if g > 0 else b

    def rand(*size, scale=1.0):
        return (torch.randn(*size, generator=gen) * scale).to(device=device, dtype=dtype)

    tensors = [
        rand(b, t, d),
        rand(sets, d, r, scale=d**-0.5),
        rand(sets, r, scale=0.1),
        rand(sets, r, d, scale=r**-0.5),
        rand(sets, d, scale=0.1),
    ]
    index = torch.randint(0, g, (b,), generator=gen).to(device) if g > 0 else None
    if backward:
        for t_ in tensors:
            t_.requires_grad_(True)
    grad_out = rand(b, t, d)
    return tensors, index, grad_out


def case_fn(provider: str, tensors, index, grad_out, backward: bool) -> Callable[[], object]:
    def forward():
        if provider == "reference":
            return reference.hyper_adapter(*tensors, index=index)
        return pha.ops.hyper_adapter(*tensors, index=index, backend=provider)

    if not backward:

        def run():
            with torch.no_grad():
                return forward()

        return run

    def run_backward():
        for t_ in tensors:
            t_.grad = None
        forward().backward(grad_out)

    return run_backward


def shared_fn(tensors, grad_out, backward: bool) -> Callable[[], object]:
    """The shared adapter on the same x: weight set 0 for every instance, plain GEMMs."""
    leaves = [tensors[0].detach().clone()] + [t[0].detach().clone() for t in tensors[1:]]
    if backward:
        for t_ in leaves:
            t_.requires_grad_(True)

    def run():
        x, w_down, b_down, w_up, b_up = leaves
        with torch.set_grad_enabled(backward):
            out = activate(x @ w_down + b_down, "relu") @ w_up + b_up
        if backward:
            for t_ in leaves:
                t_.grad = None
            out.backward(grad_out)
        return out

    return run


def providers(device: torch.device) -> list[str]:
    """The reference plus every backend that runs hyper_adapter natively on `device`."""
    names = ["reference"]
    for name, ok in _backend.backends().items():
        if name == "reference" or not ok or not _backend.implements(name, "hyper_adapter"):
            continue
        if name == "cpp" and device.type != "cpu":
            continue
        if name in ("triton", "cuda") and device.type != "cuda":  # no interpreter timings
            continue
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--shapes", type=parse_shapes, default=DEFAULT_SHAPES, help="B,T,d,r,G;...")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--timer", choices=sorted(CLOCKS), default="wall", help="thread: CPU time, use --threads 1"
    )
    parser.add_argument(
        "--isa-paths",
        default="",
        help="comma-separated PHA_CPU_ISA paths to time the cpp backend on "
        "(default: the one this CPU picks), e.g. avx512,avx512_bf16,amx_bf16",
    )
    args = parser.parse_args(argv)
    if args.timer == "thread" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--timer thread measures the calling thread only: needs --threads 1 on cpu")
    repeats = 3 if args.quick else 15
    min_sample_s = 0.002 if args.quick else 0.05
    torch.set_num_threads(args.threads)
    freed_memory_kept = keep_freed_memory()
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    probes = {dname: gemm_probe(dtype, device, args.quick) for dname, dtype in DTYPES.items()}
    peak_samples = {dname: [] for dname in DTYPES}  # seconds per probe call, all rounds
    runs = [(name, None) for name in providers(device)]
    if args.isa_paths and "cpp" in dict(runs):
        runs = [r for r in runs if r[0] != "cpp"] + [
            ("cpp", path) for path in args.isa_paths.split(",")
        ]
    rows = []
    for shape in args.shapes:
        for dname, dtype in DTYPES.items():
            for backward in (False, True):
                tensors, index, grad_out = make_case(shape, dtype, device, backward)
                fns = {PEAK: probes[dname][0], SHARED: shared_fn(tensors, grad_out, backward)}
                for name, path in runs:
                    fns[(name, path)] = with_isa_path(
                        path, case_fn(name, tensors, index, grad_out, backward)
                    )
                timings = measure_interleaved(fns, repeats, min_sample_s, sync, args.timer)
                peak_samples[dname] += timings[PEAK].samples
                for name, path in runs:
                    with isa_path(path):
                        isa = pha.ops.cpu_isa() if name == "cpp" else None
                    rows.append(
                        {
                            "shape": dict(zip(("B", "T", "d", "r", "G"), shape)),
                            "dtype": dname,
                            "mode": "fwd+bwd" if backward else "fwd",
                            "provider": name,
                            "isa": isa,
                            **case_stats(
                                timings[(name, path)],
                                timings[("reference", None)],
                                timings[SHARED],
                                timings[PEAK],
                                (12 if backward else 4) * shape[0] * shape[1] * shape[2] * shape[3],
                                probes[dname][1],
                            ),
                        }
                    )
    peaks = probe_peaks(probes, peak_samples)
    result = {
        "machine": {
            **machine_info(device),
            "timer": args.timer,
            "freed_memory_kept": freed_memory_kept,
        },
        "gemm_peak_gflops": peaks,
        "gemm_peak_note": "median over every round of the run's GEMM probes of that dtype",
        "ratios_note": "speedup_vs_reference, speedup_vs_shared and fraction_of_gemm_peak "
        "are medians of per-round ratios (reference, backends, the shared adapter and a GEMM "
        "probe of the row's dtype timed round-robin), with their 20/80 % quantiles in *_q20 / "
        "*_q80; shared = one weight set for all instances, two plain GEMMs (same FLOPs)",
        "flops_note": "fwd = 4*B*T*d*r, fwd+bwd = 12*B*T*d*r (2 per multiply-add)",
        "results": rows,
    }
    print_table(result)
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


PEAK = "gemm_peak"  # the GEMM probe's key among a case's timed callables
SHARED = "shared_adapter"  # the shared adapter's key


def case_stats(
    timing: Timing,
    reference: Timing,
    shared: Timing,
    peak: Timing,
    flops: float,
    peak_flops: float,
) -> dict[str, float]:
    """One provider's row: its absolute times, and its speed-up over the reference and the
    shared adapter and its fraction of the GEMM peak as medians (q20, q80) of per-round
    ratios; the probe's own GFLOP/s in this case's rounds beside them."""
    return {
        **timing.summary(),
        **paired_fields(timing, reference, peak, flops, peak_flops, "speedup_vs_reference"),
        **summary_fields("speedup_vs_shared", ratio_summary(shared.samples, timing.samples)),
    }


def label(row: dict[str, object]) -> str:
    return f"{row['provider']} ({row['isa']})" if row["isa"] else str(row["provider"])


def with_isa_path(path: str | None, fn: Callable[[], object]) -> Callable[[], object]:
    """fn, called with PHA_CPU_ISA=path (fn itself when path is None)."""
    if path is None:
        return fn

    def run():
        with isa_path(path):
            return fn()

    return run


@contextlib.contextmanager
def isa_path(path: str | None):
    """PHA_CPU_ISA=path inside the block (the C++ kernels read it on every call)."""
    if path is None:
        yield
        return
    old = os.environ.get("PHA_CPU_ISA")
    os.environ["PHA_CPU_ISA"] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ["PHA_CPU_ISA"]
        else:
            os.environ["PHA_CPU_ISA"] = old


def print_table(result: dict[str, object]) -> None:
    peaks = result["gemm_peak_gflops"]
    print(f"machine: {result['machine']}")
    print(
        "GEMM peak (median of the run's probes): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items())
    )
    head = f"{'B,T,d,r,G':>18} {'dtype':>5} {'mode':>7} {'provider':>17} {'median ms':>10} "
    head += f"{'q20':>8} {'q80':>8} {'GFLOP/s':>8} {'%peak (q20-q80)':>16} {'x ref (q20-q80)':>18}"
    head += f" {'x shared (q20-q80)':>19}"
    print(head)
    for row in result["results"]:
        shape = ",".join(str(v) for v in row["shape"].values())
        frac = [100 * row[f"fraction_of_gemm_peak{k}"] for k in ("", "_q20", "_q80")]
        speedup = [row[f"speedup_vs_reference{k}"] for k in ("", "_q20", "_q80")]
        vs_shared = [row[f"speedup_vs_shared{k}"] for k in ("", "_q20", "_q80")]
        print(
            f"{shape:>18} {row['dtype']:>5} {row['mode']:>7} {label(row):>17} "
            f"{row['median_ms']:10.3f} {row['q20_ms']:8.3f} {row['q80_ms']:8.3f} "
            f"{row['gflops']:8.1f} {frac[0]:5.0f}% ({frac[1]:3.0f}-{frac[2]:3.0f}) "
            f"{speedup[0]:6.2f} ({speedup[1]:4.2f}-{speedup[2]:4.2f}) "
            f"{vs_shared[0]:7.2f} ({vs_shared[1]:4.2f}-{vs_shared[2]:4.2f})"
        )


if __name__ == "__main__":
    main()
