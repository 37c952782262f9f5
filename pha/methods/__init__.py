"""The methods. Each package pha/methods/<name>/ holds {config,model}.py and registers its
model class with @register (pha.methods.base), which fills METHODS (name -> config class).
Packages added later (hyperpelt) are picked up here if present."""

import importlib
import importlib.util

from . import adapter, full, hyperdecoder, hyperformer, linear_probe, pha  # noqa: F401  (registration)
from .base import METHODS, MODELS, MethodConfig, PHAModel, PHAOutput, get_model, register

for _name in ("hyperpelt",):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")

__all__ = ["METHODS", "MODELS", "MethodConfig", "PHAModel", "PHAOutput", "get_model", "register"]
