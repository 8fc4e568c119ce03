"""Restoration with EQ-Reg: denoising, inpainting and super-resolution; build, degrade, train, evaluate, save.

The library side of ``eqreg-hf train-restore`` (the command only parses arguments and calls these)::

    args = RestoreTrainingArguments(task="denoise", model="dncnn", train_size="1", max_steps=500, eval_every=50)
    cfg = EqRegConfig(layers="auto", group="C4", weight=1e-3, distance="mse")
    result = train_restorer(args, cfg)             # -> RestoreResult(model, metrics, report, history, ...)
    steps, train_psnr = result.curve("train_psnr")  # the training images, whole, fixed degradation
    _, eval_psnr = result.curve("eval_psnr")        # the held-out photos

Clean photos are cropped at random and degraded on the fly (:mod:`eqreg_hf.data.restore`, deepinv's
physics); the held-out photos are degraded once with a fixed seed, the same for every run. Methods: plain
(no EQ-Reg), ``augment="C4"``, EQ-Reg (an :class:`EqRegConfig`), deepinv's output-level equivariant imaging
loss (``ei_weight > 0``), the strict network (``model="strict-c4"``). DnCNN and the strict nets train
through :func:`eqreg_hf.train.loop.train_loop`, Swin2SR through the Trainer (``swin2sr.fit_with_trainer``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import atomic_write_json, check_output_dir
from eqreg_hf.core.unwrap import unwrap_model
from eqreg_hf.tasks import conventions as hf
from eqreg_hf.tasks.restore.evaluate import (
    RunEvaluation,
    check_model_output,
    evaluate_restorer,
    run_evaluation,
)
from eqreg_hf.tasks.validation import check_choice, check_non_negative, check_positive_ints
from eqreg_hf.train.loop import TrainHistory, train_loop

__all__ = [
    "RestoreTrainingArguments",
    "RestoreResult",
    "build_model",
    "resolve_layers",
    "check_model_output",
    "train_restorer",
    "evaluate_restorer",
    "save_restorer",
    "restore_model_choices",
    "method_name",
]

_SWIN2SR = "swin2sr"
_AUGMENTS = ("none", "C2", "C4", "D4")
_EI_GROUPS = ("C4", "D4")
_MIXED_PRECISION = ("no", "bf16", "fp16")
_TRAIN_SIZE = re.compile(r"^(all|[1-9][0-9]*|region[1-9][0-9]*)$")
_QUICK_CAPS = {
    "photo_size": 32,
    "crop_size": 16,
    "batch_size": 2,
    "max_steps": 3,
    "logging_steps": 1,
    "equiv_images": 1,
}
_QUICK_MODELS = {
    "dncnn": {"channels": 8, "depth": 3},
    "strict-c4": {"num_fields": 2, "depth": 3},
    "strict-d4": {"num_fields": 1, "depth": 3},
    _SWIN2SR: {},
}
_POSITIVE = (
    "scale",
    "photo_size",
    "crop_size",
    "batch_size",
    "max_steps",
    "gradient_accumulation_steps",
    "logging_steps",
    "equiv_images",
)
_POSITIVE_OR_NONE = ("eval_every", "eval_max_images")


def restore_model_choices() -> tuple[str, ...]:
    """The networks ``model=`` accepts: :data:`~eqreg_hf.tasks.restore.networks.RESTORER_CHOICES` and ``"swin2sr"``."""
    from eqreg_hf.tasks.restore.networks import RESTORER_CHOICES

    return (*RESTORER_CHOICES, _SWIN2SR)


@dataclass
class RestoreTrainingArguments(hf.HFRunArguments):
    """Settings of a restoration run (everything except EQ-Reg, which is an :class:`EqRegConfig`).

    Each field is a ``--flag`` of ``eqreg-hf train-restore`` (underscores -> dashes); names shared with
    ``transformers.TrainingArguments`` mean the same. Checked on construction (one-line errors).
    ``quick=True`` caps the sizes and steps (:data:`_QUICK_CAPS`) and picks a tiny network: seconds, for CI.
    """

    task: str = field(
        default="denoise", metadata={"help": "'denoise', 'inpaint' or 'sr' (super-resolution)."}
    )
    sigma: float | None = field(
        default=None,
        metadata={
            "help": "Gaussian noise std on [0, 1] images (default: 25/255 for denoise, 0 for inpaint / sr)."
        },
    )
    mask_ratio: float = field(
        default=0.5, metadata={"help": "inpaint: fraction of missing pixels, in [0, 1)."}
    )
    scale: int = field(default=2, metadata={"help": "sr: downsampling / upsampling factor (2, 3 or 4)."})
    model: str = field(default="dncnn", metadata={"help": "Network: dncnn, strict-c4, strict-d4 or swin2sr."})
    model_kwargs: dict | None = field(
        default=None,
        metadata={
            "help": 'Constructor arguments of the network as JSON, e.g. \'{"channels": 16, "depth": 5}\' (dncnn), '
            "'{\"num_fields\": 8}' (strict-*), Swin2SRConfig fields (swin2sr)."
        },
    )
    source: str = field(
        default="photos",
        metadata={
            "help": "Clean images: 'photos' (built-in, offline), a local image folder, or a Hub dataset id."
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "Cache / data folder of the clean images."})
    photo_size: int = field(default=128, metadata={"help": "photos: side of the built-in photos."})
    train_size: str = field(
        default="all",
        metadata={
            "help": "Training set: 'all', 'N' (the first N images) or 'regionS' (one S x S centre region of the first)."
        },
    )
    crop_size: int = field(default=48, metadata={"help": "Training crop side (a multiple of scale for sr)."})
    batch_size: int = field(
        default=8, metadata={"help": "Crops per micro-batch (before EQ-Reg's rotated copies)."}
    )
    max_steps: int = field(default=500, metadata={"help": "Optimizer steps.", "aliases": ["steps"]})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Adam learning rate (cosine decay to 1%).", "aliases": ["lr"]}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'bf16' or 'fp16'."})
    augment: str = field(
        default="none",
        metadata={
            "help": "Random group element applied to each clean crop: 'none', 'C2', 'C4' or 'D4' (the augmentation baseline)."
        },
    )
    ei_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of deepinv's output-level equivariant imaging loss added to the MSE (0: off; the EI baseline)."
        },
    )
    ei_group: str = field(default="C4", metadata={"help": "Group of the EI loss's transforms: 'C4' or 'D4'."})
    eval_every: int | None = field(
        default=None,
        metadata={
            "help": "Steps between evaluations of the training and held-out PSNR (the curves; default: only at the end)."
        },
    )
    eval_max_images: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many held-out (and training) images."}
    )
    eval_group: str | None = field(
        default=None,
        metadata={
            "help": "Group of the equivariance error: 'C4', 'D4', ... (default: EQ-Reg's group, else C4)."
        },
    )
    equiv_images: int = field(
        default=2, metadata={"help": "Held-out images the equivariance error is measured on."}
    )
    curve_errors: bool = field(
        default=False,
        metadata={
            "help": "Also measure the equivariance error at every eval_every evaluation (slower; default: at the end)."
        },
    )
    logging_steps: int = field(
        default=10, metadata={"help": "Steps per logging window.", "aliases": ["log_every"]}
    )
    seed: int = field(default=0, metadata={"help": "Seed of weights, crops, degradations and sampling."})
    output_dir: str | None = field(default=None, metadata={"help": "Save the model here (a Hub folder)."})
    run_dir: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoints and TensorBoard logs (default: <output_dir>-run, beside the Hub folder)."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    quick: bool = field(
        default=False,
        metadata={"help": "A tiny network on tiny photos for a few steps (seconds; for CI and a first try)."},
    )

    def __post_init__(self) -> None:
        if self.quick:
            for name, cap in _QUICK_CAPS.items():
                setattr(self, name, min(getattr(self, name), cap))
            self.eval_max_images = min(self.eval_max_images or 2, 2)
            if self.task == "sr" and isinstance(self.scale, int) and self.scale > 0:
                self.crop_size = max(self.scale, self.crop_size - self.crop_size % self.scale)
        self.validate()

    def validate(self) -> None:
        """Refuse bad values (called on construction): the message names the value, the choices and the fix."""
        from eqreg_hf.data.restore import RESTORE_TASKS, SCALES

        check_choice(
            "task",
            self.task,
            RESTORE_TASKS,
            "(denoise: Gaussian noise, inpaint: missing pixels, sr: x2-x4 "
            "super-resolution); pass --task denoise|inpaint|sr.",
        )
        check_choice("model", self.model, restore_model_choices())
        check_choice("augment", self.augment, _AUGMENTS, "('none' turns the augmentation off.)")
        check_choice("ei_group", self.ei_group, _EI_GROUPS)
        check_choice("mixed_precision", self.mixed_precision, _MIXED_PRECISION)
        check_positive_ints(self, _POSITIVE + _POSITIVE_OR_NONE, optional=_POSITIVE_OR_NONE)
        check_non_negative(self, ("learning_rate", "ei_weight"))
        check_non_negative(self, ("seed",), integer=True)
        self._check_degradation(SCALES)
        self._check_sizes()
        if self.eval_group is not None:
            from eqreg_hf.core.groups import as_group

            as_group(self.eval_group)  # a one-line error for an unknown group name
        if self.model == _SWIN2SR and (self.ei_weight > 0 or self.save_steps or self.resume_from_checkpoint):
            raise ValueError(
                "model='swin2sr' trains through the Trainer with an MSE task loss: it takes no ei_weight, "
                "save_steps or resume_from_checkpoint here; drop them or use dncnn / strict-*."
            )
        self.check_conventions()  # report_to, save_steps, push_to_hub / hub_model_id

    def _check_degradation(self, scales: tuple[int, ...]) -> None:
        if self.sigma is not None and (
            isinstance(self.sigma, bool)
            or not isinstance(self.sigma, (int, float))
            or not 0 <= self.sigma < math.inf
        ):
            raise ValueError(
                f"sigma={self.sigma!r} is not valid: give the noise std on [0, 1] images, >= 0 (e.g. "
                "--sigma 0.098 for 25/255, 0 for none), or leave it out for the task's default."
            )
        if (
            isinstance(self.mask_ratio, bool)
            or not isinstance(self.mask_ratio, (int, float))
            or not 0 <= self.mask_ratio < 1
        ):
            raise ValueError(
                f"mask_ratio={self.mask_ratio!r} is not valid: give the fraction of missing pixels in "
                "[0, 1), e.g. --mask-ratio 0.5."
            )
        if self.task == "sr":
            check_choice(
                "scale",
                self.scale,
                scales,
                "The networks upsample by these factors only; pass --scale 2, 3 or 4.",
            )
            if self.crop_size % self.scale:
                raise ValueError(
                    f"crop_size={self.crop_size} is not divisible by scale={self.scale}: the low-resolution "
                    f"crop would not be whole; use --crop-size {self.crop_size - self.crop_size % self.scale or self.scale}."
                )

    def _check_sizes(self) -> None:
        size = str(self.train_size)
        if not _TRAIN_SIZE.match(size):
            raise ValueError(
                f"train_size={self.train_size!r} is not valid: give 'all', a number of images N "
                "(e.g. '1') or 'regionS' (one S x S centre region of the first image, e.g. 'region96')."
            )
        region = int(size[len("region") :]) if size.startswith("region") else None
        if self.source == "photos" and self.crop_size > self.photo_size:
            raise ValueError(
                f"crop_size={self.crop_size} is larger than the photos (photo_size={self.photo_size}): "
                f"use --crop-size {self.photo_size} or less, or larger photos."
            )
        if region is not None and self.crop_size > region:
            raise ValueError(
                f"crop_size={self.crop_size} is larger than the training region ({size}): use "
                f"--crop-size {region} or less, or a larger region."
            )

    def build_degradation(self) -> Any:
        """The forward model of this run (:class:`~eqreg_hf.data.restore.Degradation`)."""
        from eqreg_hf.data.restore import Degradation

        return Degradation(self.task, sigma=self.sigma, mask_ratio=self.mask_ratio, scale=self.scale)

    def network_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the network: ``model_kwargs``, on top of the tiny ones under ``quick``."""
        base = dict(_QUICK_MODELS.get(self.model, {})) if self.quick else {}
        return {**base, **dict(self.model_kwargs or {})}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RestoreResult:
    """What :func:`train_restorer` returns.

    ``history``: a :class:`~eqreg_hf.train.loop.TrainHistory` for both paths: ``history.evals`` one dict per
    evaluation (every ``eval_every`` steps and at the end): ``step``, ``train_psnr``/``train_ssim`` (the training
    images, whole), ``eval_psnr``/``eval_ssim`` (held out), ``equivariance_error``; ``history.logs`` the loss
    windows (``step``, ``task_loss``, ``eqreg_loss``, ...; the Trainer's log history for Swin2SR).
    """

    model: nn.Module
    metrics: dict[str, float]
    report: Any  # EquivarianceReport of the taps on held-out images
    history: TrainHistory
    eqreg_config: EqRegConfig | None
    degradation: dict[str, Any]
    train_time_s: float
    eval_group: str = "C4"  # the group of the equivariance error
    output_dir: str | None = None
    hub_url: str | None = None

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one history key, e.g. ``result.curve("eval_psnr")``."""
        rows = [row for row in self.history.evals if key in row]
        return [int(row["step"]) for row in rows], [float(row[key]) for row in rows]


def build_model(args: RestoreTrainingArguments) -> nn.Module:
    """The network ``args.model`` for ``args.task`` / ``args.scale`` (``args.network_kwargs()``)."""
    if args.model == _SWIN2SR:
        from eqreg_hf.tasks.restore.swin2sr import build_swin2sr

        return build_swin2sr(args.task, args.scale, **args.network_kwargs())
    from eqreg_hf.tasks.restore.networks import build_restorer

    return build_restorer(args.model, task=args.task, scale=args.scale, **args.network_kwargs())


def resolve_layers(model: nn.Module, config: EqRegConfig) -> EqRegConfig:
    """``layers="auto"`` written out as ``model.eqreg_layers(<field size>)`` (t for C_t, 2t for D_t) for a network
    that names its taps (DnCNN, the strict nets; they refuse a width the field size does not divide); other
    models (Swin2SR) keep ``"auto"``, the core's policy."""
    if config.layers in ("auto", "model") and callable(getattr(model, "eqreg_layers", None)):
        return dataclasses.replace(config, layers=model.eqreg_layers(config.group_spec.size))
    return config


def _clean_sets(args: RestoreTrainingArguments, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any]:
    """(the training images after ``train_size``, the held-out images or pairs)."""
    from eqreg_hf.data.restore import load_clean_images, select_training_set

    common = {"photo_size": args.photo_size, "data_dir": args.data_dir}
    if train_dataset is None:
        train_dataset = load_clean_images(args.source, "train", **common)
    if eval_dataset is None:
        eval_dataset = load_clean_images(args.source, "test", **common)
    return select_training_set(train_dataset, args.train_size), eval_dataset


def method_name(args: RestoreTrainingArguments, eqreg_config: EqRegConfig | None = None) -> str:
    """The method a run stands for: ``"strict-c4"``, ``"eqreg-C4"``, ``"ei-C4"``, ``"augment-D4"`` or ``"plain"``
    (joined with "+" when several apply)."""
    parts = [args.model] if args.model.startswith("strict") else []
    if eqreg_config is not None and eqreg_config.active:
        parts.append(f"eqreg-{eqreg_config.group_spec.name}")
    if args.ei_weight > 0:
        parts.append(f"ei-{args.ei_group}")
    if args.augment != "none":
        parts.append(f"augment-{args.augment}")
    return "+".join(parts) or "plain"


def _uses_trainer(model: nn.Module) -> bool:
    """A transformers model (Swin2SR) trains through the Trainer; checked without importing transformers."""
    modeling = sys.modules.get("transformers.modeling_utils")
    return modeling is not None and isinstance(unwrap_model(model), modeling.PreTrainedModel)


def _train_data(clean_train: Any, degradation: Any, args: RestoreTrainingArguments) -> Any:
    """The training images as degraded random crops ``{"pixel_values", "labels"}`` (augmented per ``args.augment``)."""
    from eqreg_hf.data.restore import RestoreTransform

    augment = None if args.augment == "none" else args.augment
    return clean_train.with_transform(
        RestoreTransform(degradation, args.crop_size, seed=args.seed, augment=augment, train=True)
    )


def _fit_loop(
    model: nn.Module,
    data: Any,
    degradation: Any,
    args: RestoreTrainingArguments,
    eqreg_config: EqRegConfig | None,
    evaluation: RunEvaluation | None,
    desc: str,
) -> tuple[Any, Any]:
    """Adam + cosine decay to 1% through ``train_loop``, sampling crops with replacement (so a one-image training
    set fills every batch); the task loss is MSE, or MSE + deepinv's EI term. Returns (history, accelerator)."""
    from eqreg_hf.data.restore import restore_collate

    num_samples = args.max_steps * args.batch_size * args.gradient_accumulation_steps
    sampler = torch.utils.data.RandomSampler(
        data,
        replacement=True,
        num_samples=num_samples,
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch_size, sampler=sampler, collate_fn=restore_collate
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=args.max_steps, eta_min=args.learning_rate * 0.01
    )
    task_loss: Any = F.mse_loss
    if args.ei_weight > 0:
        from eqreg_hf.tasks.restore.baselines import EquivariantImagingLoss

        task_loss = EquivariantImagingLoss(model, degradation, group=args.ei_group, weight=args.ei_weight)
    config = {**args.to_dict(), **(eqreg_config or EqRegConfig(weight=0.0)).to_dict()}
    accelerator = hf.start_loop_run(args, None, config)
    history = train_loop(
        model,
        loader,
        optimizer,
        task_loss,
        eqreg_config,
        max_steps=args.max_steps,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        lr_scheduler=scheduler,
        eval_fn=evaluation,
        eval_every=args.eval_every if evaluation is not None else None,
        log_every=args.logging_steps,
        accelerator=accelerator,
        progress=args.progress,
        seed=args.seed,
        desc=desc,
        save_steps=args.save_steps,
        checkpoint_dir=hf.loop_run_dir(args),
        resume_from_checkpoint=args.resume_from_checkpoint,
    )
    return history, accelerator


def _fit_trainer(
    model: nn.Module,
    data: Any,
    args: RestoreTrainingArguments,
    eqreg_config: EqRegConfig | None,
    evaluation: RunEvaluation | None,
) -> list[dict[str, Any]]:
    """Swin2SR through ``EqRegTrainer`` (MSE on the reconstruction); returns the Trainer's log history."""
    from eqreg_hf.tasks.restore.swin2sr import fit_with_trainer

    logs, _ = fit_with_trainer(
        model,
        data,
        eqreg_config,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        seed=args.seed,
        logging_steps=args.logging_steps,
        output_dir=hf.loop_run_dir(args),
        eval_fn=evaluation,
        eval_every=args.eval_every if evaluation is not None else None,
        progress=args.progress,
        report_to=args.report_to,
    )
    return list(logs)


def _check_methods(
    args: RestoreTrainingArguments, model: nn.Module, eqreg_config: EqRegConfig | None
) -> None:
    if args.ei_weight > 0 and eqreg_config is not None and eqreg_config.active:
        raise ValueError(
            f"ei_weight={args.ei_weight} together with EQ-Reg is not supported: the EI loss's second "
            "forward would pass through EQ-Reg's armed taps. Use one of them (--ei-weight 0, or no "
            "--eqreg.weight); the benchmark compares them side by side."
        )
    if args.ei_weight > 0 and _uses_trainer(model):
        raise ValueError(
            f"ei_weight={args.ei_weight} with a transformers model: the Trainer path takes an MSE task "
            "loss only; use --ei-weight 0, or a dncnn / strict-* model for the EI baseline."
        )


def train_restorer(
    args: RestoreTrainingArguments,
    eqreg_config: EqRegConfig | None = None,
    *,
    model: nn.Module | None = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    save: bool = True,
    desc: str = "train",
) -> RestoreResult:
    """Train a restorer (plain, augmented, EQ-Reg, EI or strict) and evaluate it on whole held-out images.

    Args:
        args: :class:`RestoreTrainingArguments` (task, degradation, network, data, budget, baselines).
        eqreg_config: EQ-Reg settings (None or weight 0: no EQ-Reg). ``layers="auto"``: the network's own taps
            (:func:`resolve_layers`), or the core's policy for Swin2SR.
        model: a network to train instead of building ``args.model`` (its output must match the target's size;
            a transformers model trains through the Trainer).
        train_dataset: clean training images (a ``datasets.Dataset`` with an "image" column) instead of
            ``args.source``'s train split; ``args.train_size`` is applied to it.
        eval_dataset: clean held-out images, or a list of ``(degraded, clean)`` tensor pairs.
        save: write ``args.output_dir`` (if set) at the end.
        desc: progress-bar label.

    Returns:
        A :class:`RestoreResult`: ``metrics`` (psnr, ssim, degraded_psnr, train_psnr, train_ssim,
        equivariance_error, output_equivariance_error, train_time_s (periodic evaluations excluded),
        time_per_step_s, eval_time_s), ``history`` (``.evals``: the curves, also ``result.curve("eval_psnr")``; ``.logs``), ``report``.

    Raises:
        ValueError: a model whose output size does not match the target, a tap the group's fields do not
            divide, EI combined with EQ-Reg or with Swin2SR; all before any training.
    """
    if save and args.output_dir:
        check_output_dir(args.output_dir, "output_dir")  # before training, not after it
    hf.preflight(args, args.output_dir if save else None, hf.loop_run_dir(args))
    torch.manual_seed(args.seed)
    degradation = args.build_degradation()
    model = build_model(args) if model is None else model
    eqreg_config = resolve_layers(model, eqreg_config) if eqreg_config is not None else None
    _check_methods(args, model, eqreg_config)
    check_model_output(model, degradation, args.crop_size, eqreg_config)
    clean_train, clean_eval = _clean_sets(args, train_dataset, eval_dataset)
    group = args.eval_group or (
        eqreg_config.group_spec.name if eqreg_config is not None and eqreg_config.active else "C4"
    )
    evaluation = run_evaluation(
        model,
        degradation,
        clean_train,
        clean_eval,
        group=group,
        max_images=args.eval_max_images,
        equiv_images=args.equiv_images,
        curve_errors=args.curve_errors,
    )
    data = _train_data(clean_train, degradation, args)
    periodic = evaluation if args.eval_every else None
    start, accelerator = time.perf_counter(), None
    if _uses_trainer(model):
        history = TrainHistory(
            logs=_fit_trainer(model, data, args, eqreg_config, periodic), steps=args.max_steps
        )
    else:
        history, accelerator = _fit_loop(model, data, degradation, args, eqreg_config, periodic, desc)
    train_time = time.perf_counter() - start - evaluation.seconds
    model = unwrap_model(model)
    metrics, report = evaluation.final(model, args.max_steps)
    metrics.update(
        train_time_s=train_time, time_per_step_s=train_time / args.max_steps, eval_time_s=evaluation.seconds
    )
    history.evals, history.train_time_s = evaluation.history, train_time
    if history.series("eqreg_weight"):
        metrics["eqreg_weight"] = history.series("eqreg_weight")[-1]  # where weight="auto" settled
    if accelerator is not None:
        hf.end_loop_run(
            accelerator,
            history,
            metrics,
            report,
            {"eval/equivariance_per_layer": report.plot} if len(report) else {},
        )
    result = RestoreResult(
        model=model,
        metrics=metrics,
        report=report,
        history=history,
        eqreg_config=eqreg_config,
        degradation=degradation.to_dict(),
        train_time_s=train_time,
        eval_group=group,
    )
    if save and args.output_dir:
        result.output_dir = save_restorer(result, args.output_dir, args)
        result.hub_url = hf.push_trained(args, result.output_dir, f"a {args.task} restorer")
    return result


# The training settings the model card lists.
_CARD_TRAINING = (
    "model",
    "train_size",
    "crop_size",
    "batch_size",
    "max_steps",
    "learning_rate",
    "gradient_accumulation_steps",
    "augment",
    "ei_weight",
    "ei_group",
    "seed",
    "mixed_precision",
)
_CARD_METRICS = ("psnr", "ssim", "equivariance_error", "output_equivariance_error", "degraded_psnr")


def save_restorer(
    result: RestoreResult, output_dir: str | os.PathLike, args: RestoreTrainingArguments
) -> str:
    """Write the trained model as a Hub folder: weights (``save_pretrained``; Swin2SR in transformers' format),
    ``config.json``, ``eqreg_config.json`` (weight 0 for a run without EQ-Reg, so every folder is pushable),
    the model card (pipeline_tag image-to-image; PSNR / SSIM / equivariance error in ``model-index``; the task
    and degradation named) and ``training_log.json`` (the curves, the loss logs, the metrics).

    Returns:
        The folder's absolute path.
    """
    from eqreg_hf.hub import write_hub_folder

    cfg = result.eqreg_config if result.eqreg_config is not None else EqRegConfig(weight=0.0)
    training = {"method": method_name(args, result.eqreg_config)}
    training.update({k: v for k, v in args.to_dict().items() if k in _CARD_TRAINING})
    training.update(args.network_kwargs(), final_train_psnr=round(result.metrics["train_psnr"], 4))
    metrics = {k: result.metrics[k] for k in _CARD_METRICS if math.isfinite(result.metrics.get(k, math.nan))}
    dataset = {
        "name": "eqreg-hf built-in photos" if args.source == "photos" else args.source,
        "split": "test",
        "train_split": f"train (training set: {args.train_size})",
    }
    if "/" in args.source and not os.path.exists(args.source):
        dataset["id"] = args.source
    path = write_hub_folder(
        result.model,
        output_dir,
        task=args.task,
        eqreg_config=cfg,
        metrics=metrics,
        model_name=f"{args.model}-{args.task}-{method_name(args, result.eqreg_config)}",
        dataset=dataset,
        training=training,
        equivariance_report=dict(result.report),
        degradation=result.degradation,
        equivariance_group=result.eval_group,
        description="PSNR / SSIM on RGB (data range 1, outputs clamped to [0, 1]) of whole held-out images, "
        "degraded once with a fixed seed; `degraded_psnr` is the degraded input's (bicubically upsampled "
        "for super-resolution), `train_psnr` the training images'.",
    )
    log = {
        "evals": result.history.evals,
        "logs": result.history.logs,
        "metrics": result.metrics,
        "degradation": result.degradation,
    }
    atomic_write_json(os.path.join(path, "training_log.json"), log, indent=1)
    return path
