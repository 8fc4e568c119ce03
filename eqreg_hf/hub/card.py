"""The model card (README.md) of an EQ-Reg model: ``model-index`` metadata and the task's template.

The metadata carries one ``EvalResult`` per measured metric (PSNR/SSIM or accuracy, and the
equivariance error); the text comes from ``eqreg_hf/model_cards/<task>.md`` with the tables
rendered here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.groups import Group, as_group
from eqreg_hf.core.paper import CITATION, PAPER_TITLE, PAPER_URL
from eqreg_hf.hub.arguments import as_eqreg_config
from eqreg_hf.hub.card_facts import (
    _SHARED_TAGS,
    DEGRADATION_FIELDS,
    TASK_TAGS,
    TASKS,
    CardFacts,
    card_task,
    clean_dataset,
    clean_metrics,
)
from eqreg_hf.hub.formats import HubFormat, hub_format

__all__ = ["TASKS", "METRIC_NAMES", "CardFacts", "group_name", "make_model_card"]

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


def _eqreg_rows(cfg: EqRegConfig, settled: Any = None) -> list[tuple[str, str]]:
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
        "mode": "Mode",
    }
    rows = [("Group", group_name(cfg.group_spec))]
    for key, value in cfg.to_dict().items():
        if key == "weight" and value == "auto":
            end = (
                f"settled on λ = {float(settled):.4g}"
                if settled is not None
                else "the final λ was not recorded"
            )
            value = f"auto (share {cfg.target_share:g}), {end}"
        if key == "mode" and value == "pair":
            value = (
                "pair: the stacked batch [x; R_g x], task loss on both halves, no EQ-Reg term (the control)"
            )
        rows.append((f"{help_names.get(key, key)} (`{key}`)", _md(value)))
    return rows


def make_model_card(
    facts: CardFacts, *, eqreg_config: EqRegConfig | Mapping[str, Any] | None, kind: str | None = None
) -> Any:
    """Build the model card (README.md) of an EQ-Reg model from the task's template.

    The metadata carries a ``model-index`` with one ``EvalResult`` per measured metric
    (PSNR/SSIM or accuracy, and the equivariance error ||T_k F(x) − F(R_k x)|| / ||F(R_k x)||);
    the text has the dataset, an EQ-Reg settings table, the training settings, intended use,
    limitations and the citation of Bai, Fu, Xie, Meng, CVPR 2025 (arXiv 2505.19799).

    Args:
        facts: what the card states (:class:`~eqreg_hf.hub.card_facts.CardFacts`); ``model_name`` is needed.
        eqreg_config: the ``EqRegConfig`` used in training (None: a baseline without EQ-Reg).
        kind: the Hub format (:data:`eqreg_hf.hub.formats.FORMATS`, e.g. "timm"): adds its loading snippet,
            tags and ``library_name``; None for none.

    Returns:
        ``huggingface_hub.ModelCard``; ``card.save(path)`` or pass it to :func:`eqreg_hf.hub.save_folder`.

    Example:
        >>> facts = CardFacts(task="derain", model_name="tiny-derain", metrics={"psnr": 30.1},
        ...                   dataset={"name": "Rain100L"})
        >>> make_model_card(facts, eqreg_config=EqRegConfig()).data.eval_results[0].metric_value
        30.1
    """
    from huggingface_hub import ModelCard

    task = card_task(facts.task)
    values = clean_metrics(facts.metrics)
    data = clean_dataset(facts.dataset)
    cfg = as_eqreg_config(eqreg_config)
    fmt = hub_format(kind) if kind is not None else None
    if not facts.model_name:
        raise ValueError(
            f"CardFacts(model_name={facts.model_name!r}): name the model, e.g. CardFacts(..., "
            "model_name='fastderainer-rain100l-eqreg') (write_hub_folder names it from the model)."
        )
    degradation = _task_degradation(task, facts.degradation)
    card_data = _front_matter(task, facts, values, data, cfg, fmt, degradation)
    content = _render(
        TASKS[task][0],
        card_data=card_data.to_yaml(),
        task=task,
        model_name=facts.model_name,
        description=facts.description,
        architecture=facts.architecture,
        base_model=facts.base_model,
        kind=kind,
        repo_id=facts.repo_id or f"YOUR_USER/{facts.model_name}",
        dataset=data,
        training_table=_training_table(facts.training),
        **_degradation_section(task, degradation),
        **_results_section(values, facts.equivariance_report),
        **_eqreg_section(cfg, (facts.training or {}).get("final_eqreg_weight")),
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
            name = f"{name} ({cfg.group_spec.name}, relative)"
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


def _card_tags(task: str, fmt: HubFormat | None, tags: list[str] | None) -> list[str]:
    """The Hub tags: EQ-Reg's, the task's, the format's (as the framework itself tags) and the caller's."""
    card_tags = ["eqreg", "rotation-equivariance", "equivariance-regularization", *TASK_TAGS[task]]
    card_tags += list(fmt.card_tags if fmt is not None else ()) + list(tags or [])
    # a class may declare every task it can do (DnCNN: denoising, inpainting, super-resolution): the card
    # names the run's task only
    other = {tag for name, own in TASK_TAGS.items() if name != task for tag in own}
    other -= set(TASK_TAGS[task]) | _SHARED_TAGS
    return sorted(set(card_tags) - other)


def _front_matter(
    task: str,
    facts: CardFacts,
    values: dict[str, float],
    data: dict[str, Any],
    cfg: EqRegConfig | None,
    fmt: HubFormat | None,
    degradation: dict[str, Any] | None,
) -> Any:
    """The card's YAML metadata (``ModelCardData``), with the ``model-index`` of the measured metrics and
    an ``eqreg`` block that programs read back (:func:`eqreg_hf.hub.card_facts.saved_task`): the task, its
    degradation and the group of the equivariance error."""
    from huggingface_hub import ModelCardData

    group = facts.equivariance_group or (
        cfg.group_spec.name if cfg is not None and cfg.group_spec.size > 1 else None
    )
    saved = {"task": task, "degradation": degradation, "equivariance_group": group}
    return ModelCardData(
        eqreg={k: v for k, v in saved.items() if v is not None},
        model_name=facts.model_name,
        license=facts.license,
        library_name=facts.library_name or (fmt.library_name if fmt is not None else None),
        pipeline_tag=TASKS[task][1],
        tags=_card_tags(task, fmt, facts.tags),
        datasets=[data["id"]] if data["id"] else None,
        base_model=facts.base_model,
        eval_results=_eval_results(task, values, data, cfg, facts.equivariance_group),
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


def _eqreg_section(cfg: EqRegConfig | None, settled: Any = None) -> dict[str, Any]:
    """The template's EQ-Reg fields: the config, whether the term was on, its group and the settings table
    (``settled``: the λ a ``weight="auto"`` run ended with)."""
    active = bool(cfg is not None and cfg.active)
    return {
        "eqreg": cfg,
        "eqreg_active": active,
        "group": group_name(cfg.group_spec) if active else None,
        "dihedral": active and cfg.group_spec.dihedral,
        "eqreg_table": _table(_eqreg_rows(cfg, settled), ("Setting", "Value")) if cfg is not None else None,
    }


_DEGRADATION_WORDS = {"denoise": "denoising", "inpaint": "inpainting", "sr": "super-resolution"}


def _task_degradation(task: str, degradation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The degradation as the card states it: ``task`` first, then the fields that apply to the task (a
    field only another task has, e.g. ``mask_ratio`` on a denoising run, is left off); a degradation of
    another task is refused."""
    if not degradation:
        return None
    d = dict(degradation)
    if d.setdefault("task", task) != task:
        raise ValueError(
            f"CardFacts(task={task!r}) with degradation={d!r}: the degradation is a {d['task']!r} one; "
            f"give the run's own (e.g. Degradation({task!r}, ...).to_dict())."
        )
    other = {f for name, fields in DEGRADATION_FIELDS.items() if name != task for f in fields}
    other -= set(DEGRADATION_FIELDS.get(task, ()))
    kept = {"task": task, **{k: v for k, v in d.items() if k != "task" and k not in other}}
    return json.loads(json.dumps(kept))  # plain JSON types (tuples -> lists): the YAML metadata reads back


def _degradation_text(task: str, d: dict[str, Any]) -> str:
    if task == "derain":
        source = d.get("rain", "synthetic")
        return (
            "synthetic rain streaks (eqreg-hf's rain model)"
            if source == "synthetic"
            else f"the rain of {source}"
        )
    sigma = float(d.get("sigma") or 0.0)
    noise = f"Gaussian noise of σ = {sigma:.4g} ({sigma * 255:.3g}/255)" if sigma > 0 else "no noise"
    gain = d.get("poisson_gain")
    noise = f"Poisson noise of gain γ = {float(gain):.4g} (y = γ·Poisson(Ax/γ))" if gain else noise
    if task == "inpaint":
        missing = 100 * float(d.get("mask_ratio", 0))
        text = f"{missing:.3g}% of the pixels missing (a random mask per image), {noise}"
    elif task == "sr":
        sr_filter = d.get("sr_filter", "bicubic")
        text = f"×{d.get('scale')} downsampling after a {sr_filter} anti-aliasing filter, {noise}"
    else:
        text = f"additive {noise}" if sigma > 0 else "no degradation"
    return f"{_DEGRADATION_WORDS.get(task, task)}: {text}"


def _degradation_section(task: str, degradation: dict[str, Any] | None) -> dict[str, Any]:
    """The template's forward model: one sentence (``degradation_text``) and a table; None without one."""
    if not degradation:
        return {"degradation_text": None, "degradation_table": None}
    rows = [(f"`{k}`", _md(v)) for k, v in degradation.items()]
    return {
        "degradation_text": _degradation_text(task, degradation),
        "degradation_table": _table(rows, ("Setting", "Value")),
    }


def _training_table(training: Mapping[str, Any] | None) -> str | None:
    """The training settings as a table; None when none were recorded."""
    rows = [(f"`{k}`", _md(v)) for k, v in dict(training or {}).items()]
    return _table(rows, ("Setting", "Value")) if rows else None


def _render(template_file: str, **context: Any) -> str:
    """Render ``eqreg_hf/model_cards/<template_file>`` with ``context`` and the paper's title, link and
    citation.

    The same as ``ModelCard.from_template``, but with ``trim_blocks`` so ``{% if %}`` lines leave
    no blank lines.
    """
    import jinja2

    template = resources.files("eqreg_hf.model_cards").joinpath(template_file).read_text(encoding="utf-8")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(template).render(
        paper_title=PAPER_TITLE, paper_url=PAPER_URL, citation=CITATION, **context
    )
