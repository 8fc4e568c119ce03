"""Schedules for the EQ-Reg weight λ: a pure function of the optimizer step, and an object around it.

The training loop and the Trainer callback both set :attr:`EqReg.weight <eqreg_hf.EqReg.weight>` from
a :class:`WeightSchedule` before each optimizer step; the user's :class:`~eqreg_hf.EqRegConfig` is
never changed. Because λ depends only on the step, resuming from a checkpoint restores it for free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SCHEDULES", "eqreg_weight_at", "WeightSchedule"]

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


@dataclass
class WeightSchedule:
    """A λ schedule: warm-up from ``start_weight`` to the peak, optional decay to ``final_weight``.

    Args:
        schedule: "constant", "linear" or "cosine" (default "linear"): the shape of warm-up and decay.
        warmup_steps: steps of the warm-up (an int), or a float in (0, 1): that fraction of the run's
            ``max_steps`` (default 0).
        start_weight: λ at step 0 (default 0.0).
        final_weight: if given, λ goes from the peak to this value at the last step.
        weight: the peak λ (default None: the ``EqRegConfig.weight`` of the run).

    Example:
        >>> sched = WeightSchedule("linear", warmup_steps=0.5)
        >>> [sched(step, max_steps=4, peak=0.2) for step in range(4)]
        [0.0, 0.1, 0.2, 0.2]
    """

    schedule: str = "linear"
    warmup_steps: int | float = 0
    start_weight: float = 0.0
    final_weight: float | None = None
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown EQ-Reg weight schedule {self.schedule!r}. Choose between {list(SCHEDULES)}.")
        w = self.warmup_steps
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 or (
                isinstance(w, float) and w >= 1 and not w.is_integer()):
            raise ValueError(f"warmup_steps={w!r}: give a number of steps (int >= 0) or a fraction of max_steps "
                             "in [0, 1).")
        for name in ("start_weight", "final_weight", "weight"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}={v!r} must be a finite number >= 0.")

    def warmup_for(self, max_steps: int | None) -> int:
        """Warm-up length in steps (a fraction is taken of ``max_steps``)."""
        w = self.warmup_steps
        if isinstance(w, float) and w < 1:
            return int(round(w * (max_steps or 0)))
        return int(w)

    def __call__(self, step: int, max_steps: int | None = None, peak: float | None = None) -> float:
        """λ for the optimizer step ``step`` of a run of ``max_steps``; ``peak`` stands in for ``weight=None``."""
        top = self.weight if self.weight is not None else peak
        if top is None:
            raise ValueError("WeightSchedule(weight=None) needs the run's peak weight: pass peak= (the EqRegConfig's "
                             "weight), or set weight= on the schedule.")
        return eqreg_weight_at(step, float(top), self.schedule, self.warmup_for(max_steps), max_steps,
                               self.start_weight, self.final_weight)
