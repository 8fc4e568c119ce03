"""Checking a Hub folder before a push: every file the Hub needs is there and parses.

Example:
    >>> validate_hub_folder("runs/derain/hub")  # doctest: +SKIP
    ['README.md', 'config.json', 'eqreg_config.json', 'eqreg_model.json', 'model.safetensors']
"""

from __future__ import annotations

import os

from eqreg_hf.core.config import CONFIG_NAME as EQREG_CONFIG_NAME
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.hub.layout import CARD_NAME, WEIGHTS_NAMES, HubFolderError, read_folder_json

__all__ = ["hub_folder_files", "validate_hub_folder"]

# Never published: editor / OS leftovers and our own temporary files.
_IGNORED_NAMES = {".DS_Store", "__pycache__", ".git", ".cache", ".ipynb_checkpoints"}


def hub_folder_files(directory: str | os.PathLike) -> list[str]:
    """The files :func:`push_folder` uploads: every file under ``directory`` (POSIX paths,
    sorted), except hidden files/folders, ``__pycache__`` and ``*.tmp``."""
    root = os.fspath(directory)
    files = []
    for current, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _IGNORED_NAMES)
        for name in names:
            if name.startswith(".") or name in _IGNORED_NAMES or name.endswith(".tmp"):
                continue
            rel = os.path.relpath(os.path.join(current, name), root)
            files.append(rel.replace(os.sep, "/"))
    return sorted(files)


def validate_hub_folder(directory: str | os.PathLike) -> list[str]:
    """Check that a folder is complete before anything is uploaded; return its file list.

    Required: weights (model.safetensors, a sharded index with all its shards, or
    pytorch_model.bin), config.json, README.md (a model card whose metadata parses) and an
    ``eqreg_config.json`` that ``EqRegConfig.from_pretrained`` reads.

    Raises:
        HubFolderError: naming the missing or broken file and how to fix it.
    """
    from huggingface_hub import ModelCard

    root = os.fspath(directory)
    if not os.path.isdir(root):
        raise HubFolderError(
            f"No folder at {root!r}: write one with eqreg_hf.hub.write_hub_folder(model, {root!r}, ...)."
        )
    files = hub_folder_files(root)
    present = set(files)
    fix = "re-save the folder with eqreg_hf.hub.write_hub_folder(model, folder, ...)"
    if not present & set(WEIGHTS_NAMES):
        raise HubFolderError(f"No weights in {root!r}: expected model.safetensors; {fix}.")
    index = os.path.join(root, "model.safetensors.index.json")
    if "model.safetensors" not in present and os.path.isfile(index):
        shards = sorted(set(read_folder_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if s not in present]
        if missing:
            raise HubFolderError(f"Weight shards {missing} listed in {index!r} are missing; {fix}.")
    if "config.json" not in present:
        raise HubFolderError(
            f"No config.json in {root!r}: the model cannot be rebuilt from the weights; {fix}."
        )
    if CARD_NAME not in present:
        raise HubFolderError(
            f"No model card {CARD_NAME} in {root!r}: write one with "
            f"eqreg_hf.hub.make_model_card(...).save('{os.path.join(root, CARD_NAME)}') or {fix}."
        )
    try:
        ModelCard.load(os.path.join(root, CARD_NAME), ignore_metadata_errors=False)
    except Exception as err:  # yaml / model-index errors come in several types
        raise HubFolderError(
            f"The model card {os.path.join(root, CARD_NAME)!r} does not parse ({err}); {fix}."
        ) from err
    if EQREG_CONFIG_NAME not in present:
        raise HubFolderError(
            f"No {EQREG_CONFIG_NAME} in {root!r}: save the EQ-Reg settings with "
            f"EqRegConfig(...).save_pretrained('{root}') (EqRegConfig(weight=0) for a baseline)."
        )
    try:
        EqRegConfig.from_pretrained(os.path.join(root, EQREG_CONFIG_NAME))
    except (ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise HubFolderError(
            f"{os.path.join(root, EQREG_CONFIG_NAME)!r} does not parse ({err}); write it with "
            "EqRegConfig.save_pretrained(folder)."
        ) from err
    return files
