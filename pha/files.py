"""Writing files so that a crash, a kill or a full disk never leaves a torn one, and hashing
them. Every file and directory pha writes (saved adapters, checkpoints, run outputs, the
download cache) goes through here.

A write goes to a temporary name beside its target (".<name>-<random>.tmp"), is fsync'd
and renamed into place with os.replace, so that readers see the old version or the new
one; a failure deletes the temporary and raises an OutputError naming the target. A
writer killed midway leaves its temporary behind: `remove_stale_temps` clears those (only
while holding the lock that every writer of the target holds).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

Content = bytes | Callable[[BinaryIO], None]  # the bytes, or a function writing them

_UMASK = os.umask(0)  # read once (there is no getter); temporaries get the usual modes
os.umask(_UMASK)


class OutputError(OSError):
    """An output that cannot be written (disk full, read-only, not a directory, in use);
    the message names the path, `errno` is the cause's. Nothing was replaced unless it
    says so."""


def _why(e: OSError) -> str:
    hints = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a path component is a file, not a directory",
        errno.EEXIST: "a file is in the way",
    }
    return hints.get(e.errno, e.strerror or type(e).__name__)


def output_error(message: str, cause: OSError, note: str = "") -> OutputError:
    """An OutputError "<message>: <why>[; <note>]" carrying the errno of `cause`."""
    error = OutputError(f"{message}: {_why(cause)}" + (f"; {note}" if note else ""))
    error.errno = cause.errno
    return error


def _temp_prefix(target: Path) -> str:
    return f".{target.name}-"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(target: Path, data: Content) -> Path:
    """`data` in a fsync'd temporary file beside `target`; returns its path."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would make the file private
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write_files(directory: str | os.PathLike, files: dict[str, Content]) -> None:
    """Write the files {name: data} of `directory` all or nothing: each goes to a fsync'd
    temporary file first, and only once all are written are they renamed into place, in
    order (put a checksum manifest last: it seals the set). A failure (disk full,
    read-only) raises an OutputError naming the file; other errors of a writing function
    pass through. Either way no temporary is left and nothing is replaced, unless the
    error says "partly replaced" (a rename failed)."""
    d = Path(directory)
    temps: dict[str, Path] = {}
    name, replacing = "", False
    try:
        for name, data in files.items():
            temps[name] = _write_temp(d / name, data)
        replacing = True
        for name in list(temps):
            os.replace(temps.pop(name), d / name)
        _fsync(d)
    except OutputError:
        raise
    except OSError as e:
        kept = "partly replaced" if replacing else "nothing was replaced"
        raise output_error(f"cannot write {d / name}", e, kept) from e
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: Content) -> Path:
    """Write the file `path` atomically (see atomic_write_files)."""
    path = Path(path)
    atomic_write_files(path.parent, {path.name: data})
    return path


def atomic_directory(path: str | os.PathLike, make: Callable[[Path], None]) -> Path:
    """Create the directory `path` atomically: make(tmp) fills a temporary directory beside
    it, whose files are fsync'd and which is then renamed to `path` (which must not
    exist). On failure the temporary is deleted; OSErrors become an OutputError."""
    path = Path(path)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_UMASK)
        make(tmp)
        for root, _, names in os.walk(tmp):
            for name in names:
                _fsync(Path(root, name))
            _fsync(Path(root))
        os.replace(tmp, path)
        _fsync(path.parent)
    except OutputError:
        raise
    except OSError as e:
        raise output_error(f"cannot write {path}", e) from e
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp)
    return path


def remove_stale_temps(target: str | os.PathLike) -> None:
    """Delete the temporaries of `target` that killed writers left. Only safe while
    holding the lock every writer of `target` holds."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for entry in target.parent.iterdir():
        if entry.name.startswith(_temp_prefix(target)) and entry.name.endswith(".tmp"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)


def sha256_file(path: str | os.PathLike, desc: str | None = None) -> str:
    """sha256 of a file, with a progress bar (stderr) for large files."""
    digest = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f, bytes_bar(size, desc or f"sha256 {Path(path).name}") as bar:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def bytes_bar(total: int | None, desc: str, min_total: int = 64 << 20) -> tqdm:
    """A progress bar in bytes, shown only for `total` >= min_total (small files finish
    before it would render) and only on a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        disable=(total or 0) < min_total or None,
        leave=False,
    )
