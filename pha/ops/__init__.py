"""Public functional ops. Every op has an eager ground truth in pha.ops.reference."""

from ._backend import backends
from .contrastive import prototype_loss, supcon_loss
from .distributed import all_gather_with_grad
from .hyper_adapter import hyper_adapter

__all__ = ["all_gather_with_grad", "backends", "hyper_adapter", "prototype_loss", "supcon_loss"]
