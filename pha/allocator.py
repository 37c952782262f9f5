"""Keep freed memory in the process, so that a CPU training step reuses the pages the
previous step freed instead of faulting in fresh ones.

glibc's malloc serves every block above its mmap threshold (128 KiB, rising with use to
at most 32 MiB) from a new mmap and unmaps it on free, and it returns free memory at the
top of the heap to the OS. A train step allocates and frees the same large activations
every step, so each one comes back as new zero-filled pages, faulted in one at a time
(kernel time that counts as the step's CPU time). With every block served from the heap
and the heap never trimmed, a MiniLM train step at batch 128 took 6-24% less time on an
Intel Xeon (one thread, benchmarks/bench_train_step.py; README "Performance"). The cost
is that the process keeps its peak heap, which a training process reaches every step.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_KEEP = 2**31 - 1  # the largest trim threshold mallopt takes (an int)

# Environment settings by which a user has already chosen glibc's malloc behaviour.
USER_SETTINGS = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "GLIBC_TUNABLES",
)


def keep_freed_memory() -> bool:
    """On Linux with glibc, serve all allocations from the heap (no mmap) and do not trim
    it. Returns whether this was applied: not with another C library or OS, and not when
    the environment already sets glibc's malloc options (USER_SETTINGS), which then rule."""
    if not sys.platform.startswith("linux") or any(v in os.environ for v in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))
    logger.debug("keep_freed_memory: %s", "applied" if applied else "refused by mallopt")
    return applied
