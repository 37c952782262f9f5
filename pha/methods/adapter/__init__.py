from .config import AdapterConfig
from .model import AdapterModel

__all__ = ["AdapterConfig", "AdapterModel"]
