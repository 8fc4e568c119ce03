"""Restoration with EQ-Reg: denoising, inpainting and super-resolution; build, degrade, train, evaluate, save.

The library side of ``eqreg-hf train-restore`` (``supervision="self"``: ``restore.selfsup_hooks``)::

    args = RestoreTrainingArguments(task="denoise", train_size="1", max_steps=500, eval_steps=50)
    cfg = EqRegConfig(layers="auto", group="C4", weight=1e-3, distance="mse")
    result = train_restorer(args, cfg)             # -> RunResult(model, metrics, report, history, ...)
    steps, eval_psnr = result.curve("eval_psnr")   # the held-out photos; "train_psnr": the training images

Clean crops are degraded on the fly (deepinv's physics), held-out photos once. Methods: plain, ``augment``,
EQ-Reg, deepinv's EI loss (``ei_weight > 0``), strict nets; DnCNN / strict nets train in the loop, Swin2SR
through the Trainer."""

from __future__ import annotations

import math
import os
from typing import Any

import torch.nn.functional as F
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.tasks.restore.arguments import (
    RestoreTrainingArguments,
    build_model,
    method_name,
    restore_model_choices,
)
from eqreg_hf.tasks.restore.evaluate import check_model_output, evaluate_restorer, run_evaluation
from eqreg_hf.tasks.restore.selfsup_hooks import SelfSupervisedHooks
from eqreg_hf.tasks.runner import (
    Recipe,
    RunResult,
    dataset_facts,
    run_recipe,
    uses_transformers,
    write_run_folder,
)
from eqreg_hf.train.loop import TrainHistory

__all__ = [
    "RestoreTrainingArguments",
    "RestoreRecipe",
    "RestoreResult",
    "build_model",
    "check_model_output",
    "train_restorer",
    "evaluate_restorer",
    "save_restorer",
    "method_name",
    "restore_model_choices",
]

RestoreResult = RunResult  # the old name of the result type
_CARD_TRAINING = tuple(
    "model train_size crop_size batch_size max_steps learning_rate seed gradient_accumulation_steps augment "
    "ei_weight ei_group mixed_precision".split()
)
_CARD_METRICS = ("psnr", "ssim", "equivariance_error", "output_equivariance_error", "degraded_psnr")


class RestoreRecipe(Recipe):
    """Denoising / inpainting / super-resolution of clean photos degraded on the fly; RGB PSNR / SSIM."""

    name, what = "train-restore", "a restorer"

    _degradation: Any = None

    def degradation(self, args: RestoreTrainingArguments) -> Any:
        """The run's forward model, built once (its noise generators are seeded)."""
        if self._degradation is None:
            self._degradation = args.build_degradation()
        return self._degradation

    def build_model(self, args: RestoreTrainingArguments) -> nn.Module:
        self.degradation(args)  # before the weights, as always (the seeded draws stay where they were)
        return build_model(args)

    def load_data(self, args: RestoreTrainingArguments, train: Any, test: Any) -> tuple[Any, Any]:
        """(the clean training images after ``train_size``, the held-out images or pairs)."""
        from eqreg_hf.data.restore import load_clean_images, select_training_set

        common = {"photo_size": args.photo_size, "data_dir": args.data_dir}
        train = load_clean_images(args.source, "train", **common) if train is None else train
        test = load_clean_images(args.source, "test", **common) if test is None else test
        return select_training_set(train, args.train_size), test

    def check(
        self, args: RestoreTrainingArguments, model: nn.Module, eqreg: EqRegConfig | None, data
    ) -> None:
        if args.ei_weight > 0 and self.uses_trainer(model):
            raise ValueError(
                f"ei_weight={args.ei_weight} with a transformers model: the Trainer path takes an MSE task "
                "loss only; use --ei-weight 0, or a dncnn / strict-* model for the EI baseline."
            )
        check_model_output(model, self.degradation(args), args.crop_size, eqreg)

    def evaluation(self, args: RestoreTrainingArguments, model: nn.Module, data: tuple, group: str) -> Any:
        settings = {"max_images": args.eval_max_images, "equiv_images": args.equiv_images}
        settings.update(group=group, curve_errors=args.curve_errors)
        return run_evaluation(model, self.degradation(args), *data, **settings)

    def info(self, args: RestoreTrainingArguments, model: nn.Module) -> dict[str, Any]:
        return {"degradation": self.degradation(args).to_dict()}

    def uses_trainer(self, model: nn.Module | None) -> bool:
        return uses_transformers(model)  # Swin2SR trains through the Trainer

    def train_data(self, args: RestoreTrainingArguments, train: Any) -> tuple[Any, Any]:
        """Degraded random crops ``{"pixel_values", "labels"}``, augmented per ``args.augment``."""
        from eqreg_hf.data.restore import RestoreTransform, restore_collate

        augment = None if args.augment == "none" else args.augment
        transform = RestoreTransform(
            self.degradation(args), args.crop_size, seed=args.seed, augment=augment, train=True
        )
        return train.with_transform(transform), restore_collate

    def task_loss(self, args: RestoreTrainingArguments, model: nn.Module) -> Any:
        """MSE, or MSE + deepinv's equivariant-imaging term (``ei_weight > 0``)."""
        if args.ei_weight <= 0:
            return F.mse_loss
        from eqreg_hf.tasks.restore.baselines import EquivariantImagingLoss

        return EquivariantImagingLoss(
            model, self.degradation(args), group=args.ei_group, weight=args.ei_weight
        )

    def fit_trainer(self, run: Any) -> TrainHistory:
        """Swin2SR through ``EqRegTrainer`` (MSE on the reconstruction)."""
        from eqreg_hf.tasks.restore.swin2sr import FIT_SETTINGS, fit_with_trainer

        args, periodic = run.args, run.evaluation if run.args.eval_steps else None
        logs, _ = fit_with_trainer(
            run.model,
            self.train_data(args, run.data[0])[0],
            run.eqreg_config,
            eval_fn=periodic,
            eval_every=args.eval_steps if periodic is not None else None,
            output_dir=self.run_dir(args),
            task_loss=self.task_loss(args, run.model) if args.supervision == "self" else None,
            **{name: getattr(args, name) for name in FIT_SETTINGS},  # the same names in both
        )
        return TrainHistory(logs=list(logs), steps=args.max_steps)

    def save(self, result: RunResult, args: RestoreTrainingArguments) -> str:
        return save_restorer(result, args.output_dir, args)


class SelfSupervisedRestoreRecipe(SelfSupervisedHooks, RestoreRecipe): ...  # supervision="self"


def train_restorer(
    args: RestoreTrainingArguments, eqreg_config: EqRegConfig | None = None, **options: Any
) -> RunResult:
    """Train a restorer (plain, augmented, EQ-Reg, EI, strict; ``supervision="self"``: from measurements only)
    and evaluate it on whole held-out images. ``eqreg_config`` None or weight 0: no EQ-Reg; ``options`` are
    :func:`~eqreg_hf.tasks.runner.run_recipe`'s (``model``, ``train_dataset``: clean images, or measurements
    when self-supervised; ``eval_dataset``: clean images or ``(degraded, clean)`` pairs, ``save``, ``desc``).
    ``metrics``: psnr, ssim, degraded_psnr, train_psnr/ssim, equivariance_error, output_equivariance_error and
    times; ``result.curve(key)``: the curves. A wrong output size, a tap the group's fields do not divide or a
    setting the run cannot use is refused before any training.
    """
    recipe = SelfSupervisedRestoreRecipe() if args.supervision == "self" else RestoreRecipe()
    return run_recipe(recipe, args, eqreg_config, **options)


def save_restorer(result: RunResult, output_dir: str | os.PathLike, args: RestoreTrainingArguments) -> str:
    """Write the trained model as a Hub folder (Swin2SR in transformers' format): weights, ``config.json``,
    ``eqreg_config.json``, the card (image-to-image; PSNR / SSIM / equivariance error in ``model-index``; the
    task, degradation and group named) and ``training_log.json`` (curves, loss logs, metrics); returns the
    folder's absolute path."""
    from eqreg_hf.hub.card import CardFacts

    method = method_name(args, result.eqreg_config)
    training = {"method": method, **{k: v for k, v in args.to_dict().items() if k in _CARD_TRAINING}}
    psnr = result.metrics["train_psnr"]  # NaN: no clean training image (self-supervised)
    training.update(args.network_kwargs(), **result.info.get("training", {}))
    training.update({"final_train_psnr": round(psnr, 4)} if math.isfinite(psnr) else {})
    metrics = {k: result.metrics[k] for k in _CARD_METRICS if math.isfinite(result.metrics.get(k, math.nan))}
    name = "eqreg-hf built-in photos" if args.source == "photos" else args.source
    dataset = dataset_facts(
        args.source, name, split="test", train_split=f"train (training set: {args.train_size})"
    )
    facts = CardFacts(
        task=args.task,
        metrics=metrics,
        dataset=dataset,
        training=training,
        model_name=f"{args.model}-{args.task}-{method}",
        equivariance_report=dict(result.report),
        degradation=result.degradation,
        equivariance_group=result.eval_group,
        description=result.info.get("card_description", "")
        + " PSNR / SSIM on RGB (data range 1, outputs clamped to [0, 1]) of whole held-out images, "
        "degraded once with a fixed seed; `degraded_psnr` is the degraded input's (bicubically upsampled "
        "for super-resolution), `train_psnr` the training images'.",
    )
    return write_run_folder(result, output_dir, facts, log={"degradation": result.degradation})
