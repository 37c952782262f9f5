"""Public functional ops. Every op has an eager ground truth in pha.ops.reference."""

from ._backend import backends, cpu_features, cpu_isa, cpu_isa_paths
from .contrastive import prototype_loss, supcon_loss
from .distributed import all_gather_with_grad
from .hyper_adapter import hyper_adapter

__all__ = [
    "all_gather_with_grad",
    "backends",
    "cpu_features",
    "cpu_isa",
    "cpu_isa_paths",
    "hyper_adapter",
    "prototype_loss",
    "supcon_loss",
]
