"""Triton kernels of pha (installed as pha.kernels). Each op: one file with its kernels,
launchers <op>_forward / <op>_backward, tested on CPU under TRITON_INTERPRET=1."""

from .contrastive import (  # noqa: F401
    prototype_backward,
    prototype_forward,
    supcon_backward,
    supcon_forward,
)
from .hyper_adapter import hyper_adapter_backward, hyper_adapter_forward  # noqa: F401
