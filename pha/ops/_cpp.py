"""Launchers of the C++ CPU backend: pha._C registers them under torch.ops.pha_cpu with
exactly the signatures the ops expect (<op>_forward / <op>_backward), so this module only
forwards attribute look-ups; `hasattr(_cpp, "<op>_forward")` says whether an op is built."""

from __future__ import annotations

import torch

from . import _backend

if _backend._load_cpp() is None:
    raise ImportError(_backend.unavailable_reason("cpp"))


def __getattr__(name: str):
    if hasattr(torch.ops.pha_cpu, name):
        return getattr(torch.ops.pha_cpu, name)
    raise AttributeError(f"the C++ backend has no launcher {name!r}")
