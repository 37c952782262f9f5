"""Fault injection for the tests of what pha writes: a full disk, a read-only file
system, and a snapshot of a directory to show a failed run changed nothing."""

import errno
import os

from pha import checkpoint


class _FullDisk:
    """A file whose writes fail with ENOSPC once `room` bytes are written."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            self.f.write(bytes(data[: self.room]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def fill_disk(monkeypatch, room=100):
    """Every file pha.checkpoint writes (through os.fdopen) runs out of space after `room`
    bytes."""
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k), room))


def read_only(monkeypatch):
    """No temporary file can be created (as on a read-only mount)."""

    def refuse(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(checkpoint.tempfile, "mkdtemp", refuse)


def snapshot(directory) -> dict:
    """Every file under `directory` by relative path and content, but the lock file (it
    only holds the pid of the last run)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if name != checkpoint.LOCK_NAME:
                with open(path, "rb") as f:
                    out[os.path.relpath(path, directory)] = f.read()
    return out
