"""The settings of a restoration run: :class:`RestoreTrainingArguments` (``eqreg-hf train-restore``'s flags).

Names shared with ``transformers.TrainingArguments`` and the other recipes mean the same (``max_steps``,
``learning_rate``, ``logging_steps``, ``eval_steps``, ``augment``, ``eval_group``); the old flags ``--steps``,
``--lr``, ``--log-every`` and ``--eval-every`` still parse.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.tasks import conventions as hf
from eqreg_hf.tasks.validation import check_choice, check_group, check_non_negative, check_positive_ints

__all__ = ["RestoreTrainingArguments", "restore_model_choices", "build_model", "method_name"]

_SWIN2SR = "swin2sr"
_AUGMENTS = ("none", "C2", "C4", "D4")
_EI_GROUPS = ("C2", "C4", "D2", "D4")
SUPERVISION = ("supervised", "self")
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
_POSITIVE_OR_NONE = ("eval_steps", "eval_max_images")


def restore_model_choices() -> tuple[str, ...]:
    """The networks ``model=`` accepts: :data:`~eqreg_hf.tasks.restore.networks.RESTORER_CHOICES` and
    ``"swin2sr"``."""
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
            "help": 'Constructor arguments of the network as JSON, e.g. \'{"channels": 16, "depth": 5}\' '
            "(dncnn), '{\"num_fields\": 8}' (strict-*), Swin2SRConfig fields (swin2sr)."
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
            "help": "Training set: 'all', 'N' (the first N images) or 'regionS' (one S x S centre region of "
            "the first)."
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
            "help": "Random group element applied to each clean crop: 'none', 'C2', 'C4' or 'D4' (the "
            "augmentation baseline)."
        },
    )
    supervision: str = field(
        default="supervised",
        metadata={
            "help": "'supervised' (clean targets) or 'self': learn inpainting from the measurements alone "
            "(masked, optionally Poisson-noisy) with deepinv's MC / EI / REI losses."
        },
    )
    selfsup_loss: str | None = field(
        default=None,
        metadata={
            "help": "self: 'mc' (measurement consistency alone), 'ei' (MC + EI; the default) or 'rei' "
            "(SURE-Poisson + EI; needs --poisson-gain)."
        },
    )
    poisson_gain: float | None = field(
        default=None,
        metadata={
            "help": "self: Poisson noise gain γ > 0 of the measurements, y = γ·Poisson(Ax/γ) (the paper: "
            "0.01, 0.05, 0.1); default: noise-free."
        },
    )
    sure_tau: float = field(default=1e-3, metadata={"help": "self, 'rei': SURE's finite-difference step τ."})
    ei_weight: float | None = field(
        default=None,
        metadata={
            "help": "Weight of deepinv's equivariant imaging loss: added to the MSE when supervised (the EI "
            "baseline; default 0, off), to MC / SURE when self-supervised (default 1)."
        },
    )
    ei_group: str = field(
        default="C4", metadata={"help": "Group of the EI loss's transforms: 'C2', 'C4', 'D2' or 'D4'."}
    )
    eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Steps between evaluations of the training and held-out PSNR (the curves; default: only "
            "at the end).",
            "aliases": ["eval_every"],
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
            "help": "Also measure the equivariance error at every eval_every evaluation (slower; default: at "
            "the end)."
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
        if self.selfsup_loss is None and self.supervision == "self":
            self.selfsup_loss = "ei"
        if self.ei_weight is None:  # the EI term is on by default in the self-supervised losses that have one
            self.ei_weight = 1.0 if self.supervision == "self" and self.selfsup_loss != "mc" else 0.0
        if self.quick:
            for name, cap in _QUICK_CAPS.items():
                setattr(self, name, min(getattr(self, name), cap))
            self.eval_max_images = min(self.eval_max_images or 2, 2)
            if self.task == "sr" and isinstance(self.scale, int) and self.scale > 0:
                self.crop_size = max(self.scale, self.crop_size - self.crop_size % self.scale)
        self.validate()

    def validate(self) -> None:
        """Refuse bad values (called on construction): the message names the value, the choices and the
        fix."""
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
        self._check_ei_group()
        check_choice("mixed_precision", self.mixed_precision, _MIXED_PRECISION)
        check_positive_ints(self, _POSITIVE + _POSITIVE_OR_NONE, optional=_POSITIVE_OR_NONE)
        check_non_negative(self, ("learning_rate", "ei_weight"))
        check_non_negative(self, ("seed",), integer=True)
        self._check_degradation(SCALES)
        self._check_sizes()
        check_group(self.eval_group, "eval_group")
        self._check_supervision()
        supervised_ei = self.ei_weight > 0 and self.supervision == "supervised"
        if self.model == _SWIN2SR and (supervised_ei or self.save_steps or self.resume_from_checkpoint):
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
                    "crop would not be whole; use --crop-size "
                    f"{self.crop_size - self.crop_size % self.scale or self.scale}."
                )

    def _check_ei_group(self) -> None:
        from eqreg_hf.tasks.restore.selfsup import check_pixel_group

        check_group(self.ei_group, "ei_group")
        check_pixel_group(self.ei_group, "ei_group")
        check_choice("ei_group", self.ei_group, _EI_GROUPS)

    def _check_supervision(self) -> None:
        """The self-supervised settings: one line for a mode the task cannot use or a foreign setting."""
        from eqreg_hf.tasks.restore.selfsup import SELFSUP_LOSSES, check_poisson_gain

        check_choice("supervision", self.supervision, SUPERVISION)
        if self.supervision == "supervised":
            given = [n for n in ("selfsup_loss", "poisson_gain") if getattr(self, n) is not None]
            if given:
                raise ValueError(
                    f"{given[0]}={getattr(self, given[0])!r} is a setting of self-supervised training; add "
                    "--supervision self, or drop it (supervised runs take Gaussian noise, --sigma)."
                )
            return
        if self.task != "inpaint":
            raise ValueError(
                f"supervision='self' with task={self.task!r}: self-supervised training is built for "
                "inpainting from masked measurements (deepinv's MC / EI / REI losses); use --task inpaint, "
                "or --supervision supervised."
            )
        if self.sigma:
            raise ValueError(
                f"sigma={self.sigma!r} with supervision='self': self-supervised measurements take Poisson "
                "noise; pass --poisson-gain (e.g. 0.05) instead of --sigma."
            )
        check_choice("selfsup_loss", self.selfsup_loss, SELFSUP_LOSSES)
        check_poisson_gain(self.poisson_gain)
        if not (isinstance(self.sure_tau, (int, float)) and 0 < self.sure_tau < math.inf):
            raise ValueError(f"sure_tau={self.sure_tau!r} is not valid: give a step > 0, e.g. 1e-3.")
        if self.selfsup_loss == "rei" and self.poisson_gain is None:
            raise ValueError(
                "selfsup_loss='rei' replaces MC by SURE for Poisson noise, but no --poisson-gain was given: "
                "pass --poisson-gain (e.g. 0.05), or use --selfsup-loss ei."
            )
        if (self.selfsup_loss == "mc") != (self.ei_weight == 0):
            raise ValueError(
                f"selfsup_loss={self.selfsup_loss!r} with ei_weight={self.ei_weight}: 'mc' has no EI term "
                "and 'ei' / 'rei' need one; use --selfsup-loss mc for MC alone, else an --ei-weight > 0."
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

        if self.supervision == "self":
            from eqreg_hf.tasks.restore.selfsup import InpaintingMeasurements

            return InpaintingMeasurements(self.mask_ratio, self.poisson_gain)
        return Degradation(self.task, sigma=self.sigma, mask_ratio=self.mask_ratio, scale=self.scale)

    def network_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the network: ``model_kwargs``, on top of the tiny ones under ``quick``."""
        base = dict(_QUICK_MODELS.get(self.model, {})) if self.quick else {}
        return {**base, **dict(self.model_kwargs or {})}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_model(args: RestoreTrainingArguments) -> nn.Module:
    """The network ``args.model`` for ``args.task`` / ``args.scale`` (``args.network_kwargs()``)."""
    if args.model == "swin2sr":
        from eqreg_hf.tasks.restore.swin2sr import build_swin2sr

        return build_swin2sr(args.task, args.scale, **args.network_kwargs())
    from eqreg_hf.tasks.restore.networks import build_restorer

    return build_restorer(args.model, task=args.task, scale=args.scale, **args.network_kwargs())


def method_name(args: RestoreTrainingArguments, eqreg_config: EqRegConfig | None = None) -> str:
    """The method a run stands for: ``"strict-c4"``, ``"eqreg-C4"``, ``"pair-C4"`` (the control), ``"ei-C4"``,
    ``"augment-D4"``, self-supervised ``"self-rei-C4"`` / ``"self-mc"``, or ``"plain"`` (joined with "+" when
    several apply)."""
    parts = [args.model] if args.model.startswith("strict") else []
    if args.supervision == "self":
        ei = f"-{args.ei_group}" if args.selfsup_loss != "mc" else ""
        parts.insert(0, f"self-{args.selfsup_loss}{ei}")
    if eqreg_config is not None and eqreg_config.stacks:
        parts.append(
            f"{eqreg_config.mode}-{eqreg_config.group_spec.name}"
        )  # eqreg-C4, or the control pair-C4
    if args.ei_weight > 0 and args.supervision == "supervised":
        parts.append(f"ei-{args.ei_group}")
    if args.augment != "none":
        parts.append(f"augment-{args.augment}")
    return "+".join(parts) or "plain"
