"""pha.PHAModel, the wrapper users hold (like peft.PeftModel): a frozen HF backbone plus
one method's trainable parts. It owns what all methods share: freezing, per-task
classification heads (encoder backbones), the task-id checks, the per-call conditioning
context read by the adapters inside the backbone, forward / generate / retrieve /
add_task, saving and loading. Each method (pha/methods/<name>/model.py) subclasses it
and implements the hooks of the method contract (pha.methods.base.Method).

Like a PeftModel it is HF-shaped: outputs are `transformers` ModelOutputs, `config` is
the backbone's (the method's is `method_config`), the HF Trainer trains it as it is, and
`disable_adapter()` / `unload()` / `get_base_model()` give the plain backbone back.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn
from transformers.utils import ModelOutput

from .backbones import Backbone, alias_of, attach
from .checkpoint import ensure_directory, verify_checksums, write_checksummed
from .methods.base import CONFIG_NAME, MODELS, Context, Method, MethodConfig
from .model_inputs import check_examples, check_labels, check_tokens
from .modules import masked_mean

WEIGHTS_NAME = "adapter_model.safetensors"
_WRAPPED = "_pha_wrapped"  # set on a backbone while a PHAModel's hooks are attached to it


def get_model(base_model: nn.Module, config: MethodConfig) -> PHAModel:
    """Wrap a Hugging Face model with the method `config`'s type names (like
    peft.get_peft_model). The backbone is changed in place (hooks, frozen weights) until
    the returned model's unload()."""
    if type(config) not in MODELS:
        raise TypeError(
            f"config must be one of {[c.__name__ for c in MODELS]}, got {type(config).__name__}"
        )
    return MODELS[type(config)](base_model, config)


def _backbone_name(model: nn.Module) -> str | None:
    """What loads `model` again (pha.backbones.load_backbone): the offline alias it was extracted
    for, else the hub name or local path HF recorded; None for a model built in memory."""
    name = getattr(model, "name_or_path", "") or ""
    if not name:
        return None
    return alias_of(name) or name


def _checkpointing(model: nn.Module) -> bool:
    """Whether HF activation (gradient) checkpointing is on (named either way by version)."""
    for attr in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), attr):
            return bool(getattr(model, attr))
    return False


def _in_backward() -> bool:
    return torch._C._current_graph_task_id() != -1


class _StopAtSplit(Exception):
    """Raised by the split hook to end a forward once the retriever has run (retrieve)."""


@dataclass
class PHAOutput(ModelOutput):
    """What PHAModel.forward returns (a ModelOutput: out.loss, out["loss"], out[0]).

    loss: task loss + the weighted auxiliary losses (None without labels).
    logits: encoder [B, max(num_labels)] (columns a task lacks hold the dtype's min);
        T5 / decoder-only the LM logits.
    aux_losses: the weighted auxiliary losses by name ({} without labels and task ids).
    task_ids: [B], given or retrieved (None when neither).
    z: the retriever's instance embedding [B, e] (methods with a retriever).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] | None = None
    task_ids: torch.Tensor | None = None
    z: torch.Tensor | None = None


class PHAModel(Method, nn.Module):
    """A frozen HF backbone plus one method's trainable parts. Build with pha.get_model,
    load with PHAModel.from_pretrained / pha.AutoPHAModel.from_pretrained.

    base_model: the HF model (hooks attached, frozen but for what the method trains);
    method_config: the MethodConfig; config: the backbone's transformers config.
    """

    # The HF Trainer must not pass num_items_in_batch: the loss is a mean over the batch.
    accepts_loss_kwargs: ClassVar[bool] = False

    def __init__(self, base_model: nn.Module, config: MethodConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        if getattr(base_model, _WRAPPED, False):
            raise ValueError(
                "base_model is already wrapped by a PHAModel (its adapters are attached): call "
                "unload() on that model first, or wrap a fresh copy of the backbone"
            )
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = _backbone_name(base_model)
        self.base_model = base_model
        self.method_config = config
        self.backbone: Backbone = attach(base_model, config.split_layer)
        self.backbone_kind = self.backbone.kind
        self._ctx: Context | None = None
        self._checkpoint_ctx: Context | None = None
        if self.backbone_kind == "encoder":
            if config.num_labels is None:
                raise ValueError("encoder backbones need num_labels (per-task class counts)")
            d = self.backbone.d_model
            self.heads = nn.ModuleList(nn.Linear(d, n) for n in config.num_labels)
        elif config.num_labels is not None:
            raise ValueError(
                f"num_labels is for encoder classification heads; a {self.backbone_kind} "
                "backbone generates text: pass num_labels=None"
            )
        try:
            self.build()
            self.backbone.on_split(self._split_hook)
        except BaseException:
            self.backbone.remove()
            raise
        setattr(base_model, _WRAPPED, True)
        self._unloaded = False
        self._requires_grad = [p.requires_grad for p in base_model.parameters()]
        for p in self.base_model.parameters():
            p.requires_grad_(False)
        for p in self.trainable_backbone_parameters():
            p.requires_grad_(True)
        # Pretrained values of the backbone weights an adapter method trains (layer norms):
        # swapped in by disable_adapter() and restored by unload(). Not module state.
        self._pretrained_backbone_weights = (
            [(p, p.detach().clone()) for p in self.trainable_backbone_parameters()]
            if self.has_adapter
            else []
        )
        device = next(base_model.parameters()).device
        for name, module in self.named_children():
            if name != "base_model":
                module.to(device)

    # ---- tasks -----------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        return self.method_config.tasks

    def task_index(self, task_ids) -> torch.Tensor:
        """task_ids as LongTensor [B]: from a tensor of ids or a list of names / ids."""
        k = len(self.tasks)
        if isinstance(task_ids, torch.Tensor):
            if (
                task_ids.dtype.is_floating_point
                or task_ids.dtype == torch.bool
                or task_ids.dim() != 1
            ):
                raise TypeError(
                    f"task_ids must be an integer tensor [B], got {task_ids.dtype} {list(task_ids.shape)}"
                )
            ids = task_ids.long()
        else:
            names = list(task_ids)
            for name in names:
                if isinstance(name, str) and name not in self.tasks:
                    raise ValueError(f"unknown task {name!r}; known tasks: {self.tasks}")
            ids = torch.tensor(
                [self.tasks.index(t) if isinstance(t, str) else int(t) for t in names]
            )
        # Data-dependent: skipped while torch.compile traces (it would break the graph).
        if (
            ids.numel()
            and not torch.compiler.is_compiling()
            and (int(ids.min()) < 0 or int(ids.max()) >= k)
        ):
            bad = ids[(ids < 0) | (ids >= k)].tolist()
            raise ValueError(
                f"unknown task ids {bad}: ids must lie in [0, {k}) for tasks {self.tasks}"
            )
        return ids.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    @property
    def config(self):
        """The backbone's transformers config (what the HF Trainer and PEFT users read);
        the method's config is `method_config`."""
        return self.base_model.config

    # ---- conditioning context --------------------------------------------------------
    def ctx(self) -> Context:
        """The current call's context (error if the backbone is run outside the wrapper).

        Under gradient checkpointing the backward pass re-runs the blocks after the call
        has returned: they get the context of the call being differentiated."""
        if self._ctx is None and self._checkpoint_ctx is not None and _in_backward():
            return self._checkpoint_ctx
        if self._ctx is None:
            raise RuntimeError(
                "the backbone's adapters need per-call conditioning: call the PHAModel "
                "(forward / generate / retrieve), not the wrapped model directly"
            )
        return self._ctx

    @contextlib.contextmanager
    def _conditioned(self, input_ids, task_ids, pool_mask, stop_at_split=False):
        if self._unloaded:
            raise RuntimeError("this PHAModel was unloaded: its backbone runs without it now")
        if self._ctx is not None:
            raise RuntimeError("a PHAModel call is already running (re-entrant call)")
        if task_ids is not None:
            task_ids = self.task_index(task_ids)
            if task_ids.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"task_ids must have one id per instance: {input_ids.shape[0]}, got {task_ids.shape[0]}"
                )
        elif self.needs_task_ids and not self.can_retrieve and not stop_at_split:
            raise ValueError(f"{type(self).__name__} needs task_ids (it cannot retrieve tasks)")
        self._ctx = Context(task_ids, pool_mask, stop_at_split=stop_at_split)
        try:
            if self.backbone.enabled:
                self.condition(self._ctx)
            yield self._ctx
        finally:
            # kept only when needed: a context can hold large generated weights
            keep = self.training and _checkpointing(self.base_model)
            self._checkpoint_ctx = self._ctx if keep else None
            self._ctx = None

    def _split_hook(self, hidden: torch.Tensor) -> None:
        ctx = self.ctx()
        if ctx.z is None:  # decoder-only generation: only the prefill step (the prompt)
            self.at_split(ctx, hidden)
        if ctx.stop_at_split:
            raise _StopAtSplit

    # ---- forward -----------------------------------------------------------------------
    def _pool_mask(self, input_ids, attention_mask, labels):
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        if self.backbone_kind == "decoder" and labels is not None and labels.shape == mask.shape:
            prompt = mask.bool() & (labels == -100)  # the retriever pools the prompt only
            has_prompt = prompt.any(1, keepdim=True)
            mask = torch.where(has_prompt, prompt, mask.bool())
        return mask

    @property
    def _vocab_size(self) -> int:
        return self.base_model.get_input_embeddings().num_embeddings

    def _check_tokens(self, input_ids, attention_mask) -> None:
        check_tokens(input_ids, attention_mask, self._vocab_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_ids=None,
        **kwargs,
    ) -> PHAOutput:
        """Task loss (+ weighted auxiliary losses when labels and task ids are given).

        Encoder: labels [B] class ids; logits [B, max(num_labels)]. T5 / decoder-only:
        labels are token ids (-100 ignored) and logits the LM logits; T5 without labels
        or decoder_input_ids decodes one step from the decoder start token."""
        self._check_tokens(input_ids, attention_mask)
        if labels is not None:
            check_labels(labels, input_ids.shape[0], self.backbone_kind)
        pool_mask = self._pool_mask(input_ids, attention_mask, labels)
        with self._conditioned(input_ids, task_ids, pool_mask) as ctx:
            given = ctx.task_ids is not None
            if self.backbone_kind == "encoder":
                encoder = getattr(self.base_model, "base_model", self.base_model)
                out = encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
                logits, task_loss = self._classify(
                    out.last_hidden_state, attention_mask, labels, ctx.task_ids
                )
            else:
                logits, task_loss = self._lm(input_ids, attention_mask, labels, kwargs)
            with_aux = labels is not None and given and self.backbone.enabled
            aux = self.aux_losses(ctx) if with_aux else {}
            loss = None
            if task_loss is not None:
                loss = task_loss + sum(aux.values()) if aux else task_loss
            return PHAOutput(
                loss=loss, logits=logits, aux_losses=aux, task_ids=ctx.task_ids, z=ctx.z
            )

    def _positions(self, attention_mask, kwargs):
        """Decoder-only: position ids from the attention mask, as HF generate derives them,
        so that a left-padded prompt is encoded alike in forward, retrieve and generate."""
        if self.backbone_kind != "decoder" or attention_mask is None or "position_ids" in kwargs:
            return kwargs
        positions = attention_mask.long().cumsum(-1) - 1
        return {**kwargs, "position_ids": positions.masked_fill(attention_mask == 0, 1)}

    def _lm(self, input_ids, attention_mask, labels, kwargs):
        decoder_inputs = {"decoder_input_ids", "decoder_inputs_embeds"} & set(kwargs)
        if self.backbone_kind == "seq2seq" and not decoder_inputs:
            if labels is not None:
                kwargs["decoder_input_ids"] = self.base_model.prepare_decoder_input_ids_from_labels(
                    labels=labels
                )
            else:  # no decoder input given: the logits of the first decoding step
                start = self.config.decoder_start_token_id
                kwargs["decoder_input_ids"] = input_ids.new_full((input_ids.shape[0], 1), start)
        kwargs = self._positions(attention_mask, kwargs)
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        logits = out.logits
        if labels is None:
            return logits, None
        flat_logits, flat_labels = logits, labels
        if self.backbone_kind == "decoder":  # token t predicts token t + 1
            flat_logits, flat_labels = logits[:, :-1], labels[:, 1:]
        loss = F.cross_entropy(
            flat_logits.reshape(-1, logits.shape[-1]).float(),
            flat_labels.reshape(-1),
            ignore_index=-100,
            label_smoothing=self.method_config.label_smoothing,
            reduction=self.method_config.task_loss_reduction,
        )
        return logits, loss

    def _classify(self, hidden, attention_mask, labels, task_ids):
        if task_ids is None:
            if len(self.tasks) > 1:
                raise ValueError(
                    f"{type(self).__name__} needs task_ids to pick each instance's classification head"
                )
            task_ids = torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)
        pooled = masked_mean(hidden, attention_mask)
        n_max = max(self.method_config.num_labels)
        dtype = self.heads[0].weight.dtype
        logits = pooled.new_full((hidden.shape[0], n_max), torch.finfo(dtype).min, dtype=dtype)
        loss = pooled.new_zeros((), dtype=torch.float32) if labels is not None else None
        # Per task head; under torch.compile without the row gathers (data-dependent shapes).
        per_task = self._classify_masked if torch.compiler.is_compiling() else self._classify_rows
        logits, loss = per_task(pooled, labels, task_ids, logits, loss)
        if loss is not None and self.method_config.task_loss_reduction == "mean":
            loss = loss / hidden.shape[0]
        return logits, loss

    def _classify_rows(self, pooled, labels, task_ids, logits, loss):
        """_classify's heads, each on the rows of its task present in the batch."""
        dtype = logits.dtype
        for k in torch.unique(task_ids).tolist():
            rows = (task_ids == k).nonzero().squeeze(1)
            head_logits = self.heads[k](pooled[rows].to(dtype))
            logits[rows, : head_logits.shape[1]] = head_logits.to(dtype)  # bf16 under autocast
            if labels is not None:
                y = labels[rows]
                n = self.method_config.num_labels[k]
                if int(y.min()) < 0 or int(y.max()) >= n:
                    raise ValueError(
                        f"labels of task {self.tasks[k]!r} must lie in [0, {n}), got {sorted(set(y.tolist()))}"
                    )
                loss = loss + F.cross_entropy(
                    head_logits.float(),
                    y,
                    reduction="sum",
                    label_smoothing=self.method_config.label_smoothing,
                )
        return logits, loss

    def _classify_masked(self, pooled, labels, task_ids, logits, loss):
        """_classify's heads without data-dependent shapes, for torch.compile: each head on
        every row, kept on its task's rows (the labels' range is not checked there)."""
        for k, head in enumerate(self.heads):
            mine = task_ids == k
            head_logits = head(pooled.to(logits.dtype))
            n = head_logits.shape[1]
            logits[:, :n] = torch.where(
                mine.unsqueeze(1), head_logits.to(logits.dtype), logits[:, :n]
            )
            if labels is not None:
                per_row = F.cross_entropy(
                    head_logits.float(),
                    torch.where(mine, labels, 0),
                    reduction="none",
                    label_smoothing=self.method_config.label_smoothing,
                )
                loss = loss + (per_row * mine).sum()
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task_ids=None,
        **kwargs,
    ):
        """HF generate (greedy, beam search, ...) with mixed-task batches; without task_ids
        methods with prototypes retrieve each instance's task."""
        if self.backbone_kind == "encoder":
            raise ValueError("generate needs a T5 or decoder-only backbone, not an encoder")
        self._check_tokens(input_ids, attention_mask)
        pool_mask = self._pool_mask(input_ids, attention_mask, None)
        with self._conditioned(input_ids, task_ids, pool_mask):
            return self.base_model.generate(
                input_ids=input_ids, attention_mask=attention_mask, **kwargs
            )

    @torch.no_grad()
    def retrieve(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(task_ids [B], scores [B, K]): the nearest prototype (cosine) to each instance."""
        if not self.can_retrieve:
            raise ValueError(f"{type(self).__name__} has no prototypes to retrieve tasks with")
        z = self.embed(input_ids, attention_mask)
        return self.prototypes.nearest(z)

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The retriever's z [B, e], running the backbone only up to the split."""
        if not hasattr(self, "retriever"):
            raise ValueError(f"{type(self).__name__} has no retriever")
        self._check_tokens(input_ids, attention_mask)
        pool_mask = self._pool_mask(input_ids, attention_mask, None)
        with self._conditioned(input_ids, None, pool_mask, stop_at_split=True) as ctx:
            try:
                if self.backbone_kind == "seq2seq":
                    self.base_model.get_encoder()(
                        input_ids=input_ids, attention_mask=attention_mask
                    )
                elif self.backbone_kind == "encoder":
                    getattr(self.base_model, "base_model", self.base_model)(
                        input_ids=input_ids, attention_mask=attention_mask
                    )
                else:
                    kwargs = self._positions(attention_mask, {})
                    self.base_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            except _StopAtSplit:
                pass
            return ctx.z

    def add_task(
        self,
        name: str,
        examples: dict[str, torch.Tensor],
        init: str = "nearest",
        num_labels: int | None = None,
    ) -> int:
        """Add a task (few-shot transfer); returns its id. See the method's docs for how
        its conditioning is initialised. Encoder backbones need num_labels (a new head).
        Re-create the optimizer afterwards: new parameters were added."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty task name, got {name!r}")
        if name in self.tasks:
            raise ValueError(f"task {name!r} already exists")
        if self.backbone_kind == "encoder" and not (
            isinstance(num_labels, int) and not isinstance(num_labels, bool) and num_labels >= 1
        ):
            raise ValueError(
                "add_task on an encoder backbone needs num_labels: an integer >= 1 for the "
                f"new head, got {num_labels!r}"
            )
        if self.backbone_kind != "encoder" and num_labels is not None:
            raise ValueError("num_labels is only for encoder backbones")
        check_examples(examples, self._vocab_size)
        self.add_task_conditioning(examples, init)  # first: it may refuse
        if self.backbone_kind == "encoder":
            self.heads.append(nn.Linear(self.backbone.d_model, num_labels).to(self.device))
            self.method_config.num_labels.append(num_labels)
        self.method_config.tasks.append(name)
        return len(self.tasks) - 1

    # ---- parameters ------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The method's weights, what save_pretrained writes: every parameter outside the
        backbone (adapters, hypernetworks, heads, ...) and the backbone weights the method
        trains; whether or not they are frozen at the moment."""
        trained = {id(p) for p in self.trainable_backbone_parameters()}
        return {
            n: p.detach()
            for n, p in self.named_parameters()
            if not n.startswith("base_model.") or id(p) in trained
        }

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters), as PEFT counts them."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"
        )

    # ---- the plain backbone ------------------------------------------------------------
    def get_base_model(self) -> nn.Module:
        """The wrapped HF model (its hooks stay attached; see unload())."""
        return self.base_model

    @contextlib.contextmanager
    def disable_adapter(self):
        """Inside the block the backbone runs as if never wrapped: every adapter, prefix,
        retriever and generated weight is off, and the backbone weights the method trains
        (HyperFormer++ / HyperPELT layer norms) hold their pretrained values. Hidden
        states and LM logits equal the untouched backbone's, whether through this model or
        through the backbone itself. Encoder classification still needs a head: the
        per-task heads read the plain backbone's pooled features (a backbone has no head of
        its own), and there are no auxiliary losses. Full fine-tuning has no adapter to
        disable (ValueError)."""
        if not self.has_adapter:
            raise ValueError(
                f"{type(self).__name__} trains the backbone itself: there is no adapter to disable"
            )
        if not self.backbone.enabled:
            raise RuntimeError("disable_adapter() is already active")
        self.backbone.enabled = False
        self._swap_pretrained_backbone_weights()
        try:
            yield
        finally:
            self._swap_pretrained_backbone_weights()
            self.backbone.enabled = True

    @torch.no_grad()
    def _swap_pretrained_backbone_weights(self) -> None:
        for p, other in self._pretrained_backbone_weights:
            current = p.detach().clone()
            p.copy_(other)
            other.copy_(current)

    def unload(self) -> nn.Module:
        """Remove every hook and prefix from the backbone and return it as it was wrapped:
        the pretrained values of the backbone weights the method trained and every
        parameter's requires_grad as before (full fine-tuning: the fine-tuned backbone,
        its weights are the method). This model cannot run afterwards; the backbone may be
        wrapped again."""
        if self._unloaded:
            raise RuntimeError("this PHAModel was already unloaded")
        if not self.backbone.enabled:
            raise RuntimeError("unload() inside disable_adapter(): leave the block first")
        self._swap_pretrained_backbone_weights()
        self._pretrained_backbone_weights = []
        self.backbone.remove()
        for p, flag in zip(self.base_model.parameters(), self._requires_grad):
            p.requires_grad_(flag)
        delattr(self.base_model, _WRAPPED)
        self._unloaded = True
        return self.base_model

    # ---- saving and loading ------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Writes pha_config.json (the method config: method, ordered task list, the
        backbone's name), the method's weights as adapter_model.safetensors and their
        checksums.sha256 (verified by from_pretrained), all or nothing: a failed save
        (disk full) leaves a previous save as it was."""
        ensure_directory(path, "save_pretrained path")
        config = json.dumps(self.method_config.to_dict(), indent=2).encode()
        # clone: safetensors refuses tensors sharing storage (tied embeddings in full fine-tuning)
        tensors = {n: t.clone().contiguous().cpu() for n, t in self.trainable_state_dict().items()}
        write_checksummed(path, {CONFIG_NAME: config, WEIGHTS_NAME: save(tensors)})

    @classmethod
    def from_pretrained(
        cls, base_model: nn.Module, path: str | os.PathLike, is_trainable: bool = False
    ) -> PHAModel:
        """Rebuild a saved model on `base_model` (the same pretrained backbone). As in
        PEFT, the result is frozen and in eval mode unless is_trainable=True (then the
        method's weights train again)."""
        if os.path.isfile(os.path.join(path, CONFIG_NAME)):  # else: the config's own error
            verify_checksums(path, [CONFIG_NAME, WEIGHTS_NAME])
        config = MethodConfig.from_pretrained(path)
        if cls is not PHAModel and not isinstance(config, cls.config_class):
            raise ValueError(
                f"{path} holds a {type(config).__name__}; {cls.__name__} needs a "
                f"{cls.config_class.__name__} (PHAModel.from_pretrained takes any method)"
            )
        model = get_model(base_model, config)
        weights = load_file(os.path.join(path, WEIGHTS_NAME), device=str(model.device))
        expected = {n: tuple(t.shape) for n, t in model.trainable_state_dict().items()}
        found = {n: tuple(t.shape) for n, t in weights.items()}
        if found != expected:
            differ = sorted(
                n for n in set(found) | set(expected) if found.get(n) != expected.get(n)
            )
            raise ValueError(
                f"saved weights do not match the model built on this backbone: "
                f"{len(differ)} tensors missing, unexpected or of another shape, e.g. "
                + ", ".join(
                    f"{n}: saved {found.get(n)} vs model {expected.get(n)}" for n in differ[:3]
                )
            )
        model.load_state_dict(weights, strict=False)
        if not is_trainable:
            model.requires_grad_(False)
            model.eval()
        return model
