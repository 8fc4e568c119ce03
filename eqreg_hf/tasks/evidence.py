"""Controlled evidence: paired differences over seeds with a 95 % interval.

A claim that one method beats another compares runs that share everything but the method, seed by seed
(the same initial weights, data order and held-out images). :func:`paired_effect` is the mean of those
per-seed differences with a Student-t interval; the benchmarks (``scripts/bench_*.py``) report every
method against its control with it::

    >>> effect = paired_effect({0: 29.54, 1: 29.79, 2: 29.60}, {0: 29.29, 1: 29.17, 2: 29.40})
    >>> effect.format(), effect.verdict()  # three seeds: +0.36 dB, but the interval holds 0
    ('+0.36 [-0.21, +0.93]', 'ties')
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = ["Effect", "paired_effect", "mean_interval"]


@dataclass(frozen=True)
class Effect:
    """The mean of per-seed differences (treatment − control) and its 95 % interval over ``n`` seeds."""

    mean: float
    low: float
    high: float
    n: int

    def verdict(self) -> str:
        """ "helps" / "hurts" when the interval excludes 0, "ties" when it holds 0, "n < 2" without one."""
        if self.n < 2 or not math.isfinite(self.low):
            return "n < 2"
        return "helps" if self.low > 0 else "hurts" if self.high < 0 else "ties"

    def format(self, digits: int = 2) -> str:
        if self.n < 2:
            return f"{self.mean:+.{digits}f} (1 seed)"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def mean_interval(values: list[float], confidence: float = 0.95) -> Effect:
    """Mean of ``values`` with a two-sided Student-t interval (NaN bounds for fewer than two values)."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        raise ValueError("mean_interval got no finite values: every run of the pair is missing or NaN.")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Effect(mean, math.nan, math.nan, len(values))
    from scipy.stats import t

    half = float(
        t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    )
    return Effect(mean, mean - half, mean + half, len(values))


def paired_effect(treatment: dict, control: dict, confidence: float = 0.95) -> Effect:
    """``treatment[seed] − control[seed]`` over the seeds both have, averaged, with its t interval.

    Seeds present on one side only are left out (a resumed sweep may have finished one method's run and not
    the other's); no common seed is an error naming both sides' seeds.
    """
    seeds = sorted(set(treatment) & set(control))
    if not seeds:
        raise ValueError(
            f"paired_effect: no seed in common (treatment {sorted(treatment)}, control {sorted(control)}); "
            "run both methods with the same seeds."
        )
    return mean_interval([treatment[s] - control[s] for s in seeds], confidence)
