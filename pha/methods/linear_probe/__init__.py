from .config import LinearProbeConfig
from .model import LinearProbeModel

__all__ = ["LinearProbeConfig", "LinearProbeModel"]
