from .config import HyperPELTConfig
from .model import HyperPELTModel

__all__ = ["HyperPELTConfig", "HyperPELTModel"]
