"""The facts a model card states (:class:`CardFacts`) and their checks: what was measured, on which data,
how the model was trained.

Example:
    >>> facts = CardFacts(task="derain", metrics={"eval_psnr": 30.1, "epoch": 3.0}, dataset="Rain100L")
    >>> clean_metrics(facts.metrics)
    {'psnr': 30.1}
    >>> clean_dataset(facts.dataset)["split"]
    'test'
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "CardFacts",
    "DEGRADATION_FIELDS",
    "TASKS",
    "TASK_TAGS",
    "card_task",
    "clean_dataset",
    "clean_metrics",
    "saved_group",
    "saved_task",
]

# task -> (template file, Hub pipeline tag, model-index task name)
TASKS: dict[str, tuple[str, str, str]] = {
    "derain": ("derain.md", "image-to-image", "Image Deraining"),
    "classification": ("classification.md", "image-classification", "Image Classification"),
    "denoise": ("restore.md", "image-to-image", "Image Denoising"),
    "inpaint": ("restore.md", "image-to-image", "Image Inpainting"),
    "sr": ("restore.md", "image-to-image", "Image Super-Resolution"),
}
_TASK_ALIASES = {
    "deraining": "derain",
    "rain": "derain",
    "image-classification": "classification",
    "classify": "classification",
    "denoising": "denoise",
    "inpainting": "inpaint",
    "super-resolution": "sr",
}
# task -> its Hub tags (besides EQ-Reg's own); a tag naming another task is never put on a card
TASK_TAGS = {
    "derain": ["image-deraining", "deraining"],
    "classification": ["image-classification"],
    "denoise": ["image-restoration", "image-denoising", "denoising"],
    "inpaint": ["image-restoration", "image-inpainting", "inpainting"],
    "sr": ["image-restoration", "super-resolution"],
}
_SHARED_TAGS = {"image-restoration"}  # deraining is image restoration too
# task -> the degradation fields that apply to it (a field of another task is left off the card)
DEGRADATION_FIELDS = {
    "denoise": ("sigma",),
    "inpaint": ("mask_ratio", "sigma"),
    "sr": ("scale", "sr_filter", "sigma"),
    # the rain's source ("synthetic" or the dataset) and, for synthetic rain, RainSettings' fields
    "derain": (
        "rain",
        "density",
        "length",
        "angle_range",
        "angle_jitter",
        "width",
        "intensity",
        "num_layers",
        "blend",
    ),
}


def card_task(task: str) -> str:
    """The card's name of ``task`` (aliases such as "denoising" accepted); one line naming the tasks if
    unknown."""
    key = _TASK_ALIASES.get(task, task)
    if key not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Choose between {list(TASKS)}.")
    return key


@dataclass
class CardFacts:
    """What a model card says about a trained model (everything but the EQ-Reg settings and the format).

    Args:
        task: "derain", "classification" or a restoration task, "denoise" / "inpaint" / "sr" (template
            ``eqreg_hf/model_cards/<task>.md``; the three restoration tasks share ``restore.md``).
        metrics: measured values, e.g. ``{"psnr": 31.2, "ssim": 0.93, "equivariance_error": 0.04}``
            or ``{"accuracy": 0.71, ...}``; ``eval_``/``test_`` prefixes are dropped and the
            Trainer's runtime/epoch entries skipped.
        dataset: ``{"name": ..., "id": Hub id or None, "split": "test", "config", "revision",
            "train_split", "url"}`` (or just the name).
        training: flat dict of training settings (epochs, learning_rate, batch_size, ...).
        model_name: name shown on the card and in ``model-index`` (``write_hub_folder``'s default:
            ``<architecture>-<task>-<dataset>-<eqreg|baseline>``).
        equivariance_report: per-layer equivariance errors ``{layer: error}`` (an
            ``EquivarianceReport``) for a table on the card.
        equivariance_group: the group of the equivariance error (default: the config's ``C<t>``).
        degradation: a restoration task's forward model (``Degradation.to_dict()``), named and tabled.
        description: an extra paragraph under the summary (e.g. how the metrics were computed).
        base_model: Hub id of the model this one was fine-tuned from.
        architecture: e.g. "timm resnet18" (``write_hub_folder``'s default: from the model).
        repo_id: the repository the card will live in (for the snippets).
        license, tags: card metadata (default "apache-2.0", no extra tags).
        library_name: Hub ``library_name`` (default: the format's, e.g. "timm").
    """

    task: str
    metrics: Mapping[str, Any]
    dataset: Mapping[str, Any] | str
    training: Mapping[str, Any] | None = None
    model_name: str | None = None
    equivariance_report: Mapping[str, float] | None = None
    equivariance_group: str | None = None
    degradation: Mapping[str, Any] | None = None
    description: str | None = None
    base_model: str | None = None
    architecture: str | None = None
    repo_id: str | None = None
    license: str = "apache-2.0"
    tags: list[str] | None = None
    library_name: str | None = None


# Bookkeeping numbers the Trainer puts in its metric dicts; they are not results.
_NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "epoch"}
_DATASET_KEYS = ("name", "id", "split", "config", "revision", "train_split", "url")


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The card's metrics: ``eval_`` / ``test_`` dropped, bookkeeping skipped, 6 significant digits."""
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
                name = name[len(prefix) :]
        if name in _NOT_METRICS:
            continue
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(
                f"Metric {key!r} = {value!r} is not a finite number: pass measured numbers only."
            )
        out[name] = float(f"{float(value):.6g}")  # 6 significant digits: readable, keeps tiny errors
    return out


def clean_dataset(dataset: Mapping[str, Any] | str) -> dict[str, Any]:
    """The card's dataset: every key of ``_DATASET_KEYS`` (None if not given), split "test" by default."""
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


_BUILTIN_RAIN = "synthetic rain (eqreg-hf built-in)"  # the card's dataset name of train-derain's own rain


def saved_task(folder: str | os.PathLike) -> dict[str, Any]:
    """What a saved folder says about its run: ``{"task", "degradation", "equivariance_group"}``, each None
    when the folder does not say.

    Read from the ``eqreg`` block of the card's metadata (written by
    :func:`~eqreg_hf.hub.card.make_model_card`). A card written before that block existed gives its task by
    its ``model-index`` task name, and the degradation comes from ``training_log.json`` (train-restore
    wrote it there) or, for a derainer trained on the built-in rain, is that rain's.

    Example:
        >>> saved_task("runs/denoise")  # doctest: +SKIP
        {'task': 'denoise', 'degradation': {'task': 'denoise', 'sigma': 0.098...}, 'equivariance_group': 'C4'}
    """
    from huggingface_hub import ModelCard

    out: dict[str, Any] = {"task": None, "degradation": None, "equivariance_group": None}
    card_path = os.path.join(os.fspath(folder), "README.md")
    if not os.path.isfile(card_path):
        return out
    meta = ModelCard.load(card_path).data.to_dict()
    block = meta.get("eqreg")
    if isinstance(block, Mapping) and block.get("task"):
        return {**out, **{k: block.get(k) for k in out}}
    return {**out, **_from_older_card(os.fspath(folder), meta)}


def _from_older_card(folder: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The task and degradation of a card without the ``eqreg`` block (see :func:`saved_task`)."""
    from eqreg_hf.core.io import read_json_object

    names = {entry[2]: task for task, entry in TASKS.items()}
    results = (meta.get("model-index") or [{}])[0].get("results") or [{}]
    task = names.get((results[0].get("task") or {}).get("name"))
    dataset = (results[0].get("dataset") or {}).get("name")
    log_path = os.path.join(folder, "training_log.json")
    degradation = None
    if task in ("denoise", "inpaint", "sr") and os.path.isfile(log_path):
        degradation = read_json_object(log_path, "re-save the folder").get("degradation")
    elif task == "derain" and dataset:
        degradation = {"task": "derain", "rain": "synthetic" if dataset == _BUILTIN_RAIN else dataset}
    return {"task": task, "degradation": degradation}


def saved_group(config: Any, equivariance_group: str | None) -> str:
    """The group a saved model is shown and measured under: its EQ-Reg group when the term was on, else
    the group its card's equivariance error was measured under (``saved_task``), else its config's
    group, else C4.

    Example:
        >>> from eqreg_hf.core.config import EqRegConfig
        >>> saved_group(EqRegConfig(group="D4", weight=0.1), "C2"), saved_group(EqRegConfig(weight=0.0), "D4")
        ('D4', 'D4')
    """
    from eqreg_hf.core.groups import as_group

    if config is not None and config.stacks:
        return config.group_spec.name
    if equivariance_group:
        return as_group(equivariance_group).name
    return config.group_spec.name if config is not None and config.group_spec.size > 1 else "C4"
