"""The Hugging Face models pha runs on (T5, BERT-family, LLaMA-family, GPT-2): loading them
by name, and where the methods attach.

loader.py            `load_backbone`: an offline alias, a local directory or a hub name
backbone.py          `Backbone` / `LayerSites`: a model's attach points and the adapter hooks
families.py          `detect_family`, `attach`: the supported families and their blocks
attention_prefix.py  `PrefixInjector`: key/value prefixes through transformers' AttentionInterface
"""

from .backbone import AdapterFn, Backbone, LayerSites
from .families import KINDS, SUPPORTED, attach, detect_family
from .loader import ALIASES, BACKBONE_KINDS, alias_of, backbone_kind, load_backbone

__all__ = [
    "ALIASES",
    "BACKBONE_KINDS",
    "KINDS",
    "SUPPORTED",
    "AdapterFn",
    "Backbone",
    "LayerSites",
    "alias_of",
    "attach",
    "backbone_kind",
    "detect_family",
    "load_backbone",
]
