"""The settings of a classification fine-tuning run: :class:`ClassifierArgs` (``eqreg-hf train-classifier``).

Names shared with ``transformers.TrainingArguments`` and the other recipes mean the same (``max_steps``,
``learning_rate``, ``logging_steps``, ``eval_steps``, ``augment``, ``eval_group``); the old
``--rotation-augment`` still parses (with a ``FutureWarning``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eqreg_hf.tasks import conventions as hf
from eqreg_hf.tasks.validation import (
    check_choice,
    check_group,
    check_non_negative,
    check_positive_ints,
    take_renamed,
)

__all__ = ["ClassifierArgs", "DATASETS", "LABELS", "CLASSIFY_AUGMENTS"]

DATASETS = ("shapes", "cifar100")
LABELS = ("fine", "coarse")
CLASSIFY_AUGMENTS = ("none", "C4")
_POSITIVE = ("batch_size", "logging_steps", "equiv_eval_batches")
_POSITIVE_OR_NONE = ("train_samples", "eval_samples", "eval_steps")


@dataclass
class ClassifierArgs(hf.HFRunArguments):
    """Settings of one classification fine-tuning run (the EQ-Reg settings live in :class:`EqRegConfig`)."""

    model: str = field(
        default="resnet18",
        metadata={"help": "timm model name, or 'hf:<config.json, folder or id>' for a transformers model."},
    )
    dataset: str = field(
        default="shapes",
        metadata={
            "help": f"One of {list(DATASETS)} ('shapes' is generated "
            "offline; 'cifar100' from the Hub or --data-path)."
        },
    )
    data_path: str | None = field(
        default=None, metadata={"help": "Local CIFAR-100 copy (parquet, save_to_disk folder or imagefolder)."}
    )
    label: str = field(default="fine", metadata={"help": "'fine' or 'coarse' labels (CIFAR-100)."})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Input size. Default: the size nearest to 32 at which every tap is aligned (exact rot90)."
        },
    )
    train_samples: int | None = field(
        default=None,
        metadata={"help": "Training images (shapes: generated; cifar: first N). Default: 2000 / all."},
    )
    eval_samples: int | None = field(default=None, metadata={"help": "Test images. Default: 500 / all."})
    shapes_train_angle: float = field(
        default=180.0,
        metadata={
            "help": "Shapes only: training orientations in [-a, a] degrees (0 = upright only; the test set "
            "always uses all orientations)."
        },
    )
    augment: str = field(
        default="none",
        metadata={
            "help": "'C4': rotate each training image by a random multiple of 90 degrees; 'none': off."
        },
    )
    rotation_augment: bool = field(default=False, metadata={"help": "Deprecated: use --augment C4."})
    eval_group: str | None = field(
        default=None,
        metadata={"help": "Group of the equivariance error: 'C4', 'D4', ... (default: EQ-Reg's, else C4)."},
    )
    pretrained: bool = field(default=True, metadata={"help": "Start from pretrained weights when available."})
    max_steps: int = field(default=-1, metadata={"help": "Training steps (overrides epochs when > 0)."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    batch_size: int = field(
        default=64, metadata={"help": "Images per step (before EQ-Reg's rotated copies)."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    seed: int = field(default=0, metadata={"help": "Seed of the model init, data order and shapes data."})
    output_dir: str = field(
        default="runs/classifier",
        metadata={"help": "Where logs, results.json and the model folder (<output_dir>/model) go."},
    )
    save_model: bool = field(default=True, metadata={"help": "Write the Hub folder <output_dir>/model."})
    equiv_eval_batches: int = field(default=4, metadata={"help": "Eval batches for the equivariance error."})
    logging_steps: int = field(default=20, metadata={"help": "Log every N steps."})
    eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Also evaluate (accuracy, equivariance error) every N steps (default: only at the end)."
        },
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})
    model_kwargs: dict = field(
        default_factory=dict,
        metadata={"help": "More model constructor arguments (JSON), e.g. '{\"drop_path_rate\": 0.1}'."},
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if self.rotation_augment:
            take_renamed(self, "rotation_augment", "augment", "C4")
        self.validate()

    def validate(self) -> None:
        """Refuse bad values (called on construction): the message names the value, the choices and the
        fix."""
        check_choice(
            "dataset",
            self.dataset,
            DATASETS,
            "For your own data use EqRegTrainer directly (see docs/classification.md).",
        )
        check_choice("label", self.label, LABELS)
        check_choice("augment", self.augment, CLASSIFY_AUGMENTS, "('none' turns the augmentation off.)")
        check_group(self.eval_group, "eval_group")
        self.check_conventions()  # report_to, save_steps, push_to_hub / hub_model_id
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError(
                f"Nothing to train: max_steps={self.max_steps} and epochs={self.epochs}; set one > 0."
            )
        check_positive_ints(self, _POSITIVE + _POSITIVE_OR_NONE, optional=_POSITIVE_OR_NONE)
        check_non_negative(self, ("learning_rate", "weight_decay", "epochs"))
        check_non_negative(self, ("warmup_steps", "num_workers", "seed"), integer=True)
        if not (isinstance(self.shapes_train_angle, (int, float)) and 0 <= self.shapes_train_angle <= 180):
            raise ValueError(
                f"shapes_train_angle={self.shapes_train_angle!r} is not valid: use a number of degrees in "
                "[0, 180] (0 = upright only, 180 = every orientation)."
            )
        if not isinstance(self.model_kwargs, dict) or not all(isinstance(k, str) for k in self.model_kwargs):
            raise ValueError(
                f"model_kwargs={self.model_kwargs!r} is not valid: give a JSON object of constructor "
                "arguments, e.g. '{\"drop_path_rate\": 0.1}'."
            )
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size={self.image_size} is too small; use at least 8 (e.g. 32 or 33).")
