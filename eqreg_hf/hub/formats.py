"""Hub formats: the frameworks a Hub folder is written in, one class each, in one registry (:data:`FORMATS`).

    "mixin"         a ``PyTorchModelHubMixin`` network (this library's own networks):
                    ``model.save_pretrained`` / ``Class.from_pretrained`` (the class from
                    :mod:`eqreg_hf.hub.model_classes`)
    "timm"          ``timm.models.save_for_hf`` / ``timm.create_model("local-dir:" + folder)``
                    (and ``"hf-hub:" + repo_id`` once pushed)
    "transformers"  ``model.save_pretrained`` / ``<Class>.from_pretrained``

A format knows how to recognise its models and its folders, save and load them, what the model card says about
it and where the preprocessing goes. Adding one is a :class:`HubFormat` subclass and one line in
:data:`FORMATS`.

Example:
    >>> sorted(FORMATS)
    ['mixin', 'timm', 'transformers']
    >>> hub_format("onnx")
    Traceback (most recent call last):
    ...
    ValueError: Unknown kind 'onnx'. Choose between ['auto', 'mixin', 'timm', 'transformers'].
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from torch import nn

from eqreg_hf.hub.layout import MODEL_INFO_NAME, HubFolderError, read_folder_json
from eqreg_hf.hub.model_classes import model_class
from eqreg_hf.hub.preprocessing import check_preprocessing, write_image_processor

__all__ = ["FORMATS", "HubFormat", "format_of_config", "format_of_model", "hub_format"]


class HubFormat:
    """One framework a Hub folder is written in. Subclasses set the class attributes and the methods."""

    name: str = ""
    library_name: str | None = None  # the card's ``library_name`` (None: the class's own, or none)
    card_tags: tuple[str, ...] = ()  # Hub tags the framework adds itself

    def owns_model(self, model: nn.Module) -> bool:
        """Whether this framework saves ``model``."""
        raise NotImplementedError

    def owns_config(self, config: Mapping[str, Any]) -> bool:
        """Whether a folder's ``config.json`` was written by this framework."""
        raise NotImplementedError

    def save(self, model: nn.Module, folder: str, preprocessing: Mapping[str, Any] | None) -> dict[str, Any]:
        """Write config.json + weights (+ the preprocessing) into ``folder``; returns more
        ``eqreg_model.json`` entries."""
        raise NotImplementedError

    def load(self, folder: str, model_cls: type | None) -> nn.Module:
        """Rebuild the model saved in ``folder``."""
        raise NotImplementedError

    def architecture(self, model: nn.Module) -> str:
        """The architecture's short name (for the default model name)."""
        return type(model).__name__

    def card_architecture(self, model: nn.Module) -> str:
        """The architecture as the card says it."""
        return f"`{type(model).__name__}` from `{type(model).__module__}`"

    def declared_card(self, model: nn.Module) -> tuple[str | None, list[str]]:
        """``(library_name, tags)`` the model's class declares for its card (none by default)."""
        return None, []


class MixinFormat(HubFormat):
    name = "mixin"
    card_tags = ("model_hub_mixin", "pytorch_model_hub_mixin")

    def owns_model(self, model: nn.Module) -> bool:
        from huggingface_hub import PyTorchModelHubMixin

        return isinstance(model, PyTorchModelHubMixin)

    def owns_config(self, config: Mapping[str, Any]) -> bool:
        return True  # any other config.json: the mixin writes its class's __init__ arguments

    def save(self, model: nn.Module, folder: str, preprocessing: Mapping[str, Any] | None) -> dict[str, Any]:
        if not hasattr(model, "save_pretrained"):
            raise TypeError(f"kind='mixin' needs a PyTorchModelHubMixin model, got {type(model).__name__}.")
        model.save_pretrained(folder)  # no preprocessing: our networks take any size, no normalisation
        return {}

    def load(self, folder: str, model_cls: type | None) -> nn.Module:
        if model_cls is None:
            info_path = os.path.join(folder, MODEL_INFO_NAME)
            path = read_folder_json(info_path).get("class") if os.path.isfile(info_path) else None
            if not path:
                raise HubFolderError(
                    f"{folder!r} holds a PyTorchModelHubMixin checkpoint without {MODEL_INFO_NAME}: "
                    "pass its class, load_folder(folder, model_cls=MyNet)."
                )
            model_cls = model_class(path)
        return model_cls.from_pretrained(folder)

    def declared_card(self, model: nn.Module) -> tuple[str | None, list[str]]:
        declared = getattr(getattr(model, "_hub_mixin_info", None), "model_card_data", None)
        if declared is None:
            return None, []
        return declared.library_name, list(declared.tags or [])


class TimmFormat(HubFormat):
    name = "timm"
    library_name = "timm"
    card_tags = ("timm",)

    def owns_model(self, model: nn.Module) -> bool:
        return type(model).__module__.startswith("timm.") and hasattr(model, "pretrained_cfg")

    def owns_config(self, config: Mapping[str, Any]) -> bool:
        return "architecture" in config and "pretrained_cfg" in config

    def save(self, model: nn.Module, folder: str, preprocessing: Mapping[str, Any] | None) -> dict[str, Any]:
        import timm.models

        before = model.pretrained_cfg
        if preprocessing:  # into pretrained_cfg, where timm's loader and resolve_data_config read it
            model.pretrained_cfg = {**before, **check_preprocessing(preprocessing)}
        try:
            timm.models.save_for_hf(model, folder, safe_serialization=True)
        finally:
            model.pretrained_cfg = before
        return {"architecture": before.get("architecture")}

    def load(self, folder: str, model_cls: type | None) -> nn.Module:
        import timm

        return timm.create_model("local-dir:" + folder, pretrained=True)

    def architecture(self, model: nn.Module) -> str:
        return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__

    def card_architecture(self, model: nn.Module) -> str:
        return f"timm `{model.pretrained_cfg.get('architecture', type(model).__name__)}`"


class TransformersFormat(HubFormat):
    name = "transformers"
    library_name = "transformers"
    card_tags = ("transformers",)

    def owns_model(self, model: nn.Module) -> bool:
        # A transformers model implies its modeling module is loaded: checking sys.modules avoids a
        # multi-second transformers import just to save a plain network.
        modeling = sys.modules.get("transformers.modeling_utils")
        return modeling is not None and isinstance(model, modeling.PreTrainedModel)

    def owns_config(self, config: Mapping[str, Any]) -> bool:
        return "model_type" in config

    def save(self, model: nn.Module, folder: str, preprocessing: Mapping[str, Any] | None) -> dict[str, Any]:
        if not preprocessing:
            model.save_pretrained(folder)  # safetensors is transformers' default format
            return {"architecture": type(model).__name__}
        # eqreg_preprocessing in config.json (read by eqreg_hf.data.classification_transform) and
        # preprocessor_config.json for AutoImageProcessor.
        had = hasattr(model.config, "eqreg_preprocessing")
        before = getattr(model.config, "eqreg_preprocessing", None)
        model.config.eqreg_preprocessing = check_preprocessing(preprocessing)
        try:
            model.save_pretrained(folder)
        finally:
            if had:
                model.config.eqreg_preprocessing = before
            else:
                del model.config.eqreg_preprocessing
        write_image_processor(folder, preprocessing)
        return {"architecture": type(model).__name__}

    def load(self, folder: str, model_cls: type | None) -> nn.Module:
        import transformers

        config = read_folder_json(os.path.join(folder, "config.json"))
        arch = (config.get("architectures") or [None])[0]
        cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
        # The name comes from the folder: only a transformers model class is used, else AutoModel.
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            cls = transformers.AutoModel
        return cls.from_pretrained(folder)

    def architecture(self, model: nn.Module) -> str:
        return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__

    def card_architecture(self, model: nn.Module) -> str:
        return f"transformers `{type(model).__name__}`"


# The registry: name -> format. Detection tries them in this order: "mixin" takes any config.json, so it stays
# last.
FORMATS: dict[str, HubFormat] = {f.name: f for f in (TimmFormat(), TransformersFormat(), MixinFormat())}


def hub_format(kind: str) -> HubFormat:
    """The registered format called ``kind``; a ValueError naming the registered ones otherwise."""
    if kind not in FORMATS:
        raise ValueError(f"Unknown kind {kind!r}. Choose between {['auto', *sorted(FORMATS)]}.")
    return FORMATS[kind]


def format_of_model(model: nn.Module) -> HubFormat:
    """The format that saves ``model`` (already unwrapped); a TypeError naming the formats otherwise."""
    for fmt in FORMATS.values():
        if fmt.owns_model(model):
            return fmt
    raise TypeError(
        f"Cannot save a {type(model).__module__}.{type(model).__qualname__}: save_folder handles "
        f"{sorted(FORMATS)} models. Make the network a PyTorchModelHubMixin "
        "(class Net(nn.Module, PyTorchModelHubMixin)), or build it with timm / transformers."
    )


def format_of_config(config: Mapping[str, Any]) -> HubFormat:
    """The format that wrote a folder's ``config.json``."""
    return next(fmt for fmt in FORMATS.values() if fmt.owns_config(config))
