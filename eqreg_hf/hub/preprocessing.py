"""The preprocessing a model was trained with, written into its Hub folder so that every reader agrees.

A timm model fine-tuned at 33 px with ``crop_pct=1.0`` but saved with the ImageNet ``pretrained_cfg`` it was
created with (224 px, crop 0.95) is evaluated by timm's standard ``resolve_data_config`` /
``create_transform`` on other inputs than it was trained on: a silently different accuracy. The data
config of the evaluation transform (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
``crop_mode``: the keys of ``timm.data.resolve_data_config``) therefore goes into the folder (each format of
:mod:`eqreg_hf.hub.formats` puts it where its readers look):

* timm: into ``pretrained_cfg`` of ``config.json`` (what ``timm.create_model("local-dir:...")`` and
  ``resolve_data_config(model=...)`` read);
* transformers: ``preprocessor_config.json`` for ``AutoImageProcessor`` (a ``BitImageProcessor``: resize the
  shorter edge to ``size / crop_pct``, centre crop, normalise: timm's evaluation transform), and
  ``eqreg_preprocessing`` in ``config.json``, which :func:`eqreg_hf.data.classification_transform` reads.

The library's own networks (the derainers) take any size and no normalisation: nothing to carry.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["PREPROCESSING_KEYS", "check_preprocessing", "write_image_processor"]

PREPROCESSING_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


def check_preprocessing(preprocessing: Mapping[str, Any]) -> dict[str, Any]:
    """The data config to save (the keys of :data:`PREPROCESSING_KEYS`, JSON-ready); a one-line error
    otherwise."""
    if not isinstance(preprocessing, Mapping):
        raise TypeError(
            f"preprocessing={preprocessing!r} must be a dict like timm's resolve_data_config() returns."
        )
    out = {k: preprocessing[k] for k in PREPROCESSING_KEYS if k in preprocessing}
    size = out.get("input_size")
    if size is None or len(size) != 3 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError(
            f"preprocessing input_size={size!r} must be (channels, height, width), e.g. (3, 32, 32): "
            "pass the data config of the evaluation transform (classification_transform(...).data_config)."
        )
    out["input_size"] = [int(v) for v in size]
    for key in ("mean", "std"):
        if key in out:
            out[key] = [float(v) for v in out[key]]
    if "crop_pct" in out and not (
        isinstance(out["crop_pct"], (int, float))
        and 0 < out["crop_pct"] <= 1
        and math.isfinite(out["crop_pct"])
    ):
        raise ValueError(f"preprocessing crop_pct={out['crop_pct']!r} must lie in (0, 1].")
    return out


def write_image_processor(folder: str | os.PathLike, preprocessing: Mapping[str, Any]) -> str:
    """``preprocessor_config.json`` for ``transformers.AutoImageProcessor``, doing timm's evaluation
    transform."""
    prep = check_preprocessing(preprocessing)
    _, h, w = prep["input_size"]
    crop = float(prep.get("crop_pct", 1.0))
    config = {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": int(math.floor(min(h, w) / crop))},
        "resample": _PIL_RESAMPLE.get(str(prep.get("interpolation", "bicubic")), 3),
        "do_center_crop": True,
        "crop_size": {"height": h, "width": w},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": prep.get("mean", [0.485, 0.456, 0.406]),
        "image_std": prep.get("std", [0.229, 0.224, 0.225]),
    }
    path = os.path.join(os.fspath(folder), "preprocessor_config.json")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
        fh.write("\n")
    return path
