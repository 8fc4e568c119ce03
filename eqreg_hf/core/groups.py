"""The rotation group C_t and its actions on images and feature maps.

Convention (fixed; the tests pin it; docs/design.md works an example):

* ``R_k`` rotates an image by ``k * 2π / t`` counter-clockwise. For rotations by multiples of 90°
  (always the case for t in {1, 2, 4}) this is exactly ``torch.rot90(x, k * 4 // t, (-2, -1))``;
  other angles are sampled with ``grid_sample`` and come with a validity mask (the inscribed disk).
* ``T_k`` on a *regular* map (channels field-major, ``c = i * t + j``) rolls the group axis by
  ``+k`` and rotates spatially; on a *trivial* map it only rotates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
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


def _check(k: int, group_order: int) -> int:
    if not isinstance(group_order, int) or group_order < 1:
        raise ValueError(f"group_order={group_order!r} must be a positive integer (1, 2, 4, 8, ...).")
    return int(k) % group_order


def is_exact(k: int, group_order: int) -> bool:
    """True when ``R_k`` of C_t is a multiple of 90° and so an exact ``rot90`` (no interpolation)."""
    return (_check(k, group_order) * 4) % group_order == 0


def swaps_hw(k: int, group_order: int) -> bool:
    """True when ``R_k`` is an odd number of exact quarter turns, which swaps H and W."""
    return is_exact(k, group_order) and ((int(k) % group_order) * 4 // group_order) % 2 == 1


def regular_channels_ok(channels: int, group_order: int) -> bool:
    """True when ``channels`` can hold regular C_t fields (``t`` channels each): the one divisibility rule."""
    return group_order <= 1 or channels % group_order == 0


def check_regular_channels(name: str | None, channels: int, group_order: int, hint: str = "") -> None:
    """Refuse a regular field whose channel count does not divide by t, naming the layer (if known) and the fixes.

    Example:
        >>> check_regular_channels("body.0", 12, 4)
        >>> check_regular_channels("head", 3, 4)
        Traceback (most recent call last):
        ...
        ValueError: Tap 'head' has 3 channels, not divisible by group_order=4, so it cannot hold regular fields. Choose other layers, mark it trivial (fields={'head': 'trivial'}), or change group_order.
    """
    if not regular_channels_ok(channels, group_order):
        key = name or "<layer>"
        raise ValueError(
            f"{f'Tap {name!r}' if name else 'A regular feature map'} has {channels} channels, not divisible by group_order={group_order}, so it cannot hold regular "
            f"fields. Choose other layers, mark it trivial (fields={{'{key}': 'trivial'}}), or change group_order."
            + (f" {hint}" if hint else "")
        )


def _rotate_spatial(x: torch.Tensor, k: int, group_order: int, mode: str = "bilinear") -> torch.Tensor:
    k = _check(k, group_order)
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
    grid = torch.stack(
        (src_x / max((w - 1) / 2, 0.5), src_y / max((h - 1) / 2, 0.5)), dim=-1
    ).to(flat.dtype)
    grid = grid.unsqueeze(0).expand(n, h, w, 2)
    out = F.grid_sample(flat, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out.reshape(shape) if x.dim() != 4 else out


def rotate_image(x: torch.Tensor, k: int, group_order: int = 4, mode: str = "bilinear") -> torch.Tensor:
    """``R_k``: rotate images ``[..., H, W]`` by ``k * 2π / group_order`` counter-clockwise.

    Exact ``torch.rot90`` for multiples of 90°; otherwise differentiable bilinear ``grid_sample``
    about the centre (use :func:`rotation_mask` to ignore the corners that leave the frame).

    Args:
        x: tensor whose last two dims are H, W.
        k: group element (any integer, taken mod ``group_order``).
        group_order: t of C_t (default 4).
        mode: ``"bilinear"`` or ``"nearest"`` for interpolated angles.

    Example:
        >>> x = torch.arange(4.).view(1, 1, 2, 2)
        >>> torch.equal(rotate_image(x, 1, 4), torch.rot90(x, 1, (-2, -1)))
        True
    """
    return _rotate_spatial(x, k, group_order, mode)


def shift_channels(f: torch.Tensor, k: int, group_order: int, dim: int = 1) -> torch.Tensor:
    """Cyclic shift of the group axis of a field-major regular map (channel ``c = i*t + j``, roll ``j`` by +k)."""
    t = group_order
    k = _check(k, t)
    c = f.shape[dim]
    check_regular_channels(None, c, t)
    if k == 0:
        return f
    dim = dim % f.dim()
    shape = f.shape
    g = f.reshape(*shape[:dim], c // t, t, *shape[dim + 1:])
    return g.roll(k, dims=dim + 1).reshape(shape)


def rotate_features(
    f: torch.Tensor, k: int, group_order: int = 4, field: str = "regular", mode: str = "bilinear"
) -> torch.Tensor:
    """``T_k`` on an NCHW feature map: cyclic channel shift (regular fields) and spatial rotation.

    ``T_k f = rot(roll(f.view(B, C/t, t, H, W), +k, dim=2).view(B, C, H, W), k)``. A trivial field
    is only rotated. With this convention a strictly C_t-equivariant network (e2cnn/escnn regular
    fields, or a lifting + group convolution) satisfies ``T_k F(x) = F(R_k x)``.

    Args:
        f: ``[B, C, H, W]`` map.
        k: group element.
        group_order: t.
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



def sample_k(group_order: int, generator: torch.Generator, include_identity: bool = False,
             allowed: list[int] | None = None) -> int:
    """Draw a group element from ``generator``: uniform on 0..t-1 (paper) or 1..t-1 (default)."""
    choices = allowed if allowed is not None else list(range(0 if include_identity else 1, group_order))
    if not choices:
        return 0
    idx = int(torch.randint(len(choices), (1,), generator=generator).item())
    return choices[idx]
