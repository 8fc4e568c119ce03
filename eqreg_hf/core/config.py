"""`EqRegConfig`: every EQ-Reg setting in one JSON-able dataclass.

The same object is built from Python, from the command line (``HfArgumentParser`` or the
``--eqreg.*`` flags of the CLI) and from the ``eqreg_config.json`` saved beside a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from eqreg_hf.core.distance import DISTANCES
from eqreg_hf.core.io import atomic_write_text

FIELD_TYPES = ("regular", "trivial")
TAP_LAYOUTS = ("auto", "nchw", "nhwc", "tokens")  # how a tapped output is read (not rain folder layouts)
CAPTURES = ("auto", "clone", "reference", "recompute")
CONFIG_NAME = "eqreg_config.json"


@dataclass
class EqRegConfig:
    """Settings of the EQ-Reg regulariser (Bai et al., CVPR 2025).

    ``total = task_loss + weight * Σ_l layer_weights[l] * d(T_k F_l(x), F_l(R_k x))``

    Example:
        >>> cfg = EqRegConfig(layers=["body.0", "body.2"], group_order=4, weight=1e-2)
        >>> EqRegConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    layers: Any = field(
        default="auto",
        metadata={"help": "Layers to tap: 'auto', a module name, a glob pattern, or a list of them."},
    )
    group_order: int = field(
        default=4, metadata={"help": "t of the rotation group C_t (1 = off; 2, 4 exact; others interpolated)."}
    )
    weight: float = field(default=1e-2, metadata={"help": "λ, the weight of the EQ-Reg term (0 = off)."})
    distance: str = field(
        default="relative",
        metadata={"help": f"Distance d between T_k F(x) and F(R_k x): one of {DISTANCES}. 'fro' is the paper's."},
    )
    fields: Any = field(
        default="regular",
        metadata={"help": "Field type of tapped maps: 'regular' (rotate + cyclic channel shift), 'trivial' "
                  "(rotate only), or a dict {layer or glob: type}."},
    )
    layer_weights: Any = field(
        default=None, metadata={"help": "Optional dict {layer or glob: weight} (default 1 for every tap)."}
    )
    include_identity: bool = field(
        default=False, metadata={"help": "Draw k from 0..t-1 (the paper) instead of 1..t-1."}
    )
    rotated_fraction: float = field(
        default=1.0, metadata={"help": "Fraction of the batch whose rotated copy is added, in (0, 1]."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the k sampler's torch.Generator."})
    image_key: str = field(default="pixel_values", metadata={"help": "Key of the image in dict batches."})
    rotate_targets: bool = field(
        default=True,
        metadata={"help": "Apply the task loss to the rotated half too (image targets rotated, labels "
                  "copied). False: task loss on the original half only."},
    )
    layouts: Any = field(
        default="auto",
        metadata={"help": f"Layout of tapped outputs: one of {TAP_LAYOUTS} or a dict {{layer or glob: layout}}. "
                  "'auto': 4-D = NCHW, 3-D = tokens."},
    )
    prefix_tokens: Any = field(
        default=None,
        metadata={"help": "Number of class/register tokens before the patch tokens (None: inferred), "
                  "int or dict {layer or glob: int}."},
    )
    interpolation: str = field(
        default="bilinear", metadata={"help": "grid_sample mode for non-90° rotations: 'bilinear' or 'nearest'."}
    )
    eps: float = field(default=1e-8, metadata={"help": "Stabiliser of the 'relative' distance."})
    capture: str = field(
        default="auto",
        metadata={"help": "How tapped outputs are kept for backward: 'reference' as returned (fastest), 'clone' "
                  "copied (safe against in-place ops after a tap), 'recompute' keeps only the input of tapped "
                  "Conv2d/Linear layers and recomputes their output in backward (one map less per tap: "
                  "least memory, one extra conv per tap), 'auto' = 'clone' if the model holds an in-place "
                  "module, else 'reference'."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.layers, tuple):
            self.layers = list(self.layers)
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.group_order, int) or isinstance(self.group_order, bool) or self.group_order < 1:
            raise ValueError(
                f"group_order={self.group_order!r} is not valid: use a positive integer "
                "(1 = off, 2 or 4 for exact 90° rotations, 8, 16, ... for interpolated ones)."
            )
        if self.distance not in DISTANCES:
            raise ValueError(f"Unknown distance {self.distance!r}. Choose between {list(DISTANCES)}.")
        if not (0.0 < float(self.rotated_fraction) <= 1.0):
            raise ValueError(
                f"rotated_fraction={self.rotated_fraction!r} must lie in (0, 1]: it is the share of the "
                "batch that gets a rotated copy (1.0 = the whole batch, as in the paper)."
            )
        if float(self.weight) < 0:
            raise ValueError(f"weight={self.weight!r} must be >= 0 (0 turns EQ-Reg off).")
        _check_choice("fields", self.fields, FIELD_TYPES)
        _check_choice("layouts", self.layouts, TAP_LAYOUTS)
        if self.interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"Unknown interpolation {self.interpolation!r}. Choose between ['bilinear', 'nearest']."
            )
        if self.capture not in CAPTURES:
            raise ValueError(f"Unknown capture {self.capture!r}. Choose between {list(CAPTURES)}.")
        if not (isinstance(self.layers, (str, list)) and self.layers):
            raise ValueError(
                f"layers={self.layers!r} is not valid: give 'auto', a module name, a glob pattern "
                "(e.g. 'body.*.conv1') or a non-empty list of them."
            )

    @property
    def active(self) -> bool:
        """False when EQ-Reg is a no-op (weight 0 or the trivial group)."""
        return float(self.weight) > 0 and self.group_order > 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EqRegConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown EqRegConfig fields {unknown}. Valid fields: {sorted(known)}.")
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write ``eqreg_config.json`` into ``directory`` (created if needed); returns the path."""
        return atomic_write_text(os.path.join(os.fspath(directory), CONFIG_NAME), self.to_json_string())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "EqRegConfig":
        """Read a config from a folder holding ``eqreg_config.json`` or from the JSON file itself."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No EQ-Reg config at {path!r}: save one with EqRegConfig.save_pretrained(folder)."
            )
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    values = value.values() if isinstance(value, dict) else [value]
    for v in values:
        if v not in choices:
            raise ValueError(f"Unknown {name} value {v!r}. Choose between {list(choices)} (or a dict of them).")
