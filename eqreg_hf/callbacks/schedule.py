"""The λ schedule as a ``TrainerCallback``: sets the live EQ-Reg weight before every optimizer step.

The schedule itself is :class:`eqreg_hf.WeightSchedule` (pure, in :mod:`eqreg_hf.core.schedule`); the
Accelerate loop takes the same object (``train_loop(..., weight_schedule=...)``). λ is a function of
the step only, so resuming a checkpoint (which restores ``state.global_step``) restores it too.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from eqreg_hf.core.schedule import SCHEDULES, WeightSchedule, eqreg_weight_at

__all__ = ["SCHEDULES", "eqreg_weight_at", "EqRegWeightSchedule"]


class EqRegWeightSchedule(TrainerCallback):
    """Set ``trainer.eqreg.weight`` (the live λ) from a :class:`~eqreg_hf.WeightSchedule` before every step.

    Use with :class:`~eqreg_hf.EqRegTrainer` (which binds the regulariser to this callback). The peak
    weight is the ``EqRegConfig.weight`` given to the trainer unless ``weight`` is passed here; the
    config itself is never changed.

    Args: as :class:`~eqreg_hf.WeightSchedule` (``schedule="linear"``, ``warmup_steps=0`` steps or a
    fraction of ``max_steps``, ``start_weight=0.0``, ``final_weight=None``, ``weight=None``).

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
        self.schedule = WeightSchedule(schedule, warmup_steps, start_weight, final_weight, weight)
        self.reg = None
        self._peak: float | None = None

    def bind_eqreg(self, reg: Any) -> None:
        """Called by the trainer when it attaches (``reg``) or removes (``None``) the regulariser."""
        if reg is not None and reg.auto is not None:
            raise ValueError(
                "EqRegWeightSchedule and EqRegConfig(weight='auto') both set λ: drop the callback (auto "
                "has its own warm-up, auto_warmup) or give a number as the weight."
            )
        self.reg = reg
        if reg is not None:
            self._peak = float(reg.config.weight)

    def weight_at(self, step: int, max_steps: int | None) -> float:
        """λ at ``step`` of a run of ``max_steps`` (the trainer's config weight is the default peak)."""
        return self.schedule(step, max_steps, peak=self._peak if self._peak is not None else 0.0)

    def _apply(self, state) -> None:
        if self.reg is not None:
            self.reg.weight = self.weight_at(state.global_step, state.max_steps)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.reg is None:
            warnings.warn(
                "EqRegWeightSchedule has no EQ-Reg to drive, so it does nothing: use it with EqRegTrainer "
                "(or a trainer built with EqRegTrainerMixin) and an active EqRegConfig(weight > 0, "
                "group_order > 1).",
                stacklevel=2,
            )
        self._apply(state)  # on resume, global_step is already the checkpoint's

    def on_step_begin(self, args, state, control, **kwargs):
        self._apply(state)
