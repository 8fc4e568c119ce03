"""EQ-Reg itself, in pure torch (no transformers / timm / datasets / accelerate import).

config.py      EqRegConfig: every setting, JSON-able
group_families.py  the registry of group families (C_t, D_t): one class each, as_group
groups.py      R_g on images, T_g on regular fields, the channel rule, the sampler
layouts.py     NCHW / NHWC / tokens / vectors -> NCHW, and T_k in a resolved layout
taps.py        forward hooks that capture tapped outputs (owned, removable)
selection.py   which layers: names, globs, "auto" per model family (duck typing)
alignment.py   the sampling-grid tracer: is a quarter turn exact for this input size?
distances.py   the registry of distances d (fro / mse / relative): one class each
distance.py    d(T_k F(x), F(R_k x)) on tensors, the exact fast form
regularizer.py EqReg: stack [x; R_k x], capture, the loss
measure.py     equivariance_error: the per-layer report, table and plot
schedule.py    λ schedules (pure functions of the step)
unwrap.py      the user's module inside DDP / FSDP / compile wrappers; its device
io.py          atomic file writes
paper.py       the paper's title, link and citation
"""

from __future__ import annotations

from eqreg_hf.core.alignment import AlignmentTracer, EqRegAlignmentWarning
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.distance import equivariance_distance
from eqreg_hf.core.distances import DISTANCES, Distance, register_distance
from eqreg_hf.core.group_families import GROUPS, Group, register_group
from eqreg_hf.core.groups import rotate_features, rotate_image, rotation_mask
from eqreg_hf.core.measure import EquivarianceReport, equivariance_error
from eqreg_hf.core.regularizer import EqReg
from eqreg_hf.core.schedule import WeightSchedule, eqreg_weight_at
from eqreg_hf.core.selection import resolve_taps
from eqreg_hf.core.taps import FeatureTaps, TapSpec
from eqreg_hf.core.unwrap import model_device, unwrap_model

__all__ = [
    "AlignmentTracer",
    "EqRegAlignmentWarning",
    "EqRegConfig",
    "equivariance_distance",
    "DISTANCES",
    "Distance",
    "register_distance",
    "GROUPS",
    "Group",
    "register_group",
    "rotate_features",
    "rotate_image",
    "rotation_mask",
    "EquivarianceReport",
    "equivariance_error",
    "EqReg",
    "WeightSchedule",
    "eqreg_weight_at",
    "resolve_taps",
    "FeatureTaps",
    "TapSpec",
    "model_device",
    "unwrap_model",
]
