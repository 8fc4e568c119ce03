"""The settings of a deraining run: :class:`DerainTrainingArguments` (``eqreg-hf train-derain``'s flags).

Names shared with ``transformers.TrainingArguments`` and with the other recipes mean the same (``max_steps``,
``learning_rate``, ``logging_steps``, ``eval_steps``, ``augment``, ``eval_group``); the old flags ``--steps``,
``--lr``, ``--log-every``, ``--eval-every``, ``--rot-aug``, ``--rot-aug-order`` and ``--eval-group-order``
still parse (the last three with a ``FutureWarning``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from eqreg_hf.tasks import conventions as hf
from eqreg_hf.tasks.validation import (
    check_choice,
    check_group,
    check_non_negative,
    check_positive_ints,
    take_renamed,
)

__all__ = ["DerainTrainingArguments", "MODEL_CHOICES", "DERAIN_AUGMENTS"]

MODEL_CHOICES = ("fast", "rcdnet", "strict-c4")
DERAIN_AUGMENTS = ("none", "C2", "C4")  # a random turn of each crop: the augmentation baseline
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
_POSITIVE_OR_NONE = ("num_blocks", "eval_max_images", "eval_group_order", "eval_steps")
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
            "help": "fast / strict-c4: residual blocks (default: 6 for fast, 4 for strict-c4; both ~112k "
            "parameters)."
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
            "help": "'synthetic' (built-in, offline), Rain100L / Rain100H / Rain1400 / Rain12 (with "
            "--data-dir or $EQREG_DATA_DIR), a local folder, or a Hub dataset id."
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
            "help": "rcdnet: the paper's loss on every stage's background and rain layer (0.1 per "
            "intermediate stage, 1 for the last) instead of MSE on the final background."
        },
    )
    augment: str = field(
        default="none",
        metadata={
            "help": "A random turn of each crop (the augmentation baseline): 'none', 'C2' (0°/180°) or 'C4' "
            "(multiples of 90°)."
        },
    )
    rot_aug: bool = field(default=False, metadata={"help": "Deprecated: use --augment C4 (or C2)."})
    rot_aug_order: int = field(default=4, metadata={"help": "Deprecated: with --rot-aug, 4 -> C4, 2 -> C2."})
    eval_group: str | None = field(
        default=None,
        metadata={
            "help": "Group of the evaluation's equivariance error: 'C2', 'C4', 'D4', ... (default: EQ-Reg's "
            "group, else C4)."
        },
    )
    eval_group_order: int | None = field(
        default=None, metadata={"help": "Deprecated: use --eval-group C<t>."}
    )
    hflip: bool = field(default=False, metadata={"help": "Random horizontal flips of the crops."})
    eval_steps: int | None = field(
        default=None,
        metadata={"help": "Steps between evaluations (default: only at the end).", "aliases": ["eval_every"]},
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
        check_choice(
            "rot_aug_order",
            self.rot_aug_order,
            ROT_AUG_ORDERS,
            "4 rotates crops by multiples of 90°, 2 by 0° or 180°.",
        )
        if self.rot_aug:
            take_renamed(self, "rot_aug", "augment", f"C{self.rot_aug_order}")
            self.rot_aug_order = 4
        if self.eval_group_order is not None:
            check_positive_ints(self, ("eval_group_order",))
            take_renamed(self, "eval_group_order", "eval_group", f"C{self.eval_group_order}")
        self.validate()

    def validate(self) -> None:
        """Refuse bad values (called on construction): the message names the value, the choices and the
        fix."""
        check_choice("model", self.model, MODEL_CHOICES)
        if self.stage_loss and self.model != "rcdnet":
            raise ValueError(
                f"stage_loss=True needs the staged network: model='rcdnet', not {self.model!r} "
                "(or leave stage_loss off)."
            )
        check_choice("augment", self.augment, DERAIN_AUGMENTS, "('none' turns the augmentation off.)")
        check_group(self.eval_group, "eval_group")
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

    def rain_facts(self) -> dict[str, Any]:
        """The rain the run trained on, for its card: ``{"rain": "synthetic", **RainSettings()}`` (the rain
        ``load_rain("synthetic")`` draws), or ``{"rain": <the dataset>}``."""
        from eqreg_hf.data.rain_settings import DEFAULT_RAIN

        return (
            {"rain": "synthetic", **DEFAULT_RAIN} if self.dataset == "synthetic" else {"rain": self.dataset}
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
