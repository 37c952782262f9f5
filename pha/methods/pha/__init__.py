from .config import PHAConfig
from .model import PrototypeHyperAdapterModel

PHAForModel = PrototypeHyperAdapterModel  # the class's earlier name

__all__ = ["PHAConfig", "PHAForModel", "PrototypeHyperAdapterModel"]
