"""The baselines a user already has, on exactly pha.train's splits and seeds.

    python benchmarks/baselines.py probe  [--tasks ...] [--n-train 300] [--seed 0]
    python benchmarks/baselines.py lora   [--tasks ...] [--n-train 300] [--seed 0] [--shared]

probe: logistic regression (scikit-learn) on the frozen encoder's mean-pooled, L2-normalised
    embeddings; the inverse regularisation C is chosen per task on the validation split
    (macro-F1) from a fixed grid, then the test split is scored once.
lora:  HF PEFT LoRA (r=8, alpha=16, dropout 0.1, on query and value) with a linear head on
    the mean-pooled output: one LoRA per task (default), or one shared LoRA with per-task
    heads on mixed-task batches (--shared). AdamW, linear schedule with 10% warm-up,
    validation macro-F1 after every epoch, the test split scored once for the best epoch
    (pha.train's protocol). --epochs (15) is raised so that each LoRA takes at least
    --min-steps optimizer steps (pha.train's floor, 150): at small n a fixed 15 epochs
    would be 15 steps per task. Needs `pip install -e '.[benchmarks]'` (peft).

Both print a per-task table and append rows (method,n_train,seed,task,metric,score,split)
to --csv; the data are pha.data.load_tasks(tasks, n_train, n_eval, seed), as in pha.train.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pha.backbones import load_backbone
from pha.data import DEFAULT_TASKS, Collator, head, load_tasks, metrics
from pha.evaluate import format_table
from pha.files import atomic_write
from pha.modules import masked_mean
from pha.train import linear_schedule
from pha.train_config import COMMON_DEFAULTS

PROBE_C = (0.01, 0.1, 1.0, 10.0, 100.0)


def _batches(collator: Collator, items: list, size: int, shuffle_seed: int | None = None):
    order = np.arange(len(items))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(items))
    for start in range(0, len(items), size):
        yield collator([items[i] for i in order[start : start + size]])


@torch.no_grad()
def _embed(model, collator: Collator, examples: list[dict], task_id: int) -> np.ndarray:
    out = []
    for batch in _batches(collator, [(task_id, ex) for ex in examples], 64):
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        out.append(
            F.normalize(masked_mean(hidden.last_hidden_state, batch["attention_mask"]), dim=-1)
        )
    return torch.cat(out).numpy()


def run_probe(args, data, log) -> dict:
    from sklearn.linear_model import LogisticRegression

    base, tokenizer, kind = load_backbone(args.model)
    base.eval()
    collator = Collator(tokenizer, kind, data.tasks, args.max_length, args.task_prefix)
    results = {}
    for k, task in enumerate(data.tasks):
        x = {
            s: _embed(base, collator, data.split(s)[k], k) for s in ("train", "validation", "test")
        }
        y = {s: np.array([ex["label"] for ex in data.split(s)[k]]) for s in x}
        best = None
        for c in PROBE_C:
            clf = LogisticRegression(C=c, max_iter=2000).fit(x["train"], y["train"])
            score = metrics.macro_f1(clf.predict(x["validation"]), y["validation"])
            if best is None or score > best[0]:
                best = (score, c, clf)
        score, c, clf = best
        val = metrics.compute(task.metrics, clf.predict(x["validation"]), y["validation"])
        test = metrics.compute(task.metrics, clf.predict(x["test"]), y["test"])
        log(task.name, val, test, {"C": c})
        results[task.name] = test
    return results


class _LoraClassifier(nn.Module):
    def __init__(self, base, num_labels: list[int]):
        super().__init__()
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"])
        self.encoder = get_peft_model(base, lora)
        d = base.config.hidden_size
        self.heads = nn.ModuleList(nn.Linear(d, n) for n in num_labels)

    def forward(self, input_ids, attention_mask, task_ids):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = masked_mean(hidden, attention_mask)
        return [self.heads[int(t)](p) for t, p in zip(task_ids, pooled)]


def _predict(model, collator, items, size=64) -> list[int]:
    model.eval()
    preds = []
    with torch.no_grad():
        for batch in _batches(collator, items, size):
            logits = model(batch["input_ids"], batch["attention_mask"], batch["task_ids"])
            preds.extend(int(row.argmax()) for row in logits)
    model.train()
    return preds


def lora_budget(epochs: int, min_steps: int, n_examples: int, batch_size: int) -> tuple[int, int]:
    """(epochs, optimizer steps): --epochs, raised until the steps reach --min-steps."""
    per_epoch = -(-n_examples // batch_size)
    epochs = max(epochs, -(-min_steps // per_epoch))
    return epochs, epochs * per_epoch


def _train_lora(args, data, task_ids: list[int], collator, tokenizer_kind) -> dict:
    """One LoRA for the given tasks (one task: per-task LoRA); best epoch on validation."""
    base, _, _ = load_backbone(args.model)
    torch.manual_seed(args.seed)
    model = _LoraClassifier(base, [data.tasks[k].num_labels for k in task_ids])
    local = {k: i for i, k in enumerate(task_ids)}  # task id -> head index
    train = [(k, ex) for k in task_ids for ex in data.train[k]]
    epochs, steps = lora_budget(args.epochs, args.min_steps, len(train), args.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(round(0.1 * steps), steps))
    best = None
    for epoch in range(epochs):
        for batch in _batches(
            collator, train, args.batch_size, shuffle_seed=args.seed * 1000 + epoch
        ):
            heads = torch.tensor([local[int(t)] for t in batch["task_ids"]])
            logits = model(batch["input_ids"], batch["attention_mask"], heads)
            loss = sum(F.cross_entropy(lg, y) for lg, y in zip(logits, batch["labels"])) / len(
                logits
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        val = {}
        for k in task_ids:
            items = [(k, ex) for ex in data.validation[k]]
            preds = _predict(_Remap(model, local), collator, items)
            val[data.tasks[k].name] = metrics.compute(
                data.tasks[k].metrics, preds, [ex["label"] for ex in data.validation[k]]
            )
        score = float(np.mean([m["macro_f1"] for m in val.values()]))
        if best is None or score > best[0]:
            state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            best = (score, epoch + 1, val, state)
    score, epoch, val, state = best
    model.load_state_dict(state, strict=False)
    test = {}
    for k in task_ids:
        preds = _predict(_Remap(model, local), collator, [(k, ex) for ex in data.test[k]])
        test[data.tasks[k].name] = metrics.compute(
            data.tasks[k].metrics, preds, [ex["label"] for ex in data.test[k]]
        )
    return {"validation": val, "test": test, "epoch": epoch}


class _Remap(nn.Module):
    """Maps the batch's task ids to the model's head indices."""

    def __init__(self, model, local: dict[int, int]):
        super().__init__()
        self.model, self.local = model, local

    def forward(self, input_ids, attention_mask, task_ids):
        return self.model(
            input_ids, attention_mask, torch.tensor([self.local[int(t)] for t in task_ids])
        )


def run_lora(args, data, log) -> dict:
    _, tokenizer, kind = load_backbone(args.model)
    collator = Collator(tokenizer, kind, data.tasks, args.max_length, args.task_prefix)
    groups = (
        [list(range(len(data.tasks)))] if args.shared else [[k] for k in range(len(data.tasks))]
    )
    results = {}
    for group in groups:
        out = _train_lora(args, data, group, collator, kind)
        for k in group:
            name = data.tasks[k].name
            log(name, out["validation"][name], out["test"][name], {"epoch": out["epoch"]})
            results[name] = out["test"][name]
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("baseline", choices=("probe", "lora"))
    p.add_argument("--model", default="minilm")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-eval", type=int, default=300)
    p.add_argument(
        "--n-val",
        type=lambda s: float(s) if "." in s else int(s),  # a count or a fraction
        default=None,
        help="validation examples per task, count or fraction (pha.train's --n-val)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--task-prefix", action="store_true", help="prefix inputs with the task name")
    p.add_argument("--shared", action="store_true", help="lora: one LoRA for all tasks")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument(
        "--min-steps",
        type=int,
        default=COMMON_DEFAULTS["min_steps"],
        help="lora: at least this many optimizer steps per LoRA (more epochs at small n)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--csv", default=None, help="append rows to this CSV")
    p.add_argument(
        "--json",
        default=None,
        help="write the per-task test and validation metrics here (as pha.train's metrics.json)",
    )
    p.add_argument("--label", default=None, help="method name in the CSV (default: the baseline)")
    args = p.parse_args(argv)
    tasks = [t for item in args.tasks for t in item.split(",") if t]
    torch.manual_seed(args.seed)
    data = load_tasks(tasks, args.n_train, args.n_eval, args.seed)
    if args.n_val is not None:  # as pha.train: a smaller validation set for the selection
        data.validation = [head(x, args.n_val, "n_val") for x in data.validation]
    label = args.label or (
        "lora_shared" if args.baseline == "lora" and args.shared else args.baseline
    )
    rows = []
    validation, selected = {}, {}

    def log(task, val, test, extra):
        print(
            f"{label} {task}: validation macro_f1 {100 * val['macro_f1']:.2f}, test {json.dumps(test)} {extra}",
            flush=True,
        )
        validation[task], selected[task] = val, extra
        for split, m in (("validation", val), ("test", test)):
            rows.extend([label, args.n_train, args.seed, task, k, v, split] for k, v in m.items())

    started = time.perf_counter()
    results = (run_probe if args.baseline == "probe" else run_lora)(args, data, log)
    f1 = float(np.mean([m["macro_f1"] for m in results.values()]))
    print(format_table(results, metrics.average(results)))
    print(f"{time.perf_counter() - started:.0f} s")
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["method", "n_train", "seed", "task", "metric", "score", "split"])
            w.writerows(rows)
    if args.json:  # the shape of pha.train's metrics.json (the study reads both alike)
        summary = {
            "tasks": results,
            "average": metrics.average(results),
            "average_macro_f1": f1,
            "validation": {"tasks": validation, "metric": "macro_f1"},
            "selected": selected,
            "seconds": time.perf_counter() - started,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(summary, indent=2).encode())  # never a torn file
    return results


if __name__ == "__main__":
    main()
