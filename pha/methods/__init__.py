"""The methods: pha/methods/<name>/{config,model}.py each, on the contract and registry of
pha/methods/base.py. Each model class registers itself with @register (filling METHODS:
name -> config class) when its package is imported; `import pha` imports them all."""

from .base import METHODS, MODELS, Context, Method, MethodConfig, expand_rows, register

__all__ = ["METHODS", "MODELS", "Context", "Method", "MethodConfig", "expand_rows", "register"]
