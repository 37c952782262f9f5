"""nn.Modules the methods are built from."""

from .adapter import Adapter
from .hypernetwork import HyperNetwork
from .prototypes import PrototypeBank
from .retriever import InstanceRetriever, masked_mean

__all__ = ["Adapter", "HyperNetwork", "InstanceRetriever", "PrototypeBank", "masked_mean"]
