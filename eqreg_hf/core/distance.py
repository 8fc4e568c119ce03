"""The distance d between ``T_k F(x)`` and ``F(R_k x)``, and its fast exact form.

* ``equivariance_distance``: the plain autograd version (any T_k, masks for interpolated rotations);
* ``ExactDistance``: the same value for exact (permutation) ``T_k`` with a hand-written backward that
  keeps no copies of the tapped maps and writes both halves' gradient into one buffer;
* ``batched_exact_distance``: many small same-shape maps in one stacked computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from eqreg_hf.core.distances import DISTANCES, Distance, get_distance
from eqreg_hf.core.layouts import transform_feature

__all__ = [
    "DISTANCES",
    "equivariance_distance",
    "ExactDistance",
    "ExactSpec",
    "batched_exact_distance",
    "SMALL_MAP",
    "is_dense",
    "views_of",
]


def equivariance_distance(
    a: torch.Tensor,
    b: torch.Tensor,
    distance: str = "relative",
    mask: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Distance between ``a = T_k F(x)`` and ``b = F(R_k x)`` over the whole batch, in float32.

    * ``"fro"``: ``||a - b||_F`` (not squared, over every element of the batch) — the paper's loss;
    * ``"mse"``: mean of ``(a - b)²``;
    * ``"relative"``: ``||a - b||² / (||a||² + ||b||² + eps)``, scale-free, in [0, 2].

    ``mask`` (broadcast to ``a``, e.g. ``[H, W]``) keeps only valid positions (interpolated rotations).

    Example:
        >>> a = torch.ones(2, 4, 3, 3)
        >>> float(equivariance_distance(a, a, "fro"))
        0.0
    """
    dist = get_distance(distance)
    a = a.float()
    b = b.float()
    diff = a - b
    count = None
    if mask is not None:
        mask = mask.to(diff.dtype)
        diff = diff * mask
        count = (mask.expand_as(diff)).sum().clamp_min(1.0)
        if dist.needs_norms:
            a, b = a * mask, b * mask
    norms = a.pow(2).sum() + b.pow(2).sum() if dist.needs_norms else None
    return dist.of_diff(diff.flatten(), count, norms, eps)


def _roll_pairs(t: int, shift: int, field: str) -> list[tuple[slice, slice]]:
    """(destination, source) slices of the group axis for ``roll(x, shift)`` of a field-major map.

    ``roll(x, s)[j] = x[j - s]``; the shift is done by comparing/writing matching slices, so the rolled
    map is never materialised. A trivial field (or no shift) is one pair covering everything.
    """
    s = shift % t
    if field != "regular" or s == 0:
        return [(slice(None), slice(None))]
    return [(slice(s, t), slice(0, t - s)), (slice(0, s), slice(t - s, t))]


def _groups(x: torch.Tensor, t: int, field: str) -> torch.Tensor:
    """View the channel axis (dim 1) of an NCHW map / ``[B, D]`` vector as ``[C/t, t]`` (no copy)."""
    return x.unflatten(1, (x.shape[1] // t, t)) if field == "regular" else x.unsqueeze(1)


def _spatial(x: torch.Tensor, k: int, t: int, layout: str) -> torch.Tensor:
    """The spatial part of T_k (exact quarter turns) as a float32 tensor; vectors are returned as they are."""
    x = x.float()
    if layout == "vector" or k % t == 0:
        return x
    return torch.rot90(x, (k * 4) // t, dims=(-2, -1))


@dataclass
class ExactSpec:
    """What :class:`ExactDistance` needs besides the captured map(s), packed in one object.

    ``pick(src, i)``: the view of half ``i`` (0: ``a``, 1: ``b``) in a source; ``k``: the element; ``t``: the
    number of rotations; ``field`` / ``layout``: how the map is read; ``distance``: a registered name or a
    :class:`Distance`; ``remake`` / ``source``: recompute the tapped map from the layer's input in backward
    instead of holding it; ``pair``: the views ``[a, b]``, already made by the caller.
    """

    pick: Any
    k: Any
    t: int
    field: str
    layout: str
    distance: str | Distance
    eps: float = 1e-8
    remake: Any = None
    source: torch.Tensor | None = None
    pair: list | None = None

    def __post_init__(self) -> None:
        self.distance = get_distance(self.distance)


class ExactDistance(torch.autograd.Function):
    """d(T_k a, b) for an exact (permutation) T_k, with a hand-written backward.

    ``ExactDistance.apply(src_a, src_b, spec)`` with an :class:`ExactSpec`. ``a = spec.pick(src_a, 0)`` and
    ``b = spec.pick(src_b, 1)`` are views (e.g. the two halves of one stacked map, in NCHW; ``src_b``
    None: both in ``src_a``). Autograd through ``rot90``/``roll``/``pow`` and the slicing would save three
    or four copies of every tapped map and, in backward, build a zero-filled full-size gradient for each
    slice and add them up. Here only references to the captured maps are kept (memory the network
    holds anyway), and backward writes both halves of the gradient straight into one buffer:

        T_k = rot_k ∘ roll_k is a permutation, so ||T_k a|| = ||a|| and, with v the value,
        ∂/∂a = α a − β T_{−k} b,   ∂/∂b = α b − β T_k a,
        (α, β) from the distance's ``factors`` (fro: α = β = 1/v; mse: 2/n; relative: 2(1 − v)/D, 2/D).

    The channel roll is done by pairing slices of the group axis, so each direction costs one
    spatial ``rot90`` copy and nothing else is allocated.

    ``k`` may be a D_t element ``(f, k)``. A rotation ``(0, k)`` is handled as the int k (the halves of a
    D_t field roll alike). A flip-rotation is its own inverse, so ``T_g^{-1} = T_g`` and
    ``∂/∂a = α a − β T_g b``, ``∂/∂b = α b − β T_g a``; its channel permutation reverses the group axis,
    which is no slice pairing, so each direction makes one transformed copy (spatial and channels).
    """

    @staticmethod
    def forward(ctx, src_a, src_b, spec: ExactSpec):
        shared = src_b is None
        k, t, field, layout, pick = spec.k, spec.t, spec.field, spec.layout, spec.pick
        flip = isinstance(k, tuple) and k[0] == 1
        k = k if flip or not isinstance(k, tuple) else int(k[1])
        with torch.no_grad():
            # ``pair``: the views, already made by the caller (a list, so autograd does not see them)
            a, b = (
                spec.pair if spec.pair is not None else (pick(src_a, 0), pick(src_a if shared else src_b, 1))
            )
            a32 = a.float()
            if flip:  # ||T_g a - b|| = ||a - T_g b|| (T_g is an involutive permutation)
                sq = torch.dist(a32, _transform_exact(b, k, t, field, layout)).square()
            else:
                rb = _groups(_spatial(b, -k, t, layout), t, field)  # T_{-k} b without its channel roll
                ag = _groups(a32, t, field)
                sq = sum(
                    torch.dist(ag[:, :, dst], rb[:, :, src]).square()
                    for dst, src in _roll_pairs(t, -k, field)
                )
                del rb
            n = a.numel()
            # T_k is a permutation, so ||T_k a|| = ||a||; vector_norm allocates no temporaries
            norms = _sq_norm(a) + _sq_norm(b) if spec.distance.needs_norms else None
            value = spec.distance.value(sq, n, norms, spec.eps)
        if spec.remake is not None:
            # Keep only the tapped layer's input (which that layer saves for its own backward anyway)
            # and recompute its output in backward: the tapped map itself is not held.
            ctx.save_for_backward(spec.source)
        else:  # the views of the captured map(s): no copy, and backward need not make them again
            ctx.save_for_backward(a, b)
        ctx.remake, ctx.pick = spec.remake, pick
        ctx.src_meta = (
            src_a.shape,
            src_a.dtype,
            src_a.stride(),
            None if shared else (src_b.shape, src_b.dtype, src_b.stride()),
        )
        ctx.cfg = (k, t, field, layout, spec.distance, n, spec.eps)
        ctx.scalars = (value.detach(), norms)  # 0-dim tensors: no device sync here or in backward
        return value

    @staticmethod
    def backward(ctx, grad):
        k, t, field, layout, distance, n, eps = ctx.cfg
        value, norms = ctx.scalars
        pick = ctx.pick
        if ctx.remake is not None:
            with torch.no_grad():
                full = ctx.remake(*ctx.saved_tensors)
            a, b = pick(full, 0), pick(full, 1)
        else:
            a, b = ctx.saved_tensors
        alpha, beta = distance.factors(grad.float(), value, n, norms, eps)
        # one gradient buffer per source, with the source's strides so that ``pick`` views it alike;
        # positions no view covers (rows that were not rotated, prefix tokens) are zero
        meta_a, meta_b = ctx.src_meta[:3], ctx.src_meta[3]
        covered = a.numel() + b.numel() if meta_b is None else a.numel()
        grad_a = _grad_buffer(meta_a, covered, a.device)
        grad_b = grad_a if meta_b is None else _grad_buffer(meta_b, b.numel(), b.device)
        write = _write_flip_grad if isinstance(k, tuple) else _write_grad
        write(pick(grad_a, 0), a, b, k if isinstance(k, tuple) else -k, alpha, beta, t, field, layout)
        write(pick(grad_b, 1), b, a, k, alpha, beta, t, field, layout)
        return grad_a, None if meta_b is None else grad_b, None


def _grad_buffer(meta, covered: int, device) -> torch.Tensor:
    shape, dtype, stride = meta
    g = torch.empty_strided(shape, stride, dtype=dtype, device=device)
    return g if covered == g.numel() else g.zero_()


def _write_grad(out, x, other, k, alpha, beta, t, field, layout) -> None:
    """``out = alpha * x - beta * T_k other`` for the permutation T_k, written into the view ``out``."""
    target = (
        out if out.dtype == torch.float32 else torch.empty(out.shape, dtype=torch.float32, device=out.device)
    )
    r = _groups(_spatial(other, k, t, layout), t, field)
    xg, og = _groups(x.float(), t, field), _groups(target, t, field)
    for dst, src in _roll_pairs(t, k, field):
        torch.mul(xg[:, :, dst], alpha, out=og[:, :, dst])
        og[:, :, dst].addcmul_(r[:, :, src], beta, value=-1.0)  # 0-dim tensor coefficients: no device sync
    if target is not out:
        out.copy_(target)


def _transform_exact(x, g, t, field, layout) -> torch.Tensor:
    """``T_g x`` in float32 for an exact element (a flip with 90° turns), materialised."""
    return transform_feature(x.float(), g, t, field, layout, "nearest")


def _write_flip_grad(out, x, other, g, alpha, beta, t, field, layout) -> None:
    """``out = alpha * x - beta * T_g other`` for a flip-rotation g, written into the view ``out``."""
    target = (
        out if out.dtype == torch.float32 else torch.empty(out.shape, dtype=torch.float32, device=out.device)
    )
    torch.mul(x.float(), alpha, out=target)
    target.addcmul_(_transform_exact(other, g, t, field, layout), beta, value=-1.0)
    if target is not out:
        out.copy_(target)


# Maps up to this many elements (per half) are compared together, one stacked computation for all taps of
# a shape: for small maps the cost is the per-operation overhead (a ViT's 12 block outputs of a 64×64
# image: ~25 small ops per tap), not memory traffic. Stacking copies them, which is cheap at this size.
SMALL_MAP = 1 << 16


def batched_exact_distance(pairs, k, t, field, layout, distance, eps) -> torch.Tensor:
    """``[d(T_k a_l, b_l) for l]`` for same-shape pairs in one go (autograd; small maps only)."""
    dist = get_distance(distance)
    a = torch.stack([p[0] for p in pairs]).float()
    b = torch.stack([p[1] for p in pairs]).float()
    n = len(pairs)
    ta = transform_feature(a.flatten(0, 1), k, t, field, layout, "nearest").unflatten(0, (n, -1))
    diff = (ta - b).flatten(1)
    norms = a.flatten(1).square().sum(1) + b.flatten(1).square().sum(1) if dist.needs_norms else None
    return dist.of_diff(diff, diff.shape[1], norms, eps)


def _sq_norm(x: torch.Tensor) -> torch.Tensor:
    # accumulate at least in float32 (bf16/fp16 maps), without materialising x.float()
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
    return torch.linalg.vector_norm(x, dtype=dtype).square()


def is_dense(x: torch.Tensor) -> bool:
    """True when x is non-overlapping and dense (``empty_like`` keeps exactly such strides), so a gradient
    buffer with x's strides holds one element per position and ``pick`` views it as it views x."""
    return torch.empty_like(x, device="meta").stride() == x.stride()


def views_of(base: torch.Tensor, *views: torch.Tensor) -> bool:
    ptr = base.untyped_storage().data_ptr()
    return all(v.untyped_storage().data_ptr() == ptr for v in views)
