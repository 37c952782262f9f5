"""pha.AutoPHAModel: a saved pha model and its backbone in one call (like PEFT's AutoPeftModel)."""

from __future__ import annotations

import os

from .backbones import load_backbone
from .methods.base import MethodConfig
from .peft_model import PHAModel


class AutoPHAModel:
    """Loads the backbone a saved model's config records, then the model on it."""

    @staticmethod
    def from_pretrained(
        path: str | os.PathLike, is_trainable: bool = False, dtype=None
    ) -> PHAModel:
        """The model saved in `path` (PHAModel.save_pretrained) on the backbone its config
        names in base_model_name_or_path (an offline alias, a local directory or a hub
        name), loaded with pha.backbones.load_backbone (dtype: the backbone's, default its own).
        Frozen and in eval mode unless is_trainable=True. The tokenizer:
        pha.backbones.load_backbone(model.method_config.base_model_name_or_path)[1], or
        transformers.AutoTokenizer for a hub name or directory."""
        config = MethodConfig.from_pretrained(path)
        name = config.base_model_name_or_path
        if name is None:
            raise ValueError(
                f"{path}: the saved config records no base_model_name_or_path (the backbone "
                "was built in memory); load it yourself and call "
                "pha.PHAModel.from_pretrained(base_model, path)"
            )
        base_model, _, _ = load_backbone(name, dtype=dtype)
        return PHAModel.from_pretrained(base_model, path, is_trainable=is_trainable)
