"""pha: sample-efficient multi-task PEFT with hypernetwork-generated adapters."""

__version__ = "0.1.0"

from . import ops  # noqa: E402
from .methods import METHODS, PHAModel, PHAOutput, get_model  # noqa: E402
from .methods.adapter import AdapterConfig  # noqa: E402
from .methods.full import FullFinetuneConfig  # noqa: E402
from .methods.hyperdecoder import HyperDecoderConfig  # noqa: E402
from .methods.hyperformer import HyperFormerConfig  # noqa: E402
from .methods.linear_probe import LinearProbeConfig  # noqa: E402
from .methods.pha import PHAConfig  # noqa: E402

__all__ = [
    "METHODS",
    "AdapterConfig",
    "FullFinetuneConfig",
    "HyperDecoderConfig",
    "HyperFormerConfig",
    "LinearProbeConfig",
    "PHAConfig",
    "PHAModel",
    "PHAOutput",
    "get_model",
    "ops",
    "__version__",
]
# Methods living in optional packages (pha/methods/<name>/) export their config too.
for _config in METHODS.values():
    if _config.__name__ not in globals():
        globals()[_config.__name__] = _config
        __all__.append(_config.__name__)
