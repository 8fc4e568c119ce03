"""Hub folders: save, load, write (with the model card) and check them before a push.

A *Hub folder* is what a model repository on the Hugging Face Hub holds:

    config.json          how to rebuild the network (format of its framework)
    model.safetensors    the weights
    eqreg_config.json    the EQ-Reg settings used in training (``EqRegConfig.save_pretrained``)
    eqreg_model.json     which framework wrote the folder (and, for our own networks, the class)
    README.md            the model card, with ``model-index`` metadata (PSNR/SSIM or accuracy
                         and the equivariance error)

Each network is saved in the format its own framework reads back: "mixin" (``PyTorchModelHubMixin``),
"timm" or "transformers", the registry :data:`eqreg_hf.hub.formats.FORMATS`. A "mixin" folder is loaded
only with a class of :mod:`eqreg_hf.hub.model_classes` (or one the caller passes): a downloaded folder
never chooses what code is imported.

Folders are written atomically (built next to the target, then renamed), so a crash never
leaves half a checkpoint. ``push_folder`` (eqreg_hf.hub.push) checks the folder first with
``validate_hub_folder`` and uploads it in ONE commit.

Example:
    >>> from eqreg_hf.hub import CardFacts, write_hub_folder, load_folder, push_folder
    >>> facts = CardFacts(task="derain", metrics={"psnr": 31.2, "ssim": 0.93, "equivariance_error": 0.04},
    ...                   dataset={"name": "Rain100L", "split": "test"},
    ...                   training={"epochs": 100, "learning_rate": 2e-4})
    >>> write_hub_folder(model, "out/hub", facts, eqreg_config=cfg)        # doctest: +SKIP
    >>> model, cfg = load_folder("out/hub")                                # doctest: +SKIP
    >>> push_folder("out/hub", "me/derain-eqreg", private=True)            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from eqreg_hf.core.config import CONFIG_NAME as EQREG_CONFIG_NAME
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import atomic_write_json, atomic_write_text
from eqreg_hf.core.unwrap import unwrap_model
from eqreg_hf.hub.arguments import KINDS, as_eqreg_config, check_kind, default_model_name, detect_kind
from eqreg_hf.hub.atomic import atomic_folder
from eqreg_hf.hub.card import make_model_card
from eqreg_hf.hub.card_facts import CardFacts
from eqreg_hf.hub.formats import FORMATS, format_of_config, format_of_model, hub_format
from eqreg_hf.hub.layout import CARD_NAME, MODEL_INFO_NAME, WEIGHTS_NAMES, HubFolderError, read_folder_json
from eqreg_hf.hub.model_classes import MOVED_MODULES, qualified_name
from eqreg_hf.hub.validate import hub_folder_files, validate_hub_folder

__all__ = [
    "CARD_NAME",
    "KINDS",
    "MODEL_INFO_NAME",
    "MOVED_MODULES",
    "WEIGHTS_NAMES",
    "HubFolderError",
    "detect_kind",
    "folder_kind",
    "hub_folder_files",
    "load_folder",
    "save_folder",
    "validate_hub_folder",
    "write_hub_folder",
]


def save_folder(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    eqreg_config: EqRegConfig | Mapping[str, Any] | None = None,
    card: Any = None,
    kind: str = "auto",
    overwrite: bool = True,
    preprocessing: Mapping[str, Any] | None = None,
) -> str:
    """Save ``model`` (+ ``eqreg_config.json`` and the card) into a Hub folder, atomically.

    The weights go through the model's own framework (:mod:`eqreg_hf.hub.formats`): a
    ``PyTorchModelHubMixin`` net -> ``save_pretrained`` (config.json from ``__init__``'s
    arguments + model.safetensors); timm -> ``timm.models.save_for_hf(safe_serialization=True)``;
    transformers -> ``save_pretrained``. The folder is built next to ``directory`` and renamed
    into place at the end; an existing folder is only replaced if ``save_folder`` wrote it.

    Args:
        model: the network (DDP / compiled wrappers are unwrapped).
        directory: target folder.
        eqreg_config: the ``EqRegConfig`` (or its dict) used in training; written as
            ``eqreg_config.json``. None writes none (a folder without it cannot be pushed).
        card: a ``huggingface_hub.ModelCard`` (e.g. from :func:`make_model_card`) or markdown
            text, written as README.md. None keeps what the framework writes (the mixin's
            default card; nothing for timm / transformers).
        kind: "auto" (detect) or a registered format, "mixin", "timm" or "transformers".
        overwrite: replace a folder previously written by ``save_folder`` (default True).
        preprocessing: the data config the model was trained with (timm / transformers: saved where
            their loaders read it, see :mod:`eqreg_hf.hub.preprocessing`), e.g.
            ``classification_transform(...).data_config``.

    Returns:
        The absolute path of the folder.

    Example:
        >>> save_folder(net, "out/hub", eqreg_config=EqRegConfig(weight=1e-2))  # doctest: +SKIP
    """
    kind = check_kind(kind)
    model = unwrap_model(model)
    fmt = format_of_model(model) if kind == "auto" else hub_format(kind)
    cfg = as_eqreg_config(eqreg_config)
    target = os.path.abspath(os.fspath(directory))
    with atomic_folder(target, overwrite) as tmp:
        info: dict[str, Any] = {"kind": fmt.name, "class": qualified_name(type(model))}
        info.update(fmt.save(model, tmp, preprocessing))
        if cfg is not None:
            cfg.save_pretrained(tmp)
        if card is not None:
            atomic_write_text(os.path.join(tmp, CARD_NAME), card if isinstance(card, str) else str(card))
        atomic_write_json(os.path.join(tmp, MODEL_INFO_NAME), info, indent=2, sort_keys=True)
    return target


def folder_kind(directory: str | os.PathLike) -> str:
    """Which format wrote a Hub folder: from ``eqreg_model.json``, else from ``config.json``.

    timm's config.json has ``architecture``, transformers' has ``model_type``; anything else
    with a config.json is taken for a ``PyTorchModelHubMixin`` folder.
    """
    directory = os.fspath(directory)
    info_path = os.path.join(directory, MODEL_INFO_NAME)
    if os.path.isfile(info_path):
        kind = read_folder_json(info_path).get("kind")
        if isinstance(kind, str) and kind in FORMATS:
            return kind
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise HubFolderError(
            f"No config.json in {directory!r}, so the model cannot be rebuilt: save the folder with "
            "eqreg_hf.hub.save_folder(model, folder)."
        )
    return format_of_config(read_folder_json(config_path)).name


def load_folder(
    directory: str | os.PathLike,
    kind: str = "auto",
    *,
    model_cls: type | None = None,
) -> tuple[nn.Module, EqRegConfig | None]:
    """Load a Hub folder written by :func:`save_folder` (or by timm / transformers / the mixin).

    Args:
        directory: the folder (e.g. ``huggingface_hub.snapshot_download(repo_id)``).
        kind: "auto" (see :func:`folder_kind`) or a registered format, "mixin", "timm" or "transformers".
        model_cls: the ``PyTorchModelHubMixin`` class of a "mixin" folder. Default: the class
            recorded in ``eqreg_model.json``, if it is a registered model class
            (:mod:`eqreg_hf.hub.model_classes`; a folder from the internet must not choose what code gets
            imported). A class recorded under a module that has since moved (:data:`MOVED_MODULES`) is
            imported from its new place.

    Returns:
        ``(model in eval mode, EqRegConfig or None when the folder has no eqreg_config.json)``.

    Raises:
        HubFolderError: the folder names a class that is not registered (nothing is imported).

    Example:
        >>> model, cfg = load_folder("out/hub")  # doctest: +SKIP
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No folder at {directory!r}: save one with eqreg_hf.hub.save_folder(model, folder)."
        )
    kind = check_kind(kind)
    fmt = hub_format(folder_kind(directory) if kind == "auto" else kind)
    model = fmt.load(directory, model_cls)
    cfg_path = os.path.join(directory, EQREG_CONFIG_NAME)
    cfg = EqRegConfig.from_pretrained(cfg_path) if os.path.isfile(cfg_path) else None
    return model.eval(), cfg


def write_hub_folder(
    model: nn.Module,
    directory: str | os.PathLike,
    facts: CardFacts,
    *,
    eqreg_config: EqRegConfig | Mapping[str, Any] | None,
    kind: str = "auto",
    preprocessing: Mapping[str, Any] | None = None,
) -> str:
    """Write a complete, pushable Hub folder at the end of training: weights, config, eqreg_config.json, card.

    ``= save_folder(model, directory, eqreg_config=..., card=make_model_card(facts, ...))``; the
    format (and so the loading snippet and ``library_name`` on the card) is detected from the model.
    What ``facts`` leaves out comes from the model: ``model_name``
    (``<architecture>-<task>-<dataset>-<eqreg|baseline>``), ``architecture``, and for a
    ``PyTorchModelHubMixin`` class the ``library_name`` and tags it declares.

    Args:
        model: the trained network (wrappers are unwrapped).
        directory: target folder (atomically replaced if ``save_folder`` wrote it before).
        facts: what the card states (:class:`~eqreg_hf.hub.card_facts.CardFacts`): task, metrics,
            dataset, training settings, ...
        eqreg_config: the ``EqRegConfig`` used (None for a baseline; it is then not pushable:
            use ``EqRegConfig(weight=0)`` for baselines that should go to the Hub).
        kind: "auto" or a registered format, "mixin", "timm" or "transformers".
        preprocessing: the data config the model was trained with (see :func:`save_folder`).

    Returns:
        The absolute path of the folder.

    Example:
        >>> facts = CardFacts(task="derain", dataset="Rain100L", training={"epochs": 3},
        ...                   metrics={"eval_psnr": 30.4, "eval_ssim": 0.91, "equivariance_error": 0.05})
        >>> write_hub_folder(model, "runs/derain/hub", facts, eqreg_config=cfg)  # doctest: +SKIP
    """
    kind = check_kind(kind)
    model = unwrap_model(model)
    fmt = format_of_model(model) if kind == "auto" else hub_format(kind)
    library_name, declared_tags = fmt.declared_card(model)
    tags = list(facts.tags or []) + declared_tags if declared_tags else facts.tags
    facts = dataclasses.replace(
        facts,
        model_name=facts.model_name
        or default_model_name(model, fmt.name, facts.task, facts.dataset, eqreg_config),
        architecture=facts.architecture or fmt.card_architecture(model),
        library_name=facts.library_name or library_name,
        tags=tags,
    )
    card = make_model_card(facts, eqreg_config=eqreg_config, kind=fmt.name)
    return save_folder(
        model, directory, eqreg_config=eqreg_config, card=card, kind=fmt.name, preprocessing=preprocessing
    )
