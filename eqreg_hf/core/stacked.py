"""The stacked batch ``[x; R_k x[:m]]``: splitting its outputs, pairing the halves of each captured map, and
the views the exact distance differentiates (one gradient buffer for both halves).

Used by :class:`~eqreg_hf.core.regularizer.EqReg`; ``split_rows`` is also the one split of the training
step and the trainer.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.distance import is_dense, views_of
from eqreg_hf.core.group_families import Group
from eqreg_hf.core.groups import rotate_image, swaps_hw
from eqreg_hf.core.layouts import feature_to_nchw
from eqreg_hf.core.taps import TapSpec

__all__ = [
    "split_rows",
    "stack_batch",
    "stack_targets",
    "shape_keeping",
    "fsdp_managed",
    "tap_pairs",
    "exact_sources",
    "remake_fn",
]


def split_rows(outputs: Any, rows: slice, total: int) -> Any:
    """The rows ``rows`` of a model output stacked to ``total`` rows: a tensor, a dict / ``ModelOutput``
    (tensor entries with ``total`` rows are sliced, the rest kept), or a tuple / list of those.

    The one way a stacked output ``[x; R_k x]`` is split (the step, the trainer and :meth:`EqReg.split`).
    """
    if torch.is_tensor(outputs):
        return outputs[rows]
    if isinstance(outputs, Mapping):
        sliced = {
            k: (v[rows] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == total else v)
            for k, v in outputs.items()
        }
        try:
            return type(outputs)(**sliced)
        except TypeError:
            return sliced
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(split_rows(o, rows, total) for o in outputs)
    raise TypeError(
        f"Cannot split a model output of type {type(outputs).__name__} into original and rotated rows; "
        "split the tensor yourself."
    )


def stack_batch(x: torch.Tensor, k: Any, m: int, group_order: int, interpolation: str) -> torch.Tensor:
    """``cat([x, R_k x[:m]])``; refused when ``R_k`` changes the shape (a quarter turn of a non-square x)."""
    xr = rotate_image(x[:m], k, group_order, interpolation)
    if xr.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"Cannot stack a {x.shape[-2]}x{x.shape[-1]} batch with its "
            f"{f'{k}-step rotation' if isinstance(k, int) else f'transform by g={tuple(k)}'} (the shape "
            "changes). Use square inputs, let EqReg draw k (it keeps the shape), or call reg(x, k), "
            "which runs two passes."
        )
    return torch.cat([x, xr], dim=0)


def stack_targets(y: Any, k: Any, m: int, rotate: bool | None, group_order: int, interpolation: str) -> Any:
    """Targets of the stacked batch: ``[y; R_k y[:m]]`` for images (``rotate``; default: ``y.dim() >= 3``),
    ``[y; y[:m]]`` for labels, ``y`` itself when nothing was stacked (``m == 0``)."""
    if m == 0 or y is None:
        return y
    if rotate is None:
        rotate = y.dim() >= 3
    extra = rotate_image(y[:m], k, group_order, interpolation) if rotate else y[:m]
    return torch.cat([y, extra], dim=0)


def shape_keeping(group: Group, include_identity: bool, hw: tuple[int, int], warn: bool) -> list:
    """The elements a non-square ``hw`` batch can be stacked with: 90° turns change its shape. ``warn``:
    say so (once per regulariser)."""
    allowed = [g for g in group.elements(include_identity) if not swaps_hw(g, group.t)]
    if warn:
        what, kept = (
            ("elements", "flips, 180° and interpolated angles")
            if group.has_flips
            else ("rotations", "180° and interpolated angles")
        )
        warnings.warn(
            f"EQ-Reg: non-square inputs {hw[0]}x{hw[1]}: the stacked forward only draws {what} that "
            f"keep the shape ({kept}). Use square crops for all of "
            f"{group.name if group.has_flips else 'C4'}, or call reg(x, k=1), which runs two passes.",
            UserWarning,
            stacklevel=4,
        )
    return allowed


def fsdp_managed(model: nn.Module) -> bool:
    """True when FSDP manages a part of ``model`` (its parameters are then not safe to recompute with)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # older torch
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def tap_pairs(items: list[tuple[int, torch.Tensor]], m: int, b: int, two_pass: bool) -> list[tuple]:
    """(captured map, second-pass map or None, original part, rotated part) for each call of a tap."""
    if two_pass:
        first = [t for p, t in items if p == 0]
        second = [t for p, t in items if p == 1]
        return [(f, g, f[:m], g) for f, g in zip(first, second)]
    return [(f, None, f[:m], f[b : b + m]) for _, f in items]


def remake_fn(module: nn.Module, source: torch.Tensor, autocast: tuple):
    """``x -> module.forward(x)`` under the autocast state of the capture (the tapped map, made again)."""
    dev = source.device.type

    def remake(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev, dtype=autocast[1], enabled=autocast[0]):
            return module.forward(x)  # bypasses hooks; conv/linear are stateless and deterministic

    return remake


def exact_sources(spec: TapSpec, maps: tuple, rows: tuple[int, int], hw: tuple) -> tuple:
    """What the exact distance differentiates: the captured map(s) and how to view the pair in them.

    ``maps = (full_a, full_b, a, b)`` (``full_b`` None in a stacked pass), ``rows = (m, n)`` (rotated
    copies, batch), ``hw`` the input sizes of the two halves. In a stacked pass both halves are views of
    one captured tensor, so the gradient is written into one buffer of its shape. If a layout change
    copied (not viewed) the data, or the capture is not dense (so a gradient buffer would not have its
    strides), the pair itself is used.
    """
    full_a, full_b, a, b = maps
    m, n = rows
    if full_b is None and is_dense(full_a) and views_of(full_a, a, b):
        halves = (slice(0, m), slice(n, n + m))
        return full_a, None, lambda f, i: feature_to_nchw(f[halves[i]], spec, hw[i])[0]
    if (
        full_b is not None
        and is_dense(full_a)
        and is_dense(full_b)
        and views_of(full_a, a)
        and views_of(full_b, b)
    ):
        return full_a, full_b, lambda f, i: feature_to_nchw(f[:m] if i == 0 else f, spec, hw[i])[0]
    return a, b, lambda f, i: f
