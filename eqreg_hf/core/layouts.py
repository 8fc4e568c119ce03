"""Layouts of tapped outputs: NCHW maps, NHWC maps, ``[B, N, D]`` tokens and ``[B, D]`` vectors.

EQ-Reg compares feature maps in NCHW. ``to_nchw`` brings any tapped output there (tokens: prefix
tokens dropped, the rest laid on the patch grid with the input's aspect ratio); ``transform_feature``
is ``T_k`` in the resolved layout (a vector has no spatial part: only its channels move).
"""

from __future__ import annotations

import functools
import math

import torch

from eqreg_hf.core.groups import rotate_features, shift_channels, swaps_hw
from eqreg_hf.core.taps import TapSpec

__all__ = [
    "LAYOUT_NAMES",
    "to_nchw",
    "from_nchw",
    "infer_prefix_and_grid",
    "feature_to_nchw",
    "transform_feature",
    "check_rotated_shape",
]

# What a layout resolves to ("auto" picks by dimension: 4-D NCHW, 3-D tokens, 2-D vector).
LAYOUT_NAMES = ("nchw", "nhwc", "tokens", "vector")


def to_nchw(
    f: torch.Tensor, layout: str, prefix_tokens: int = 0, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """Bring a tapped output into NCHW: ``"nchw"`` as is, ``"nhwc"`` permuted, ``"tokens"`` ``[B, N, D]``
    with ``prefix_tokens`` class/register tokens dropped and the rest reshaped to the ``grid`` (h, w)."""
    if layout == "nchw":
        return f
    if layout == "nhwc":
        return f.permute(0, 3, 1, 2)
    if layout == "tokens":
        b, n, d = f.shape
        patches = f[:, prefix_tokens:]
        if grid is None:
            side = math.isqrt(n - prefix_tokens)
            grid = (side, side)
        h, w = grid
        if h * w != n - prefix_tokens:
            raise ValueError(
                f"Cannot lay {n} tokens ({prefix_tokens} prefix) on a {h}x{w} grid: set prefix_tokens for "
                "this layer (EqRegConfig(prefix_tokens=...)) or check the patch size."
            )
        return patches.reshape(b, h, w, d).permute(0, 3, 1, 2)
    raise ValueError(f"Unknown layout {layout!r}. Choose between {list(LAYOUT_NAMES[:3])}.")


def from_nchw(f: torch.Tensor, layout: str, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`to_nchw` (prefix tokens passed back in ``prefix``)."""
    if layout == "nchw":
        return f
    if layout == "nhwc":
        return f.permute(0, 2, 3, 1)
    if layout == "tokens":
        b, d, h, w = f.shape
        tokens = f.permute(0, 2, 3, 1).reshape(b, h * w, d)
        return tokens if prefix is None else torch.cat([prefix, tokens], dim=1)
    raise ValueError(f"Unknown layout {layout!r}. Choose between {list(LAYOUT_NAMES[:3])}.")


@functools.lru_cache(maxsize=256)
def infer_prefix_and_grid(
    n: int, input_hw: tuple[int, int], prefix: int | None
) -> tuple[int, tuple[int, int]]:
    """Split N tokens into prefix tokens and an h×w patch grid with the input's aspect ratio."""
    H, W = input_hw
    candidates = [prefix] if prefix is not None else range(0, min(n, 17))
    for p in candidates:
        m = n - p
        if m <= 0:
            continue
        h = round(math.sqrt(m * H / W))
        for hh in (h, h - 1, h + 1):
            if hh > 0 and m % hh == 0 and abs(hh / (m // hh) - H / W) < 0.25 * H / W + 1e-9:
                return p, (hh, m // hh)
    raise ValueError(
        f"Cannot lay out {n} tokens as prefix tokens plus a patch grid for a {H}x{W} input; "
        "set EqRegConfig(prefix_tokens=...) and layouts={'<layer>': 'tokens'}, or tap an NCHW layer."
    )


def feature_to_nchw(f: torch.Tensor, spec: TapSpec, input_hw: tuple[int, int]) -> tuple[torch.Tensor, str]:
    """Bring one tapped output to NCHW (or ``[B, D]`` vectors); returns (tensor, resolved layout)."""
    layout = spec.layout
    if layout == "auto":
        layout = {4: "nchw", 3: "tokens", 2: "vector"}.get(f.dim())
        if layout is None:
            raise ValueError(
                f"Tap {spec.name!r} returned a {f.dim()}-D tensor {tuple(f.shape)}; EQ-Reg handles NCHW/NHWC "
                "maps, [B, N, D] tokens and [B, D] vectors. Set layouts={'%s': ...} or tap another layer."
                % spec.name
            )
    if layout == "vector":
        return f, layout
    if layout == "tokens":
        p, grid = infer_prefix_and_grid(f.shape[1], input_hw, spec.prefix_tokens)
        return to_nchw(f, "tokens", p, grid), layout
    return to_nchw(f, layout), layout


def transform_feature(
    f: torch.Tensor, k: int, group_order: int, field: str, layout: str, mode: str
) -> torch.Tensor:
    """T_k on an NCHW map or a ``[B, D]`` vector (regular: cyclic channel shift; trivial: nothing)."""
    if layout == "vector":
        return shift_channels(f, k, group_order, dim=1) if field == "regular" else f
    return rotate_features(f, k, group_order, field=field, mode=mode)


def check_rotated_shape(
    name: str, a: torch.Tensor, b: torch.Tensor, ta: torch.Tensor | None, layout: str, k: int, t: int
) -> None:
    """``T_k F(x)`` must have the shape of ``F(R_k x)``; for exact turns the rotated map is not
    materialised."""
    if ta is not None:
        expected = tuple(ta.shape)
    elif layout != "vector" and swaps_hw(k, t):
        expected = (*a.shape[:-2], a.shape[-1], a.shape[-2])
    else:
        expected = tuple(a.shape)
    if expected != tuple(b.shape):
        raise RuntimeError(
            f"Tap {name!r}: T_k F(x) has shape {expected} but F(R_k x) has {tuple(b.shape)}; the layer's "
            "output does not rotate with the input (check layouts/prefix_tokens)."
        )
