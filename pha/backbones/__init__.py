"""Where the methods attach to Hugging Face models: T5, BERT-family, LLaMA-family, GPT-2.

backbone.py          `Backbone` / `LayerSites`: a model's attach points and the adapter hooks
families.py          `detect_family`, `attach`: the supported families and their blocks
attention_prefix.py  `PrefixInjector`: key/value prefixes through transformers' AttentionInterface
"""

from .backbone import AdapterFn, Backbone, LayerSites
from .families import KINDS, SUPPORTED, attach, detect_family

__all__ = ["KINDS", "SUPPORTED", "AdapterFn", "Backbone", "LayerSites", "attach", "detect_family"]
