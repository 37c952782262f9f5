"""Launchers of the C++ CPU backend (pha._C, ops registered under torch.ops.pha_cpu)."""

from __future__ import annotations

import torch

from . import _backend

if _backend._load_cpp() is None:
    raise ImportError(_backend.unavailable_reason("cpp"))

_ops = torch.ops.pha_cpu
