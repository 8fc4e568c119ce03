"""Hub-ready checkpoints, model cards and publishing for EQ-Reg models.

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
leaves half a checkpoint. ``push_folder`` checks the folder first and uploads it in ONE commit.

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
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.config import CONFIG_NAME as EQREG_CONFIG_NAME
from eqreg_hf.core.config import EqRegConfig

KINDS = ("mixin", "timm", "transformers")
MODEL_INFO_NAME = "eqreg_model.json"
WEIGHTS_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CARD_NAME = "README.md"

PAPER_TITLE = "A Regularization-Guided Equivariant Approach for Image Restoration"
PAPER_ARXIV = "2505.19799"
PAPER_URL = f"https://arxiv.org/abs/{PAPER_ARXIV}"
CITATION = """@inproceedings{bai2025eqreg,
  title     = {A Regularization-Guided Equivariant Approach for Image Restoration},
  author    = {Bai, Yulu and Fu, Jiahong and Xie, Qi and Meng, Deyu},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025},
  eprint    = {2505.19799},
  archivePrefix = {arXiv}
}"""

# task -> (template file, Hub pipeline tag, model-index task name)
TASKS: dict[str, tuple[str, str, str]] = {
    "derain": ("derain.md", "image-to-image", "Image Deraining"),
    "classification": ("classification.md", "image-classification", "Image Classification"),
}
_TASK_ALIASES = {"deraining": "derain", "rain": "derain", "image-classification": "classification",
                 "classify": "classification"}

# metric key -> display name (model-index ``name``); other keys are kept under their own name.
METRIC_NAMES = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "accuracy": "Top-1 accuracy",
    "top5_accuracy": "Top-5 accuracy",
    "equivariance_error": "Equivariance error",
    "loss": "Loss",
    "psnr_y": "PSNR Y (dB)",
    "ssim_y": "SSIM Y",
    "psnr_rgb": "PSNR RGB (dB)",
    "ssim_rgb": "SSIM RGB",
}
# Bookkeeping numbers the Trainer puts in its metric dicts; they are not results.
_NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "epoch"}
_DATASET_KEYS = ("name", "id", "split", "config", "revision", "train_split", "url")


class HubFolderError(ValueError):
    """A folder is not a complete Hub folder (the message names the missing file and the fix)."""


class HubPushError(RuntimeError):
    """Publishing failed before anything was uploaded (offline, no token, Hub refused)."""


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP / DataParallel / accelerate wrap the model; torch.compile keeps it in ``_orig_mod``.
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)


def detect_kind(model: nn.Module) -> str:
    """Which framework saves ``model``: ``"transformers"``, ``"timm"`` or ``"mixin"``.

    Example:
        >>> import timm
        >>> detect_kind(timm.create_model("resnet18", pretrained=False))
        'timm'
    """
    model = _unwrap(model)
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


def _check_kind(kind: str) -> str:
    if kind != "auto" and kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}. Choose between {['auto', *KINDS]}.")
    return kind


def _as_eqreg_config(eqreg_config: EqRegConfig | Mapping[str, Any] | None) -> EqRegConfig | None:
    if eqreg_config is None or isinstance(eqreg_config, EqRegConfig):
        return eqreg_config
    if isinstance(eqreg_config, Mapping):
        return EqRegConfig.from_dict(dict(eqreg_config))
    raise TypeError(
        f"eqreg_config must be an EqRegConfig, a dict of its fields or None, not {type(eqreg_config).__name__}."
    )


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
        raise FileExistsError(f"{target!r} already holds {entries[:5]}: pass overwrite=True or another directory.")
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

    Returns:
        The absolute path of the folder.

    Example:
        >>> save_folder(net, "out/hub", eqreg_config=EqRegConfig(weight=1e-2))  # doctest: +SKIP
    """
    kind = _check_kind(kind)
    model = _unwrap(model)
    if kind == "auto":
        kind = detect_kind(model)
    cfg = _as_eqreg_config(eqreg_config)
    target = os.path.abspath(os.fspath(directory))
    with _atomic_folder(target, overwrite) as tmp:
        info: dict[str, Any] = {"kind": kind, "class": _qualified_name(type(model))}
        if kind == "mixin":
            if not hasattr(model, "save_pretrained"):
                raise TypeError(f"kind='mixin' needs a PyTorchModelHubMixin model, got {type(model).__name__}.")
            model.save_pretrained(tmp)
        elif kind == "timm":
            import timm.models

            timm.models.save_for_hf(model, tmp, safe_serialization=True)
            info["architecture"] = model.pretrained_cfg.get("architecture")
        else:
            model.save_pretrained(tmp)  # safetensors is transformers' default format
            info["architecture"] = type(model).__name__
        if cfg is not None:
            cfg.save_pretrained(tmp)
        if card is not None:
            text = card if isinstance(card, str) else str(card)
            with open(os.path.join(tmp, CARD_NAME), "w", encoding="utf-8") as fh:
                fh.write(text)
        with open(os.path.join(tmp, MODEL_INFO_NAME), "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return target


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


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


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
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
            folder from the internet must not choose what code gets imported).

    Returns:
        ``(model in eval mode, EqRegConfig or None when the folder has no eqreg_config.json)``.

    Example:
        >>> model, cfg = load_folder("out/hub")  # doctest: +SKIP
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"No folder at {directory!r}: save one with eqreg_hf.hub.save_folder(model, folder).")
    kind = _check_kind(kind)
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


# --------------------------------------------------------------------------------------------
# model cards
# --------------------------------------------------------------------------------------------


def _task(task: str) -> str:
    key = _TASK_ALIASES.get(task, task)
    if key not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Choose between {list(TASKS)}.")
    return key


def _clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(
            f"metrics={metrics!r}: give a non-empty dict of measured values, e.g. "
            "{'psnr': 31.2, 'ssim': 0.93, 'equivariance_error': 0.04}."
        )
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = str(key).lower()
        for prefix in ("eval_", "test_"):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if name in _NOT_METRICS:
            continue
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"Metric {key!r} = {value!r} is not a finite number: pass measured numbers only.")
        out[name] = float(f"{float(value):.6g}")  # 6 significant digits: readable, keeps tiny errors
    return out


def _clean_dataset(dataset: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(dataset, str):
        dataset = {"name": dataset}
    if not isinstance(dataset, Mapping) or not dataset.get("name"):
        raise ValueError(
            f"dataset={dataset!r}: give a dict with at least 'name', e.g. "
            "{'name': 'Rain100L', 'id': 'user/rain100l', 'split': 'test'}."
        )
    unknown = sorted(set(dataset) - set(_DATASET_KEYS))
    if unknown:
        raise ValueError(f"Unknown dataset keys {unknown}. Valid keys: {list(_DATASET_KEYS)}.")
    out = {k: dataset.get(k) for k in _DATASET_KEYS}
    out["split"] = out["split"] or "test"
    return out


def group_name(group_order: int) -> str:
    """Human-readable name of C_t, e.g. ``"C4 (rotations by multiples of 90°)"``."""
    t = int(group_order)
    if t == 1:
        return "C1 (no rotation: EQ-Reg off)"
    step = 360 / t
    step_text = f"{step:g}°"
    exact = "exact on the pixel grid" if t in (2, 4) else "interpolated, compared inside the inscribed disk"
    return f"C{t} (rotations by multiples of {step_text}; {exact})"


def _md(value: Any) -> str:
    """One table cell: JSON-like text in backticks, with pipes escaped."""
    if value is None:
        return "–"
    text = value if isinstance(value, str) else json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`"


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _eqreg_rows(cfg: EqRegConfig) -> list[tuple[str, str]]:
    help_names = {
        "layers": "Tapped layers",
        "group_order": "Group order t",
        "weight": "Weight λ",
        "distance": "Distance d",
        "fields": "Field types",
        "layer_weights": "Per-layer weights",
        "include_identity": "k drawn from 0..t-1",
        "rotated_fraction": "Rotated fraction of the batch",
        "seed": "Sampler seed",
        "image_key": "Image key",
        "rotate_targets": "Task loss on the rotated half",
        "layouts": "Layouts",
        "prefix_tokens": "Prefix tokens",
        "interpolation": "Interpolation",
        "eps": "eps",
        "capture": "Feature capture",
    }
    rows = [("Group", group_name(cfg.group_order))]
    for key, value in cfg.to_dict().items():
        rows.append((f"{help_names.get(key, key)} (`{key}`)", _md(value)))
    return rows


def make_model_card(
    task: str,
    *,
    model_name: str,
    metrics: Mapping[str, Any],
    dataset: Mapping[str, Any] | str,
    eqreg_config: EqRegConfig | Mapping[str, Any] | None,
    training: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    architecture: str | None = None,
    kind: str | None = None,
    repo_id: str | None = None,
    equivariance_report: Mapping[str, float] | None = None,
    license: str = "apache-2.0",
    tags: list[str] | None = None,
    description: str | None = None,
    library_name: str | None = None,
) -> Any:
    """Build the model card (README.md) of an EQ-Reg model from the task's template.

    The metadata carries a ``model-index`` with one ``EvalResult`` per measured metric
    (PSNR/SSIM or accuracy, and the equivariance error ||T_k F(x) − F(R_k x)|| / ||F(R_k x)||);
    the text has the dataset, an EQ-Reg settings table, the training settings, intended use,
    limitations and the citation of Bai, Fu, Xie, Meng, CVPR 2025 (arXiv 2505.19799).

    Args:
        task: "derain" or "classification" (template ``eqreg_hf/model_cards/<task>.md``).
        model_name: name shown on the card and in ``model-index``.
        metrics: measured values, e.g. ``{"psnr": 31.2, "ssim": 0.93, "equivariance_error": 0.04}``
            or ``{"accuracy": 0.71, ...}``; ``eval_``/``test_`` prefixes are dropped and the
            Trainer's runtime/epoch entries skipped.
        dataset: ``{"name": ..., "id": Hub id or None, "split": "test", "config", "revision",
            "train_split", "url"}`` (or just the name).
        eqreg_config: the ``EqRegConfig`` used in training (None: a baseline without EQ-Reg).
        training: flat dict of training settings (epochs, learning_rate, batch_size, ...).
        base_model: Hub id of the model this one was fine-tuned from.
        architecture: e.g. "timm resnet18" (default: the model name).
        kind: "mixin", "timm" or "transformers": adds the framework's own loading snippet.
        repo_id: the repository the card will live in (for the snippets).
        equivariance_report: per-layer equivariance errors ``{layer: error}`` (an
            ``EquivarianceReport``) for a table on the card.
        license, tags: card metadata.
        library_name: Hub ``library_name`` (default: "timm" / "transformers" from ``kind``).
        description: an extra paragraph under the summary (e.g. how the metrics were computed).

    Returns:
        ``huggingface_hub.ModelCard``; ``card.save(path)`` or pass it to :func:`save_folder`.

    Example:
        >>> card = make_model_card("derain", model_name="tiny-derain", metrics={"psnr": 30.1},
        ...                        dataset={"name": "Rain100L"}, eqreg_config=EqRegConfig())
        >>> card.data.eval_results[0].metric_value
        30.1
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    task = _task(task)
    template_file, pipeline_tag, task_name = TASKS[task]
    values = _clean_metrics(metrics)
    data = _clean_dataset(dataset)
    cfg = _as_eqreg_config(eqreg_config)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}. Choose between {list(KINDS)} (or None).")
    training = dict(training or {})

    # model-index wants an id-like dataset type: the Hub id, else a slug of the name.
    dataset_type = data["id"] or re.sub(r"[^a-z0-9._-]+", "-", str(data["name"]).lower()).strip("-")
    t = cfg.group_order if cfg is not None else None
    eval_results = []
    for key, value in values.items():
        name = METRIC_NAMES.get(key, key)
        if key == "equivariance_error" and t is not None:
            name = f"{name} (C{t}, relative)"
        eval_results.append(EvalResult(
            task_type=pipeline_tag, task_name=task_name, dataset_type=dataset_type, dataset_name=data["name"],
            dataset_config=data["config"], dataset_split=data["split"], dataset_revision=data["revision"],
            metric_type=key, metric_value=value, metric_name=name,
        ))
    card_tags = ["eqreg", "rotation-equivariance", "equivariance-regularization",
                 "image-deraining" if task == "derain" else "image-classification"]
    if kind == "mixin":
        card_tags += ["model_hub_mixin", "pytorch_model_hub_mixin"]
    elif kind is not None:
        card_tags.append(kind)
    card_tags += list(tags or [])
    card_data = ModelCardData(
        model_name=model_name,
        license=license,
        library_name=library_name or {"timm": "timm", "transformers": "transformers"}.get(kind or ""),
        pipeline_tag=pipeline_tag,
        tags=sorted(set(card_tags)),
        datasets=[data["id"]] if data["id"] else None,
        base_model=base_model,
        eval_results=eval_results,
    )

    results_rows = [(METRIC_NAMES.get(k, k), f"{v:.6g}") for k, v in values.items()]
    eq_rows = [(f"`{layer}`", f"{float(err):.4g}") for layer, err in (equivariance_report or {}).items()]
    training_rows = [(f"`{k}`", _md(v)) for k, v in training.items()]
    template = resources.files("eqreg_hf.model_cards").joinpath(template_file).read_text(encoding="utf-8")
    # Same as ModelCard.from_template, but with trim_blocks so {% if %} lines leave no blank lines.
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    content = env.from_string(template).render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        description=description,
        architecture=architecture,
        base_model=base_model,
        kind=kind,
        repo_id=repo_id or f"YOUR_USER/{model_name}",
        dataset=data,
        metrics=values,
        results_table=_table(results_rows, ("Metric", "Value")),
        equivariance_table=_table(eq_rows, ("Layer", "Equivariance error")) if eq_rows else None,
        eqreg=cfg,
        eqreg_active=bool(cfg is not None and cfg.active),
        eqreg_table=_table(_eqreg_rows(cfg), ("Setting", "Value")) if cfg is not None else None,
        group=group_name(t) if cfg is not None and cfg.active else None,
        training_table=_table(training_rows, ("Setting", "Value")) if training_rows else None,
        paper_title=PAPER_TITLE,
        paper_url=PAPER_URL,
        citation=CITATION,
    )
    return ModelCard(content)


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
        model_name: default: the folder's name.
        kind: "auto", "mixin", "timm" or "transformers".
        **card_kwargs: more :func:`make_model_card` arguments (base_model, repo_id,
            equivariance_report, architecture, tags, description, license).

    Returns:
        The absolute path of the folder.

    Example:
        >>> write_hub_folder(model, "runs/derain/hub", task="derain", eqreg_config=cfg,
        ...                  metrics={"eval_psnr": 30.4, "eval_ssim": 0.91, "equivariance_error": 0.05},
        ...                  dataset="Rain100L", training={"epochs": 3})  # doctest: +SKIP
    """
    _check_kind(kind)
    model = _unwrap(model)
    if kind == "auto":
        kind = detect_kind(model)
    name = model_name or os.path.basename(os.path.abspath(os.fspath(directory)))
    if "architecture" not in card_kwargs:
        if kind == "timm":
            card_kwargs["architecture"] = f"timm `{model.pretrained_cfg.get('architecture', type(model).__name__)}`"
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
    card = make_model_card(task, model_name=name, metrics=metrics, dataset=dataset, eqreg_config=eqreg_config,
                           training=training, kind=kind, **card_kwargs)
    return save_folder(model, directory, eqreg_config=eqreg_config, card=card, kind=kind)


# --------------------------------------------------------------------------------------------
# publishing
# --------------------------------------------------------------------------------------------

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
        raise HubFolderError(f"No config.json in {root!r}: the model cannot be rebuilt from the weights; {fix}.")
    if CARD_NAME not in present:
        raise HubFolderError(
            f"No model card {CARD_NAME} in {root!r}: write one with "
            f"eqreg_hf.hub.make_model_card(...).save('{os.path.join(root, CARD_NAME)}') or {fix}."
        )
    try:
        ModelCard.load(os.path.join(root, CARD_NAME), ignore_metadata_errors=False)
    except Exception as err:  # yaml / model-index errors come in several types
        raise HubFolderError(f"The model card {os.path.join(root, CARD_NAME)!r} does not parse ({err}); {fix}.") \
            from err
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


def _offline() -> bool:
    from huggingface_hub import constants

    # The constant is read once at import; the variable may have been set afterwards.
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


_PLACEHOLDER_REPO = re.compile(r"YOUR_USER/[A-Za-z0-9_.\-]+")


def _card_bytes(root: str, name: str, repo_id: str) -> bytes | None:
    """The model card with its ``YOUR_USER/<name>`` placeholder (written when the repo id was not yet
    known) replaced by the repo it is pushed to; None for other files or a card without one."""
    if name != "README.md":
        return None
    with open(os.path.join(root, name), encoding="utf-8") as fh:
        text = fh.read()
    new = _PLACEHOLDER_REPO.sub(repo_id, text)
    return new.encode("utf-8") if new != text else None


def push_folder(
    path: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Publish a Hub folder: validate it, create the repo (and branch), upload it in ONE commit.

    Nothing is uploaded unless the folder is complete (:func:`validate_hub_folder`), the Hub is
    reachable (not ``HF_HUB_OFFLINE``) and a token exists. All files go in a single
    ``create_commit``, so the repository never shows half a model.

    Args:
        path: the folder written by :func:`write_hub_folder` / :func:`save_folder`.
        repo_id: "user/name" or "org/name".
        private: create the repository private (an existing repo keeps its visibility).
        revision: branch to push to (created from main if missing); None = main.
        commit_message: default "Upload EQ-Reg model with eqreg-hf".
        token: a Hub token; default ``HF_TOKEN`` or the token saved by ``hf auth login``.

    Returns:
        The URL of the commit.

    Raises:
        HubFolderError: the folder is incomplete (names the file and the fix).
        HubPushError: offline, no token, or the Hub refused (one line, says what to do).

    Example:
        >>> push_folder("runs/derain/hub", "me/derain-eqreg", private=True)  # doctest: +SKIP
    """
    import huggingface_hub
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub import errors as hub_errors
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    # Transport failures (DNS, refused connection, timeout) of the HTTP client the Hub library uses.
    network_errors = (OSError, getattr(hub_errors, "HTTPError", OSError))

    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id={repo_id!r} is not valid: use 'user/name' or 'org/name'.")
    files = validate_hub_folder(path)
    if _offline():
        raise HubPushError(
            "HF_HUB_OFFLINE is set, so nothing was uploaded: unset it (unset HF_HUB_OFFLINE) and run the push again."
        )
    token = token or huggingface_hub.get_token()
    if not token:
        raise HubPushError(
            "No Hugging Face token found, so nothing was uploaded: run `hf auth login` or set HF_TOKEN "
            "(a token with write access from https://huggingface.co/settings/tokens)."
        )
    root = os.path.abspath(os.fspath(path))
    api = HfApi(token=token)
    message = commit_message or "Upload EQ-Reg model with eqreg-hf"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=_card_bytes(root, f, repo_id)
                                         or os.path.join(root, f)) for f in files]
        info = api.create_commit(repo_id=repo_id, operations=operations, commit_message=message,
                                 revision=revision, repo_type="model")
    except OfflineModeIsEnabled as err:
        raise HubPushError(
            "huggingface_hub is in offline mode (HF_HUB_OFFLINE), so nothing was uploaded: unset it and retry."
        ) from err
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        hint = ("check that the token has write access to "
                f"{repo_id.split('/')[0]!r} (hf auth login)") if status in (401, 403) else "retry later"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HubPushError(f"The Hub refused the push of {repo_id!r} (HTTP {status}: {first}): {hint}.") from err
    except network_errors as err:
        raise HubPushError(
            f"Could not reach the Hub ({type(err).__name__}: {err}); nothing was committed: check the network "
            "(or HF_ENDPOINT) and run the push again."
        ) from err
    return getattr(info, "commit_url", None) or str(info)
