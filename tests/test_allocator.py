"""pha.allocator.keep_freed_memory: a freed large tensor's pages are reused, not faulted
in again (glibc on Linux), and the user's own malloc settings are left alone."""

import os
import subprocess
import sys

import pytest

from pha.allocator import USER_SETTINGS

# Page faults of filling a fresh 64 MiB tensor, the fewest of five rounds (the heap's
# free blocks take a round or two to settle on one address).
_PROBE = """
import resource, torch
from pha.allocator import keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(5):
    before = faults()
    torch.empty(16 * 2**20).fill_(1.0)
    counts.append(faults() - before)
print(applied, min(counts))
"""


def _probe(env: dict) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc: Linux only")
def test_freed_pages_are_reused():
    applied, faults = _probe(_clean_env())
    assert applied
    assert faults < 100  # 64 MiB fresh would be ~16k page faults of 4 KiB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc: Linux only")
def test_user_malloc_settings_rule():
    env = {**_clean_env(), "MALLOC_MMAP_THRESHOLD_": "65536"}
    applied, faults = _probe(env)
    assert not applied
    assert faults > 1000  # mmapped and unmapped again: fresh pages each time
