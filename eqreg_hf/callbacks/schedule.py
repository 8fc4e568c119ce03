"""A schedule for the EQ-Reg weight λ: constant, linear warm-up or cosine warm-up, optional decay.

The weight is a pure function of the optimizer step, so resuming from a checkpoint (which restores
``state.global_step``) restores the schedule position with nothing else to save.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from transformers import TrainerCallback

__all__ = ["SCHEDULES", "eqreg_weight_at", "EqRegWeightSchedule"]

SCHEDULES = ("constant", "linear", "cosine")


def eqreg_weight_at(
    step: int,
    weight: float,
    schedule: str = "linear",
    warmup_steps: int = 0,
    total_steps: int | None = None,
    start_weight: float = 0.0,
    final_weight: float | None = None,
) -> float:
    """λ at optimizer step ``step`` (0-based: the weight used for the step about to run).

    * ``"constant"``: ``weight`` at every step.
    * ``"linear"``: ``start_weight → weight`` linearly over ``warmup_steps``, then ``weight``.
    * ``"cosine"``: ``start_weight → weight`` along a half cosine over ``warmup_steps``, then ``weight``.

    With ``final_weight`` (and ``total_steps``), the weight then goes from ``weight`` to ``final_weight``
    at ``total_steps`` (linearly for "linear", along a half cosine for "cosine"; ignored for "constant").

    Example:
        >>> [round(eqreg_weight_at(s, 1.0, "linear", warmup_steps=4), 2) for s in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
        >>> round(eqreg_weight_at(2, 1.0, "cosine", warmup_steps=4), 2)
        0.5
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown EQ-Reg weight schedule {schedule!r}. Choose between {list(SCHEDULES)}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps!r} must be >= 0.")
    if schedule == "constant":
        return float(weight)
    step = max(int(step), 0)

    def ramp(frac: float) -> float:
        frac = min(max(frac, 0.0), 1.0)
        return frac if schedule == "linear" else 0.5 * (1.0 - math.cos(math.pi * frac))

    if step < warmup_steps:
        return float(start_weight + (weight - start_weight) * ramp(step / warmup_steps))
    if final_weight is None or total_steps is None or total_steps <= warmup_steps:
        return float(weight)
    frac = (step - warmup_steps) / (total_steps - warmup_steps)
    return float(weight + (final_weight - weight) * ramp(frac))


class EqRegWeightSchedule(TrainerCallback):
    """Set the live λ of the trainer's :class:`~eqreg_hf.EqReg` before every optimizer step.

    Use with :class:`~eqreg_hf.EqRegTrainer` (which binds the regulariser to this callback). The peak
    weight is the ``EqRegConfig.weight`` given to the trainer unless ``weight`` is passed here.

    Args:
        schedule: "constant", "linear" or "cosine" (default "linear"): the warm-up shape.
        warmup_steps: steps of the warm-up (an int), or a float in (0, 1): that fraction of
            ``max_steps`` (default 0).
        start_weight: λ at step 0 (default 0.0).
        final_weight: if given, λ decays from the peak to this value at the last step.
        weight: the peak λ (default: the trainer's ``EqRegConfig.weight``).

    Example:
        >>> cb = EqRegWeightSchedule("cosine", warmup_steps=0.1)
        >>> trainer = EqRegTrainer(..., eqreg=EqRegConfig(weight=1e-2), callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(
        self,
        schedule: str = "linear",
        warmup_steps: int | float = 0,
        start_weight: float = 0.0,
        final_weight: float | None = None,
        weight: float | None = None,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"Unknown EQ-Reg weight schedule {schedule!r}. Choose between {list(SCHEDULES)}.")
        if warmup_steps < 0 or (isinstance(warmup_steps, float) and warmup_steps >= 1 and not warmup_steps.is_integer()):
            raise ValueError(
                f"warmup_steps={warmup_steps!r}: give a number of steps (int >= 0) or a fraction of max_steps in [0, 1)."
            )
        for name, v in (("start_weight", start_weight), ("final_weight", final_weight), ("weight", weight)):
            if v is not None and v < 0:
                raise ValueError(f"{name}={v!r} must be >= 0.")
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.start_weight = float(start_weight)
        self.final_weight = final_weight
        self.weight = weight
        self.reg = None
        self._peak: float | None = None

    def bind_eqreg(self, reg: Any) -> None:
        """Called by the trainer when it attaches (``reg``) or removes (``None``) the regulariser."""
        if reg is not None:
            self._peak = float(self.weight if self.weight is not None else reg.config.weight)
        elif self.reg is not None and self._peak is not None:
            self.reg.config.weight = self._peak  # leave the config as it was given
        self.reg = reg

    def weight_at(self, step: int, max_steps: int | None) -> float:
        warmup = self.warmup_steps
        if isinstance(warmup, float) and warmup < 1:
            warmup = int(round(warmup * (max_steps or 0)))
        return eqreg_weight_at(step, self._peak if self._peak is not None else float(self.weight or 0.0),
                               self.schedule, int(warmup), max_steps, self.start_weight, self.final_weight)

    def _apply(self, state) -> None:
        if self.reg is not None:
            self.reg.config.weight = self.weight_at(state.global_step, state.max_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.reg is None:
            warnings.warn(
                "EqRegWeightSchedule has no EQ-Reg to drive, so it does nothing: use it with EqRegTrainer (or a "
                "trainer built with EqRegTrainerMixin) and an active EqRegConfig(weight > 0, group_order > 1).",
                stacklevel=2)
        self._apply(state)  # on resume, global_step is already the checkpoint's

    def on_step_begin(self, args, state, control, **kwargs):
        self._apply(state)
