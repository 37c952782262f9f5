"""Triton kernels of pha, installed as pha.kernels (setup.py maps this folder there). Each
op: one module with its kernels and launchers <op>_forward / <op>_backward, tested on CPU
under TRITON_INTERPRET=1.

The launchers load on first access (PEP 562), so importing this package never imports
triton. That matters beyond pha: run from the repository root (`python -m pha.train`), this
folder is also importable as a top-level `kernels`, which is the import name of Hugging
Face's `kernels` package. transformers probes for that one by importing whatever
`find_spec("kernels")` finds; the probe must be able to import this folder without triton
and see, from the missing `__version__`, that it is not that package.
"""

from __future__ import annotations

import importlib

# launcher -> the module of this package that defines it
_LAUNCHERS = {
    "hyper_adapter_forward": "hyper_adapter",
    "hyper_adapter_backward": "hyper_adapter",
    "supcon_forward": "contrastive",
    "supcon_backward": "contrastive",
    "prototype_forward": "contrastive",
    "prototype_backward": "contrastive",
}
__all__ = sorted(_LAUNCHERS)


def __getattr__(name: str):
    if name not in _LAUNCHERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    launcher = getattr(importlib.import_module(f"{__name__}.{_LAUNCHERS[name]}"), name)
    globals()[name] = launcher  # later look-ups skip __getattr__
    return launcher


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
