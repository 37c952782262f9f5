from .config import HyperFormerConfig
from .model import HyperFormerModel

__all__ = ["HyperFormerConfig", "HyperFormerModel"]
