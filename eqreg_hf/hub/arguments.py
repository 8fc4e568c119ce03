"""What the folder writer and the model card both take from the caller: the model's format
(``kind``, detected from the model for "auto"; see :mod:`eqreg_hf.hub.formats`) and the EQ-Reg settings
(a config or its dict)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.unwrap import unwrap_model
from eqreg_hf.hub.formats import FORMATS, format_of_model, hub_format

__all__ = ["KINDS", "check_kind", "detect_kind", "as_eqreg_config", "default_model_name"]

# The formats a Hub folder is written in (the registry is eqreg_hf.hub.formats.FORMATS).
KINDS = tuple(sorted(FORMATS))


def check_kind(kind: str) -> str:
    """``kind`` itself if it is "auto" or a registered format; else a ValueError listing the choices."""
    if kind != "auto":
        hub_format(kind)
    return kind


def detect_kind(model: nn.Module) -> str:
    """Which format saves ``model``: ``"transformers"``, ``"timm"`` or ``"mixin"`` (see :data:`FORMATS`).

    Example:
        >>> import timm
        >>> detect_kind(timm.create_model("resnet18", pretrained=False))
        'timm'
    """
    return format_of_model(unwrap_model(model)).name


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
        "eqreg_config must be an EqRegConfig, a dict of its fields or None, "
        f"not {type(eqreg_config).__name__}."
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
    arch = hub_format(kind).architecture(unwrap_model(model))
    if isinstance(dataset, Mapping):
        data = str(dataset.get("id") or "").rsplit("/", 1)[-1] or re.sub(
            r"\(.*?\)", "", str(dataset.get("name") or "")
        )
    else:
        data = str(dataset or "")
    cfg = as_eqreg_config(eqreg_config)
    tag = cfg.mode if cfg is not None and cfg.stacks else "baseline"  # eqreg, pair (the control), baseline
    arch, word = _slug(str(arch)), _TASK_WORDS.get(task, _slug(task))
    word = "" if word[:6] in arch else word  # FastDerainer is a derainer already
    return "-".join(p for p in (arch, word, _slug(data), tag) if p)
