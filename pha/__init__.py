"""pha: sample-efficient multi-task PEFT with hypernetwork-generated adapters."""

__version__ = "0.1.0"

from . import ops
from .auto import AutoPHAModel
from .methods import METHODS, MethodConfig
from .methods.adapter import AdapterConfig, AdapterModel
from .methods.full import FullFinetuneConfig, FullFinetuneModel
from .methods.hyperdecoder import HyperDecoderConfig, HyperDecoderModel
from .methods.hyperformer import HyperFormerConfig, HyperFormerModel
from .methods.hyperpelt import HyperPELTConfig, HyperPELTModel
from .methods.linear_probe import LinearProbeConfig, LinearProbeModel
from .methods.pha import PHAConfig, PrototypeHyperAdapterModel
from .peft_model import PHAModel, PHAOutput, get_model

__all__ = [
    "METHODS",
    "AutoPHAModel",
    "AdapterConfig",
    "AdapterModel",
    "FullFinetuneConfig",
    "FullFinetuneModel",
    "HyperDecoderConfig",
    "HyperDecoderModel",
    "HyperFormerConfig",
    "HyperFormerModel",
    "HyperPELTConfig",
    "HyperPELTModel",
    "LinearProbeConfig",
    "LinearProbeModel",
    "MethodConfig",
    "PHAConfig",
    "PHAModel",
    "PHAOutput",
    "PrototypeHyperAdapterModel",
    "get_model",
    "ops",
    "__version__",
]
