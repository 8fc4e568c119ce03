"""The actions of the groups on images and feature maps (the families C_t, D_t: ``core/group_families.py``).

Convention (fixed; the tests pin it; docs/design.md works an example):

* **C_t** holds the rotations ``r^k`` by ``k * 2π / t``; an element is the integer ``k``. **D_t** holds
  those and their mirror images: an element is ``(f, k)`` (:class:`GroupElement`), f in {0, 1}, indexed
  ``f * t + k``. A plain integer ``k`` is the rotation ``(0, k)`` in either group.
* ``R_g`` on an image: flip the last axis (W) when f = 1, then rotate by ``k * 2π / t`` counter-clockwise.
  For rotations by multiples of 90° (always the case for t in {1, 2, 4}) this is exactly
  ``torch.rot90(x, k * 4 // t, (-2, -1))``; other angles are sampled with ``grid_sample`` and come with
  a validity mask (the inscribed disk). Flips are always exact.
* ``T_g`` on a *regular* map (channels field-major): for C_t a field has t channels ``c = i * t + j`` and
  ``T_k`` rolls the group axis by ``+k``; for D_t a field has 2t channels ``c = i * 2t + s * t + r`` and
  ``T_g`` first (f = 1) gives channel (s, r) the old channel (1 - s, -r mod t), then rolls r by ``+k``
  inside each half. The spatial part is ``R_g``. On a *trivial* map ``T_g`` is only the spatial part.
  This is the layout of escnn's ``flipRot2dOnR2`` / ``rot2dOnR2`` regular fields (tests/fixtures).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from eqreg_hf.core.group_families import (
    GROUPS,
    Cyclic,
    Dihedral,
    Group,
    GroupElement,
    as_element,
    as_group,
    parts,
    register_group,
)

__all__ = [
    "GROUPS",
    "register_group",
    "Cyclic",
    "Dihedral",
    "Group",
    "GroupElement",
    "as_group",
    "as_element",
    "is_identity",
    "compose",
    "is_exact",
    "swaps_hw",
    "rotate_image",
    "rotate_features",
    "shift_channels",
    "rotation_mask",
    "regular_channels_ok",
    "check_regular_channels",
    "sample_k",
]


def is_identity(g: Any) -> bool:
    """True for the identity: ``0`` or ``(0, 0)`` (k taken as given, not mod t)."""
    return g == 0 if not isinstance(g, tuple) else tuple(g) == (0, 0)


def compose(g: Any, h: Any, group: Any) -> Any:
    """The product ``g h`` (first ``h``, then ``g``): ``R_{gh} = R_g R_h`` and ``T_{gh} = T_g T_h``.

    Ints in, int out (C_t); otherwise a :class:`GroupElement`.
    """
    t = as_group(group).t
    if not isinstance(g, tuple) and not isinstance(h, tuple):
        return (int(g) + int(h)) % t
    (f1, k1), (f2, k2) = parts(g, t), parts(h, t)
    return GroupElement(f1 ^ f2, (k1 + (-k2 if f1 else k2)) % t)


def _t(group_order: Any) -> int:
    if isinstance(group_order, (str, Group)):
        return as_group(group_order).t
    if not isinstance(group_order, int) or group_order < 1:
        raise ValueError(
            f"group_order={group_order!r} must be a positive integer (1, 2, 4, 8, ...) or a group name "
            "such as 'C4' or 'D4'."
        )
    return group_order


def _check(k: Any, group_order: Any) -> int:
    """The rotation part of the element ``k`` (an int or ``(f, k)``), mod t."""
    return parts(k, _t(group_order))[1]


def is_exact(k: Any, group_order: Any) -> bool:
    """True when ``R_k`` is a multiple of 90° (and a flip, if any), so an exact ``rot90`` (no interpolation).

    ``k``: an int or an element ``(f, k)``; ``group_order``: t, or a group name such as ``"D4"``.
    """
    return (_check(k, group_order) * 4) % _t(group_order) == 0


def swaps_hw(k: Any, group_order: Any) -> bool:
    """True when ``R_k`` is an odd number of exact quarter turns, which swaps H and W (a flip never does)."""
    t = _t(group_order)
    return is_exact(k, t) and (_check(k, t) * 4 // t) % 2 == 1


def regular_channels_ok(channels: int, group_order: Any) -> bool:
    """True when ``channels`` can hold regular fields of the group (t channels each for C_t, 2t for D_t):
    the one divisibility rule. ``group_order``: t (C_t) or a group name."""
    size = as_group(group_order).size if isinstance(group_order, (str, Group)) else group_order
    return size <= 1 or channels % size == 0


def check_regular_channels(name: str | None, channels: int, group_order: Any, hint: str = "") -> None:
    """Refuse a regular field whose channel count does not divide by the field size (t for C_t, 2t for D_t),
    naming the layer (if known) and the fixes.

    Example:
        >>> check_regular_channels("body.0", 12, 4)
        >>> check_regular_channels("head", 3, 4)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Tap 'head' has 3 channels, not divisible by group_order=4, ... or change group_order.
    """
    if not regular_channels_ok(channels, group_order):
        key = name or "<layer>"
        group = as_group(group_order)
        raise ValueError(
            f"{f'Tap {name!r}' if name else 'A regular feature map'} has {channels} channels, not divisible "
            f"by {group.field_rule()}, so it cannot hold regular fields. Choose other layers, mark it "
            f"trivial (fields={{'{key}': 'trivial'}}), or change {group.setting}."
            + (f" {hint}" if hint else "")
        )


def _element(g: Any, group_order: Any) -> tuple[int, int]:
    """(flip, k mod t) of ``g``; pairs (and any element of a named group) go through :func:`as_element`'s
    checks."""
    if isinstance(g, (tuple, list)) or isinstance(group_order, (str, Group)):
        return tuple(as_element(g, group_order))
    return parts(g, _t(group_order))


def _rotate_spatial(x: torch.Tensor, k: Any, group_order: Any, mode: str = "bilinear") -> torch.Tensor:
    flip, k = _element(k, group_order)
    group_order = _t(group_order)
    if flip:
        x = x.flip(-1)
    if k == 0:
        return x
    if is_exact(k, group_order):
        return torch.rot90(x, (k * 4) // group_order, dims=(-2, -1))
    return _rotate_interp(x, 2 * math.pi * k / group_order, mode)


def _rotate_interp(x: torch.Tensor, angle: float, mode: str) -> torch.Tensor:
    """Counter-clockwise rotation about the image centre by ``angle`` radians (same H×W, zero fill)."""
    shape = x.shape
    h, w = shape[-2], shape[-1]
    flat = x.reshape(-1, 1, h, w) if x.dim() != 4 else x
    n = flat.shape[0]
    # Pixel coordinates relative to the centre, so non-square maps rotate rigidly (no stretching).
    ys = torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    # Output pixel (xx, yy) takes the input at the inverse rotation. Rows grow downwards, so a
    # counter-clockwise turn on screen is clockwise in (x, y) maths coordinates; this matches rot90.
    src_x = cos * xx - sin * yy
    src_y = sin * xx + cos * yy
    grid = torch.stack((src_x / max((w - 1) / 2, 0.5), src_y / max((h - 1) / 2, 0.5)), dim=-1).to(flat.dtype)
    grid = grid.unsqueeze(0).expand(n, h, w, 2)
    out = F.grid_sample(flat, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out.reshape(shape) if x.dim() != 4 else out


def rotate_image(x: torch.Tensor, k: Any, group_order: Any = 4, mode: str = "bilinear") -> torch.Tensor:
    """``R_g``: flip images ``[..., H, W]`` along W (if g has a flip), then rotate by ``k * 2π / t``
    counter-clockwise.

    Exact ``torch.rot90`` for multiples of 90° (and ``flip`` for mirror images); otherwise differentiable
    bilinear ``grid_sample`` about the centre (use :func:`rotation_mask` to ignore the corners that leave
    the frame).

    Args:
        x: tensor whose last two dims are H, W.
        k: group element: an integer k (rotation, taken mod t) or a pair ``(f, k)`` (f = 1: flip first).
        group_order: t (default 4), or a group name such as ``"C4"`` or ``"D4"``.
        mode: ``"bilinear"`` or ``"nearest"`` for interpolated angles.

    Example:
        >>> x = torch.arange(4.).view(1, 1, 2, 2)
        >>> torch.equal(rotate_image(x, 1, 4), torch.rot90(x, 1, (-2, -1)))
        True
        >>> rotate_image(x, (1, 0), "D4").flatten().tolist()  # [[0, 1], [2, 3]] mirrored left-right
        [1.0, 0.0, 3.0, 2.0]
    """
    return _rotate_spatial(x, k, group_order, mode)


def shift_channels(f: torch.Tensor, k: Any, group_order: Any, dim: int = 1) -> torch.Tensor:
    """The channel permutation of ``T_g`` on a field-major regular map.

    C_t (channel ``c = i*t + j``): roll ``j`` by +k. D_t (channel ``c = i*2t + s*t + r``): for a flip, channel
    (s, r) takes the old (1 - s, -r mod t); then r is rolled by +k inside each half. ``k`` is an int or a pair
    ``(f, k)``; ``group_order`` is t or a group name (a flip, or a name ``"D<t>"``, means fields of 2t
    channels).
    """
    flip, k = _element(k, group_order)
    group = as_group(group_order)
    if flip and not group.has_flips:  # an element (1, k) with a plain t: D_t's fields of 2t channels
        group = Dihedral(group.t)
    check_regular_channels(None, f.shape[dim], group)
    if k == 0 and not flip:
        return f
    return group.permute_channels(f, (flip, k), dim % f.dim())


def rotate_features(
    f: torch.Tensor, k: Any, group_order: Any = 4, field: str = "regular", mode: str = "bilinear"
) -> torch.Tensor:
    """``T_g`` on an NCHW feature map: channel permutation (regular fields) and the spatial map ``R_g``.

    C_t: ``T_k f = rot(roll(f.view(B, C/t, t, H, W), +k, dim=2).view(B, C, H, W), k)``. D_t: the channel
    permutation of :func:`shift_channels`, then flip (if any) and rotate. A trivial field only gets the
    spatial map. With this convention a strictly equivariant network (escnn/e2cnn regular fields of
    ``rot2dOnR2`` / ``flipRot2dOnR2``, or a lifting + group convolution) satisfies ``T_g F(x) = F(R_g x)``.

    Args:
        f: ``[B, C, H, W]`` map.
        k: group element: an int k or a pair ``(f, k)``.
        group_order: t, or a group name such as ``"D4"``.
        field: ``"regular"`` or ``"trivial"``.
        mode: interpolation for non-90° angles.

    Example:
        >>> f = torch.randn(2, 8, 5, 5)
        >>> torch.allclose(rotate_features(rotate_features(f, 1), 3), f)
        True
    """
    if field == "regular":
        f = shift_channels(f, k, group_order, dim=1)
    elif field != "trivial":
        raise ValueError(f"Unknown field type {field!r}. Choose between ['regular', 'trivial'].")
    return _rotate_spatial(f, k, group_order, mode)


def rotation_mask(h: int, w: int, device=None, dtype=torch.float32, margin: float = 0.0) -> torch.Tensor:
    """``[H, W]`` mask of the disk inscribed in the frame, the part that stays inside under any rotation.

    ``margin`` shrinks the radius by that many pixels (e.g. to discount border effects of padding).
    """
    ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    radius = min(h, w) / 2 - margin
    return ((yy**2 + xx**2) <= radius**2 + 1e-6).to(dtype)


def sample_k(
    group_order: Any, generator: torch.Generator, include_identity: bool = False, allowed: list | None = None
) -> Any:
    """Draw a group element from ``generator``, uniform over the group (paper) or its non-identity elements
    (default).

    ``group_order``: t (C_t: an int k out) or a group name (``"D4"``: a :class:`GroupElement` out; ``"C4"``:
    an int).
    """
    group = as_group(group_order)
    choices = allowed if allowed is not None else group.elements(include_identity)
    if not choices:
        return group.identity
    idx = int(torch.randint(len(choices), (1,), generator=generator).item())
    return choices[idx]
