"""Hub folders: save, load, write (with the model card) and check them before a push.

A *Hub folder* is what a model repository on the Hugging Face Hub holds:

    config.json          how to rebuild the network (format of its framework)
    model.safetensors    the weights
    eqreg_config.json    the EQ-Reg settings used in training (``EqRegConfig.save_pretrained``)
    eqreg_model.json     which framework wrote the folder (and, for our own networks, the class)
    README.md            the model card, with ``model-index`` metadata (PSNR/SSIM or accuracy
                         and the equivariance error)

Three kinds of networks are saved in the format their own framework reads back:

    "mixin"         a ``PyTorchModelHubMixin`` network (this library's own restoration nets):
                    ``model.save_pretrained`` / ``Class.from_pretrained``
    "timm"          ``timm.models.save_for_hf`` / ``timm.create_model("local-dir:" + folder)``
                    (and ``"hf-hub:" + repo_id`` once pushed)
    "transformers"  ``model.save_pretrained`` / ``<Class>.from_pretrained``

Folders are written atomically (built next to the target, then renamed), so a crash never
leaves half a checkpoint. ``push_folder`` (eqreg_hf.hub.push) checks the folder first with
``validate_hub_folder`` and uploads it in ONE commit.

Example:
    >>> from eqreg_hf.hub import write_hub_folder, load_folder, push_folder
    >>> write_hub_folder(model, "out/hub", task="derain", eqreg_config=cfg,
    ...                  metrics={"psnr": 31.2, "ssim": 0.93, "equivariance_error": 0.04},
    ...                  dataset={"name": "Rain100L", "split": "test"},
    ...                  training={"epochs": 100, "learning_rate": 2e-4})   # doctest: +SKIP
    >>> model, cfg = load_folder("out/hub")                                # doctest: +SKIP
    >>> push_folder("out/hub", "me/derain-eqreg", private=True)            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from eqreg_hf.core.config import CONFIG_NAME as EQREG_CONFIG_NAME
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import atomic_write_json, atomic_write_text, read_json_object
from eqreg_hf.core.unwrap import unwrap_model
from eqreg_hf.hub.arguments import KINDS, as_eqreg_config, check_kind, default_model_name, detect_kind
from eqreg_hf.hub.card import make_model_card
from eqreg_hf.hub.preprocessing import carried_preprocessing, write_image_processor

__all__ = [
    "KINDS",
    "HubFolderError",
    "detect_kind",
    "folder_kind",
    "hub_folder_files",
    "load_folder",
    "save_folder",
    "validate_hub_folder",
    "write_hub_folder",
]

MODEL_INFO_NAME = "eqreg_model.json"
WEIGHTS_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CARD_NAME = "README.md"

# Module prefixes of classes that moved since folders were first saved: old -> new. A folder's
# eqreg_model.json keeps the path its class had when it was written.
MOVED_MODULES = {
    "eqreg_hf.models.derain": "eqreg_hf.tasks.derain.networks",
    "eqreg_hf.models.classification": "eqreg_hf.tasks.classify.networks",
}


class HubFolderError(ValueError):
    """A folder is not a complete Hub folder (the message names the missing file and the fix)."""


@contextlib.contextmanager
def _atomic_folder(directory: str | os.PathLike, overwrite: bool) -> Iterator[str]:
    """Yield a temporary folder that replaces ``directory`` only if the block succeeds."""
    target = os.path.abspath(os.fspath(directory))
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(target):
        _check_replaceable(target, overwrite)
    # Same parent folder -> same file system, so the final rename is atomic.
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the final folder should look like any other
    try:
        yield tmp
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            try:
                os.replace(target, os.path.join(old, name))
            except BaseException:
                os.rmdir(old)
                raise
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(os.path.join(old, name), target)  # put the previous folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(target: str, overwrite: bool) -> None:
    if not os.path.isdir(target):
        raise FileExistsError(f"{target!r} exists and is not a folder: choose another directory.")
    entries = sorted(os.listdir(target))
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"{target!r} already holds {entries[:5]}: pass overwrite=True or another directory."
        )
    # Only a folder this module wrote may be replaced wholesale: a training output_dir with
    # checkpoints and logs must never be swept away by a mistyped path.
    if MODEL_INFO_NAME not in entries:
        raise FileExistsError(
            f"{target!r} exists and was not written by save_folder (it holds {entries[:5]}"
            f"{' ...' if len(entries) > 5 else ''}): save into a new folder, e.g. {os.path.join(target, 'hub')!r}."
        )


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


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

    The weights go through the model's own framework (see the module docstring): a
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
        kind: "auto" (detect), "mixin", "timm" or "transformers".
        overwrite: replace a folder previously written by ``save_folder`` (default True).
        preprocessing: the data config the model was trained with (timm / transformers: saved where their
            loaders read it, see :mod:`eqreg_hf.hub.preprocessing`), e.g. ``classification_transform(...).data_config``.

    Returns:
        The absolute path of the folder.

    Example:
        >>> save_folder(net, "out/hub", eqreg_config=EqRegConfig(weight=1e-2))  # doctest: +SKIP
    """
    kind = check_kind(kind)
    model = unwrap_model(model)
    if kind == "auto":
        kind = detect_kind(model)
    cfg = as_eqreg_config(eqreg_config)
    target = os.path.abspath(os.fspath(directory))
    with _atomic_folder(target, overwrite) as tmp, carried_preprocessing(model, kind, preprocessing):
        info: dict[str, Any] = {"kind": kind, "class": _qualified_name(type(model))}
        if kind == "mixin":
            if not hasattr(model, "save_pretrained"):
                raise TypeError(
                    f"kind='mixin' needs a PyTorchModelHubMixin model, got {type(model).__name__}."
                )
            model.save_pretrained(tmp)
        elif kind == "timm":
            import timm.models

            timm.models.save_for_hf(model, tmp, safe_serialization=True)
            info["architecture"] = model.pretrained_cfg.get("architecture")
        else:
            model.save_pretrained(tmp)  # safetensors is transformers' default format
            info["architecture"] = type(model).__name__
            if preprocessing:
                write_image_processor(tmp, preprocessing)
        if cfg is not None:
            cfg.save_pretrained(tmp)
        if card is not None:
            atomic_write_text(os.path.join(tmp, CARD_NAME), card if isinstance(card, str) else str(card))
        atomic_write_json(os.path.join(tmp, MODEL_INFO_NAME), info, indent=2, sort_keys=True)
    return target


def _read_json(path: str) -> dict[str, Any]:
    try:
        return read_json_object(path, "re-save the folder with eqreg_hf.hub.save_folder(model, folder)")
    except ValueError as err:
        raise HubFolderError(str(err)) from None


def folder_kind(directory: str | os.PathLike) -> str:
    """Which framework wrote a Hub folder: from ``eqreg_model.json``, else from ``config.json``.

    timm's config.json has ``architecture``, transformers' has ``model_type``; anything else
    with a config.json is taken for a ``PyTorchModelHubMixin`` folder.
    """
    directory = os.fspath(directory)
    info_path = os.path.join(directory, MODEL_INFO_NAME)
    if os.path.isfile(info_path):
        kind = _read_json(info_path).get("kind")
        if kind in KINDS:
            return kind
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise HubFolderError(
            f"No config.json in {directory!r}, so the model cannot be rebuilt: save the folder with "
            "eqreg_hf.hub.save_folder(model, folder)."
        )
    config = _read_json(config_path)
    if "architecture" in config and "pretrained_cfg" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    return "mixin"


def _current_module(module_name: str) -> str:
    """Where a module saved under an old name lives now (:data:`MOVED_MODULES`); other names unchanged.

    Example:
        >>> _current_module("eqreg_hf.models.derain")
        'eqreg_hf.tasks.derain.networks'
    """
    for old, new in MOVED_MODULES.items():
        if module_name == old or module_name.startswith(old + "."):
            return new + module_name[len(old) :]
    return module_name


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(_current_module(module_name))
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_folder(
    directory: str | os.PathLike,
    kind: str = "auto",
    *,
    model_cls: type | None = None,
) -> tuple[nn.Module, EqRegConfig | None]:
    """Load a Hub folder written by :func:`save_folder` (or by timm / transformers / the mixin).

    Args:
        directory: the folder (e.g. ``huggingface_hub.snapshot_download(repo_id)``).
        kind: "auto" (see :func:`folder_kind`), "mixin", "timm" or "transformers".
        model_cls: the ``PyTorchModelHubMixin`` class of a "mixin" folder. Default: the class
            recorded in ``eqreg_model.json``, imported only if it lives in ``eqreg_hf`` (a
            folder from the internet must not choose what code gets imported). A class recorded
            under a module that has since moved (:data:`MOVED_MODULES`) is imported from its new place.

    Returns:
        ``(model in eval mode, EqRegConfig or None when the folder has no eqreg_config.json)``.

    Example:
        >>> model, cfg = load_folder("out/hub")  # doctest: +SKIP
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No folder at {directory!r}: save one with eqreg_hf.hub.save_folder(model, folder)."
        )
    kind = check_kind(kind)
    if kind == "auto":
        kind = folder_kind(directory)
    if kind == "timm":
        import timm

        model = timm.create_model("local-dir:" + directory, pretrained=True)
    elif kind == "transformers":
        import transformers

        arch = (_read_json(os.path.join(directory, "config.json")).get("architectures") or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        if cls is None:
            cls = transformers.AutoModel
        model = cls.from_pretrained(directory)
    else:
        cls = model_cls or _mixin_class(directory)
        model = cls.from_pretrained(directory)
    cfg_path = os.path.join(directory, EQREG_CONFIG_NAME)
    cfg = EqRegConfig.from_pretrained(cfg_path) if os.path.isfile(cfg_path) else None
    return model.eval(), cfg


def _mixin_class(directory: str) -> type:
    info_path = os.path.join(directory, MODEL_INFO_NAME)
    path = _read_json(info_path).get("class") if os.path.isfile(info_path) else None
    if not path:
        raise HubFolderError(
            f"{directory!r} holds a PyTorchModelHubMixin checkpoint without {MODEL_INFO_NAME}: "
            "pass its class, load_folder(folder, model_cls=MyNet)."
        )
    if not path.startswith("eqreg_hf."):
        raise HubFolderError(
            f"{directory!r} was saved from {path!r}, outside eqreg_hf; for safety its class is not "
            "imported automatically: pass it, load_folder(folder, model_cls=ThatClass)."
        )
    return _import_class(path)


def write_hub_folder(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    task: str,
    eqreg_config: EqRegConfig | Mapping[str, Any] | None,
    metrics: Mapping[str, Any],
    dataset: Mapping[str, Any] | str,
    training: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    kind: str = "auto",
    preprocessing: Mapping[str, Any] | None = None,
    **card_kwargs: Any,
) -> str:
    """Write a complete, pushable Hub folder at the end of training: weights, config, eqreg_config.json, card.

    ``= save_folder(model, directory, eqreg_config=..., card=make_model_card(task, ...))``; the
    kind (and so the loading snippet and ``library_name`` on the card) is detected from the model.

    Args:
        model: the trained network (wrappers are unwrapped).
        directory: target folder (atomically replaced if ``save_folder`` wrote it before).
        task: "derain" or "classification".
        eqreg_config: the ``EqRegConfig`` used (None for a baseline; it is then not pushable:
            use ``EqRegConfig(weight=0)`` for baselines that should go to the Hub).
        metrics: measured metrics, e.g. the evaluation dict (``eval_`` prefixes are fine).
        dataset: ``{"name": ..., "id": ..., "split": ...}`` or a name.
        training: training settings for the card (epochs, lr, batch size, image size, ...).
        model_name: default: from the model and the task, ``<architecture>-<task>-<dataset>-<eqreg|baseline>``.
        kind: "auto", "mixin", "timm" or "transformers".
        preprocessing: the data config the model was trained with (see :func:`save_folder`).
        **card_kwargs: more :func:`make_model_card` arguments (base_model, repo_id,
            equivariance_report, architecture, tags, description, license).

    Returns:
        The absolute path of the folder.

    Example:
        >>> write_hub_folder(model, "runs/derain/hub", task="derain", eqreg_config=cfg,
        ...                  metrics={"eval_psnr": 30.4, "eval_ssim": 0.91, "equivariance_error": 0.05},
        ...                  dataset="Rain100L", training={"epochs": 3})  # doctest: +SKIP
    """
    check_kind(kind)
    model = unwrap_model(model)
    if kind == "auto":
        kind = detect_kind(model)
    name = model_name or default_model_name(model, kind, task, dataset, eqreg_config)
    if "architecture" not in card_kwargs:
        if kind == "timm":
            card_kwargs["architecture"] = (
                f"timm `{model.pretrained_cfg.get('architecture', type(model).__name__)}`"
            )
        elif kind == "transformers":
            card_kwargs["architecture"] = f"transformers `{type(model).__name__}`"
        else:
            card_kwargs["architecture"] = f"`{type(model).__name__}` from `{type(model).__module__}`"
    if kind == "mixin":
        # Keep what the network's class declares for the Hub (library_name=..., tags=[...]).
        declared = getattr(getattr(model, "_hub_mixin_info", None), "model_card_data", None)
        if declared is not None:
            card_kwargs.setdefault("library_name", declared.library_name)
            card_kwargs["tags"] = list(card_kwargs.get("tags") or []) + list(declared.tags or [])
    card = make_model_card(
        task,
        model_name=name,
        metrics=metrics,
        dataset=dataset,
        eqreg_config=eqreg_config,
        training=training,
        kind=kind,
        **card_kwargs,
    )
    return save_folder(
        model, directory, eqreg_config=eqreg_config, card=card, kind=kind, preprocessing=preprocessing
    )


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
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
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
