from .config import HyperDecoderConfig
from .model import HyperDecoderModel

__all__ = ["HyperDecoderConfig", "HyperDecoderModel"]
