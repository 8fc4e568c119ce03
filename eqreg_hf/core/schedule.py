"""Schedules for the EQ-Reg weight λ: fixed ones (a pure function of the step) and the automatic one.

The training loop and the Trainer callback both set :attr:`EqReg.weight <eqreg_hf.EqReg.weight>` from
a :class:`WeightSchedule` before each optimizer step; the user's :class:`~eqreg_hf.EqRegConfig` is
never changed. Because λ depends only on the step, resuming from a checkpoint restores it for free.
:class:`AutoWeight` (``EqRegConfig(weight="auto")``) instead sets λ from running averages of both
loss terms, so that the EQ-Reg term is a chosen share of the task loss; its state goes into checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SCHEDULES", "eqreg_weight_at", "WeightSchedule", "AutoWeight"]

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
            raise ValueError(
                f"Unknown EQ-Reg weight schedule {self.schedule!r}. Choose between {list(SCHEDULES)}."
            )
        _check_warmup(self.warmup_steps, name="warmup_steps")
        for name in ("start_weight", "final_weight", "weight"):
            if getattr(self, name) is not None:
                _check_number(name, getattr(self, name), low=0.0)

    def warmup_for(self, max_steps: int | None) -> int:
        """Warm-up length in steps (a fraction is taken of ``max_steps``)."""
        w = self.warmup_steps
        if isinstance(w, float) and w < 1:
            return int(round(w * (max_steps or 0)))
        return int(w)

    def __call__(self, step: int, max_steps: int | None = None, peak: float | None = None) -> float:
        """λ for the optimizer step ``step`` of a run of ``max_steps``; ``peak`` stands in for
        ``weight=None``."""
        top = self.weight if self.weight is not None else peak
        if top is None:
            raise ValueError(
                "WeightSchedule(weight=None) needs the run's peak weight: pass peak= (the EqRegConfig's "
                "weight), or set weight= on the schedule."
            )
        return eqreg_weight_at(
            step,
            float(top),
            self.schedule,
            self.warmup_for(max_steps),
            max_steps,
            self.start_weight,
            self.final_weight,
        )


class AutoWeight:
    """λ that holds the EQ-Reg term at a chosen share of the task loss (``EqRegConfig(weight="auto")``).

    Before each optimizer step n (from the statistics of steps < n, with no gradient through them)::

        λ_n = share_n · T̄ / max(Ē, floor · Ē_peak),     share_n = target_share · min(1, n / warmup)

    T̄ and Ē are bias-corrected running averages (momentum ``momentum``) of the task loss and of the
    *unweighted* EQ-Reg term Σ_l w_l d_l, each the mean over the step's micro-batches and, under
    ``torch.distributed``, over all processes (so every rank holds the same λ). The floor keeps λ finite
    when the network becomes equivariant and Ē → 0: λ is never more than ``1 / floor`` times what the
    largest EQ-Reg term seen would give. ``max_weight`` (optional) caps λ absolutely.

    Args:
        target_share: the wanted ratio λ·Ē / T̄ (default 0.05: the EQ-Reg term at 5 % of the task loss).
        warmup: steps over which the share ramps from 0 (an int), or a fraction of ``max_steps`` (a
            float in [0, 1)); default 0.1. The EQ-Reg term is computed during the warm-up too (weight 0
            at step 0), so its statistics exist when the share starts to count.
        momentum: of the running averages (default 0.9).
        floor: the smallest Ē used, as a fraction of the largest Ē seen (default 1e-3).
        max_weight: an absolute upper bound on λ (default None: none).

    Example:
        >>> auto = AutoWeight(target_share=0.1, warmup=0)
        >>> for _ in range(50):
        ...     auto.observe(torch.tensor(2.0), torch.tensor(4.0))
        ...     weight = auto.step()
        >>> round(weight, 4)   # 0.1 * 2.0 / 4.0
        0.05
    """

    def __init__(
        self,
        target_share: float = 0.05,
        warmup: int | float = 0.1,
        momentum: float = 0.9,
        floor: float = 1e-3,
        max_weight: float | None = None,
    ):
        _check_number("target_share", target_share, low=0.0, low_open=True)
        _check_warmup(warmup)
        _check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        _check_number("floor", floor, low=0.0, low_open=True)
        if max_weight is not None:
            _check_number("max_weight", max_weight, low=0.0, low_open=True)
        self.target_share, self.warmup, self.momentum = float(target_share), warmup, float(momentum)
        self.floor, self.max_weight = float(floor), max_weight
        self.steps = 0  # optimizer steps whose statistics went into the averages
        self.weight = 0.0  # λ for the coming step
        self._avg = [0.0, 0.0]  # running averages of (task, eq), not yet bias-corrected
        self._seen = [0, 0]  # updates of each average (for the bias correction)
        self._eq_peak = 0.0
        self._sums: torch.Tensor | None = None  # [task sum, task count, eq sum, eq count] of this step

    def observe(self, task: torch.Tensor, eq_unweighted: torch.Tensor | None) -> None:
        """Add one micro-batch: its task loss, and its unweighted EQ-Reg term (None: no rotated pass)."""
        task = task.detach().to(torch.float64)
        row = torch.stack([task, torch.ones_like(task), torch.zeros_like(task), torch.zeros_like(task)])
        if eq_unweighted is not None:
            row[2] = eq_unweighted.detach().to(task.device, torch.float64)
            row[3] = 1.0
        self._sums = row if self._sums is None else self._sums + row  # a tensor: no device sync here

    def step(self, max_steps: int | None = None) -> float:
        """Close an optimizer step: average its micro-batches (over all processes), update, return the new
        λ."""
        if self._sums is not None:
            sums = self._sums
            self._sums = None
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                sums = sums.clone()
                torch.distributed.all_reduce(sums)  # sums and counts of every process: the same λ everywhere
            task_sum, task_n, eq_sum, eq_n = sums.tolist()
            if task_n > 0:
                self._update(0, task_sum / task_n)
            if eq_n > 0:
                self._update(1, eq_sum / eq_n)
                self._eq_peak = max(self._eq_peak, self._mean(1))
            self.steps += 1
        self.weight = self._weight_for(self.steps, max_steps)
        return self.weight

    def _update(self, i: int, value: float) -> None:
        if not math.isfinite(value):
            return  # a diverged step says nothing about the scale; the task loss itself will show it
        self._avg[i] = self.momentum * self._avg[i] + (1.0 - self.momentum) * value
        self._seen[i] += 1

    def _mean(self, i: int) -> float:
        return self._avg[i] / (1.0 - self.momentum ** self._seen[i]) if self._seen[i] else 0.0

    def share_at(self, step: int, max_steps: int | None = None) -> float:
        """The target share at optimizer step ``step`` (the warm-up ramp)."""
        warmup = self.warmup
        if isinstance(warmup, float) and warmup < 1:
            warmup = warmup * (max_steps or 0)
        return self.target_share * (min(1.0, step / warmup) if warmup > 0 else 1.0)

    def _weight_for(self, step: int, max_steps: int | None) -> float:
        task, eq = self._mean(0), self._mean(1)
        if not self._seen[0] or not self._seen[1] or self._eq_peak <= 0:
            return 0.0
        weight = self.share_at(step, max_steps) * task / max(eq, self.floor * self._eq_peak)
        if self.max_weight is not None:
            weight = min(weight, float(self.max_weight))
        return weight if math.isfinite(weight) else 0.0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the same λ trajectory after a resume."""
        return {
            "steps": self.steps,
            "weight": self.weight,
            "avg": list(self._avg),
            "seen": list(self._seen),
            "eq_peak": self._eq_peak,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.weight = int(state["steps"]), float(state["weight"])
        self._avg, self._seen = [float(v) for v in state["avg"]], [int(v) for v in state["seen"]]
        self._eq_peak = float(state["eq_peak"])
        self._sums = None


def _check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        raise ValueError(f"{name}={value!r} must be a finite number {' and '.join(filter(None, (lo, hi)))}.")


def _check_warmup(value: Any, name: str = "warmup") -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
        and not (isinstance(value, float) and value >= 1 and not value.is_integer())
    )
    if not ok:
        raise ValueError(
            f"{name}={value!r}: give a number of steps (int >= 0) or a fraction of max_steps in [0, 1)."
        )
