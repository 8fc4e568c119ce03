"""What the folder writer and the model card both take from the caller: the model's framework
(``kind``, detected from the model for "auto") and the EQ-Reg settings (a config or its dict)."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from typing import Any

from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.unwrap import unwrap_model

__all__ = ["KINDS", "check_kind", "detect_kind", "as_eqreg_config", "default_model_name"]

# The frameworks a Hub folder is written in (see eqreg_hf.hub.folder).
KINDS = ("mixin", "timm", "transformers")


def check_kind(kind: str) -> str:
    """``kind`` itself if it is "auto" or one of :data:`KINDS`; else a ValueError listing the choices."""
    if kind != "auto" and kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}. Choose between {['auto', *KINDS]}.")
    return kind


def detect_kind(model: nn.Module) -> str:
    """Which framework saves ``model``: ``"transformers"``, ``"timm"`` or ``"mixin"``.

    Example:
        >>> import timm
        >>> detect_kind(timm.create_model("resnet18", pretrained=False))
        'timm'
    """
    model = unwrap_model(model)
    # A transformers model implies its modeling module is loaded: checking sys.modules avoids a
    # multi-second transformers import just to save a plain network.
    modeling = sys.modules.get("transformers.modeling_utils")
    if modeling is not None and isinstance(model, modeling.PreTrainedModel):
        return "transformers"
    if type(model).__module__.startswith("timm.") and hasattr(model, "pretrained_cfg"):
        return "timm"
    from huggingface_hub import PyTorchModelHubMixin

    if isinstance(model, PyTorchModelHubMixin):
        return "mixin"
    raise TypeError(
        f"Cannot save a {type(model).__module__}.{type(model).__qualname__}: save_folder handles "
        f"{list(KINDS)} models. Make the network a PyTorchModelHubMixin "
        "(class Net(nn.Module, PyTorchModelHubMixin)), or build it with timm / transformers."
    )


def as_eqreg_config(eqreg_config: EqRegConfig | Mapping[str, Any] | None) -> EqRegConfig | None:
    """An ``EqRegConfig`` from a config, a dict of its fields, or None (returned as it is).

    Example:
        >>> as_eqreg_config({"weight": 0.5}).weight
        0.5
    """
    if eqreg_config is None or isinstance(eqreg_config, EqRegConfig):
        return eqreg_config
    if isinstance(eqreg_config, Mapping):
        return EqRegConfig.from_dict(dict(eqreg_config))
    raise TypeError(
        f"eqreg_config must be an EqRegConfig, a dict of its fields or None, not {type(eqreg_config).__name__}."
    )


_TASK_WORDS = {"derain": "derainer", "classification": "classifier"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_model_name(
    model: nn.Module,
    kind: str,
    task: str,
    dataset: Mapping[str, Any] | str | None,
    eqreg_config: EqRegConfig | Mapping[str, Any] | None,
) -> str:
    """A card's model name from the model and the task: ``<architecture>-<task>-<dataset>-<eqreg|baseline>``.

    Example:
        >>> import timm
        >>> default_model_name(timm.create_model("resnet18", pretrained=False), "timm", "classification",
        ...                    {"name": "CIFAR-100", "id": "uoft-cs/cifar100"}, {"weight": 0.1})
        'resnet18-classifier-cifar100-eqreg'
    """
    model = unwrap_model(model)
    if kind == "timm":
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    elif kind == "transformers":
        arch = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
    else:
        arch = type(model).__name__
    if isinstance(dataset, Mapping):
        data = str(dataset.get("id") or "").rsplit("/", 1)[-1] or re.sub(
            r"\(.*?\)", "", str(dataset.get("name") or "")
        )
    else:
        data = str(dataset or "")
    cfg = as_eqreg_config(eqreg_config)
    tag = "eqreg" if cfg is not None and cfg.active else "baseline"
    arch, word = _slug(str(arch)), _TASK_WORDS.get(task, _slug(task))
    word = "" if word[:6] in arch else word  # FastDerainer is a derainer already
    return "-".join(p for p in (arch, word, _slug(data), tag) if p)
