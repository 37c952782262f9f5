"""Evaluation metrics in numpy (no sklearn/scipy at runtime; the tests compare with both).

Classification metrics take integer class ids; a prediction of -1 (e.g. a generated
answer that matches no label) counts as wrong everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _as_arrays(preds, labels, dtype) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(preds, dtype=dtype), np.asarray(labels, dtype=dtype)
    if p.ndim != 1 or p.shape != y.shape:
        raise ValueError(
            f"preds and labels: expected two 1-D arrays of one length, got {p.shape} and {y.shape}"
        )
    if p.size == 0:
        raise ValueError("preds and labels: expected at least one example")
    return p, y


def accuracy(preds, labels) -> float:
    p, y = _as_arrays(preds, labels, np.int64)
    return float((p == y).mean())


def _confusion(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classes present in labels or predictions, sorted, and their confusion matrix
    (rows: truth)."""
    classes = np.unique(np.concatenate([y, p]))
    yi, pi = np.searchsorted(classes, y), np.searchsorted(classes, p)
    cm = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(cm, (yi, pi), 1.0)
    return classes, cm


def macro_f1(preds, labels) -> float:
    """Unweighted mean of per-class F1 over the classes in labels or predictions, except
    -1: an answer that names no label is wrong for its true class but is not averaged as a
    class of its own (sklearn's f1_score(average='macro') with labels= those classes).
    Averaging it in, as sklearn does without labels=, would cut a binary task's score by a
    third for one such answer among any number."""
    p, y = _as_arrays(preds, labels, np.int64)
    classes, cm = _confusion(p, y)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[classes != -1].mean())


def mcc(preds, labels) -> float:
    """Matthews correlation, multi-class (Gorodkin's R_K, as sklearn); 0 when undefined."""
    p, y = _as_arrays(preds, labels, np.int64)
    _, cm = _confusion(p, y)
    t, pk = cm.sum(1), cm.sum(0)  # true and predicted counts per class
    c, s = np.trace(cm), cm.sum()
    cov_yp = c * s - t @ pk
    cov_yy = s * s - t @ t
    cov_pp = s * s - pk @ pk
    denom = np.sqrt(cov_yy * cov_pp)
    return float(cov_yp / denom) if denom > 0 else 0.0


def pearson(preds, labels) -> float:
    """Pearson correlation; 0 when either side is constant."""
    p, y = _as_arrays(preds, labels, np.float64)
    if np.ptp(p) == 0 or np.ptp(y) == 0:  # tested exactly: p - p.mean() need not be 0 then
        return 0.0
    pc, yc = p - p.mean(), y - y.mean()
    return float(pc @ yc / np.sqrt((pc @ pc) * (yc @ yc)))


def _rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the average of their ranks (scipy's rankdata 'average')."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(preds, labels) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0 when either side is constant."""
    p, y = _as_arrays(preds, labels, np.float64)
    return pearson(_rank(p), _rank(y))


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Sequence[str], preds, labels) -> dict[str, float]:
    """The named metrics of one task."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; valid: {sorted(METRICS)}")
    return {name: METRICS[name](preds, labels) for name in names}


def average(per_task: dict[str, dict[str, float]]) -> float:
    """The score of a multi-task run, as GLUE reports it: each task's metrics are averaged
    into one task score, then the task scores are averaged."""
    if not per_task:
        raise ValueError("per_task: expected at least one task")
    return float(np.mean([np.mean(list(m.values())) for m in per_task.values()]))
