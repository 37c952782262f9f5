"""Turning examples into model batches: the input prefixed with the task name (as in the
paper; switchable), then

  encoder   tokenised (text, text_pair); `labels` are class ids for the per-task heads;
  seq2seq   input as above, `labels` the tokens of the label word (T5 style);
  decoder   prompt "<task>: <text>\\nAnswer:" + " <label word><eos>", `labels` -100 on the
            prompt and on padding (left padding: generation continues the prompt).

Every batch also carries `task_ids`. A batch holds exactly the model's keyword arguments,
so `model(**batch)` runs it (and the HF Trainer can use a Collator as its data_collator);
the metrics read the gold labels from the examples themselves (pha.evaluate).
"""

from __future__ import annotations

import torch

from ..backbones import BACKBONE_KINDS
from .tasks import Task

ANSWER = "\nAnswer:"


def task_prefix(task_name: str) -> str:
    """The name a task is announced by in the input: 'glue:sst2' -> 'sst2'."""
    return task_name.split(":", 1)[-1]


def target_text(task: Task, label) -> str:
    """The answer a text-to-text model must produce."""
    return f"{float(label):.1f}" if task.is_regression else task.labels[int(label)]


def parse_answer(task: Task, text: str):
    """A generated answer back to a class id (-1 when it names no class) or a float."""
    text = text.strip()
    if task.is_regression:
        try:
            return float(text.split()[0])
        except (ValueError, IndexError):
            return 0.0
    lowered = [label.lower() for label in task.labels]
    return lowered.index(text.lower()) if text.lower() in lowered else -1


class Collator:
    """Callable turning [(task_id, example), ...] into a dict of tensors."""

    def __init__(
        self,
        tokenizer,
        kind: str,
        tasks: list[Task],
        max_length: int,
        prefix: bool = True,
        id_offset: int = 0,
    ):
        """Items are (index into `tasks`, example); a batch's `task_ids` are that index plus
        `id_offset` (few-shot transfer: the new tasks' ids follow the source model's)."""
        if kind not in BACKBONE_KINDS:
            raise ValueError(f"kind: expected one of {BACKBONE_KINDS}, got {kind!r}")
        if not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length: expected an int >= 8, got {max_length!r}")
        if kind == "encoder" and any(t.is_regression for t in tasks):
            bad = [t.name for t in tasks if t.is_regression]
            raise ValueError(
                f"tasks: regression tasks {bad} need a text-to-text (seq2seq or decoder) model"
            )
        self.tokenizer, self.kind, self.tasks = tokenizer, kind, tasks
        self.max_length, self.prefix, self.id_offset = max_length, prefix, id_offset

    def _source(self, task: Task, ex: dict, with_pair: bool) -> str:
        text = f"{task_prefix(task.name)}: {ex['text']}" if self.prefix else ex["text"]
        if with_pair and ex.get("text_pair"):
            text = f"{text}\n{ex['text_pair']}"
        return text

    def __call__(
        self, items: list[tuple[int, dict]], generate: bool = False
    ) -> dict[str, torch.Tensor]:
        """A batch; `generate=True` leaves the answer out of decoder prompts (for evaluation)."""
        task_ids = torch.tensor([t + self.id_offset for t, _ in items], dtype=torch.long)
        batch = {"task_ids": task_ids}
        if self.kind == "encoder":
            # One call per example: a mixed-task batch can mix single texts and pairs.
            rows = [
                self.tokenizer(self._source(self.tasks[t], ex, with_pair=False), ex.get("text_pair"),
                               truncation=True, max_length=self.max_length)
                for t, ex in items
            ]  # fmt: skip
            keys = ("input_ids", "attention_mask")
            enc = self.tokenizer.pad([{k: r[k] for k in keys} for r in rows], return_tensors="pt")
            labels = torch.tensor([ex["label"] for _, ex in items], dtype=torch.long)
            batch.update(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels
            )
        elif self.kind == "seq2seq":
            enc = self._tok(
                [self._source(self.tasks[t], ex, True) for t, ex in items], self.max_length
            )
            answers = self._tok([target_text(self.tasks[t], ex["label"]) for t, ex in items], 16)
            labels = answers["input_ids"].masked_fill(answers["attention_mask"] == 0, -100)
            batch.update(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels
            )
        else:
            batch.update(self._decoder(items, generate))
        return batch

    def _tok(self, texts: list[str], max_length: int) -> dict:
        return self.tokenizer(
            texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )

    def _decoder(self, items: list[tuple[int, dict]], generate: bool) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        answer_ids = tok(ANSWER, add_special_tokens=False)["input_ids"]
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        rows, label_rows = [], []
        for t, ex in items:
            task = self.tasks[t]
            target = (
                []
                if generate
                else tok(" " + target_text(task, ex["label"]), add_special_tokens=False)[
                    "input_ids"
                ]
            )
            target = target + ([] if generate else [tok.eos_token_id])
            budget = self.max_length - len(bos) - len(answer_ids) - len(target)
            source = tok(self._source(task, ex, True), add_special_tokens=False)["input_ids"][
                : max(budget, 1)
            ]
            prompt = bos + source + answer_ids
            rows.append(prompt + target)
            label_rows.append([-100] * len(prompt) + target)
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": mask}
        if not generate:
            out["labels"] = torch.tensor(
                [[-100] * (width - len(r)) + r for r in label_rows], dtype=torch.long
            )
        return out
