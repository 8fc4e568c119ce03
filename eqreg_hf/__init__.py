"""eqreg-hf: soft rotation equivariance (EQ-Reg, Bai et al., CVPR 2025) for any PyTorch / HF vision model.

    from eqreg_hf import EqRegConfig, EqReg, equivariance_error, rotate_image, rotate_features

Every public name is re-exported here and imported lazily: ``import eqreg_hf`` loads nothing but
this file, and EQ-Reg itself (:mod:`eqreg_hf.core`) needs only torch. The folders are the layers
(see ``docs/design.md``): core → train → callbacks / hub → tasks → cli, imports only go down.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "EqRegConfig": "eqreg_hf.core.config",
    "EqReg": "eqreg_hf.core.regularizer",
    "equivariance_distance": "eqreg_hf.core.distance",
    "DISTANCES": "eqreg_hf.core.distances",
    "Distance": "eqreg_hf.core.distances",
    "register_distance": "eqreg_hf.core.distances",
    "GROUPS": "eqreg_hf.core.group_families",
    "Group": "eqreg_hf.core.group_families",
    "register_group": "eqreg_hf.core.group_families",
    "equivariance_error": "eqreg_hf.core.measure",
    "EquivarianceReport": "eqreg_hf.core.measure",
    "rotate_image": "eqreg_hf.core.groups",
    "rotate_features": "eqreg_hf.core.groups",
    "rotation_mask": "eqreg_hf.core.groups",
    "FeatureTaps": "eqreg_hf.core.taps",
    "TapSpec": "eqreg_hf.core.taps",
    "EqRegAlignmentWarning": "eqreg_hf.core.alignment",
    "WeightSchedule": "eqreg_hf.core.schedule",
    "unwrap_model": "eqreg_hf.core.unwrap",
    "EqRegStep": "eqreg_hf.train.step",
    "EqRegTrainer": "eqreg_hf.train.trainer",
    "EqRegTrainerMixin": "eqreg_hf.train.trainer",
    "train_loop": "eqreg_hf.train.loop",
    "TrainHistory": "eqreg_hf.train.loop",
    "LoopArguments": "eqreg_hf.train.arguments",
    "write_hub_folder": "eqreg_hf.hub",
    "CardFacts": "eqreg_hf.hub",
    "save_folder": "eqreg_hf.hub",
    "load_folder": "eqreg_hf.hub",
    "push_folder": "eqreg_hf.hub",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eqreg_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from eqreg_hf.core.alignment import EqRegAlignmentWarning
    from eqreg_hf.core.config import EqRegConfig
    from eqreg_hf.core.distance import equivariance_distance
    from eqreg_hf.core.distances import DISTANCES, Distance, register_distance
    from eqreg_hf.core.group_families import GROUPS, Group, register_group
    from eqreg_hf.core.groups import rotate_features, rotate_image, rotation_mask
    from eqreg_hf.core.measure import EquivarianceReport, equivariance_error
    from eqreg_hf.core.regularizer import EqReg
    from eqreg_hf.core.schedule import WeightSchedule
    from eqreg_hf.core.taps import FeatureTaps, TapSpec
    from eqreg_hf.core.unwrap import unwrap_model
    from eqreg_hf.hub import CardFacts, load_folder, push_folder, save_folder, write_hub_folder
    from eqreg_hf.train.arguments import LoopArguments
    from eqreg_hf.train.loop import TrainHistory, train_loop
    from eqreg_hf.train.step import EqRegStep
    from eqreg_hf.train.trainer import EqRegTrainer, EqRegTrainerMixin
