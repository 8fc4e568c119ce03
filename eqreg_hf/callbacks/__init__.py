"""``transformers.TrainerCallback`` s for EQ-Reg runs: a weight schedule and equivariance evaluation.

from eqreg_hf.callbacks import EqRegWeightSchedule, EquivarianceEvalCallback
"""

from __future__ import annotations

from eqreg_hf.callbacks.equivariance import EquivarianceEvalCallback
from eqreg_hf.callbacks.schedule import SCHEDULES, EqRegWeightSchedule, eqreg_weight_at

__all__ = ["EqRegWeightSchedule", "EquivarianceEvalCallback", "eqreg_weight_at", "SCHEDULES"]
