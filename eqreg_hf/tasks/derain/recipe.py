"""Deraining with EQ-Reg: build a derainer, feed it paired crops, train, evaluate, save.

The library side of ``eqreg-hf train-derain`` (``eqreg-hf demo`` is :mod:`eqreg_hf.tasks.derain.demo`):

    args = DerainTrainingArguments(model="fast", dataset="synthetic", max_steps=300)
    cfg = EqRegConfig(layers="auto", group_order=4, weight=DEFAULT_WEIGHT, distance=DEFAULT_DISTANCE)
    result = train_derainer(args, cfg)          # -> RunResult(model, metrics, report, history, ...)

The shared steps are :func:`eqreg_hf.tasks.runner.run_recipe`'s; this module is the task's part
(:class:`DerainRecipe`). Evaluation (:mod:`~eqreg_hf.tasks.derain.evaluate`): PSNR / SSIM on Y and RGB of full
held-out images, and the equivariance error of the model's default taps under the run's group.
"""

from __future__ import annotations

import os
from typing import Any

import torch.nn.functional as F
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.data.splits import check_disjoint
from eqreg_hf.tasks.derain.arguments import MODEL_CHOICES, DerainTrainingArguments
from eqreg_hf.tasks.derain.evaluate import HeldOut, evaluate_derainer, held_out_pairs, tracker_images
from eqreg_hf.tasks.derain.networks import build_derainer
from eqreg_hf.tasks.runner import (
    Recipe,
    RunResult,
    dataset_facts,
    resolve_layers,
    run_recipe,
    write_run_folder,
)

__all__ = [
    "DerainTrainingArguments",
    "DerainRecipe",
    "DerainResult",
    "build_derainer",
    "resolve_layers",
    "load_rain_split",
    "evaluate_derainer",
    "held_out_pairs",
    "train_derainer",
    "save_derainer",
    "DEFAULT_DISTANCE",
    "DEFAULT_WEIGHT",
    "MODEL_CHOICES",
]

# The EQ-Reg setting of the default of `eqreg-hf train-derain`, chosen from the measured sweep in
# docs/derain.md ("Choosing λ"): with the FastDerainer, its 12 body-conv taps and an MSE task loss
# of ~5e-3, the unweighted sum of the "mse" distances is ~0.06-0.17 early in training, so
# λ = 2e-3 puts the EQ-Reg term at a few percent of the task loss (λ = 0.1 made it ~50% and cost
# PSNR). λ is NOT portable: re-measure for another network, distance or loss.
DEFAULT_DISTANCE = "mse"
DEFAULT_WEIGHT = 2e-3
DerainResult = RunResult  # the old name of the result type
# The training settings the model card lists.
_CARD_TRAINING = tuple(
    "model crop_size batch_size max_steps learning_rate gradient_accumulation_steps augment hflip seed "
    "mixed_precision".split()
)


def load_rain_split(name: str, split: str, data_dir: str | None = None, synthetic_size: int = 128):
    """One split of a paired rain dataset (:func:`eqreg_hf.data.load_rain`; the built-in one is synthetic)."""
    from eqreg_hf.data.rain import load_rain

    if name.lower() == "synthetic":
        return load_rain("synthetic", split=split, size=synthetic_size)
    return load_rain(name, split=split, data_dir=data_dir)


class DerainRecipe(Recipe):
    """The deraining task: paired rainy / clean crops, MSE (or RCDNet's stage loss), PSNR / SSIM on Y."""

    name, what = "train-derain", "a derainer"

    def build_model(self, args: DerainTrainingArguments) -> nn.Module:
        return build_derainer(args.model, **args.model_kwargs())

    def load_data(self, args: DerainTrainingArguments, train: Any, test: Any) -> tuple[Any, Any]:
        if train is None:
            train = load_rain_split(args.dataset, args.train_split, args.data_dir, args.synthetic_size)
        if test is None:
            test = load_rain_split(args.dataset, args.eval_split, args.data_dir, args.synthetic_size)
            check_disjoint(train, test, args.train_split, args.eval_split, args.dataset)
        return train, test

    def evaluation(self, args: DerainTrainingArguments, model: nn.Module, data: tuple, group: str) -> HeldOut:
        from eqreg_hf.core.groups import as_group

        test = data[1]
        taps = model.eqreg_layers(as_group(group).size) if hasattr(model, "eqreg_layers") else None
        pairs = (
            test[: args.eval_max_images]
            if isinstance(test, list)
            else held_out_pairs(test, args.eval_max_images)
        )
        return HeldOut(pairs, taps, group, args.equiv_images)

    def train_data(self, args: DerainTrainingArguments, train: Any) -> tuple[Any, Any]:
        from eqreg_hf.data.transforms import PairedTransform, paired_collate

        order = 2 if args.augment == "C2" else 4
        transform = PairedTransform(
            crop_size=args.crop_size,
            rot90=args.augment != "none",
            hflip=args.hflip,
            seed=args.seed,
            rotation_order=order,
        )
        return train.with_transform(transform), paired_collate

    def task_loss(self, args: DerainTrainingArguments, model: nn.Module) -> Any:
        """MSE on the final background, or RCDNet's loss on every stage (switching its stage outputs on)."""
        if not args.stage_loss:
            return F.mse_loss
        from eqreg_hf.tasks.derain.networks import rcdnet_stage_loss

        if not hasattr(model, "stage_outputs"):
            raise ValueError(f"stage_loss=True needs an RCDNet; got {type(model).__name__}.")
        model.stage_outputs = True
        return rcdnet_stage_loss

    def finish(self, model: nn.Module, args: DerainTrainingArguments) -> None:
        if args.stage_loss and hasattr(model, "stage_outputs"):
            model.stage_outputs = False

    def tracker_images(self, model: nn.Module, evaluation: HeldOut, report: Any) -> dict[str, Any]:
        return tracker_images(model, evaluation.pairs, report)

    def save(self, result: RunResult, args: DerainTrainingArguments) -> str:
        return save_derainer(result, args.output_dir, args)


def train_derainer(
    args: DerainTrainingArguments,
    eqreg_config: EqRegConfig | None = None,
    **options: Any,
) -> RunResult:
    """Train a derainer with (or without) EQ-Reg and evaluate it on full held-out images.

    ``loss = MSE(f(O), B) + λ Σ_l d(T_k F_l(O), F_l(R_k O))`` over paired random crops (Bai et al.,
    CVPR 2025), Adam with cosine decay, through :func:`~eqreg_hf.tasks.runner.run_recipe` (Accelerate loop).
    With ``args.stage_loss`` (RCDNet) the task loss is RCDNet's own, on every stage.

    Args:
        args: :class:`DerainTrainingArguments`.
        eqreg_config: EQ-Reg settings (None or weight 0: plain training). ``layers="auto"`` means
            the network's default taps (``eqreg_layers`` for the group's field size).
        **options: ``run_recipe``'s: ``model``, ``train_dataset``, ``eval_dataset`` (also a list of
            ``(rainy, clean)`` tensors ``[3, H, W]``), ``accelerator``, ``save``, ``desc``.

    Returns:
        A :class:`~eqreg_hf.tasks.runner.RunResult`.
    """
    return run_recipe(DerainRecipe(), args, eqreg_config, **options)


def save_derainer(
    result: RunResult,
    directory: str | os.PathLike,
    args: DerainTrainingArguments | None = None,
    model_name: str | None = None,
) -> str:
    """Write the trained model as a Hub folder: weights, config.json, eqreg_config.json, model card
    (PSNR/SSIM/equivariance error in ``model-index``, the group it was measured under), ``training_log.json``.

    Returns:
        The folder's absolute path.
    """
    from eqreg_hf.hub.card import CardFacts

    args = args or DerainTrainingArguments()
    builtin = args.dataset == "synthetic"
    name = "synthetic rain (eqreg-hf built-in)" if builtin else args.dataset
    dataset = dataset_facts(args.dataset, name, split=args.eval_split)
    training = {**{k: v for k, v in args.to_dict().items() if k in _CARD_TRAINING}, **args.model_kwargs()}
    metrics = {"psnr": result.metrics["psnr_y"], "ssim": result.metrics["ssim_y"]}
    metrics.update({k: result.metrics[k] for k in ("psnr_rgb", "ssim_rgb", "equivariance_error")})
    if model_name is None:
        data_name = "synthetic-rain" if builtin else os.path.basename(args.dataset.rstrip("/"))
        cfg = result.eqreg_config
        model_name = f"{args.model}-derainer-{data_name}-{cfg.mode if cfg and cfg.stacks else 'baseline'}"
    facts = CardFacts(
        task="derain",
        degradation=args.rain_facts(),
        metrics=metrics,
        dataset=dataset,
        training=training,
        model_name=model_name,
        equivariance_report=dict(result.report),
        equivariance_group=result.eval_group,
        description="PSNR / SSIM on the Y channel of YCbCr (BT.601) of full held-out images; "
        "`psnr_rgb` / `ssim_rgb` on RGB.",
    )
    return write_run_folder(result, directory, facts)
