"""Launchers of the CUDA backend: pha._C_cuda registers them under torch.ops.pha_cuda with
exactly the signatures the ops expect (<op>_forward / <op>_backward)."""

from __future__ import annotations

import torch

from . import _backend

if _backend._load_cuda() is None:
    raise ImportError(_backend.unavailable_reason("cuda"))


def __getattr__(name: str):
    if hasattr(torch.ops.pha_cuda, name):
        return getattr(torch.ops.pha_cuda, name)
    raise AttributeError(f"the CUDA backend has no launcher {name!r}")
