"""Multi-task training: `python -m pha.train [flags]`.

Without arguments: PHA on the offline MiniLM encoder over four real tasks (tweet
sentiment, movie-review polarity, review-vs-plot subjectivity, BBC topic), 300 training
examples each; prints the per-task test metrics and writes to OUTPUT_DIR:
  metrics.json  {"tasks": {task: {metric: value}}, "average": float, "step": int,
                 "validation": {...}}: the test metrics of the checkpoint chosen on validation
  adapter/      that checkpoint's adapter (save_pretrained)
  config.json   the resolved configuration (written with metrics.json, last: a run that
                fails leaves a finished run's config.json, adapter/ and metrics.json as they were)
  log.jsonl     one JSON object per logged training step / validation / test
  checkpoint-<step>.pt   the newest --keep-last checkpoints (for --resume)

The protocol (docs/TRAINING.md): the step count follows the data (--epochs), warm-up is a
ratio of it; the validation split is scored every --eval-every steps and the best
checkpoint by --select-metric is kept; the test split is read once, at the end, for that
checkpoint. Settings: pha.train_config (defaults, per-method defaults, --config file, flags).
Distributed: `torchrun --nproc_per_node N -m pha.train ...` (gloo on CPU, nccl on GPU);
--batch-size is the global batch, split evenly over the ranks; only rank 0 writes.
Few-shot transfer: `--transfer-from RUN --k-shot K --tasks NEW...` adds the new tasks to
the run's model (add_task: prototype from the retriever) and tunes on K examples each.
"""

from __future__ import annotations

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
from torch.utils.data import DataLoader

from . import PHAModel, get_model
from .allocator import keep_freed_memory
from .backbones import load_backbone
from .checkpoint import (
    CheckpointError,
    check_output_path,
    list_checkpoints,
    load_checkpoint,
    lock_output_dir,
    save_checkpoint,
)
from .compile import compile_model
from .data import Collator, MixedTaskSampler, head, load_tasks, metrics
from .evaluate import load_adapter
from .files import OutputError, atomic_write_files
from .methods import METHODS
from .pypi_cache import CacheError
from .scoring import MAX_NEW_TOKENS, evaluate, format_table
from .train_config import ConfigError, TrainConfig, resolve_config

__all__ = ["ConfigError", "TrainConfig", "TrainingError", "main", "resolve_config", "run"]


class TrainingError(RuntimeError):
    """The run cannot go on (the loss or the weights became NaN or Inf)."""


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


def _from_rank_zero(value, world: int):
    """Rank 0's value on every rank (decisions such as early stopping)."""
    if world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---- checks before anything is loaded or written ----------------------------------------


def _check_output_dir(cfg: TrainConfig) -> None:
    """--output-dir can be written, and is not the run a transfer reads from."""
    check_output_path(cfg.output_dir, "--output-dir")
    if cfg.transfer_from is not None and os.path.realpath(cfg.output_dir) == os.path.realpath(
        cfg.transfer_from
    ):
        raise ConfigError(
            f"--output-dir: {cfg.output_dir} is the --transfer-from run; choose another "
            "directory (the transfer would overwrite its source)"
        )


def _check_backend(name: str | None, device: torch.device) -> None:
    """--backend is known, available here and runs on `device` (before the model loads)."""
    if name is None:
        return
    from .ops import _backend

    try:
        _backend.resolve(name, device, "supcon")
    except (ValueError, RuntimeError, NotImplementedError) as e:
        raise ConfigError(f"--backend: {e}") from None


def _check_max_length(cfg: TrainConfig, base, kind: str) -> None:
    """--max-length fits the model's position embeddings (T5's relative positions have
    no limit); decoder-only evaluation appends up to MAX_NEW_TOKENS generated tokens."""
    positions = getattr(base.config, "max_position_embeddings", None) or getattr(
        base.config, "n_positions", None
    )
    needed = cfg.max_length + (MAX_NEW_TOKENS if kind == "decoder" else 0)
    if positions is not None and needed > positions:
        extra = f" + {MAX_NEW_TOKENS} generated tokens" if kind == "decoder" else ""
        raise ConfigError(
            f"--max-length: {cfg.max_length}{extra} exceeds the {positions} positions of "
            f"the model {cfg.model}"
        )


# ---- building blocks ------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def linear_schedule(warmup: int, total: int, start: int = 0):
    """Linear warmup to the peak learning rate, then linear decay to 0 (the release's);
    0 before step `start` (a group that waits for the heads' probe phase)."""

    def factor(step: int) -> float:
        step -= start
        if step < 0:
            return 0.0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - start - step) / max(1, total - start - warmup))

    return factor


def _build_model(cfg: TrainConfig, data, base, tokenizer, kind: str, log) -> PHAModel:
    """A fresh model for the tasks, or (transfer) the source run's model plus new tasks."""
    if cfg.transfer_from is None:
        config_cls = METHODS[cfg.method]
        try:
            mcfg = config_cls(
                tasks=data.names,
                num_labels=[t.num_labels for t in data.tasks] if kind == "encoder" else None,
                label_smoothing=cfg.label_smoothing,
                task_loss_reduction=cfg.task_loss_reduction,
                backend=cfg.backend,
                **cfg.method_args,
            )
        except TypeError as e:  # an unknown field
            fields = sorted(config_cls.__dataclass_fields__)
            raise ConfigError(
                f"--method-args: {e}; fields of {config_cls.__name__}: {fields}"
            ) from e
        except ValueError as e:  # a bad value (the message names the field)
            raise ConfigError(f"{config_cls.__name__}: {e}") from e
        return get_model(base, mcfg)
    adapter = Path(cfg.transfer_from) / "adapter"
    if not adapter.is_dir():
        raise ConfigError(
            f"--transfer-from: {cfg.transfer_from} has no adapter/ (not a finished pha.train run)"
        )
    model = load_adapter(base, adapter, is_trainable=True)
    model.method_config.label_smoothing = cfg.label_smoothing
    model.method_config.task_loss_reduction = cfg.task_loss_reduction
    collator = Collator(tokenizer, kind, data.tasks, cfg.max_length, cfg.task_prefix)
    for task_id, (task, examples) in enumerate(zip(data.tasks, data.train)):
        if task.name in model.tasks:
            raise ConfigError(
                f"--tasks: {task.name!r} is a source task of {cfg.transfer_from}; transfer needs new tasks"
            )
        batch = collator([(task_id, ex) for ex in examples], generate=True)
        new_id = model.add_task(
            task.name,
            examples={k: batch[k].to(model.device) for k in ("input_ids", "attention_mask")},
            init=cfg.transfer_init,
            num_labels=task.num_labels if kind == "encoder" else None,
        )
        log({"event": "add_task", "task": task.name, "id": new_id, "k_shot": len(examples)})
    return model


def _param_groups(model: PHAModel, cfg: TrainConfig, n_source: int) -> list[dict]:
    """AdamW parameter groups. The hypernetwork and the heads may take their own learning
    rate factor (a hypernetwork head reads a LayerNorm output, so one Adam step moves the
    weights it generates far more than the same step moves a directly trained adapter).
    In few-shot transfer with --transfer-tune prototype only the new tasks' prototype rows
    and heads are tuned: the other parameters keep requires_grad (the saved adapter holds
    every trainable weight) but are left out of the optimizer, so weight decay cannot
    touch them either."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.transfer_from is not None and cfg.transfer_tune == "prototype":
        if not hasattr(model, "prototypes"):
            raise ConfigError(
                f"--transfer-tune prototype: method {model.method_config.method!r} has no prototypes; "
                "use --transfer-tune all"
            )
        weight = model.prototypes.weight
        keep = torch.zeros_like(weight)
        keep[n_source:] = 1.0
        weight.register_hook(lambda g: g * keep)  # the source prototypes get no gradient
        new_heads = {f"heads.{i}." for i in range(n_source, len(model.tasks))}
        named = [(n, p) for n, p in named if p is weight or any(n.startswith(h) for h in new_heads)]
    frozen_rows = (
        model.prototypes.weight
        if cfg.transfer_from is not None and cfg.transfer_tune == "prototype"
        else None
    )
    groups: dict[tuple[float, float, bool], list[torch.nn.Parameter]] = {}
    for name, p in named:
        head = name.startswith("heads.")
        scale = cfg.head_lr_scale if head else 1.0
        if name.startswith("hypernet."):
            scale = cfg.hypernet_lr_scale
        # AdamW decays every row of a parameter, with or without gradient: the prototype
        # matrix whose source rows must stay fixed takes no decay
        decay = 0.0 if p is frozen_rows else cfg.weight_decay
        groups.setdefault((scale, decay, head), []).append(p)
    return [{"params": ps, "lr": cfg.lr * s, "weight_decay": wd, "heads": head}
            for (s, wd, head), ps in groups.items()]  # fmt: skip


def _selection_score(per_task: dict, metric: str) -> float:
    """The validation score a checkpoint is chosen by: the task average of `metric`, a
    task without it counting with the average of its own metrics."""
    return float(
        np.mean(
            [m[metric] if metric in m else np.mean(list(m.values())) for m in per_task.values()]
        )
    )


class _Batches:
    """The rank's micro-batches of each step, in the sampler's resumable order: a batch
    sampler for DataLoader (items are (task_id, example_index) pairs)."""

    def __init__(
        self, sampler: MixedTaskSampler, start: int, stop: int, rank: int, world: int, accum: int
    ):
        self.sampler, self.start, self.stop = sampler, start, stop
        self.rank, self.world, self.accum = rank, world, accum

    def __iter__(self):
        size = self.sampler.batch_size // (self.world * self.accum)
        for step in range(self.start, self.stop):
            pairs = self.sampler.batch(step)
            for micro in range(self.accum):
                offset = (micro * self.world + self.rank) * size
                yield pairs[offset : offset + size]

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum


class _TrainExamples(torch.utils.data.Dataset):
    def __init__(self, train: list[list[dict]]):
        self.train = train

    def __getitem__(self, pair: tuple[int, int]) -> tuple[int, dict]:
        task, index = pair
        return task, self.train[task][index]

    def __len__(self) -> int:
        return sum(len(x) for x in self.train)


# ---- the run --------------------------------------------------------------------------


def run(cfg: TrainConfig) -> dict:
    """Train and evaluate as `cfg` says; returns the final metrics (as metrics.json)."""
    rank, world, device = _init_distributed()
    try:
        return _Run(cfg, rank, world, device).execute()
    finally:
        if world > 1:
            dist.destroy_process_group()


class _Run:
    """One training run: set-up, the step loop with validation and checkpoints, the test."""

    def __init__(self, cfg: TrainConfig, rank: int, world: int, device: torch.device):
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.main_rank = rank == 0
        self.verbose = self.main_rank and not cfg.quiet
        self.out_dir = Path(cfg.output_dir)
        self.started = time.perf_counter()
        self.log_file = None
        self.pending: list[str] = []
        if cfg.batch_size % (world * cfg.grad_accum):
            raise ConfigError(
                f"--batch-size {cfg.batch_size} must be divisible by the {world} processes "
                f"times --grad-accum {cfg.grad_accum}"
            )

    def log(self, record: dict) -> None:
        """Append to log.jsonl (rank 0); records made before it is open wait in pending."""
        if not self.main_rank:
            return
        self.pending.append(json.dumps({"time": time.time(), **record}) + "\n")
        if self.log_file is None:
            return
        try:
            self.log_file.writelines(self.pending)
            self.log_file.flush()
        except OSError as e:
            raise OutputError(f"cannot write {self.out_dir / 'log.jsonl'}: {e.strerror}") from e
        self.pending.clear()

    def execute(self) -> dict | None:
        """Everything that can be checked is checked before the first write to
        --output-dir (a failed run leaves a finished run there as it was): the settings,
        the output path, the backend, the tasks, the model, a checkpoint to resume."""
        cfg = self.cfg
        _check_output_dir(cfg)  # on every rank: a rank that raised alone would hang the others
        _check_backend(cfg.backend, self.device)
        seed_everything(cfg.seed)
        n_train = cfg.k_shot if cfg.transfer_from else cfg.n_train
        with _rank_zero_first(self.rank, self.world):
            data = load_tasks(cfg.tasks, n_train, cfg.n_eval, cfg.seed)
            if cfg.n_val is not None:  # a smaller validation set: cheaper model selection
                data.validation = [head(x, cfg.n_val, "n_val") for x in data.validation]
            base, tokenizer, kind = load_backbone(cfg.model)
        _check_max_length(cfg, base, kind)
        with contextlib.ExitStack() as self.outputs:
            return self._train_and_test(data, base.to(self.device), tokenizer, kind)

    def _open_outputs(self) -> None:
        """Rank 0 takes --output-dir (a lock held to the end of the run; a second run
        into it is refused) and opens log.jsonl; every rank stops if it could not."""
        error = None
        if self.main_rank:
            try:
                self.outputs.enter_context(lock_output_dir(self.out_dir))
                log_path = self.out_dir / "log.jsonl"
                try:
                    self.log_file = self.outputs.enter_context(open(log_path, "a"))
                except OSError as e:
                    raise OutputError(f"cannot write {log_path}: {e.strerror}") from e
            except OutputError as e:
                error = str(e)
        error = _from_rank_zero(error, self.world)
        if error is not None:
            raise OutputError(error)

    def _train_and_test(self, data, base, tokenizer, kind) -> dict | None:
        cfg = self.cfg
        model = _build_model(cfg, data, base, tokenizer, kind, self.log)
        n_source = len(model.tasks) - len(data.tasks)  # transfer: new ids follow the source's
        self.collator = Collator(
            tokenizer, kind, data.tasks, cfg.max_length, cfg.task_prefix, n_source
        )
        model.to(self.device)
        self.model, self.data = model, data
        total = cfg.total_steps(sum(len(x) for x in data.train))
        self.total = total
        if self.verbose:
            print(f"pha.train: {cfg.method} on {cfg.model} ({kind}), tasks "
                  + ", ".join(f"{t.name} ({len(x)} train)" for t, x in zip(data.tasks, data.train))
                  + f"; {total} steps of {cfg.batch_size}")  # fmt: skip
            model.print_trainable_parameters()

        groups = _param_groups(model, cfg, n_source)
        self.params = [p for g in groups for p in g["params"]]
        optimizer = build_optimizer(groups, cfg.lr, cfg.weight_decay)
        # LP-FT: the heads train alone for the first --probe-ratio of the steps (a linear
        # probe), then everything; each phase warms up over --warmup-ratio of its steps.
        probe = round(cfg.probe_ratio * total)
        factors = [
            linear_schedule(round(cfg.warmup_ratio * total), total)
            if g["heads"] or not probe
            else linear_schedule(round(cfg.warmup_ratio * (total - probe)), total, probe)
            for g in groups
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        temperature = None if cfg.task_sampling == "proportional" else float(cfg.task_sampling)
        sampler = MixedTaskSampler(
            [len(x) for x in data.train], cfg.batch_size, cfg.seed, temperature,
            single_task=cfg.task_batches == "single",
        )  # fmt: skip
        # about once per epoch, at most 10 validations in a run
        steps_per_epoch = max(1, round(sum(len(x) for x in data.train) / cfg.batch_size))
        self.eval_every = cfg.eval_every or max(steps_per_epoch, -(-total // 10))
        self.best: dict | None = None  # {"step", "score", "validation", "state"}
        self.bad_evals = 0
        fingerprint = cfg.fingerprint(self.world)
        start = self._maybe_resume(optimizer, scheduler, sampler, fingerprint)
        self._open_outputs()
        if start and self.verbose:
            print(f"pha.train: resumed at step {start}")

        train_model = model
        if self.world > 1:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        if cfg.compile:
            train_model = compile_model(train_model, self.device)
        bf16 = cfg.precision == "bf16"  # the forward under autocast; weights stay fp32
        loader = DataLoader(
            _TrainExamples(data.train),
            batch_sampler=_Batches(sampler, start, total, self.rank, self.world, cfg.grad_accum),
            collate_fn=self.collator,
        )
        progress = _progress(self.verbose, start, total)
        model.train()
        seen, t0, step = 0, time.perf_counter(), start
        micro = iter(loader)
        while step < total:
            model.zero_grad(set_to_none=True)
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            for _ in range(cfg.grad_accum):
                batch = next(micro)
                with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
                    out = train_model(**{k: v.to(self.device) for k, v in batch.items()})
                finite &= torch.isfinite(out.loss.detach())
                (out.loss / cfg.grad_accum).backward()
            self._stop_unless_finite(finite, step + 1, "the loss")
            weights_finite = update_weights(optimizer, self.params, cfg.grad_clip)
            scheduler.step()
            step += 1
            # a finite loss with an infinite gradient (e.g. a huge --lr) breaks the weights
            self._stop_unless_finite(weights_finite, step, "the weights")
            sampler.step = step
            seen += cfg.batch_size
            if step % cfg.log_every == 0 or step == total:
                rate = seen / (time.perf_counter() - t0)
                record = {"event": "train", "step": step, "loss": out.loss.item(), "lr": scheduler.get_last_lr()[0],
                          "examples_per_s": rate, **{f"aux_{k}": v.item() for k, v in out.aux_losses.items()}}  # fmt: skip
                self.log(record)
                progress.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{rate:.1f}")
            progress.update(1)
            stop = False
            if step % self.eval_every == 0 or step == total:
                stop = self._validate(step, progress)
            if cfg.save_every and step % cfg.save_every == 0 and step != total and not stop:
                if self.main_rank:
                    state = {"fingerprint": fingerprint, "model": model.trainable_state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "sampler": sampler.state_dict(), "best": self.best,
                             "bad_evals": self.bad_evals}  # fmt: skip
                    save_checkpoint(self.out_dir, step, state, cfg.keep_last)
                    self.log({"event": "checkpoint", "step": step})
                _barrier(self.world)
            if stop:
                if self.verbose:
                    progress.write(
                        f"pha.train: early stop at step {step} (patience {cfg.patience})"
                    )
                self.log({"event": "early_stop", "step": step})
                break
        progress.close()
        return self._test(step)

    def _stop_unless_finite(self, finite: torch.Tensor, step: int, what: str) -> None:
        """A TrainingError on every rank if `finite` is False on any: a diverged run stops
        before it writes a checkpoint, an adapter or metrics."""
        if self.world > 1:
            flag = finite.to(torch.float32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        if not bool(finite):
            raise TrainingError(
                f"{what} became NaN or Inf at step {step}: training diverged (lower --lr "
                f"{self.cfg.lr}, or keep --grad-clip on); nothing of this step was saved"
            )

    def _validate(self, step: int, progress) -> bool:
        """Score the validation split, keep the best state; returns whether to stop early."""
        cfg, stop = self.cfg, False
        if self.main_rank:
            per_task = evaluate(
                self.model, self.collator, self.data, "validation", cfg.eval_batch_size
            )
            score = _selection_score(per_task, cfg.select_metric)
            self.log({"event": "validation", "step": step, "tasks": per_task,
                      "average": metrics.average(per_task), "score": score})  # fmt: skip
            if self.best is None or score > self.best["score"] or cfg.select == "last":
                state = {
                    n: t.detach().clone() for n, t in self.model.trainable_state_dict().items()
                }
                self.best = {"step": step, "score": score, "validation": per_task, "state": state}
                self.bad_evals = 0
            else:
                self.bad_evals += 1
            stop = cfg.patience > 0 and self.bad_evals >= cfg.patience
            if self.verbose:
                progress.write(f"validation at step {step}: {cfg.select_metric} {100 * score:.2f}"
                               f" (best {100 * self.best['score']:.2f} at step {self.best['step']})")  # fmt: skip
        return _from_rank_zero(stop, self.world)

    def _test(self, step: int) -> dict | None:
        """Load the selected checkpoint and read the test split, once."""
        cfg, result = self.cfg, None
        if self.main_rank:
            if self.best is not None:
                self.model.load_state_dict(self.best["state"], strict=False)
            per_task = evaluate(self.model, self.collator, self.data, "test", cfg.eval_batch_size)
            result = {
                "tasks": per_task,
                "average": metrics.average(per_task),
                "step": self.best["step"],
                "steps_trained": step,
                "validation": {
                    "tasks": self.best["validation"],
                    "score": self.best["score"],
                    "metric": cfg.select_metric,
                },  # fmt: skip
            }
            self.log({"event": "test", **result, "elapsed_s": time.perf_counter() - self.started})
            self.model.save_pretrained(self.out_dir / "adapter")
            # written last, together: config.json describes the run that wrote adapter/
            atomic_write_files(self.out_dir, {
                "config.json": json.dumps(cfg.to_dict(), indent=2).encode(),
                "metrics.json": json.dumps(result, indent=2).encode(),
            })  # fmt: skip
            if self.verbose:
                chosen = (
                    "last" if cfg.select == "last" else f"best on validation {cfg.select_metric}"
                )
                print(f"\ntest metrics (%) at step {result['step']} of {step} ({chosen}):")
                print(format_table(per_task, result["average"]))
                print(f"wrote {self.out_dir}/metrics.json, adapter/, config.json, log.jsonl "
                      f"({time.perf_counter() - self.started:.0f} s in all)")  # fmt: skip
        _barrier(self.world)
        return result

    def _maybe_resume(self, optimizer, scheduler, sampler, fingerprint) -> int:
        cfg = self.cfg
        if cfg.resume is None:
            return 0
        if cfg.resume == "latest":
            found = list_checkpoints(self.out_dir)
            if not found:
                raise FileNotFoundError(f"--resume: no checkpoint-*.pt in {self.out_dir}")
            path = found[-1]
        else:
            path = Path(cfg.resume)
        state = load_checkpoint(path, fingerprint)
        saved, expected = set(state["model"]), set(self.model.trainable_state_dict())
        if saved != expected:
            raise ValueError(
                f"resume: checkpoint {path} holds other weights than this model: missing "
                f"{sorted(expected - saved)[:5]}, unexpected {sorted(saved - expected)[:5]}"
            )
        self.model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        self.best, self.bad_evals = state["best"], state["bad_evals"]
        return int(state["step"])


def build_optimizer(groups: list[dict], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """pha.train's AdamW over the parameter groups: the fused implementation, one pass
    over each parameter's weight, gradient and moments (torch's default, foreach, makes
    several: 25 against 8 ms a step for PHA's 3.46 M trainable parameters on one CPU
    thread). Its updates match foreach's to an ulp, not bit for bit."""
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)


def update_weights(
    optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], grad_clip: float
) -> torch.Tensor:
    """One optimizer step of pha.train: clip the gradients' total norm to grad_clip (0:
    no clipping), step, and return one boolean tensor: every weight is still finite (no
    sync until it is read)."""
    if grad_clip > 0:  # clip_grad_norm_, without its pass over the gradients when it
        # would scale them by exactly 1 (it always scales, to spare an accelerator the sync)
        total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not bool(grad_clip / (total + 1e-6) >= 1):
            torch.nn.utils.clip_grads_with_norm_(params, grad_clip, total)
    optimizer.step()
    return _all_finite(params)


def _all_finite(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """One boolean tensor: every parameter finite (no sync until it is read). A tensor
    is finite iff its min and max are (both propagate NaN): one read of each weight,
    where isfinite(p).all() first writes a mask as large as p (19 against 1.4 ms a step
    over PHA's 3.46 M weights)."""
    extremes = [torch.stack(torch.aminmax(p.detach())) for p in params if p.numel()]
    return torch.isfinite(torch.cat(extremes)).all()


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
    keep_freed_memory()  # the process is ours: fewer page faults per step (pha/allocator.py)
    try:
        return run(resolve_config(argv))
    except (ValueError, OSError, CheckpointError, OutputError, TrainingError, CacheError) as e:
        if os.environ.get("PHA_DEBUG") == "1":
            raise
        print(f"python -m pha.train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
