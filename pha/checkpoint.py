"""Training checkpoints: atomic writes, keep-last-N, and everything a bit-exact resume needs
(trainable weights, optimiser, scheduler, python/numpy/torch RNG, data order, step).

A checkpoint is written to a temporary file in the same directory, fsync'd and renamed
into place, so a process killed at any moment leaves either the previous checkpoints or
the new one, never a torn file.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (corrupt, truncated, or not pha's)."""


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    return Path(directory) / f"checkpoint-{step:08d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def rng_state() -> dict:
    state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": state[0],
            "key": torch.from_numpy(state[1].copy()),
            "rest": list(state[2:]),
        },
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["key"].numpy(), *np_state["rest"]))
    torch.set_rng_state(state["torch"])


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | os.PathLike, step: int, state: dict, keep_last: int) -> Path:
    """Atomically write `state` (plus the RNG states) as checkpoint-<step>.pt, then delete
    all but the newest `keep_last` checkpoints."""
    if keep_last < 1:
        raise ValueError(f"keep_last: expected >= 1, got {keep_last}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(d, step)
    payload = {"format": FORMAT, "step": step, "rng": rng_state(), **state}
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(d)
    for old in list_checkpoints(d)[:-keep_last]:
        old.unlink()
    return target


def load_checkpoint(path: str | os.PathLike, fingerprint: dict) -> dict:
    """Read a checkpoint and check it was written by a run with the same `fingerprint`
    (the settings that decide what the weights and the data order mean); restores the
    RNG states. Raises a CheckpointError for a corrupt file, a ValueError for a mismatch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, ...: all mean "unreadable"
        raise CheckpointError(
            f"resume: checkpoint {path} is corrupt or not a pha checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"resume: {path} is not a pha checkpoint (format {FORMAT})")
    saved = state.get("fingerprint", {})
    diff = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"resume: checkpoint {path} belongs to a different run ({detail})")
    set_rng_state(state["rng"])
    return state
