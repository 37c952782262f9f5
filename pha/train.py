"""Multi-task training: `python -m pha.train [flags]`.

Without arguments: PHA on the offline MiniLM encoder over four real tasks (tweet
sentiment, movie-review polarity, review-vs-plot subjectivity, BBC topic), a few hundred
training examples each; prints the per-task test metrics and writes to OUTPUT_DIR:
  metrics.json  {"tasks": {task: {metric: value}}, "average": float, "step": int}
  adapter/      the trained adapter (save_pretrained)
  config.json   the resolved configuration
  log.jsonl     one JSON object per logged training step / evaluation
  checkpoint-<step>.pt   the newest --keep-last checkpoints (for --resume)

Settings come from the defaults, then a YAML/JSON --config file, then the flags.
Distributed: `torchrun --nproc_per_node N -m pha.train ...` (gloo on CPU, nccl on GPU);
--batch-size is the global batch, split evenly over the ranks; only rank 0 writes.
Few-shot transfer: `--transfer-from RUN --k-shot K --tasks NEW...` adds the new tasks to
the run's model (add_task: prototype from the retriever) and tunes on K examples each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from . import METHODS, PHAModel, get_model
from .checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from .data import DEFAULT_TASKS, Collator, MixedTaskSampler, load_tasks, metrics
from .evaluate import evaluate, format_table
from .hub import ALIASES, load_backbone

# Every setting with its default. The default job was sized by measuring on 2 cores
# (see the README): it trains and evaluates in a few minutes.
DEFAULTS: dict = {
    "method": "pha",
    "model": "minilm",
    "tasks": list(DEFAULT_TASKS),
    "n_train": 300,  # per task: a count, or a fraction of the task's training split
    "n_eval": 300,  # at most this many validation / test examples per task
    "max_steps": 150,
    "batch_size": 32,  # global (over all ranks)
    "lr": None,  # None: LEARNING_RATES[method]
    "warmup": 15,
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "label_smoothing": 0.1,
    "seed": 0,
    "eval_every": 0,  # validation every N steps (0: only the final test evaluation)
    "save_every": 50,  # checkpoint every N steps (0: never)
    "keep_last": 2,
    "output_dir": "runs/pha",
    "resume": None,  # "latest" (newest checkpoint in output_dir) or a checkpoint path
    "backend": None,  # pha.ops backend; None = fastest available
    "task_sampling": "proportional",  # or a temperature T > 0 (p_k ∝ N_k^(1/T))
    "max_length": 64,
    "eval_batch_size": 64,
    "task_prefix": True,  # prefix the input with the task name (as in the paper)
    "method_args": {},  # extra fields of the method's config, e.g. {"adapter_dim": 32}
    "transfer_from": None,
    "k_shot": None,
    "transfer_init": "nearest",  # or "mean"
    "transfer_tune": "prototype",  # tune only the new prototype + head, or "all"
    "log_every": 10,
    "quiet": False,
}


# Peak learning rates when --lr is not given: 1e-3 for the parameter-efficient methods
# (sized for the short default job; the releases use 3e-4 over thousands of steps, and
# the README's study shows PHA needs it when data is seen about once); full fine-tuning
# moves the whole pretrained backbone, which 1e-3 would wreck.
LEARNING_RATES = {"full": 1e-4}
PEFT_LEARNING_RATE = 1e-3


class ConfigError(ValueError):
    """A bad setting; the message names it and lists what is valid."""


def _n(value: str) -> int | float:
    """--n-train / --n-eval: a count ('300') or a fraction ('0.1')."""
    try:
        return int(value)
    except ValueError:
        return float(value)


def _sampling(value: str) -> str | float:
    if value == "proportional":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'proportional' or a temperature (a number > 0), got {value!r}"
        ) from None


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pha.train",
        description=__doc__.split("\n\n")[0],
        argument_default=argparse.SUPPRESS,  # only flags actually given override the config
    )
    a = p.add_argument
    a("--config", help="YAML or JSON file of settings (keys as the flags, with _ or -)")
    a("--method", help=f"one of {sorted(METHODS)} (default pha)")
    a(
        "--model",
        help=f"offline alias {sorted(ALIASES)}, local directory or hub name (default minilm)",
    )
    a("--tasks", nargs="+", help="task names (space or comma separated); see pha.data.task_names()")
    a("--n-train", type=_n, help="training examples per task: count or fraction")
    a("--n-eval", type=_n, help="max validation/test examples per task: count or fraction")
    a("--max-steps", type=int)
    a("--batch-size", type=int, help="global batch size")
    a("--eval-batch-size", type=int)
    a("--lr", type=float, help="peak learning rate (default 1e-3; 1e-4 for --method full)")
    a("--warmup", type=int, help="linear warmup steps")
    a("--weight-decay", type=float)
    a("--grad-clip", type=float, help="max gradient norm (0: off)")
    a("--label-smoothing", type=float)
    a("--seed", type=int)
    a("--eval-every", type=int, help="validate every N steps (0: off)")
    a("--save-every", type=int, help="checkpoint every N steps (0: off)")
    a("--keep-last", type=int, help="checkpoints kept")
    a("--output-dir")
    a(
        "--resume",
        nargs="?",
        const="latest",
        help="resume from the newest checkpoint in --output-dir, or from PATH",
    )
    a("--backend", help="pha.ops backend: reference, cpp, triton, cuda")
    a("--task-sampling", type=_sampling, help="'proportional' or a temperature T")
    a("--max-length", type=int, help="max tokens per input")
    a("--task-prefix", type=_bool, help="prefix inputs with the task name (true/false)")
    a(
        "--method-args",
        type=json.loads,
        help="JSON dict of extra method config fields, e.g. '{\"adapter_dim\": 32}'",
    )
    a("--transfer-from", help="a finished run directory to transfer from (few-shot)")
    a("--k-shot", type=int, help="training examples per new task in transfer")
    a("--transfer-init", choices=("nearest", "mean"))
    a("--transfer-tune", choices=("prototype", "all"))
    a("--log-every", type=int)
    a("--quiet", action="store_true", help="no progress bar or tables")
    return p


def resolve_config(argv: list[str] | None = None) -> dict:
    """DEFAULTS <- --config file <- flags, validated."""
    args = vars(build_parser().parse_args(argv))
    cfg = dict(DEFAULTS)
    given = dict(args)
    if "config" in args:
        given = {**_read_config_file(args.pop("config")), **args}
    cfg.update(given)
    cfg["tasks"] = [t for item in cfg["tasks"] for t in str(item).split(",") if t]
    if cfg["transfer_from"] is not None:
        _inherit_from_source(cfg, given)
    if cfg["lr"] is None:
        cfg["lr"] = LEARNING_RATES.get(cfg["method"], PEFT_LEARNING_RATE)
    _validate(cfg)
    return cfg


# What a transfer run takes from its source run unless set: the backbone the source's
# adapter was trained on, and how its inputs were built.
INHERITED = ("model", "max_length", "task_prefix")


def _inherit_from_source(cfg: dict, given: dict) -> None:
    path = Path(cfg["transfer_from"]) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--transfer-from: no {path} (not a finished pha.train run)")
    source = json.loads(path.read_text())
    for key in INHERITED:
        if key not in given:
            cfg[key] = source[key]
    if cfg["model"] != source["model"]:
        raise ConfigError(
            f"--model: {cfg['model']!r}, but the source run {cfg['transfer_from']} was trained "
            f"on {source['model']!r}; leave --model out to use it"
        )


def _read_config_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no file {path}")
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config: {path} must hold a mapping of settings, got {type(data).__name__}"
        )
    data = {k.replace("-", "_"): v for k, v in data.items()}
    for key in ("lr", "weight_decay", "grad_clip", "label_smoothing"):
        if isinstance(data.get(key), str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                data[key] = float(data[key])
            except ValueError:
                raise ConfigError(f"--config: {key} must be a number, got {data[key]!r}") from None
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"--config: unknown settings {unknown} in {path}; valid: {sorted(DEFAULTS)}"
        )
    return data


def _validate(cfg: dict) -> None:
    if cfg["method"] not in METHODS:
        raise ConfigError(f"--method: unknown method {cfg['method']!r}; valid: {sorted(METHODS)}")
    if not cfg["tasks"]:
        raise ConfigError("--tasks: expected at least one task")
    for key in (
        "max_steps",
        "batch_size",
        "eval_batch_size",
        "max_length",
        "keep_last",
        "log_every",
    ):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(
                f"--{key.replace('_', '-')}: expected an integer >= 1, got {cfg[key]!r}"
            )
    for key in ("eval_every", "save_every", "warmup"):
        if not isinstance(cfg[key], int) or cfg[key] < 0:
            raise ConfigError(
                f"--{key.replace('_', '-')}: expected an integer >= 0, got {cfg[key]!r}"
            )
    if not (isinstance(cfg["lr"], int | float) and cfg["lr"] > 0):
        raise ConfigError(f"--lr: expected > 0, got {cfg['lr']}")
    if not 0 <= cfg["label_smoothing"] < 1:
        raise ConfigError(
            f"--label-smoothing: expected a value in [0, 1), got {cfg['label_smoothing']}"
        )
    ts = cfg["task_sampling"]
    if ts != "proportional" and not (isinstance(ts, int | float) and ts > 0):
        raise ConfigError(
            f"--task-sampling: expected 'proportional' or a temperature > 0, got {ts!r}"
        )
    if not isinstance(cfg["method_args"], dict):
        raise ConfigError(f"--method-args: expected a JSON object, got {cfg['method_args']!r}")
    if (cfg["transfer_from"] is None) != (cfg["k_shot"] is None):
        raise ConfigError("--transfer-from and --k-shot go together (few-shot transfer)")
    if cfg["k_shot"] is not None and cfg["k_shot"] < 1:
        raise ConfigError(f"--k-shot: expected >= 1, got {cfg['k_shot']}")


# ---- distributed ----------------------------------------------------------------------


def _init_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return dist.get_rank(), world, device


@contextlib.contextmanager
def _rank_zero_first(rank: int, world: int):
    """Rank 0 runs the block first (downloads into the cache), then the others."""
    if world > 1 and rank != 0:
        dist.barrier()
    yield
    if world > 1 and rank == 0:
        dist.barrier()


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


# ---- the run --------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fingerprint(cfg: dict, world: int) -> dict:
    """Settings a checkpoint must share with the run resuming it."""
    keys = ("method", "model", "tasks", "n_train", "seed", "batch_size", "task_sampling", "max_length",
            "task_prefix", "method_args", "lr", "warmup", "max_steps", "transfer_from", "k_shot")  # fmt: skip
    return {**{k: cfg[k] for k in keys}, "world_size": world}


def _schedule(warmup: int, total: int):
    """Linear warmup to the peak learning rate, then linear decay to 0 (the release's)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _build_model(cfg: dict, data, base, tokenizer, kind: str, log) -> PHAModel:
    """A fresh model for the tasks, or (transfer) the source run's model plus new tasks."""
    if cfg["transfer_from"] is None:
        config_cls = METHODS[cfg["method"]]
        try:
            mcfg = config_cls(
                tasks=data.names,
                num_labels=[t.num_labels for t in data.tasks] if kind == "encoder" else None,
                label_smoothing=cfg["label_smoothing"],
                backend=cfg["backend"],
                **cfg["method_args"],
            )
        except TypeError as e:  # an unknown field
            fields = sorted(config_cls.__dataclass_fields__)
            raise ConfigError(
                f"--method-args: {e}; fields of {config_cls.__name__}: {fields}"
            ) from e
        except ValueError as e:  # a bad value (the message names the field)
            raise ConfigError(f"{config_cls.__name__}: {e}") from e
        return get_model(base, mcfg)
    adapter = Path(cfg["transfer_from"]) / "adapter"
    if not adapter.is_dir():
        raise ConfigError(
            f"--transfer-from: {cfg['transfer_from']} has no adapter/ (not a finished pha.train run)"
        )
    model = PHAModel.from_pretrained(base, adapter)
    model.config.label_smoothing = cfg["label_smoothing"]
    collator = Collator(tokenizer, kind, data.tasks, cfg["max_length"], cfg["task_prefix"])
    for task_id, (task, examples) in enumerate(zip(data.tasks, data.train)):
        if task.name in model.tasks:
            raise ConfigError(
                f"--tasks: {task.name!r} is a source task of {cfg['transfer_from']}; transfer needs new tasks"
            )
        batch = collator([(task_id, ex) for ex in examples], generate=True)
        new_id = model.add_task(
            task.name,
            examples={k: batch[k].to(model.device) for k in ("input_ids", "attention_mask")},
            init=cfg["transfer_init"],
            num_labels=task.num_labels if kind == "encoder" else None,
        )
        log({"event": "add_task", "task": task.name, "id": new_id, "k_shot": len(examples)})
    return model


def _tuned_parameters(model, cfg: dict, n_source: int) -> list[torch.nn.Parameter]:
    """The parameters the optimiser updates: all trainable ones, or in few-shot transfer
    with --transfer-tune prototype only the new tasks' prototype rows and heads. (The rest
    keeps requires_grad, so the saved adapter still holds every trainable weight.)"""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if cfg["transfer_from"] is None or cfg["transfer_tune"] == "all":
        return trainable
    if not hasattr(model, "prototypes"):
        raise ConfigError(
            f"--transfer-tune prototype: method {model.config.method!r} has no prototypes; use --transfer-tune all"
        )
    weight = model.prototypes.weight
    keep = torch.zeros_like(weight)
    keep[n_source:] = 1.0
    weight.register_hook(lambda g: g * keep)  # the source prototypes stay as they were
    new_heads = list(model.heads)[n_source:] if hasattr(model, "heads") else []
    return [weight] + [p for head in new_heads for p in head.parameters()]


def run(cfg: dict) -> dict:
    """Train and evaluate as `cfg` says; returns the final metrics (as metrics.json)."""
    rank, world, device = _init_distributed()
    try:
        return _run(cfg, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _run(cfg: dict, rank: int, world: int, device: torch.device) -> dict:
    started = time.perf_counter()
    main_rank = rank == 0
    verbose = main_rank and not cfg["quiet"]
    out_dir = Path(cfg["output_dir"])
    if cfg["batch_size"] % world:
        raise ConfigError(
            f"--batch-size {cfg['batch_size']} must be divisible by the {world} processes"
        )
    if main_rank:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "config.json", "w") as f:
            json.dump(cfg, f, indent=2)
    log_file = open(out_dir / "log.jsonl", "a") if main_rank else None

    def log(record: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps({"time": time.time(), **record}) + "\n")
            log_file.flush()

    seed_everything(cfg["seed"])
    n_train = cfg["k_shot"] if cfg["transfer_from"] else cfg["n_train"]
    with _rank_zero_first(rank, world):
        data = load_tasks(cfg["tasks"], n_train, cfg["n_eval"], cfg["seed"])
        base, tokenizer, kind = load_backbone(cfg["model"])
    model = _build_model(cfg, data, base.to(device), tokenizer, kind, log)
    # In transfer the new tasks' ids follow the source model's tasks.
    n_source = len(model.tasks) - len(data.tasks)
    collator = Collator(
        tokenizer, kind, data.tasks, cfg["max_length"], cfg["task_prefix"], n_source
    )
    model.to(device)
    if verbose:
        print(f"pha.train: {cfg['method']} on {cfg['model']} ({kind}), tasks "
              + ", ".join(f"{t.name} ({len(x)} train)" for t, x in zip(data.tasks, data.train)))  # fmt: skip
        model.print_trainable_parameters()

    params = _tuned_parameters(model, cfg, n_source)
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(cfg["warmup"], cfg["max_steps"])
    )
    temperature = None if cfg["task_sampling"] == "proportional" else float(cfg["task_sampling"])
    sampler = MixedTaskSampler(
        [len(x) for x in data.train], cfg["batch_size"], cfg["seed"], temperature
    )
    fingerprint = _fingerprint(cfg, world)

    start = _maybe_resume(cfg, model, optimizer, scheduler, sampler, fingerprint, out_dir)
    if start and verbose:
        print(f"pha.train: resumed at step {start}")
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    local = cfg["batch_size"] // world
    progress = _progress(verbose, start, cfg["max_steps"])
    model.train()
    seen, t0 = 0, time.perf_counter()
    for step in range(start, cfg["max_steps"]):
        pairs = sampler.batch(step)[rank * local : (rank + 1) * local]
        batch = collator([(t, data.train[t][i]) for t, i in pairs])
        out = train_model(**{k: v.to(device) for k, v in batch.items() if k != "targets"})
        model.zero_grad(set_to_none=True)
        out.loss.backward()
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        optimizer.step()
        scheduler.step()
        sampler.step = step + 1
        seen += cfg["batch_size"]
        done = step + 1
        if done % cfg["log_every"] == 0 or done == cfg["max_steps"]:
            rate = seen / (time.perf_counter() - t0)
            record = {"event": "train", "step": done, "loss": out.loss.item(), "lr": scheduler.get_last_lr()[0],
                      "examples_per_s": rate, **{f"aux_{k}": v.item() for k, v in out.aux_losses.items()}}  # fmt: skip
            log(record)
            progress.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{rate:.1f}")
        progress.update(1)
        if cfg["eval_every"] and done % cfg["eval_every"] == 0 and done != cfg["max_steps"]:
            _validate_during_training(
                model, collator, data, cfg, done, main_rank, world, log, progress
            )
        if cfg["save_every"] and done % cfg["save_every"] == 0 and done != cfg["max_steps"]:
            if main_rank:
                state = {"fingerprint": fingerprint, "model": model.trainable_state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "sampler": sampler.state_dict()}  # fmt: skip
                save_checkpoint(out_dir, done, state, cfg["keep_last"])
                log({"event": "checkpoint", "step": done})
            _barrier(world)
    progress.close()

    result = None
    if main_rank:
        per_task = evaluate(model, collator, data, "test", cfg["eval_batch_size"])
        result = {"tasks": per_task, "average": metrics.average(per_task), "step": cfg["max_steps"]}
        log({"event": "test", **result, "elapsed_s": time.perf_counter() - started})
        model.save_pretrained(out_dir / "adapter")
        with open(out_dir / "metrics.json", "w") as f:
            json.dump(result, f, indent=2)
        if verbose:
            print(f"\ntest metrics (%) after {cfg['max_steps']} steps:")
            print(format_table(per_task, result["average"]))
            print(f"wrote {out_dir}/metrics.json, adapter/, config.json, log.jsonl "
                  f"({time.perf_counter() - started:.0f} s in all)")  # fmt: skip
        log_file.close()
    _barrier(world)
    return result


def _validate_during_training(model, collator, data, cfg, step, main_rank, world, log, progress):
    if main_rank:
        per_task = evaluate(model, collator, data, "validation", cfg["eval_batch_size"])
        avg = metrics.average(per_task)
        log({"event": "validation", "step": step, "tasks": per_task, "average": avg})
        if not cfg["quiet"]:
            progress.write(f"\nvalidation at step {step}:\n{format_table(per_task, avg)}")
    _barrier(world)


def _maybe_resume(cfg, model, optimizer, scheduler, sampler, fingerprint, out_dir: Path) -> int:
    if cfg["resume"] is None:
        return 0
    if cfg["resume"] == "latest":
        found = list_checkpoints(out_dir)
        if not found:
            raise FileNotFoundError(f"--resume: no checkpoint-*.pt in {out_dir}")
        path = found[-1]
    else:
        path = Path(cfg["resume"])
    state = load_checkpoint(path, fingerprint)
    saved, expected = set(state["model"]), set(model.trainable_state_dict())
    if saved != expected:
        raise ValueError(
            f"resume: checkpoint {path} holds other weights than this model: missing "
            f"{sorted(expected - saved)[:5]}, unexpected {sorted(saved - expected)[:5]}"
        )
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    return int(state["step"])


def _progress(enabled: bool, start: int, total: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=start,
        desc="train",
        unit="step",
        disable=not enabled,
        dynamic_ncols=True,
    )


def main(argv: list[str] | None = None) -> dict | None:
    """The command line: a bad setting, task, model or checkpoint ends with its message
    and exit code 2 (PHA_DEBUG=1 shows the traceback)."""
    try:
        return run(resolve_config(argv))
    except (ValueError, FileNotFoundError, CheckpointError) as e:
        if os.environ.get("PHA_DEBUG") == "1":
            raise
        print(f"python -m pha.train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
