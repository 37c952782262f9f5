"""What pha writes to disk, written so that nothing is lost or silently wrong:

- atomic writes (pha.files): a process killed or a disk filled at any moment leaves the
  previous file or the new one, never a torn one, and a failed write raises an
  OutputError naming the file;
- checksums: checkpoints carry the sha256 of their payload and saved adapters a
  `checksums.sha256` manifest (`sha256sum -c` format); loading verifies them;
- one run per output directory (`lock_output_dir`), which also clears the temporary files
  a killed run left behind;
- training checkpoints with keep-last-N and everything a bit-exact resume needs
  (trainable weights, optimiser, scheduler, python/numpy/torch RNG, data order, step).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import os
import random
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .files import OutputError, atomic_write, atomic_write_files, output_error, sha256_file

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")
# Format 2: a header line with the sha256 of the torch.save payload that follows it.
FORMAT = 2
_HEADER = re.compile(rb"^pha-checkpoint (\d+) sha256=([0-9a-f]{64})\n")
CHECKSUMS_NAME = "checksums.sha256"
LOCK_NAME = ".pha.lock"
# Temporary names: "." + the target's name + "-" + random + ".tmp" (pha.files); only
# those of pha's outputs are cleared (an output directory may hold the user's files).
_OUTPUTS = r"checkpoint|metrics\.json|config\.json|pha_config\.json|adapter_model\.safetensors"
_TEMP = re.compile(rf"^\.({_OUTPUTS}|checksums\.sha256|write-probe)[-.][\w.-]*\.tmp$")


class CheckpointError(RuntimeError):
    """A checkpoint or saved adapter that cannot be read (corrupt, truncated, not pha's)."""


# ---- output directories ------------------------------------------------------------------


def check_output_path(path: str | os.PathLike, what: str) -> None:
    """Without writing anything lasting: can `path` be (or become) a directory we write in?
    An OutputError names the file in the way or why its nearest existing ancestor is not
    writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what}: {path} is a file, expected a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what}: {path} cannot be created: {ancestor} is a file")
    check_writable(ancestor, what)


def ensure_directory(path: str | os.PathLike, what: str) -> Path:
    """Create the directory `path` (and its parents) or raise an OutputError saying why
    `what` (e.g. "--output-dir") cannot live there."""
    check_output_path(path, what)
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(f"{what}: cannot create directory {path}", e) from e
    return path


def check_writable(directory: str | os.PathLike, what: str) -> None:
    """Create and remove a probe file in `directory`: os.access does not see a read-only
    mount when running as root."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise output_error(f"{what}: cannot write in {directory}", e) from e


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files (".<name>-*.tmp") that a killed writer left in
    `directory` and its subdirectories (adapter/). Only safe while holding its lock."""
    d = Path(directory)
    entries = list(d.iterdir()) if d.is_dir() else []
    entries += [c for sub in entries if sub.is_dir() for c in sub.iterdir()]
    removed = [p for p in entries if _TEMP.match(p.name) and p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    if removed:
        log.info("removed %d temporary files left by an interrupted run in %s", len(removed), d)
    return removed


@contextlib.contextmanager
def lock_output_dir(directory: str | os.PathLike, what: str = "--output-dir") -> Iterator[Path]:
    """Hold an exclusive lock on `directory` (created if needed) for the block; an
    OutputError if another process holds it. Clears stale temporary files once locked."""
    d = ensure_directory(directory, what)
    try:
        fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise output_error(f"{what}: cannot write in {d}", e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise OutputError(
                f"{what}: {d} is in use by another run (pid {holder}); wait for it to end "
                "or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        remove_stale_temp_files(d)
        yield d
    finally:
        os.close(fd)  # releases the lock


# ---- checksums of saved adapters ---------------------------------------------------------


def read_checksums(directory: str | os.PathLike) -> dict[str, str] | None:
    """{name: sha256} from the checksums.sha256 of `directory`; None if it has none."""
    manifest = Path(directory) / CHECKSUMS_NAME
    if not manifest.is_file():
        return None
    sums = {}
    for line in manifest.read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


def write_checksummed(directory: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Write the files {name: data} into `directory` with a checksums.sha256 (sha256sum
    format) that covers them, all or nothing (atomic_write_files). The manifest keeps the
    entries of the directory's previous one for the files not rewritten, so re-saving one
    file of a saved adapter (its config) leaves the adapter verifiable."""
    sums = read_checksums(directory) or {}
    sums.update({n: hashlib.sha256(data).hexdigest() for n, data in files.items()})
    manifest = "".join(f"{digest}  {n}\n" for n, digest in sums.items()).encode()
    atomic_write_files(directory, {**files, CHECKSUMS_NAME: manifest})


def verify_checksums(directory: str | os.PathLike, names: list[str]) -> None:
    """Check that the files `names` exist in `directory` and match its checksums.sha256;
    a CheckpointError naming the first file that does not. A directory without the
    manifest (saved by an older pha) is loaded with a warning."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"no directory {d} (expected a saved pha adapter)")
    missing = [n for n in names if not (d / n).is_file()]
    if missing:
        raise CheckpointError(f"{d} is not a complete saved adapter: missing {missing}")
    manifest = d / CHECKSUMS_NAME
    expected = read_checksums(d)
    if expected is None:
        log.warning("%s has no %s (saved by an older pha): not verified", d, CHECKSUMS_NAME)
        return
    for n in names:
        if n not in expected:
            raise CheckpointError(f"{manifest} has no checksum for {n}: the manifest is damaged")
        if sha256_file(d / n) != expected[n]:
            raise CheckpointError(
                f"{d / n} does not match its checksum in {manifest}: the file is corrupt "
                "(changed after it was saved)"
            )


def nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors holding NaN or Inf."""
    return [
        n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


# ---- training checkpoints ------------------------------------------------------------------


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


def save_checkpoint(directory: str | os.PathLike, step: int, state: dict, keep_last: int) -> Path:
    """Atomically write `state` (plus the RNG states) as checkpoint-<step>.pt with the
    sha256 of its payload, then delete all but the newest `keep_last` checkpoints.
    Refuses (ValueError) weights `state["model"]` holding NaN or Inf: a checkpoint that
    cannot be resumed must never become the latest."""
    if keep_last < 1:
        raise ValueError(f"keep_last: expected >= 1, got {keep_last}")
    bad = nonfinite(state.get("model", {}))
    if bad:
        raise ValueError(
            f"not saving checkpoint at step {step}: weights hold NaN or Inf ({bad[:3]})"
        )
    d = ensure_directory(directory, "checkpoint directory")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "step": step, "rng": rng_state(), **state}, buffer)
    payload = buffer.getvalue()
    header = f"pha-checkpoint {FORMAT} sha256={hashlib.sha256(payload).hexdigest()}\n".encode()

    target = atomic_write(checkpoint_path(d, step), header + payload)
    for old in list_checkpoints(d)[:-keep_last]:
        old.unlink()
    return target


def load_checkpoint(path: str | os.PathLike, fingerprint: dict) -> dict:
    """Read a checkpoint, verify its checksum and check it was written by a run with the
    same `fingerprint` (the settings that decide what the weights and the data order
    mean); restores the RNG states. Raises a CheckpointError for a corrupt file, a
    ValueError for a mismatch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint file {path}")
    raw = path.read_bytes()
    header = _HEADER.match(raw)
    if header is None or int(header[1]) != FORMAT:
        raise CheckpointError(
            f"resume: {path} is not a pha checkpoint of format {FORMAT} (corrupt, or written "
            "by another program or an older pha)"
        )
    payload = raw[header.end() :]
    if hashlib.sha256(payload).hexdigest() != header[2].decode():
        raise CheckpointError(
            f"resume: checkpoint {path} is corrupt: its contents do not match its checksum "
            "(truncated or changed on disk); resume from an older checkpoint or start afresh"
        )
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as e:  # a valid checksum over a payload torch cannot read: not ours
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
