"""The model card (README.md) of an EQ-Reg model: ``model-index`` metadata and the task's template.

The metadata carries one ``EvalResult`` per measured metric (PSNR/SSIM or accuracy, and the
equivariance error); the text comes from ``eqreg_hf/model_cards/<task>.md`` with the tables
rendered here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import torch

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.groups import Group, as_group
from eqreg_hf.core.paper import CITATION, PAPER_TITLE, PAPER_URL
from eqreg_hf.hub.arguments import KINDS, as_eqreg_config

__all__ = ["TASKS", "METRIC_NAMES", "group_name", "make_model_card"]

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
# task -> its Hub tags (besides EQ-Reg's own)
_TASK_TAGS = {
    "derain": ["image-deraining"],
    "classification": ["image-classification"],
    "denoise": ["image-restoration", "image-denoising"],
    "inpaint": ["image-restoration", "image-inpainting"],
    "sr": ["image-restoration", "super-resolution"],
}

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
    "output_equivariance_error": "Output equivariance error",
    "degraded_psnr": "PSNR of the degraded input (dB)",
}
# Bookkeeping numbers the Trainer puts in its metric dicts; they are not results.
_NOT_METRICS = {"runtime", "samples_per_second", "steps_per_second", "epoch"}
_DATASET_KEYS = ("name", "id", "split", "config", "revision", "train_split", "url")


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


def group_name(group_order: Any) -> str:
    """Human-readable name of C_t or D_t, e.g. ``"C4 (rotations by multiples of 90°; ...)"``.

    ``group_order``: t (C_t), a group name (``"C4"``, ``"D4"``) or a :class:`~eqreg_hf.core.groups.Group`.
    """
    group = as_group(group_order if isinstance(group_order, (str, Group)) else int(group_order))
    t = group.t
    if t == 1:
        return "D1 (left-right mirror images)" if group.dihedral else "C1 (no rotation: EQ-Reg off)"
    step = 360 / t
    step_text = f"{step:g}°"
    exact = "exact on the pixel grid" if t in (2, 4) else "interpolated, compared inside the inscribed disk"
    if group.dihedral:
        return f"D{t} (rotations by multiples of {step_text} and their mirror images; {exact})"
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
        "group": "Group name",
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
    rows = [("Group", group_name(cfg.group_spec))]
    for key, value in cfg.to_dict().items():
        if key == "weight" and value == "auto":
            value = f"auto (share {cfg.target_share:g})"  # the final λ is in the training table
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
    degradation: Mapping[str, Any] | None = None,
    equivariance_group: str | None = None,
) -> Any:
    """Build the model card (README.md) of an EQ-Reg model from the task's template.

    The metadata carries a ``model-index`` with one ``EvalResult`` per measured metric
    (PSNR/SSIM or accuracy, and the equivariance error ||T_k F(x) − F(R_k x)|| / ||F(R_k x)||);
    the text has the dataset, an EQ-Reg settings table, the training settings, intended use,
    limitations and the citation of Bai, Fu, Xie, Meng, CVPR 2025 (arXiv 2505.19799).

    Args:
        task: "derain", "classification" or a restoration task, "denoise" / "inpaint" / "sr" (template
            ``eqreg_hf/model_cards/<task>.md``; the three restoration tasks share ``restore.md``).
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
        degradation: a restoration task's forward model (``Degradation.to_dict()``), named and tabled.
        equivariance_group: the group of the equivariance error (default: the config's ``C<t>``).

    Returns:
        ``huggingface_hub.ModelCard``; ``card.save(path)`` or pass it to :func:`eqreg_hf.hub.save_folder`.

    Example:
        >>> card = make_model_card("derain", model_name="tiny-derain", metrics={"psnr": 30.1},
        ...                        dataset={"name": "Rain100L"}, eqreg_config=EqRegConfig())
        >>> card.data.eval_results[0].metric_value
        30.1
    """
    from huggingface_hub import ModelCard

    task = _task(task)
    values = _clean_metrics(metrics)
    data = _clean_dataset(dataset)
    cfg = as_eqreg_config(eqreg_config)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r}. Choose between {list(KINDS)} (or None).")
    card_data = _front_matter(
        task,
        model_name,
        values,
        data,
        cfg,
        kind=kind,
        license=license,
        tags=tags,
        base_model=base_model,
        library_name=library_name,
        equivariance_group=equivariance_group,
    )
    content = _render(
        TASKS[task][0],
        card_data=card_data.to_yaml(),
        model_name=model_name,
        description=description,
        architecture=architecture,
        base_model=base_model,
        kind=kind,
        repo_id=repo_id or f"YOUR_USER/{model_name}",
        dataset=data,
        training_table=_training_table(training),
        **_degradation_section(task, degradation),
        **_results_section(values, equivariance_report),
        **_eqreg_section(cfg),
    )
    return ModelCard(content)


def _eval_results(
    task: str,
    values: dict[str, float],
    data: dict[str, Any],
    cfg: EqRegConfig | None,
    equivariance_group: str | None = None,
) -> list[Any]:
    """``model-index``: one ``EvalResult`` per metric, all on the card's dataset and split."""
    from huggingface_hub import EvalResult

    _, pipeline_tag, task_name = TASKS[task]
    # model-index wants an id-like dataset type: the Hub id, else a slug of the name.
    dataset_type = data["id"] or re.sub(r"[^a-z0-9._-]+", "-", str(data["name"]).lower()).strip("-")
    results = []
    for key, value in values.items():
        name = METRIC_NAMES.get(key, key)
        if key == "equivariance_error" and equivariance_group is not None:
            name = f"{name} ({equivariance_group}, relative)"
        elif key == "equivariance_error" and cfg is not None:
            name = f"{name} (C{cfg.group_order}, relative)"
        results.append(
            EvalResult(
                task_type=pipeline_tag,
                task_name=task_name,
                dataset_type=dataset_type,
                dataset_name=data["name"],
                dataset_config=data["config"],
                dataset_split=data["split"],
                dataset_revision=data["revision"],
                metric_type=key,
                metric_value=value,
                metric_name=name,
            )
        )
    return results


def _card_tags(task: str, kind: str | None, tags: list[str] | None) -> list[str]:
    """The Hub tags: EQ-Reg's, the task's, the framework's (as the mixin itself tags) and the caller's."""
    card_tags = ["eqreg", "rotation-equivariance", "equivariance-regularization", *_TASK_TAGS[task]]
    if kind == "mixin":
        card_tags += ["model_hub_mixin", "pytorch_model_hub_mixin"]
    elif kind is not None:
        card_tags.append(kind)
    card_tags += list(tags or [])
    return sorted(set(card_tags))


def _front_matter(
    task: str,
    model_name: str,
    values: dict[str, float],
    data: dict[str, Any],
    cfg: EqRegConfig | None,
    *,
    kind: str | None,
    license: str,
    tags: list[str] | None,
    base_model: str | None,
    library_name: str | None,
    equivariance_group: str | None = None,
) -> Any:
    """The card's YAML metadata (``ModelCardData``), with the ``model-index`` of the measured metrics."""
    from huggingface_hub import ModelCardData

    return ModelCardData(
        model_name=model_name,
        license=license,
        library_name=library_name or {"timm": "timm", "transformers": "transformers"}.get(kind or ""),
        pipeline_tag=TASKS[task][1],
        tags=_card_tags(task, kind, tags),
        datasets=[data["id"]] if data["id"] else None,
        base_model=base_model,
        eval_results=_eval_results(task, values, data, cfg, equivariance_group),
    )


def _results_section(
    values: dict[str, float], equivariance_report: Mapping[str, float] | None
) -> dict[str, Any]:
    """The template's results: the metrics, their table and the per-layer equivariance errors (if given)."""
    results_rows = [(METRIC_NAMES.get(k, k), f"{v:.6g}") for k, v in values.items()]
    eq_rows = [(f"`{layer}`", f"{float(err):.4g}") for layer, err in (equivariance_report or {}).items()]
    return {
        "metrics": values,
        "results_table": _table(results_rows, ("Metric", "Value")),
        "equivariance_table": _table(eq_rows, ("Layer", "Equivariance error")) if eq_rows else None,
    }


def _eqreg_section(cfg: EqRegConfig | None) -> dict[str, Any]:
    """The template's EQ-Reg fields: the config, whether the term was on, its group and the settings table."""
    active = bool(cfg is not None and cfg.active)
    return {
        "eqreg": cfg,
        "eqreg_active": active,
        "group": group_name(cfg.group_spec) if active else None,
        "eqreg_table": _table(_eqreg_rows(cfg), ("Setting", "Value")) if cfg is not None else None,
    }


_DEGRADATION_WORDS = {"denoise": "denoising", "inpaint": "inpainting", "sr": "super-resolution"}


def _degradation_section(task: str, degradation: Mapping[str, Any] | None) -> dict[str, Any]:
    """The template's forward model: one sentence (``degradation_text``) and a table; None for other tasks."""
    if not degradation:
        return {"degradation_text": None, "degradation_table": None}
    d = dict(degradation)
    sigma = float(d.get("sigma") or 0.0)
    noise = f"Gaussian noise of σ = {sigma:.4g} ({sigma * 255:.3g}/255)" if sigma > 0 else "no noise"
    kind = d.get("task", task)
    if kind == "inpaint":
        text = f"{100 * float(d.get('mask_ratio', 0)):.3g}% of the pixels missing (a random mask per image), {noise}"
    elif kind == "sr":
        text = f"×{d.get('scale')} downsampling after a {d.get('sr_filter', 'bicubic')} anti-aliasing filter, {noise}"
    else:
        text = f"additive {noise}" if sigma > 0 else "no degradation"
    rows = [(f"`{k}`", _md(v)) for k, v in d.items()]
    return {
        "degradation_text": f"{_DEGRADATION_WORDS.get(kind, kind)}: {text}",
        "degradation_table": _table(rows, ("Setting", "Value")),
    }


def _training_table(training: Mapping[str, Any] | None) -> str | None:
    """The training settings as a table; None when none were recorded."""
    rows = [(f"`{k}`", _md(v)) for k, v in dict(training or {}).items()]
    return _table(rows, ("Setting", "Value")) if rows else None


def _render(template_file: str, **context: Any) -> str:
    """Render ``eqreg_hf/model_cards/<template_file>`` with ``context`` and the paper's title, link and citation.

    The same as ``ModelCard.from_template``, but with ``trim_blocks`` so ``{% if %}`` lines leave
    no blank lines.
    """
    import jinja2

    template = resources.files("eqreg_hf.model_cards").joinpath(template_file).read_text(encoding="utf-8")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(template).render(
        paper_title=PAPER_TITLE, paper_url=PAPER_URL, citation=CITATION, **context
    )
