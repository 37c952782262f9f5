"""The settings of `python -m pha.train`: one dataclass drives the command line, the
YAML/JSON config file, validation and the resume fingerprint.

Resolution order: the field defaults, then the method's defaults for the fields left at
None (METHOD_DEFAULTS, chosen by validation sweeps: see docs/TRAINING.md), then a
--config file, then the flags actually given.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import DEFAULT_TASKS
from .methods import METHODS


class ConfigError(ValueError):
    """A bad setting; the message names it and lists what is valid."""


# ---- parsing of single values (flags and strings from config files) --------------------


def _count(value: Any) -> int | float:
    """A count ('300') or a fraction ('0.1')."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a count or a fraction, got {value!r}")
    if isinstance(value, int | float):
        return value
    try:
        return int(value)
    except ValueError:
        return float(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _float(value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string: float() takes it
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def _int(value: Any) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None


def _sampling(value: Any) -> str | float:
    if value == "proportional":
        return value
    try:
        return _float(value)
    except ValueError:
        raise ValueError(
            f"expected 'proportional' or a temperature (a number > 0), got {value!r}"
        ) from None


def _tasks(value: Any) -> list[str]:
    """Task names from a list, or one string of comma- (or space-) separated names."""
    items = value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(t, str) for t in items):
        raise ValueError(f"expected task names, got {value!r}")
    return [t for item in items for t in item.replace(",", " ").split()]


def _json_dict(value: Any) -> dict:
    data = json.loads(value) if isinstance(value, str) else value
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {value!r}")
    return data


def _optional(parse: Callable) -> Callable:
    return lambda v: None if v is None or (isinstance(v, str) and v.lower() == "none") else parse(v)


# ---- the settings ----------------------------------------------------------------------


def setting(default: Any, help: str, parse: Callable = str, *, resumable: bool = False, **cli):
    """A field of TrainConfig. resumable=True: may differ between a checkpoint and the run
    resuming it (where output goes, how much is logged); every other field is part of the
    resume fingerprint. cli: extra argparse options (nargs, const, choices)."""
    metadata = {"help": help, "parse": parse, "resumable": resumable, "cli": cli}
    if isinstance(default, list | tuple | dict):  # mutable: a fresh copy per config
        value = list(default) if isinstance(default, tuple) else default
        return field(default_factory=lambda: copy.deepcopy(value), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Every setting of a training run (None: the method's default, see METHOD_DEFAULTS)."""

    method: str = setting("pha", "method: one of " + ", ".join(sorted(METHODS)))
    model: str = setting(
        "minilm", "offline alias (minilm, smollm2, ...), local directory or hub name"
    )
    tasks: list[str] = setting(
        DEFAULT_TASKS,
        "task names (space or comma separated); see pha.data.task_names()",
        _tasks,
        nargs="+",
    )
    n_train: int | float = setting(300, "training examples per task: a count or a fraction", _count)
    n_eval: int | float = setting(
        300, "at most this many validation / test examples per task", _count
    )
    n_val: int | float | None = setting(
        None,
        "at most this many validation examples per task for model selection (default: --n-eval)",
        _optional(_count),
    )
    epochs: float | None = setting(
        None, "passes over the training set (sets the step count)", _optional(_float)
    )
    max_steps: int | None = setting(
        None, "optimizer steps; when given, overrides --epochs", _optional(_int)
    )
    min_steps: int | None = setting(
        None, "at least this many steps however small the data", _optional(_int)
    )
    batch_size: int = setting(32, "global batch size (over all ranks and accumulation)", _int)
    grad_accum: int = setting(
        1, "micro-batches per optimizer step (the contrastive losses see one micro-batch)", _int
    )
    lr: float | None = setting(None, "peak learning rate", _optional(_float))
    hypernet_lr_scale: float | None = setting(
        None, "learning-rate factor of the hypernetwork parameters (hypernet.*)", _optional(_float)
    )
    head_lr_scale: float | None = setting(
        None,
        "learning-rate factor of the per-task classification heads (heads.*)",
        _optional(_float),
    )
    probe_ratio: float | None = setting(
        None,
        "LP-FT: the first fraction of the steps trains only the per-task heads (a linear probe), then everything",
        _optional(_float),
    )
    warmup_ratio: float = setting(
        0.1, "linear warm-up over this fraction of the steps, then linear decay to 0", _float
    )
    weight_decay: float = setting(0.0, "AdamW weight decay", _float)
    grad_clip: float = setting(1.0, "max gradient norm (0: off)", _float)
    label_smoothing: float = setting(0.1, "label smoothing of the task loss", _float)
    task_loss_reduction: str | None = setting(
        None,
        "task loss over the batch: 'mean' per example or 'sum' (the PHA release's low-data configs)",
        _optional(str),
        choices=("mean", "sum"),
    )
    seed: int = setting(0, "seed of the training sample, the init and the data order", _int)
    eval_every: int | None = setting(
        None,
        "validate every N steps (default: about once per epoch, at most 10 times)",
        _optional(_int),
    )
    select: str = setting(
        "best",
        "report the checkpoint with the best validation score ('best') or the last one",
        choices=("best", "last"),
    )
    select_metric: str = setting(
        "macro_f1",
        "validation metric that selects the checkpoint (averaged over tasks; a task without it uses its own average)",
    )
    patience: int = setting(
        0, "stop after this many validations without improvement (0: never)", _int
    )
    save_every: int = setting(50, "checkpoint every N steps (0: never)", _int, resumable=True)
    keep_last: int = setting(2, "checkpoints kept", _int, resumable=True)
    output_dir: str = setting("runs/pha", "where the run writes", resumable=True)
    resume: str | None = setting(
        None,
        "resume from the newest checkpoint in --output-dir ('latest') or from PATH",
        _optional(str),
        resumable=True,
        nargs="?",
        const="latest",
    )
    backend: str | None = setting(
        None,
        "pha.ops backend: reference, cpp, triton, cuda (default: fastest)",
        _optional(str),
        resumable=True,
    )
    task_batches: str | None = setting(
        None,
        "'mixed' tasks in every batch, or 'single': one task per batch drawn by --task-sampling (HyperFormer++'s release)",
        _optional(str),
        choices=("mixed", "single"),
    )
    task_sampling: str | float = setting(
        "proportional", "'proportional' or a temperature T (p_k ∝ N_k^(1/T))", _sampling
    )
    precision: str = setting(
        "fp32",
        "training compute: fp32, or bf16 (CPU/CUDA autocast of the forward; master weights and "
        "optimizer state stay fp32, the fused ops take bf16 activations). bf16 is faster "
        "where the CPU's bf16 GEMM is (AMX, or full-rate AVX512_BF16): see README Performance",
        choices=("fp32", "bf16"),
    )
    compile: bool = setting(
        False, "torch.compile the model for training (the fused ops trace as custom ops)", _bool
    )
    max_length: int = setting(64, "max tokens per input", _int)
    eval_batch_size: int = setting(64, "evaluation batch size", _int, resumable=True)
    task_prefix: bool = setting(True, "prefix inputs with the task name (true/false)", _bool)
    method_args: dict = setting(
        {}, "JSON object of extra method config fields, e.g. '{\"adapter_dim\": 32}'", _json_dict
    )
    transfer_from: str | None = setting(
        None, "a finished run directory to transfer from (few-shot)", _optional(str)
    )
    k_shot: int | None = setting(
        None, "training examples per new task in transfer", _optional(_int)
    )
    transfer_init: str = setting(
        "nearest",
        "new prototype: copy of the nearest source prototype, or the mean of the new z's",
        choices=("nearest", "mean"),
    )
    transfer_tune: str | None = setting(
        None,
        "what transfer tunes: 'prototype' (the new prototype and head) or 'all'",
        _optional(str),
        choices=("prototype", "all"),
    )
    log_every: int = setting(10, "log the training loss every N steps", _int, resumable=True)
    quiet: bool = setting(False, "no progress bar or tables", _bool, resumable=True)

    def __getitem__(self, key: str) -> Any:  # cfg["lr"] reads like the JSON it is saved as
        return getattr(self, key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self, world_size: int) -> dict:
        """Settings a checkpoint must share with the run resuming it."""
        keys = [f.name for f in dataclasses.fields(self) if not f.metadata["resumable"]]
        return {**{k: getattr(self, k) for k in keys}, "world_size": world_size}

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps: --max-steps, or --epochs over n_examples, at least --min-steps."""
        if self.max_steps is not None:
            return self.max_steps
        steps = math.ceil(self.epochs * n_examples / self.batch_size)
        return max(steps, self.min_steps or 1)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# Per-method defaults for the fields left at None, each chosen on the validation split
# (never test) by the sweep in results/method_defaults_sweep.csv (docs/TRAINING.md).
COMMON_DEFAULTS: dict[str, Any] = {
    "epochs": 10.0,
    "min_steps": 150,
    "lr": 1e-3,
    "hypernet_lr_scale": 1.0,
    "head_lr_scale": 10.0,  # heads at the linear probe's learning rate
    "probe_ratio": 0.0,  # LP-FT off: it won on the 8-task suite, lost on the default job
    "task_loss_reduction": "mean",
    "task_batches": "mixed",
    "transfer_tune": "prototype",
}
_HYPERNET = {"hypernet_lr_scale": 0.1}  # the generated weights move ~50x lr per step
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "pha": _HYPERNET,
    "hyperformer": _HYPERNET,
    "hyperdecoder": _HYPERNET,
    "hyperpelt": _HYPERNET,
    "full": {"lr": 1e-4},  # moves the whole pretrained backbone: 1e-3 would wreck it
    "linear_probe": {"lr": 1e-2, "head_lr_scale": 1.0},
}


# Method config fields pha.train sets unless --method-args names them.
# HyperFormer++: the paper's N(0, 1e-2) init of the generated post-adapter LayerNorm moves
# a post-LN BERT far from the backbone at step 0 (cosine 0.34); zero starts at identity.
# PHA: the contrastive losses train the retriever alone. Letting them move the lower
# adapters and the prototypes (the release) scored 61.1 validation macro-F1 against 62.8
# at n=100 on the 8-task suite, 3 seeds (docs/TRAINING.md); retrieval still learns.
METHOD_ARGS: dict[str, dict[str, Any]] = {
    "hyperformer": {"norm_init": "zero"},
    "pha": {"contrastive_trains": "retriever"},
}


def method_default(method: str, key: str) -> Any:
    return METHOD_DEFAULTS.get(method, {}).get(key, COMMON_DEFAULTS[key])


# ---- command line and config files -----------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pha.train",
        description="Multi-task training of a pha method on a frozen backbone.",
        argument_default=argparse.SUPPRESS,  # only flags actually given override the config
    )
    p.add_argument(
        "--config", help="YAML or JSON file of settings (keys as the flags, with _ or -)"
    )
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        cli = dict(f.metadata["cli"])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = (
            f"{f.metadata['help']} (default: {default if default is not None else 'per method'})"
        )
        if f.metadata["parse"] is _bool and default is False:  # a switch: --quiet
            p.add_argument(flag, action="store_const", const=True, help=help_text)
            continue
        # a list-valued flag (--tasks a b,c) is parsed whole, after argparse collects it
        convert = str if cli.get("nargs") == "+" else _cli_type(f.name, f.metadata["parse"])
        p.add_argument(flag, type=convert, help=help_text, **cli)
    return p


def _cli_type(name: str, parse: Callable) -> Callable:
    def convert(text: str):
        try:
            return parse(text)
        except (ValueError, TypeError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name  # argparse names the type in its messages
    return convert


def read_config_file(path: str | os.PathLike) -> dict:
    """Settings from a YAML or JSON file, each parsed as its flag would be."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no file {path}")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
        raise ConfigError(
            f"--config: {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {e}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config: {path} must hold a mapping of settings, got {type(data).__name__}"
        )
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"--config: unknown settings {unknown} in {path}; valid: {sorted(FIELDS)}"
        )
    return {k: _parse_value(k, v, f"--config {path}: {k}") for k, v in data.items()}


def _parse_value(key: str, value: Any, where: str) -> Any:
    try:
        return FIELDS[key].metadata["parse"](value)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def resolve_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults <- method defaults <- --config file <- flags, validated."""
    args = vars(build_parser().parse_args(argv))
    if "tasks" in args:
        args["tasks"] = _tasks(args["tasks"])
    given = {}
    if "config" in args:
        given = read_config_file(args.pop("config"))
    given.update(args)
    cfg = TrainConfig(**given)
    if cfg.transfer_from is not None:
        _inherit_from_source(cfg, given)
    for key in COMMON_DEFAULTS:
        if getattr(cfg, key) is None:
            setattr(cfg, key, method_default(cfg.method, key))
    if cfg.transfer_from is None:  # a transfer run rebuilds its source's method config
        cfg.method_args = {**METHOD_ARGS.get(cfg.method, {}), **cfg.method_args}
    validate(cfg)
    return cfg


# What a transfer run takes from its source run unless set: the method and backbone the
# source's adapter was trained on, and how its inputs were built.
INHERITED = ("method", "model", "max_length", "task_prefix")


def _inherit_from_source(cfg: TrainConfig, given: dict) -> None:
    path = Path(cfg.transfer_from) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--transfer-from: no {path} (not a finished pha.train run)")
    try:
        source = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"--transfer-from: {path} is not valid JSON: {e}") from None
    for key in INHERITED:
        if key not in given and key in source:
            setattr(cfg, key, _parse_value(key, source[key], f"--transfer-from {path}: {key}"))
    if cfg.model != source.get("model"):
        raise ConfigError(
            f"--model: {cfg.model!r}, but the source run {cfg.transfer_from} was trained "
            f"on {source.get('model')!r}; leave --model out to use it"
        )


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def validate(cfg: TrainConfig) -> None:
    """Every value in range; the message names the flag and what it expects."""
    if cfg.method not in METHODS:
        raise ConfigError(f"--method: unknown method {cfg.method!r}; valid: {sorted(METHODS)}")
    if not cfg.tasks:
        raise ConfigError("--tasks: expected at least one task")
    for key in (
        "batch_size",
        "eval_batch_size",
        "max_length",
        "keep_last",
        "log_every",
        "grad_accum",
    ):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{_flag(key)}: expected an integer >= 1, got {getattr(cfg, key)!r}")
    for key in ("max_steps", "eval_every", "min_steps"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise ConfigError(f"{_flag(key)}: expected an integer >= 1, got {getattr(cfg, key)!r}")
    for key in ("save_every", "patience"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{_flag(key)}: expected an integer >= 0, got {getattr(cfg, key)!r}")
    for key in ("lr", "epochs", "hypernet_lr_scale", "head_lr_scale"):
        value = getattr(cfg, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{_flag(key)}: expected a finite number > 0, got {value}")
    for key in ("weight_decay", "grad_clip"):
        value = getattr(cfg, key)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{_flag(key)}: expected a finite number >= 0, got {value}")
    if not 0 <= cfg.probe_ratio < 1:
        raise ConfigError(f"--probe-ratio: expected a fraction in [0, 1), got {cfg.probe_ratio}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ConfigError(f"--warmup-ratio: expected a fraction in [0, 1), got {cfg.warmup_ratio}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(
            f"--label-smoothing: expected a value in [0, 1), got {cfg.label_smoothing}"
        )
    ts = cfg.task_sampling
    if ts != "proportional" and not (math.isfinite(ts) and ts >= 1e-3):
        raise ConfigError(
            f"--task-sampling: expected 'proportional' or a temperature >= 1e-3, got {ts!r}"
        )
    if cfg.batch_size % cfg.grad_accum:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} must be divisible by --grad-accum {cfg.grad_accum}"
        )
    if (cfg.transfer_from is None) != (cfg.k_shot is None):
        raise ConfigError("--transfer-from and --k-shot go together (few-shot transfer)")
    if cfg.k_shot is not None and cfg.k_shot < 1:
        raise ConfigError(f"--k-shot: expected >= 1, got {cfg.k_shot}")
