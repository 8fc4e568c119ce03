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

from eqreg_hf.core.config_checks import check_fields, is_finite_number
from eqreg_hf.core.distances import DISTANCES, get_distance
from eqreg_hf.core.group_families import Group, as_group
from eqreg_hf.core.io import atomic_write_text, read_json_object
from eqreg_hf.core.schedule import _check_number, _check_warmup

FIELD_TYPES = ("regular", "trivial")
TAP_LAYOUTS = ("auto", "nchw", "nhwc", "tokens")  # how a tapped output is read (not rain folder layouts)
CAPTURES = ("auto", "clone", "reference", "recompute")
# "eqreg": the stacked step and the term; "pair": the same stacked step without the term (the control that
# separates what the term buys from what the stacked batch [x; R_g x] buys).
MODES = ("eqreg", "pair")
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
        metadata={
            "help": "Layers to tap: 'auto', a module name, a glob pattern ('*' = one level of the dotted "
            "name, '**' = any depth), or a list of them; '<layer>:<index or key>' picks one tensor of a "
            "layer that returns a tuple or dict."
        },
    )
    group_order: int | None = field(
        default=None,
        metadata={
            "help": "t, the number of rotations (2, 4 exact; others interpolated): the shortcut "
            "for group='C<t>' (default 4; 1 = off). With group set, leave it out or give the same t."
        },
    )
    weight: float | str = field(
        default=1e-2,
        metadata={
            "help": "λ, the weight of the EQ-Reg term (0 = off), or 'auto': set each step so that the EQ-Reg "
            "term is target_share of the task loss."
        },
    )
    distance: str = field(
        default="relative",
        metadata={
            "help": f"Distance d between T_k F(x) and F(R_k x): one of {list(DISTANCES)}. 'fro' is the "
            "paper's."
        },
    )
    fields: Any = field(
        default="regular",
        metadata={
            "help": "Field type of tapped maps: 'regular' (rotate + cyclic channel shift), 'trivial' "
            "(rotate only), or a dict {layer or glob: type}."
        },
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
        metadata={
            "help": "Apply the task loss to the rotated half too (image targets rotated, labels "
            "copied). False: task loss on the original half only."
        },
    )
    layouts: Any = field(
        default="auto",
        metadata={
            "help": f"Layout of tapped outputs: one of {TAP_LAYOUTS} or a dict {{layer or glob: layout}}. "
            "'auto': 4-D = NCHW, 3-D = tokens."
        },
    )
    prefix_tokens: Any = field(
        default=None,
        metadata={
            "help": "Number of class/register tokens before the patch tokens (None: inferred), "
            "int or dict {layer or glob: int}."
        },
    )
    interpolation: str = field(
        default="bilinear",
        metadata={"help": "grid_sample mode for non-90° rotations: 'bilinear' or 'nearest'."},
    )
    eps: float = field(default=1e-8, metadata={"help": "Stabiliser of the 'relative' distance."})
    capture: str = field(
        default="auto",
        metadata={
            "help": "How tapped outputs are kept for backward: 'reference' as returned (fastest), 'clone' "
            "copied (safe against in-place ops after a tap), 'recompute' keeps only the input of tapped "
            "Conv2d/Linear layers and recomputes their output in backward (one map less per tap: "
            "least memory, one extra conv per tap), 'auto' = 'clone' if the model holds an in-place "
            "module, else 'reference'."
        },
    )

    target_share: float = field(
        default=0.05,
        metadata={
            "help": "weight='auto': the share of the task loss the EQ-Reg term is held at (0.05 = 5 %)."
        },
    )
    auto_warmup: float = field(
        default=0.1,
        metadata={
            "help": "weight='auto': steps over which the share ramps up from 0 (int), or a fraction of "
            "max_steps (< 1)."
        },
    )
    group: str | None = field(
        default=None,
        metadata={
            "help": "The symmetry group: 'C<t>' (t rotations) or 'D<t>' (t rotations and t mirror images, "
            "e.g. 'D4': the 8 symmetries of a square). Default: C<group_order>."
        },
    )
    mode: str = field(
        default="eqreg",
        metadata={
            "help": "'eqreg': the stacked step [x; R_g x] and the EQ-Reg term; 'pair': the same stacked step "
            "with no term (no taps, weight=0): EQ-Reg's control, rotation augmentation at twice the images."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.layers, tuple):
            self.layers = list(self.layers)
        self.validate()

    def validate(self) -> None:
        self._resolve_group()
        check_fields(self)  # types and ranges of the other fields (core/config_checks.py)
        if (
            not isinstance(self.group_order, int)
            or isinstance(self.group_order, bool)
            or self.group_order < 1
        ):
            raise ValueError(
                f"group_order={self.group_order!r} is not valid: use a positive integer "
                "(1 = off, 2 or 4 for exact 90° rotations, 8, 16, ... for interpolated ones)."
            )
        get_distance(self.distance)  # an unknown name is an error naming the registered ones
        if self.weight != "auto" and not (is_finite_number(self.weight) and self.weight >= 0):
            raise ValueError(
                f"weight={self.weight!r} is not valid: give a finite number >= 0 (0 turns EQ-Reg off) "
                "or 'auto' (λ set each step to hold the EQ-Reg term at target_share of the task loss)."
            )
        _check_number("target_share", self.target_share, low=0.0, low_open=True)
        _check_warmup(self.auto_warmup, name="auto_warmup")
        _check_choice("fields", self.fields, FIELD_TYPES)
        _check_choice("layouts", self.layouts, TAP_LAYOUTS)
        if self.interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"Unknown interpolation {self.interpolation!r}. Choose between ['bilinear', 'nearest']."
            )
        if self.capture not in CAPTURES:
            raise ValueError(f"Unknown capture {self.capture!r}. Choose between {list(CAPTURES)}.")
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}. Choose between {list(MODES)}.")
        if self.mode == "pair" and self.weight != 0:
            raise ValueError(
                f"mode='pair' is EQ-Reg's stacked step without its term, so weight={self.weight!r} would "
                "not be used: give weight=0 (--eqreg.weight 0; EqRegConfig.pair(group=...) sets it), or "
                "mode='eqreg' for the term."
            )

    def _resolve_group(self) -> None:
        """``group`` and ``group_order`` agree: group_order=t alone means C_t; group alone sets t; both must
        match."""
        if self.group is None:
            if self.group_order is None:
                self.group_order = 4
            return
        spec = as_group(self.group)  # names the valid forms when the name is bad
        if self.group_order is not None and self.group_order != spec.t:
            raise ValueError(
                f"group={self.group!r} and group_order={self.group_order!r} disagree: group_order=t is the "
                f"shortcut for group='C<t>'. Give one of them, e.g. EqRegConfig(group={spec.name!r}) or "
                f"EqRegConfig(group_order={self.group_order!r}), or the same t in both."
            )
        self.group, self.group_order = spec.name, spec.t

    @property
    def group_spec(self) -> Group:
        """The group EQ-Reg works with (a registered family, e.g. ``Cyclic(4)``, ``Dihedral(4)``), with
        ``.name`` ("C4", "D4"), ``.t`` and ``.size`` (t or 2t)."""
        return as_group(self.group if self.group is not None else self.group_order)

    @property
    def active(self) -> bool:
        """False when EQ-Reg is a no-op (weight 0 or the trivial group)."""
        return (self.weight == "auto" or float(self.weight) > 0) and self.group_spec.size > 1

    @property
    def stacks(self) -> bool:
        """True when the training step stacks ``[x; R_g x]``: the term is on, or ``mode="pair"``."""
        return self.active or (self.mode == "pair" and self.group_spec.size > 1)

    @classmethod
    def pair(cls, group: str = "C4", **fields: Any) -> EqRegConfig:
        """The ``pair`` control for ``group``: EQ-Reg's stacked step, the task loss on both halves, no term.

        >>> EqRegConfig.pair("D4").stacks, EqRegConfig.pair("D4").active
        (True, False)
        """
        return cls(group=group, weight=0.0, mode="pair", **fields)

    @property
    def auto_weight(self) -> bool:
        """True for ``weight="auto"`` (λ set each step from the running losses)."""
        return self.weight == "auto"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EqRegConfig:
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
    def from_pretrained(cls, path: str | os.PathLike) -> EqRegConfig:
        """Read a config from a folder holding ``eqreg_config.json`` or from the JSON file itself."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No EQ-Reg config at {path!r}: save one with EqRegConfig.save_pretrained(folder)."
            )
        return cls.from_dict(read_json_object(path, "write it with EqRegConfig.save_pretrained(folder)"))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    values = value.values() if isinstance(value, dict) else [value]
    for v in values:
        if v not in choices:
            raise ValueError(
                f"Unknown {name} value {v!r}. Choose between {list(choices)} (or a dict of them)."
            )
