"""Deraining with EQ-Reg: build a derainer, feed it paired crops, train, evaluate, save.

The library side of ``eqreg-hf train-derain`` (the command only parses arguments and calls these
functions; the demo, ``eqreg-hf demo``, is :mod:`eqreg_hf.tasks.derain.demo`):

    args = DerainTrainingArguments(model="fast", dataset="synthetic", max_steps=300)
    cfg = EqRegConfig(layers="auto", group_order=4, weight=DEFAULT_WEIGHT, distance=DEFAULT_DISTANCE)
    result = train_derainer(args, cfg)          # -> DerainResult(model, metrics, report, history, ...)

Evaluation (:mod:`eqreg_hf.tasks.derain.evaluate`, re-exported here) is on full held-out images:
PSNR / SSIM on Y and RGB, and the layer-wise equivariance error of the model's default taps, so
plain, augmented and EQ-Reg runs are compared on the same layers.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import atomic_write_json, check_output_dir
from eqreg_hf.core.unwrap import unwrap_model
from eqreg_hf.data.splits import check_disjoint
from eqreg_hf.tasks import conventions as hf
from eqreg_hf.tasks.derain.evaluate import evaluate_derainer, held_out_pairs, tracker_images
from eqreg_hf.tasks.validation import check_choice, check_non_negative, check_positive_ints
from eqreg_hf.train.loop import TrainHistory, train_loop

__all__ = [
    "DerainTrainingArguments",
    "DerainResult",
    "build_derainer",
    "resolve_layers",
    "load_rain_split",
    "derain_dataloader",
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
# layers="auto" on a derainer: its own eqreg_layers(t) (B-net / body convs). "model" is the old
# spelling of the same thing, still accepted (with a FutureWarning) by resolve_layers.
_OLD_MODEL_TAPS = "model"

MODEL_CHOICES = ("fast", "rcdnet", "strict-c4")
ROT_AUG_ORDERS = (2, 4)
_POSITIVE = (
    "max_steps",
    "crop_size",
    "batch_size",
    "gradient_accumulation_steps",
    "equiv_images",
    "logging_steps",
    "channels",
    "num_fields",
    "num_stages",
    "num_maps",
    "kernel_size",
    "num_features",
    "num_resblocks",
    "synthetic_size",
)
_POSITIVE_OR_NONE = ("num_blocks", "eval_max_images", "eval_group_order", "eval_every")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass
class DerainTrainingArguments(hf.HFRunArguments):
    """Settings of a deraining run (everything except EQ-Reg, which is an :class:`EqRegConfig`).

    Each field becomes a ``--flag`` of ``eqreg-hf train-derain`` (underscores -> dashes). Fields that
    mean the same as in ``transformers.TrainingArguments`` have its names (``max_steps``,
    ``learning_rate``, ``logging_steps``, ``output_dir``, ``seed``); the old flags ``--steps``,
    ``--lr`` and ``--log-every`` still parse.
    """

    model: str = field(default="fast", metadata={"help": f"Network: one of {list(MODEL_CHOICES)}."})
    channels: int = field(default=32, metadata={"help": "fast: feature channels (divisible by t)."})
    num_blocks: int | None = field(
        default=None,
        metadata={
            "help": "fast / strict-c4: residual blocks (default: 6 for fast, 4 for strict-c4; both ~112k parameters)."
        },
    )
    num_fields: int = field(default=24, metadata={"help": "strict-c4: regular C4 fields per hidden layer."})
    num_stages: int = field(default=17, metadata={"help": "rcdnet: stages S (paper: 17)."})
    num_maps: int = field(
        default=32, metadata={"help": "rcdnet: rain maps / dictionary kernels (paper: 32)."}
    )
    kernel_size: int = field(default=9, metadata={"help": "rcdnet: rain kernel size (paper: 9)."})
    num_features: int = field(
        default=33, metadata={"help": "rcdnet: B-net feature channels (33: 3 + 33 = 36 for t = 4)."}
    )
    num_resblocks: int = field(
        default=4, metadata={"help": "rcdnet: residual blocks per proximal net (paper: 4)."}
    )
    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "'synthetic' (built-in, offline), Rain100L / Rain100H / Rain1400 / Rain12 (with --data-dir "
            "or $EQREG_DATA_DIR), a local folder, or a Hub dataset id."
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "Folder holding the benchmark folders."})
    train_split: str = field(default="train", metadata={"help": "Training split."})
    eval_split: str = field(default="test", metadata={"help": "Held-out split for evaluation."})
    synthetic_size: int = field(
        default=128, metadata={"help": "synthetic: image size of the built-in benchmark."}
    )
    crop_size: int = field(
        default=64, metadata={"help": "Training crop size (square; the C4 stacked batch needs it)."}
    )
    batch_size: int = field(
        default=8, metadata={"help": "Images per micro-batch (before the rotated copies)."}
    )
    max_steps: int = field(default=300, metadata={"help": "Optimizer steps.", "aliases": ["steps"]})
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Adam learning rate (cosine decay to 1%).", "aliases": ["lr"]}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'bf16' or 'fp16'."})
    stage_loss: bool = field(
        default=False,
        metadata={
            "help": "rcdnet: the paper's loss on every stage's background and rain layer (0.1 per intermediate "
            "stage, 1 for the last) instead of MSE on the final background."
        },
    )
    rot_aug: bool = field(
        default=False, metadata={"help": "Random 90° rotations of the crops (the augmentation baseline)."}
    )
    rot_aug_order: int = field(
        default=4, metadata={"help": "Group of the augmentation rotations: 4 (90° steps) or 2 (180°)."}
    )
    eval_group_order: int | None = field(
        default=None,
        metadata={
            "help": "t of the group for the evaluation's equivariance error (default: EQ-Reg's group_order, else 4)."
        },
    )
    hflip: bool = field(default=False, metadata={"help": "Random horizontal flips of the crops."})
    eval_every: int | None = field(
        default=None, metadata={"help": "Steps between evaluations (default: only at the end)."}
    )
    eval_max_images: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many held-out images."}
    )
    equiv_images: int = field(
        default=2, metadata={"help": "Held-out images used for the equivariance error."}
    )
    logging_steps: int = field(
        default=10, metadata={"help": "Steps per logging window.", "aliases": ["log_every"]}
    )
    seed: int = field(default=0, metadata={"help": "Seed of weights, crops and sampling."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Save the model here (Hub folder + eqreg_config.json)."}
    )
    run_dir: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoints and TensorBoard logs (default: <output_dir>-run, beside the Hub folder)."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse bad values (called on construction): the message names the value, the choices and the fix."""
        check_choice("model", self.model, MODEL_CHOICES)
        if self.stage_loss and self.model != "rcdnet":
            raise ValueError(
                f"stage_loss=True needs the staged network: model='rcdnet', not {self.model!r} "
                "(or leave stage_loss off)."
            )
        check_choice(
            "rot_aug_order",
            self.rot_aug_order,
            ROT_AUG_ORDERS,
            "4 rotates crops by multiples of 90°, 2 by 0° or 180°.",
        )
        check_positive_ints(self, _POSITIVE + _POSITIVE_OR_NONE, optional=_POSITIVE_OR_NONE)
        check_non_negative(self, ("learning_rate",))
        check_non_negative(self, ("seed",), integer=True)
        check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        self.check_conventions()  # report_to, save_steps, push_to_hub / hub_model_id
        if self.train_split == self.eval_split:
            raise ValueError(
                f"train_split and eval_split are both {self.train_split!r}: the evaluation would measure "
                "training data. Give two different splits (default: 'train' and 'test')."
            )

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the chosen network."""
        if self.model == "fast":
            return {
                "channels": self.channels,
                "num_blocks": 6 if self.num_blocks is None else self.num_blocks,
            }
        if self.model == "strict-c4":
            return {
                "num_fields": self.num_fields,
                "num_blocks": 4 if self.num_blocks is None else self.num_blocks,
            }
        return {
            "num_stages": self.num_stages,
            "num_maps": self.num_maps,
            "kernel_size": self.kernel_size,
            "num_features": self.num_features,
            "num_resblocks": self.num_resblocks,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DerainResult:
    """What :func:`train_derainer` returns."""

    model: nn.Module
    metrics: dict[str, float]
    report: Any  # EquivarianceReport of the default taps on held-out images
    history: TrainHistory
    eqreg_config: EqRegConfig | None
    train_time_s: float
    output_dir: str | None = None
    hub_url: str | None = None


def build_derainer(name: str = "fast", **kwargs: Any) -> nn.Module:
    """A deraining network by name: "fast" (FastDerainer), "rcdnet" (RCDNet) or "strict-c4".

    Example:
        >>> build_derainer("fast", channels=8, num_blocks=1).__class__.__name__
        'FastDerainer'
    """
    from eqreg_hf.tasks.derain.networks import MODELS

    if name not in MODELS:
        raise ValueError(f"Unknown derainer {name!r}. Choose between {sorted(MODELS)}.")
    return MODELS[name](**kwargs)


def resolve_layers(model: nn.Module, config: EqRegConfig) -> EqRegConfig:
    """Write out ``layers="auto"`` for a network that names its own taps: ``model.eqreg_layers(t)``.

    The result is what ``layers="auto"`` would tap anyway (:func:`eqreg_hf.core.selection.auto_taps` asks
    ``eqreg_layers`` first), as an explicit list, so the saved ``eqreg_config.json`` names the layers.
    The old spelling ``layers="model"`` is read as ``"auto"`` (with a ``FutureWarning``). Other
    configs are returned unchanged.

    Example:
        >>> net = build_derainer("fast", channels=8, num_blocks=1)
        >>> resolve_layers(net, EqRegConfig(layers="auto", group_order=2)).layers
        ['body.0.conv1', 'body.0.conv2']
    """
    if config.layers == _OLD_MODEL_TAPS:
        warnings.warn(
            'layers="model" is now spelled layers="auto" (the same taps: the network\'s own '
            'eqreg_layers(t)); pass "auto" ("model" will stop being accepted).',
            FutureWarning,
            stacklevel=2,
        )
        config = dataclasses.replace(config, layers="auto")
    if config.layers == "auto" and callable(getattr(model, "eqreg_layers", None)):
        return dataclasses.replace(config, layers=model.eqreg_layers(config.group_order))
    return config


def load_rain_split(name: str, split: str, data_dir: str | None = None, synthetic_size: int = 128):
    """One split of a paired rain dataset (:func:`eqreg_hf.data.load_rain`); ``synthetic_size`` sizes the built-in one."""
    from eqreg_hf.data.rain import load_rain

    if name.lower() == "synthetic":
        return load_rain("synthetic", split=split, size=synthetic_size)
    return load_rain(name, split=split, data_dir=data_dir)


def derain_dataloader(
    dataset: Any,
    crop_size: int,
    batch_size: int,
    num_samples: int,
    *,
    rot_aug: bool = False,
    hflip: bool = False,
    seed: int = 0,
    rot_aug_order: int = 4,
) -> torch.utils.data.DataLoader:
    """Paired random crops ``(rainy, clean)`` ``[B, 3, crop, crop]``, sampled with replacement.

    Sampling with replacement (``num_samples`` crops in all) decouples the step count from the
    (often tiny) number of training images. Crops, rotations and flips come from generators
    seeded with ``seed``.

    Args:
        dataset: a ``datasets.Dataset`` with Image columns "rainy" and "clean".
        crop_size: square crop size.
        batch_size: crops per batch.
        num_samples: crops drawn in all (steps × batch × accumulation).
        rot_aug: random 90° rotations (the rotation-augmentation baseline).
        rot_aug_order: 4 (multiples of 90°) or 2 (0° / 180°) for ``rot_aug``.
        hflip: random horizontal flips.
        seed: seed of the sampler and the crop generator.
    """
    from eqreg_hf.data.transforms import PairedTransform, paired_collate

    ds = dataset.with_transform(
        PairedTransform(
            crop_size=crop_size, rot90=rot_aug, hflip=hflip, seed=seed, rotation_order=rot_aug_order
        )
    )
    sampler = torch.utils.data.RandomSampler(
        ds, replacement=True, num_samples=num_samples, generator=torch.Generator().manual_seed(seed + 1)
    )
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=paired_collate)


def train_derainer(
    args: DerainTrainingArguments,
    eqreg_config: EqRegConfig | None = None,
    *,
    model: nn.Module | None = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    accelerator: Any = None,
    save: bool = True,
    desc: str = "train",
) -> DerainResult:
    """Train a derainer with (or without) EQ-Reg and evaluate it on full held-out images.

    ``loss = MSE(f(O), B) + λ Σ_l d(T_k F_l(O), F_l(R_k O))`` over paired random crops (Bai et al.,
    CVPR 2025), Adam with cosine decay, through :func:`eqreg_hf.train.loop.train_loop` (Accelerate). With
    ``args.stage_loss`` (RCDNet) the task loss is RCDNet's own, on every stage
    (:func:`~eqreg_hf.tasks.derain.networks.rcdnet_stage_loss`).

    Args:
        args: :class:`DerainTrainingArguments`.
        eqreg_config: EQ-Reg settings (None or weight 0: plain training). ``layers="auto"`` means
            the network's default taps (``eqreg_layers(t)``; see :func:`resolve_layers`).
        model: a network to train instead of building ``args.model``.
        train_dataset, eval_dataset: paired datasets instead of loading ``args.dataset`` (the
            evaluation data may also be a list of ``(rainy, clean)`` tensors ``[3, H, W]``).
        accelerator: an ``accelerate.Accelerator`` to use.
        save: write ``args.output_dir`` (if set) at the end (main process only).
        desc: progress-bar label.

    Returns:
        A :class:`DerainResult`.

    Example:
        >>> args = DerainTrainingArguments(channels=8, num_blocks=1, max_steps=2, crop_size=16, batch_size=2,
        ...                                synthetic_size=32, progress=False)
        >>> result = train_derainer(args, EqRegConfig(layers="auto", weight=0.1, distance="mse"))  # doctest: +SKIP
    """
    if save and args.output_dir:
        check_output_dir(args.output_dir, "output_dir")  # before training, not after it
    hf.preflight(
        args, args.output_dir if save else None, hf.loop_run_dir(args)
    )  # trackers installed, push possible
    torch.manual_seed(args.seed)
    if model is None:
        model = build_derainer(args.model, **args.model_kwargs())
    if eqreg_config is not None:
        eqreg_config = resolve_layers(model, eqreg_config)
    if train_dataset is None:
        train_dataset = load_rain_split(args.dataset, args.train_split, args.data_dir, args.synthetic_size)
    if eval_dataset is None:
        eval_dataset = load_rain_split(args.dataset, args.eval_split, args.data_dir, args.synthetic_size)
        check_disjoint(train_dataset, eval_dataset, args.train_split, args.eval_split, args.dataset)
    held_out = _held_out(args, model, eqreg_config, eval_dataset)
    accelerator = hf.start_loop_run(
        args, accelerator, {**args.to_dict(), **(eqreg_config or EqRegConfig(weight=0.0)).to_dict()}
    )
    history, train_time = _fit(model, train_dataset, args, eqreg_config, held_out, accelerator, desc)
    model = unwrap_model(model)  # evaluate and save the network, not a DDP / compile wrapper
    metrics, report = held_out.evaluate(model)
    hf.end_loop_run(accelerator, history, metrics, report, tracker_images(model, held_out.pairs, report))
    metrics["train_time_s"] = train_time
    result = DerainResult(
        model=model,
        metrics=metrics,
        report=report,
        history=history,
        eqreg_config=eqreg_config,
        train_time_s=train_time,
    )
    if save and args.output_dir and _is_main_process(accelerator):
        result.output_dir = save_derainer(result, args.output_dir, args)
        result.hub_url = hf.push_trained(args, result.output_dir, "a derainer")  # only after a successful run
    return result


@dataclass
class _HeldOut:
    """The held-out images of a run and what every evaluation of it measures (the same taps and group)."""

    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    taps: list[str] | None
    group_order: int
    equiv_images: int
    group: str | None = None  # a dihedral run's group ("D4"): measured under it, flips included

    def evaluate(self, model: nn.Module) -> tuple[dict[str, float], Any]:
        return evaluate_derainer(
            model,
            self.pairs,
            taps=self.taps,
            group_order=self.group_order,
            equiv_images=self.equiv_images,
            group=self.group,
        )

    def eval_fn(self, model: nn.Module, step: int) -> dict[str, float]:
        """``train_loop``'s periodic evaluation (with the per-layer equivariance error)."""
        metrics, report = self.evaluate(model)
        return {**metrics, **{f"equiv_error/{k}": v for k, v in dict(report).items()}}


def _held_out(
    args: DerainTrainingArguments, model: nn.Module, eqreg_config: EqRegConfig | None, eval_dataset: Any
) -> _HeldOut:
    """Evaluation data and taps: the model's default taps for EQ-Reg's group (else C4), so plain,
    augmented and EQ-Reg runs are measured on the same layers."""
    group_order = eqreg_config.group_order if eqreg_config is not None and eqreg_config.group_order > 1 else 4
    group = eqreg_config.group_spec if eqreg_config is not None and eqreg_config.group_spec.dihedral else None
    if args.eval_group_order is not None:
        group_order, group = args.eval_group_order, None
    field_channels = group.size if group is not None else group_order  # D_t: regular fields of 2t channels
    taps = model.eqreg_layers(field_channels) if hasattr(model, "eqreg_layers") else None
    if eval_dataset is None:
        eval_dataset = load_rain_split(args.dataset, args.eval_split, args.data_dir, args.synthetic_size)
    pairs = (
        eval_dataset[: args.eval_max_images]
        if isinstance(eval_dataset, list)
        else held_out_pairs(eval_dataset, args.eval_max_images)
    )
    return _HeldOut(pairs, taps, group_order, args.equiv_images, group.name if group is not None else None)


def _fit(
    model: nn.Module,
    train_dataset: Any,
    args: DerainTrainingArguments,
    eqreg_config: EqRegConfig | None,
    held_out: _HeldOut,
    accelerator: Any,
    desc: str,
) -> tuple[TrainHistory, float]:
    """Adam with cosine decay to 1% over random paired crops, through ``train_loop``; returns (history, seconds)."""
    num_samples = args.max_steps * args.batch_size * args.gradient_accumulation_steps
    loader = derain_dataloader(
        train_dataset,
        args.crop_size,
        args.batch_size,
        num_samples,
        rot_aug=args.rot_aug,
        hflip=args.hflip,
        seed=args.seed,
        rot_aug_order=args.rot_aug_order,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=args.max_steps, eta_min=args.learning_rate * 0.01
    )
    task_loss = _task_loss(model, args.stage_loss)
    start = time.perf_counter()
    try:
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
            eval_fn=held_out.eval_fn if args.eval_every else None,
            eval_every=args.eval_every,
            log_every=args.logging_steps,
            accelerator=accelerator,
            progress=args.progress,
            seed=args.seed,
            desc=desc,
            save_steps=args.save_steps,
            checkpoint_dir=hf.loop_run_dir(args),
            resume_from_checkpoint=args.resume_from_checkpoint,
        )
    finally:
        if args.stage_loss:
            model.stage_outputs = False
    return history, time.perf_counter() - start


def _task_loss(model: nn.Module, stage_loss: bool) -> Callable[..., torch.Tensor]:
    """MSE on the final background, or RCDNet's loss on every stage (switching the network's stage outputs on)."""
    if not stage_loss:
        return F.mse_loss
    from eqreg_hf.tasks.derain.networks import rcdnet_stage_loss

    if not hasattr(model, "stage_outputs"):
        raise ValueError(f"stage_loss=True needs an RCDNet; got {type(model).__name__}.")
    model.stage_outputs = True
    return rcdnet_stage_loss


def _is_main_process(accelerator: Any) -> bool:
    if accelerator is not None:
        return bool(accelerator.is_main_process)
    from accelerate.state import PartialState

    return PartialState().is_main_process


# The training settings the model card lists.
_CARD_TRAINING = (
    "model",
    "crop_size",
    "batch_size",
    "max_steps",
    "learning_rate",
    "gradient_accumulation_steps",
    "rot_aug",
    "rot_aug_order",
    "hflip",
    "seed",
    "mixed_precision",
)


def save_derainer(
    result: DerainResult,
    directory: str | os.PathLike,
    args: DerainTrainingArguments | None = None,
    model_name: str | None = None,
) -> str:
    """Write the trained model as a Hub folder: weights, config.json, eqreg_config.json, model card.

    Uses :func:`eqreg_hf.hub.write_hub_folder` (model card with PSNR/SSIM/equivariance error in
    ``model-index``) and adds ``training_log.json`` (the logged losses and evaluations).

    Returns:
        The folder's absolute path.
    """
    from eqreg_hf.hub import write_hub_folder

    args = args or DerainTrainingArguments()
    dataset = {
        "name": "synthetic rain (eqreg-hf built-in)" if args.dataset == "synthetic" else args.dataset,
        "split": args.eval_split,
    }
    if "/" in args.dataset and not os.path.exists(args.dataset):
        dataset["id"] = args.dataset
    training = {k: v for k, v in args.to_dict().items() if k in _CARD_TRAINING}
    training.update(args.model_kwargs())
    weights = result.history.series("eqreg_weight")
    if result.eqreg_config is not None and result.eqreg_config.auto_weight and weights:
        training["final_eqreg_weight"] = weights[-1]  # where the automatic λ settled
    metrics = {"psnr": result.metrics["psnr_y"], "ssim": result.metrics["ssim_y"]}
    metrics.update({k: result.metrics[k] for k in ("psnr_rgb", "ssim_rgb", "equivariance_error")})
    if model_name is None:
        data_name = (
            "synthetic-rain" if args.dataset == "synthetic" else os.path.basename(args.dataset.rstrip("/"))
        )
        active = result.eqreg_config is not None and result.eqreg_config.active
        model_name = f"{args.model}-derainer-{data_name}-{'eqreg' if active else 'baseline'}"
    path = write_hub_folder(
        result.model,
        directory,
        task="derain",
        eqreg_config=result.eqreg_config,
        metrics=metrics,
        model_name=model_name,
        dataset=dataset,
        training=training,
        equivariance_report=dict(result.report),
        description="PSNR / SSIM on the Y channel of YCbCr (BT.601) of full held-out images; "
        "`psnr_rgb` / `ssim_rgb` on RGB.",
    )
    log = {"logs": result.history.logs, "evals": result.history.evals, "metrics": result.metrics}
    atomic_write_json(os.path.join(path, "training_log.json"), log, indent=1)
    return path
