"""The settings of :func:`eqreg_hf.train.loop.train_loop`, as one object (names of
``transformers.TrainingArguments``).

    args = LoopArguments(max_steps=300, gradient_accumulation_steps=2, logging_steps=10, eval_steps=50)
    train_loop(model, loader, optimizer, F.mse_loss, eqreg_config, args)
    train_loop(model, loader, optimizer, F.mse_loss, eqreg_config, max_steps=300)   # the same, as keywords

Checked on construction: a bad value is refused in one line that names it and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from eqreg_hf.core.schedule import WeightSchedule

MIXED_PRECISION = ("no", "bf16", "fp16")
# Old keyword names of train_loop, still accepted (the TrainingArguments names are the fields).
RENAMED = {"log_every": "logging_steps", "eval_every": "eval_steps"}


@dataclass
class LoopArguments:
    """How :func:`~eqreg_hf.train.loop.train_loop` trains: budget, precision, logging, evaluation,
    checkpoints.

    Args:
        max_steps: optimizer steps (required).
        gradient_accumulation_steps: micro-batches per optimizer step (default 1); ignored when an
            ``accelerator`` is given to ``train_loop`` (its own setting wins).
        mixed_precision: "no" (default), "bf16" or "fp16"; ignored with a given ``accelerator``.
        logging_steps: steps per logging window (default 10).
        eval_steps: steps between evaluations (None: only at the end).
        max_grad_norm: clip the gradient norm (None: no clipping).
        seed: if given, ``accelerate.utils.set_seed(seed)`` before anything random.
        progress: a tqdm bar on the local main process (default True).
        desc: label of the progress bar.
        input_key: image key of dict batches (default: ``eqreg_config.image_key`` or "pixel_values").
        target_key: target key of dict batches (default "labels").
        save_steps: write ``<checkpoint_dir>/checkpoint-<step>`` every this many steps.
        checkpoint_dir: where checkpoints go (needed by ``save_steps`` and
            ``resume_from_checkpoint="latest"``).
        resume_from_checkpoint: a checkpoint folder or ``"latest"``: continue from it exactly.
        weight_schedule: a :class:`~eqreg_hf.WeightSchedule` for λ (its peak defaults to the config's weight).

    Example:
        >>> LoopArguments(max_steps=0)
        Traceback (most recent call last):
        ...
        ValueError: max_steps=0 must be a positive integer (optimizer steps).
    """

    max_steps: int | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    logging_steps: int = 10
    eval_steps: int | None = None
    max_grad_norm: float | None = None
    seed: int | None = None
    progress: bool = True
    desc: str = "train"
    input_key: str | None = None
    target_key: str = "labels"
    save_steps: int | None = None
    checkpoint_dir: str | None = None
    resume_from_checkpoint: str | None = None
    weight_schedule: WeightSchedule | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"Unknown mixed_precision mode: {self.mixed_precision!r}. Choose between "
                f"{list(MIXED_PRECISION)}."
            )
        if not _positive_int(self.max_steps):
            raise ValueError(f"max_steps={self.max_steps!r} must be a positive integer (optimizer steps).")
        for name in ("gradient_accumulation_steps", "logging_steps"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 1.")
        if self.eval_steps is not None and not _positive_int(self.eval_steps):
            raise ValueError(
                f"eval_steps={self.eval_steps!r} must be >= 1 or None (evaluate only at the end)."
            )
        if self.save_steps is not None and not _positive_int(self.save_steps):
            raise ValueError(
                f"save_steps={self.save_steps!r} must be a positive integer (optimizer steps) or None."
            )
        if self.save_steps is not None and self.checkpoint_dir is None:
            raise ValueError(
                f"save_steps={self.save_steps} needs checkpoint_dir= (where checkpoint-<step> folders go)."
            )
        if self.weight_schedule is not None and not isinstance(self.weight_schedule, WeightSchedule):
            raise TypeError(
                f"weight_schedule={self.weight_schedule!r} must be an eqreg_hf.WeightSchedule (or None)."
            )

    @classmethod
    def build(cls, args: LoopArguments | None, overrides: dict[str, Any]) -> LoopArguments:
        """``args`` with keyword ``overrides`` (old names included) on top; an unknown keyword names the
        fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        renamed = {RENAMED.get(k, k): v for k, v in overrides.items()}
        both = [k for k in overrides if k in RENAMED and RENAMED[k] in overrides]
        unknown = sorted(k for k in renamed if k not in names)
        if both or unknown:
            raise TypeError(
                f"train_loop got {both or unknown}: give each setting once, by one of the names of "
                f"LoopArguments: {sorted(names)} (old names {RENAMED} still work)."
            )
        if args is None:
            return cls(**renamed)
        return dataclasses.replace(args, **renamed) if renamed else args


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
