from .config import FullFinetuneConfig
from .model import FullFinetuneModel

__all__ = ["FullFinetuneConfig", "FullFinetuneModel"]
