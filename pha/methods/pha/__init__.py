from .config import PHAConfig
from .model import PHAForModel

__all__ = ["PHAConfig", "PHAForModel"]
