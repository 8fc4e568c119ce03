"""eqreg-hf: soft rotation equivariance (EQ-Reg, Bai et al., CVPR 2025) for any PyTorch / HF vision model.

    from eqreg_hf import EqRegConfig, EqReg, equivariance_error, rotate_image, rotate_features
"""

from __future__ import annotations

from .config import EqRegConfig
from .groups import rotate_features, rotate_image, rotation_mask
from .measure import EquivarianceReport, equivariance_error
from .regularizer import EqReg, equivariance_distance
from .taps import EqRegAlignmentWarning, FeatureTaps, TapSpec

__version__ = "0.1.0"

__all__ = [
    "EqRegConfig",
    "EqReg",
    "equivariance_error",
    "EquivarianceReport",
    "equivariance_distance",
    "rotate_image",
    "rotate_features",
    "rotation_mask",
    "FeatureTaps",
    "TapSpec",
    "EqRegAlignmentWarning",
]


def __getattr__(name: str):
    # The Trainer integration imports transformers; load it only when asked for.
    if name in ("EqRegTrainer", "EqRegTrainerMixin"):
        from . import trainer

        return getattr(trainer, name)
    if name in ("write_hub_folder", "save_folder", "load_folder", "push_folder"):
        from . import hub

        return getattr(hub, name)
    raise AttributeError(f"module 'eqreg_hf' has no attribute {name!r}")
