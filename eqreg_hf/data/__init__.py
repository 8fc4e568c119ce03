"""Data for eqreg-hf: paired rain datasets, the built-in synthetic benchmark, CIFAR-100, shapes, transforms,
clean images and their degradations for restoration (denoising, inpainting, super-resolution).

Names are resolved lazily (PEP 562), so ``import eqreg_hf.data`` does not import torch, datasets or timm.

    from eqreg_hf.data import load_rain, PairedTransform, paired_collate
    ds = load_rain("synthetic", split="train").with_transform(PairedTransform(crop_size=64, seed=0))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    # rain.py
    "load_rain": "rain",
    "BENCHMARKS": "rain",
    "DATA_DIR_ENV": "rain",
    # rain_layouts.py
    "find_pairs": "rain_layouts",
    "detect_layout": "rain_layouts",
    "RAIN_LAYOUTS": "rain_layouts",
    # synthetic.py
    "make_synthetic_rain": "synthetic",
    "add_rain": "synthetic",
    "rain_streaks": "synthetic",
    "load_photo": "synthetic",
    "TRAIN_PHOTOS": "synthetic",
    "TEST_PHOTOS": "synthetic",
    # rain_settings.py
    "RainSettings": "rain_settings",
    "DEFAULT_RAIN": "rain_settings",
    # transforms.py
    "to_tensor": "transforms",
    "paired_random_crop": "transforms",
    "paired_random_rot_flip": "transforms",
    "PairedTransform": "transforms",
    "paired_collate": "transforms",
    "RandomRot90": "transforms",
    # cifar.py
    "load_cifar100": "cifar",
    "classification_transform": "cifar",
    "cifar_transform": "cifar",
    "ClassificationTransform": "cifar",
    "num_classes": "cifar",
    "CIFAR100_HUB_ID": "cifar",
    "CIFAR100_FINE_NAMES": "cifar",
    "CIFAR100_COARSE_NAMES": "cifar",
    "CIFAR100_FINE_TO_COARSE": "cifar",
    # shapes.py
    "load_shapes": "shapes",
    "render_shape": "shapes",
    "SHAPE_NAMES": "shapes",
    "SHAPE_COARSE_NAMES": "shapes",
    # restore.py, clean_images.py
    "Degradation": "restore",
    "load_clean_images": "clean_images",
    "select_training_set": "clean_images",
    "RestoreTransform": "restore",
    "restore_collate": "restore",
    "held_out_pairs": "restore",
    "sr_filter": "restore",
    "DEFAULT_SIGMA": "restore",
    "DEFAULT_MASK_RATIO": "restore",
    "DEFAULT_SCALE": "restore",
    "SCALES": "restore",
    "SR_FILTERS": "restore",
    "RESTORE_AUGMENTS": "restore",
    "RESTORE_TASKS": "restore",
}

__all__ = sorted(_EXPORTS)

# Old names, answered with the new one (LAYOUTS also named the tap layouts of EqRegConfig).
_RENAMED = {"LAYOUTS": "RAIN_LAYOUTS"}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        hint = f"; it is now {_RENAMED[name]!r}" if name in _RENAMED else ""
        raise AttributeError(f"module 'eqreg_hf.data' has no attribute {name!r}{hint}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for IDEs and type checkers
    from eqreg_hf.data.cifar import (
        CIFAR100_COARSE_NAMES,
        CIFAR100_FINE_NAMES,
        CIFAR100_FINE_TO_COARSE,
        CIFAR100_HUB_ID,
        ClassificationTransform,
        cifar_transform,
        classification_transform,
        load_cifar100,
        num_classes,
    )
    from eqreg_hf.data.clean_images import load_clean_images, select_training_set
    from eqreg_hf.data.rain import BENCHMARKS, DATA_DIR_ENV, load_rain
    from eqreg_hf.data.rain_layouts import RAIN_LAYOUTS, detect_layout, find_pairs
    from eqreg_hf.data.rain_settings import DEFAULT_RAIN, RainSettings
    from eqreg_hf.data.restore import (
        DEFAULT_MASK_RATIO,
        DEFAULT_SCALE,
        DEFAULT_SIGMA,
        RESTORE_AUGMENTS,
        SCALES,
        SR_FILTERS,
        Degradation,
        RestoreTransform,
        held_out_pairs,
        restore_collate,
        sr_filter,
    )
    from eqreg_hf.data.shapes import SHAPE_COARSE_NAMES, SHAPE_NAMES, load_shapes, render_shape
    from eqreg_hf.data.synthetic import (
        TEST_PHOTOS,
        TRAIN_PHOTOS,
        add_rain,
        load_photo,
        make_synthetic_rain,
        rain_streaks,
    )
    from eqreg_hf.data.transforms import (
        PairedTransform,
        RandomRot90,
        paired_collate,
        paired_random_crop,
        paired_random_rot_flip,
        to_tensor,
    )
