"""The method contract and the method registry (like PEFT's BaseTuner and its mappings).

A method is a config dataclass (subclass of MethodConfig, `method` = its registry name)
and a model class: a subclass of pha.PHAModel (the wrapper users hold, pha/peft_model.py)
that implements the hooks of `Method` and is registered with @register.

Per-instance conditioning reaches the adapters inside the backbone through a `Context`,
set for the duration of one forward or generate call. Generated weights are stored once
per call as [sites, G, ...] with an index [B] into G; when generation expands the batch
(beam search, num_return_sequences: HF repeats each row consecutively), the adapters
repeat the index (or per-instance weights) to the batch they see (`expand_rows`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..checkpoint import CHECKSUMS_NAME, write_checksummed
from ..files import atomic_write

CONFIG_NAME = "pha_config.json"
METHODS: dict[str, type[MethodConfig]] = {}
MODELS: dict[type[MethodConfig], type[Method]] = {}


@dataclass
class MethodConfig:
    """Fields every method shares.

    tasks: ordered task names; a task's id is its position (stable across runs).
    num_labels: per-task class counts for encoder (BERT-family) classification heads;
        None for text-to-text backbones (T5, decoder-only).
    label_smoothing: on the task loss (0.1 in the PHA release).
    task_loss_reduction: "mean" (per example, or per target token for text-to-text) or
        "sum" over the batch's examples / target tokens (the PHA release's low-data
        configs): with "sum" the weighted auxiliary losses count about 1/B as much.
    backend: pha.ops backend for the adapter op and the contrastive losses ("reference",
        "cpp", "triton", "cuda"), None for the fastest available.
    split_layer: encoder-only / decoder-only backbones: number of layers in the lower
        half (None: half of them). T5 always splits at encoder | decoder.
    base_model_name_or_path: what pha.AutoPHAModel loads the backbone from (an offline
        alias of pha.backbones.load_backbone, a local directory or a hub name); None: taken from the backbone
        when the model is built (None again for a backbone built in memory).
    """

    method: ClassVar[str] = ""
    tasks: list[str] = field(default_factory=list)
    num_labels: list[int] | None = None
    label_smoothing: float = 0.0
    task_loss_reduction: str = "mean"
    backend: str | None = None
    split_layer: int | None = None
    base_model_name_or_path: str | None = None

    def __post_init__(self):
        if not isinstance(self.tasks, list | tuple):  # a string would become its letters
            raise TypeError(f"tasks must be a list of task names, got {self.tasks!r}")
        if not self.tasks or not all(isinstance(t, str) and t for t in self.tasks):
            raise ValueError(f"tasks must be a non-empty list of task names, got {self.tasks!r}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"task names must be unique, got {self.tasks}")
        self.tasks = list(self.tasks)
        if self.num_labels is not None:
            counts = self.num_labels
            if (
                not isinstance(counts, list | tuple)
                or len(counts) != len(self.tasks)
                or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts
                )
            ):
                raise ValueError(
                    f"num_labels must give an integer class count >= 1 for each of the "
                    f"{len(self.tasks)} tasks, got {counts!r}"
                )
            self.num_labels = list(counts)
        if isinstance(self.label_smoothing, bool) or not isinstance(
            self.label_smoothing, int | float
        ):
            raise ValueError(
                f"label_smoothing must be a number in [0, 1), got {self.label_smoothing!r}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.task_loss_reduction not in ("mean", "sum"):
            raise ValueError(
                f"task_loss_reduction must be 'mean' or 'sum', got {self.task_loss_reduction!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **dataclasses.asdict(self)}

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write pha_config.json (atomically) into the directory `path`; in a saved
        adapter (a directory with checksums.sha256) its checksum is updated with it."""
        os.makedirs(path, exist_ok=True)
        data = json.dumps(self.to_dict(), indent=2).encode()
        if os.path.isfile(os.path.join(path, CHECKSUMS_NAME)):
            write_checksummed(path, {CONFIG_NAME: data})
        else:
            atomic_write(os.path.join(path, CONFIG_NAME), data)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> MethodConfig:
        """The config saved in the directory `path`, as its method's config class (on a
        subclass: that method's only)."""
        file = os.path.join(path, CONFIG_NAME)
        with open(file) as f:  # FileNotFoundError names the file
            saved = json.load(f)
        method = saved.pop("method", None)
        if method not in METHODS:
            raise ValueError(f"{file} names method {method!r}; known: {sorted(METHODS)}")
        config_cls = METHODS[method]
        if not issubclass(config_cls, cls):
            raise ValueError(f"{file} holds a {config_cls.__name__}, not a {cls.__name__}")
        known = {f.name for f in dataclasses.fields(config_cls)}
        if set(saved) - known:
            raise ValueError(
                f"{file} has fields {sorted(set(saved) - known)} that {config_cls.__name__} "
                "does not know (saved by another version of pha?)"
            )
        return config_cls(**saved)


def register(model_cls: type[Method]) -> type[Method]:
    """Class decorator: makes model_cls.config_class available to get_model / pha.METHODS."""
    config_cls = model_cls.config_class
    METHODS[config_cls.method] = config_cls
    MODELS[config_cls] = model_cls
    return model_cls


def expand_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Repeat each row of t consecutively to n rows (HF's beam / return-sequence expansion)."""
    if t.shape[0] == n:
        return t
    if t.shape[0] == 0 or n % t.shape[0]:
        raise RuntimeError(
            f"the backbone ran a batch of {n} rows, not a multiple of the {t.shape[0]} "
            "instances this call was conditioned on"
        )
    return t.repeat_interleave(n // t.shape[0], dim=0)


@dataclass
class Context:
    """Per-call conditioning read by the hooks inside the backbone."""

    task_ids: torch.Tensor | None  # [B] or None (retrieved at the split, if the method can)
    pool_mask: torch.Tensor | None  # [B, T] tokens the retriever pools
    z: torch.Tensor | None = None  # retriever output [B, e]
    # generated tensors, [sites, G, ...] (or their per-site views: generated.per_site)
    weights: dict[str, Any] | None = None
    index: torch.Tensor | None = None  # [B] into G (None: one set per instance)
    stop_at_split: bool = False


class Method:
    """What a method defines; pha.PHAModel calls these hooks around the backbone's run.

    build() creates the method's modules and attaches its adapters to self.backbone (a
    pha.backbones.Backbone); the adapters read the current call's Context via self.ctx().
    """

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    needs_task_ids: ClassVar[bool] = False  # adapters conditioned on the task
    can_retrieve: ClassVar[bool] = False  # task ids found by nearest prototype when absent
    has_adapter: ClassVar[bool] = True  # False: the method trains the backbone itself (full)

    def build(self) -> None:
        """Create the method's modules and attach its adapters to self.backbone."""

    def trainable_backbone_parameters(self) -> list[nn.Parameter]:
        """Backbone parameters the method trains (default: none)."""
        return []

    def condition(self, ctx: Context) -> None:
        """Called before the backbone runs (task ids known, or None)."""

    def at_split(self, ctx: Context, hidden: torch.Tensor) -> None:
        """Called with the hidden states where the halves meet; must set ctx.z if the
        method has a retriever, and return right after when ctx.stop_at_split."""

    def aux_losses(self, ctx: Context) -> dict[str, torch.Tensor]:
        """Weighted auxiliary losses (added to the task loss), computed with labels."""
        return {}

    def add_task_conditioning(self, examples: dict[str, torch.Tensor], init: str) -> None:
        """Grow the method's per-task parameters by one task. Methods whose adapters do
        not depend on the task need nothing; the others override this or refuse."""
        if self.needs_task_ids:
            raise ValueError(f"{type(self).__name__} does not support add_task")
