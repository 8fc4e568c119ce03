"""`EqReg`: the EQ-Reg loss of Bai, Fu, Xie, Meng (CVPR 2025) for any model, from the outside.

    L_eq = Σ_l w_l · d( T_k F_l(x), F_l(R_k x) ),     total = L_task + λ · L_eq

One forward pass of the stacked batch ``[x; R_k x]`` (the paper's reference code does the same, so
BatchNorm sees both halves and DDP sees one forward per backward); forward hooks on the tapped
layers capture ``F_l`` of both halves, and the distance is computed in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.groups import is_exact, rotate_features, rotate_image, rotation_mask, sample_k, shift_channels, swaps_hw, to_nchw
from eqreg_hf.core.taps import AlignmentTracer, FeatureTaps, TapSpec, resolve_taps, warn_misaligned

__all__ = ["EqReg", "equivariance_distance", "feature_pair_to_nchw", "transform_feature"]


def equivariance_distance(
    a: torch.Tensor, b: torch.Tensor, distance: str = "relative", mask: torch.Tensor | None = None, eps: float = 1e-8
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
    a = a.float()
    b = b.float()
    diff = a - b
    if mask is not None:
        mask = mask.to(diff.dtype)
        diff = diff * mask
    if distance == "fro":
        return torch.linalg.vector_norm(diff)
    if distance == "mse":
        if mask is None:
            return diff.pow(2).mean()
        count = (mask.expand_as(diff)).sum().clamp_min(1.0)
        return diff.pow(2).sum() / count
    if distance == "relative":
        if mask is not None:
            a, b = a * mask, b * mask
        return diff.pow(2).sum() / (a.pow(2).sum() + b.pow(2).sum() + eps)
    raise ValueError(f"Unknown distance {distance!r}. Choose between ['fro', 'mse', 'relative'].")


@functools.lru_cache(maxsize=256)
def _infer_prefix_and_grid(n: int, input_hw: tuple[int, int], prefix: int | None) -> tuple[int, tuple[int, int]]:
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


def feature_pair_to_nchw(
    f: torch.Tensor, spec: TapSpec, input_hw: tuple[int, int]
) -> tuple[torch.Tensor, str]:
    """Bring one tapped output to NCHW (or ``[B, D]`` vectors); returns (tensor, resolved layout)."""
    layout = spec.layout
    if layout == "auto":
        layout = {4: "nchw", 3: "tokens", 2: "vector"}.get(f.dim())
        if layout is None:
            raise ValueError(
                f"Tap {spec.name!r} returned a {f.dim()}-D tensor {tuple(f.shape)}; EQ-Reg handles NCHW/NHWC maps, "
                "[B, N, D] tokens and [B, D] vectors. Set layouts={'%s': ...} or tap another layer." % spec.name
            )
    if layout == "vector":
        return f, layout
    if layout == "tokens":
        p, grid = _infer_prefix_and_grid(f.shape[1], input_hw, spec.prefix_tokens)
        return to_nchw(f, "tokens", p, grid), layout
    return to_nchw(f, layout), layout


def transform_feature(f: torch.Tensor, k: int, group_order: int, field: str, layout: str, mode: str) -> torch.Tensor:
    """T_k on an NCHW map or a ``[B, D]`` vector (regular: cyclic channel shift; trivial: nothing)."""
    if layout == "vector":
        return shift_channels(f, k, group_order, dim=1) if field == "regular" else f
    return rotate_features(f, k, group_order, field=field, mode=mode)


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


class _ExactDistance(torch.autograd.Function):
    """d(T_k a, b) for an exact (permutation) T_k, with a hand-written backward.

    ``a = pick(src_a, 0)`` and ``b = pick(src_b, 1)`` are views (e.g. the two halves of one stacked
    map, in NCHW). Autograd through ``rot90``/``roll``/``pow`` and the slicing would save three or four
    copies of every tapped map and, in backward, build a zero-filled full-size gradient for each
    slice and add them up. Here only references to the captured maps are kept (memory the network
    holds anyway), and backward writes both halves of the gradient straight into one buffer:

        T_k = rot_k ∘ roll_k is a permutation, so with D = ||a||² + ||b||² + eps and v the value,
        ∂/∂a = α a − β T_{−k} b,   ∂/∂b = α b − β T_k a,
        fro: α = β = 1/v;  mse: α = β = 2/n;  relative: α = 2(1 − v)/D, β = 2/D.

    The channel roll is done by pairing slices of the group axis, so each direction costs one
    spatial ``rot90`` copy and nothing else is allocated.
    """

    @staticmethod
    def forward(ctx, src_a, src_b, pick, k, t, field, layout, distance, eps, remake=None, source=None, pair=None):
        shared = src_b is None
        with torch.no_grad():
            # ``pair``: the views, already made by the caller (a list, so autograd does not see them)
            a, b = pair if pair is not None else (pick(src_a, 0), pick(src_a if shared else src_b, 1))
            a32 = a.float()
            rb = _groups(_spatial(b, -k, t, layout), t, field)  # T_{-k} b without its channel roll
            ag = _groups(a32, t, field)
            sq = sum(torch.dist(ag[:, :, dst], rb[:, :, src]).square() for dst, src in _roll_pairs(t, -k, field))
            del rb
            n = a.numel()
            denom = None
            if distance == "fro":
                value = sq.sqrt()
            elif distance == "mse":
                value = sq / n
            else:  # T_k is a permutation, so ||T_k a|| = ||a||; vector_norm allocates no temporaries
                denom = _sq_norm(a) + _sq_norm(b) + eps
                value = sq / denom
        if remake is not None:
            # Keep only the tapped layer's input (which that layer saves for its own backward anyway)
            # and recompute its output in backward: the tapped map itself is not held.
            ctx.save_for_backward(source)
        else:  # the views of the captured map(s): no copy, and backward need not make them again
            ctx.save_for_backward(a, b)
        ctx.remake, ctx.pick = remake, pick
        ctx.src_meta = (src_a.shape, src_a.dtype, src_a.stride(), None if shared else
                        (src_b.shape, src_b.dtype, src_b.stride()))
        ctx.cfg = (k, t, field, layout, distance, n)
        ctx.scalars = (value.detach(), denom)  # 0-dim tensors: no device sync here or in backward
        return value

    @staticmethod
    def backward(ctx, grad):
        k, t, field, layout, distance, n = ctx.cfg
        value, denom = ctx.scalars
        pick = ctx.pick
        if ctx.remake is not None:
            with torch.no_grad():
                full = ctx.remake(*ctx.saved_tensors)
            a, b = pick(full, 0), pick(full, 1)
        else:
            a, b = ctx.saved_tensors
        g = grad.float()
        if distance == "fro":
            alpha = beta = torch.where(value > 0, g / value.clamp_min(torch.finfo(value.dtype).tiny), 0.0)
        elif distance == "mse":
            alpha = beta = g * (2.0 / n)
        else:
            beta = g * 2.0 / denom
            alpha = beta * (1.0 - value)
        # one gradient buffer per source, with the source's strides so that ``pick`` views it alike;
        # positions no view covers (rows that were not rotated, prefix tokens) are zero
        meta_a, meta_b = ctx.src_meta[:3], ctx.src_meta[3]
        covered = a.numel() + b.numel() if meta_b is None else a.numel()
        grad_a = _grad_buffer(meta_a, covered, a.device)
        grad_b = grad_a if meta_b is None else _grad_buffer(meta_b, b.numel(), b.device)
        _write_grad(pick(grad_a, 0), a, b, -k, alpha, beta, t, field, layout)
        _write_grad(pick(grad_b, 1), b, a, k, alpha, beta, t, field, layout)
        return (grad_a, None if meta_b is None else grad_b) + (None,) * 10


def _grad_buffer(meta, covered: int, device) -> torch.Tensor:
    shape, dtype, stride = meta
    g = torch.empty_strided(shape, stride, dtype=dtype, device=device)
    return g if covered == g.numel() else g.zero_()


def _write_grad(out, x, other, k, alpha, beta, t, field, layout) -> None:
    """``out = alpha * x - beta * T_k other`` for the permutation T_k, written into the view ``out``."""
    target = out if out.dtype == torch.float32 else torch.empty(out.shape, dtype=torch.float32, device=out.device)
    r = _groups(_spatial(other, k, t, layout), t, field)
    xg, og = _groups(x.float(), t, field), _groups(target, t, field)
    for dst, src in _roll_pairs(t, k, field):
        torch.mul(xg[:, :, dst], alpha, out=og[:, :, dst])
        og[:, :, dst].addcmul_(r[:, :, src], beta, value=-1.0)  # 0-dim tensor coefficients: no device sync
    if target is not out:
        out.copy_(target)


# Maps up to this many elements (per half) are compared together, one stacked computation for all taps of
# a shape: for small maps the cost is the per-operation overhead (a ViT's 12 block outputs of a 64×64
# image: ~25 small ops per tap), not memory traffic. Stacking copies them, which is cheap at this size.
_SMALL_MAP = 1 << 16


def _batched_exact_distance(pairs, k, t, field, layout, distance, eps) -> torch.Tensor:
    """``[d(T_k a_l, b_l) for l]`` for same-shape pairs in one go (autograd; small maps only)."""
    a = torch.stack([p[0] for p in pairs]).float()
    b = torch.stack([p[1] for p in pairs]).float()
    n = len(pairs)
    ta = transform_feature(a.flatten(0, 1), k, t, field, layout, "nearest").unflatten(0, (n, -1))
    diff = (ta - b).flatten(1)
    if distance == "fro":
        return torch.linalg.vector_norm(diff, dim=1)
    sq = diff.square().sum(1)
    if distance == "mse":
        return sq / diff.shape[1]
    return sq / (a.flatten(1).square().sum(1) + b.flatten(1).square().sum(1) + eps)


_RECOMPUTABLE = (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)


def _fsdp_managed(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # older torch
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def _sq_norm(x: torch.Tensor) -> torch.Tensor:
    # accumulate at least in float32 (bf16/fp16 maps), without materialising x.float()
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
    return torch.linalg.vector_norm(x, dtype=dtype).square()


class EqReg:
    """EQ-Reg attached to ``model`` through forward hooks on the tapped layers.

    ``EqReg(model, cfg)(x)`` runs ``model(cat([x, R_k x[:m]]))`` once and returns
    ``(outputs, weight * Σ_l w_l d_l)``. Off means identity: with ``weight == 0``, ``group_order == 1``
    or the model in eval mode there are no hooks firing and no extra pass.

    Args:
        model: any ``nn.Module`` (hooks go on its submodules; pass the unwrapped model, then call the
            DDP/Accelerate/compiled wrapper as usual).
        config: an :class:`EqRegConfig` (default settings if None).
        **overrides: fields of the config to replace, e.g. ``weight=1e-3``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        >>> reg = EqReg(net, EqRegConfig(layers=["0"], group_order=4, weight=0.1))
        >>> out, eq = reg(torch.randn(2, 3, 9, 9), k=1)
        >>> out.shape, eq.dim(), sorted(reg.last_terms)
        (torch.Size([4, 3, 9, 9]), 0, ['0'])
        >>> reg.remove()
    """

    def __init__(self, model: nn.Module, config: EqRegConfig | None = None, **overrides: Any):
        config = config if config is not None else EqRegConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.model = model
        self.config = config
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.taps: list[TapSpec] = resolve_taps(model, config) if config.active else []
        clone = {"auto": None, "clone": True, "reference": False, "recompute": False}[config.capture]
        self._hooks = FeatureTaps(model, [t.name for t in self.taps], clone=clone) if self.taps else None
        self._checked_sizes: set[tuple[int, int]] = set()
        self._tracer: AlignmentTracer | None = None
        self._dropped: set[str] = set()
        self._warned_nonsquare = False
        self._input_hw: tuple[int, int] | None = None
        self._two_pass = False
        self._fsdp: bool | None = None
        modules = dict(model.named_modules())
        self._recomputable = {t.name for t in self.taps if type(modules[t.name]) in _RECOMPUTABLE}
        self._terms: dict[str, torch.Tensor] = {}
        self.last_k = 0
        self.last_batch = 0
        self.last_rotated = 0

    # ------------------------------------------------------------------ state
    @property
    def enabled(self) -> bool:
        # weight is re-read each step: a schedule at 0 (e.g. warm-up start) skips the extra pass too
        return (self._hooks is not None and self._hooks.active and self.model.training
                and float(self.config.weight) > 0)

    @property
    def tap_names(self) -> list[str]:
        return [t.name for t in self.taps if t.name not in self._dropped]

    @property
    def last_terms(self) -> dict[str, float]:
        """Unweighted per-tap distances ``d_l`` of the last :meth:`loss` call, as floats."""
        return {k: float(v) for k, v in self._terms.items()}

    @property
    def last_terms_tensors(self) -> dict[str, torch.Tensor]:
        """Same as :attr:`last_terms`, detached tensors (no device sync, for gathering across processes)."""
        return dict(self._terms)

    def describe(self) -> str:
        c = self.config
        head = (f"EQ-Reg: C{c.group_order}, weight={c.weight:g}, distance={c.distance}, "
                f"rotated_fraction={c.rotated_fraction:g}, {len(self.tap_names)} tap(s)")
        if not c.active:
            return head + " (inactive: weight 0 or group_order 1)"
        lines = [head] + ["  " + t.describe() for t in self.taps if t.name not in self._dropped]
        lines += [f"  skipped {n}: channels not divisible by {c.group_order}" for n in sorted(self._dropped)]
        return "\n".join(lines)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "config": self.config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    # ------------------------------------------------------------------ sampling / stacking
    def sample_k(self, hw: tuple[int, int] | None = None) -> int:
        t = self.config.group_order
        allowed = None
        if hw is not None and hw[0] != hw[1]:
            # 90° turns change the shape of a non-square batch, which cannot be stacked with it.
            allowed = [k for k in range(0 if self.config.include_identity else 1, t) if not swaps_hw(k, t)]
            if not self._warned_nonsquare:
                self._warned_nonsquare = True
                warnings.warn(
                    f"EQ-Reg: non-square inputs {hw[0]}x{hw[1]}: the stacked forward only draws rotations that keep "
                    "the shape (180° and interpolated angles). Use square crops for all of C4, or call "
                    "reg(x, k=1), which runs two passes.", UserWarning, stacklevel=3)
        return sample_k(t, self.generator, self.config.include_identity, allowed)

    def _prepare(self, x: torch.Tensor, k: int | None) -> tuple[int, int] | None:
        if not self.enabled:
            self.last_rotated = 0
            self.last_batch = x.shape[0]
            return None
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise TypeError(f"EqReg expects an image batch [B, C, H, W]; got {type(x).__name__} "
                            f"{tuple(getattr(x, 'shape', ()))}.")
        hw = tuple(x.shape[-2:])
        k = self.sample_k(hw) if k is None else int(k) % self.config.group_order
        b = x.shape[0]
        self.last_k, self.last_batch, self._input_hw = k, b, hw
        if k == 0:
            self.last_rotated = 0
            return None
        m = max(1, math.ceil(self.config.rotated_fraction * b))
        self.last_rotated = m
        self._hooks.arm()
        if hw not in self._checked_sizes:
            self._tracer = AlignmentTracer(self.model, hw)
        return k, m

    def stack(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """``cat([x, R_k x[:m]])`` and arm the taps; ``x`` unchanged when EQ-Reg is off or k = 0."""
        plan = self._prepare(x, k)
        if plan is None:
            return x
        k, m = plan
        xr = rotate_image(x[:m], k, self.config.group_order, self.config.interpolation)
        if xr.shape[-2:] != x.shape[-2:]:
            self._hooks.disarm()
            self.last_rotated = 0
            raise ValueError(
                f"Cannot stack a {x.shape[-2]}x{x.shape[-1]} batch with its {k}-step rotation (the shape changes). "
                "Use square inputs, let EqReg draw k (it keeps the shape), or call reg(x, k), which runs two passes."
            )
        self._two_pass = False
        return torch.cat([x, xr], dim=0)

    def stack_targets(self, y: Any, rotate: bool | None = None) -> Any:
        """Targets for the stacked batch: images rotated with the same k, labels copied."""
        m = self.last_rotated
        if m == 0 or y is None:
            return y
        if rotate is None:
            rotate = y.dim() >= 3
        extra = rotate_image(y[:m], self.last_k, self.config.group_order, self.config.interpolation) if rotate else y[:m]
        return torch.cat([y, extra], dim=0)

    def split(self, outputs: Any) -> tuple[Any, Any]:
        """(outputs of the original batch, outputs of the rotated copies)."""
        if isinstance(outputs, tuple) and self._two_pass:
            return outputs
        b = self.last_batch
        if isinstance(outputs, torch.Tensor):
            return outputs[:b], outputs[b:]
        if isinstance(outputs, dict):
            first = {k: (v[:b] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in outputs.items()}
            second = {k: (v[b:] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in outputs.items()}
            return first, second
        raise TypeError(f"Cannot split outputs of type {type(outputs).__name__}; split the tensor yourself.")

    def __call__(self, x: torch.Tensor, k: int | None = None, **model_kwargs: Any) -> tuple[Any, torch.Tensor]:
        """One forward of ``cat([x, R_k x[:m]])``; returns ``(outputs, weight * Σ_l w_l d_l)``.

        For a non-square batch and a 90° k the shapes differ, so two passes run and ``outputs`` is the
        tuple ``(model(x), model(R_k x[:m]))``.
        """
        if self.enabled and k is not None and x.shape[-2] != x.shape[-1] and swaps_hw(k, self.config.group_order):
            return self._two_pass_call(x, int(k) % self.config.group_order, **model_kwargs)
        xs = self.stack(x, k)
        outputs = self.model(xs, **model_kwargs)
        return outputs, self.loss()

    def _two_pass_call(self, x: torch.Tensor, k: int, **model_kwargs: Any) -> tuple[Any, torch.Tensor]:
        plan = self._prepare(x, k)
        k, m = plan
        self._two_pass = True
        out_x = self.model(x, **model_kwargs)
        self._hooks.pass_index = 1
        out_r = self.model(rotate_image(x[:m], k, self.config.group_order, self.config.interpolation), **model_kwargs)
        return (out_x, out_r), self.loss()

    # ------------------------------------------------------------------ the loss
    def loss(self) -> torch.Tensor:
        """``weight * Σ_l w_l d_l`` from the features captured in the last forward (float32, 0-dim)."""
        device = _model_device(self.model)
        if self._hooks is None or not self._hooks.armed:
            self._terms = {}
            self._finish_tracer()
            return torch.zeros((), device=device)
        captured = self._hooks.take()
        inputs = self._hooks.take_inputs()
        self._finish_tracer(captured)
        recompute_ok = self._recompute_allowed()
        c = self.config
        t, k, m, b = c.group_order, self.last_k, self.last_rotated, self.last_batch
        interp = not is_exact(k, t)
        rot_hw = self._input_hw[::-1] if swaps_hw(k, t) else self._input_hw
        total = torch.zeros((), device=device)
        terms: dict[str, torch.Tensor] = {}
        dists: dict[str, list[torch.Tensor]] = {}
        small: dict[tuple, list] = {}
        for spec in self.taps:
            if spec.name in self._dropped:
                continue
            items = captured.get(spec.name, [])
            if not items:
                raise RuntimeError(
                    f"Tapped layer {spec.name!r} did not run in the forward pass, so EQ-Reg has nothing to compare. "
                    "Tap layers that every forward uses (check reg.describe())."
                )
            pairs = self._pairs(items, m, b)
            sources = inputs.get(spec.name, [])
            dists[spec.name] = []
            for call, (full_a, full_b, f_orig, f_rot) in enumerate(pairs):
                a, layout = feature_pair_to_nchw(f_orig, spec, self._input_hw)
                bb, _ = feature_pair_to_nchw(f_rot, spec, rot_hw)
                if spec.field == "regular" and a.shape[1] % t:
                    if not spec.explicit:
                        self._dropped.add(spec.name)
                        warnings.warn(f"EQ-Reg: skipping auto-chosen tap {spec.name!r}: {a.shape[1]} channels are not "
                                      f"divisible by group_order={t}.", UserWarning, stacklevel=2)
                        del dists[spec.name]
                        break
                    raise ValueError(
                        f"Tap {spec.name!r} has {a.shape[1]} channels, not divisible by group_order={t}, so it cannot "
                        "hold regular fields. Choose other layers, mark it trivial "
                        f"(fields={{'{spec.name}': 'trivial'}}), or change group_order."
                    )
                if interp:
                    ta = transform_feature(a, k, t, spec.field, layout, c.interpolation)
                    expected = ta.shape
                else:  # the rotated map is never materialised here: only its shape is checked
                    swap = layout != "vector" and swaps_hw(k, t)
                    expected = (*a.shape[:-2], a.shape[-1], a.shape[-2]) if swap else a.shape
                if tuple(expected) != tuple(bb.shape):
                    raise RuntimeError(
                        f"Tap {spec.name!r}: T_k F(x) has shape {tuple(expected)} but F(R_k x) has "
                        f"{tuple(bb.shape)}; the layer's output does not rotate with the input (check "
                        "layouts/prefix_tokens).")
                if interp:
                    mask = rotation_mask(ta.shape[-2], ta.shape[-1], device=ta.device) if layout != "vector" else None
                    d = equivariance_distance(ta, bb, c.distance, mask, c.eps)
                elif a.numel() <= _SMALL_MAP:  # batched with the other small maps below
                    small.setdefault((tuple(a.shape), a.dtype, layout, spec.field), []).append((spec.name, a, bb))
                    continue
                else:
                    remake, source = None, None
                    if recompute_ok and spec.name in self._recomputable and call < len(sources) \
                            and sources[call] is not None and sources[call][0].requires_grad:
                        source, amp = sources[call]
                        remake = self._remake_fn(spec, source, amp)
                    src_a, src_b, pick = self._sources(spec, full_a, full_b, a, bb, rot_hw)
                    d = _ExactDistance.apply(src_a, src_b, pick, k, t, spec.field, layout, c.distance, c.eps,
                                             remake if src_b is None else None, source, [a, bb])
                dists[spec.name].append(d)
        for (_, _, layout, field), group in small.items():
            values = _batched_exact_distance([(a, bb) for _, a, bb in group], k, t, field, layout, c.distance, c.eps)
            for (name, _, _), d in zip(group, values.unbind(0)):
                if name in dists:
                    dists[name].append(d)
        for spec in self.taps:
            if not dists.get(spec.name):
                continue
            d_sum = sum(dists[spec.name][1:], dists[spec.name][0])
            terms[spec.name] = d_sum.detach()
            total = total + spec.weight * d_sum
        self._terms = terms
        return float(c.weight) * total

    def _recompute_allowed(self) -> bool:
        if self._two_pass or self._hooks.clone or self.config.capture != "recompute":
            return False
        if self._fsdp is None:
            self._fsdp = _fsdp_managed(self.model)
        return not self._fsdp and torch.is_grad_enabled()

    def _remake_fn(self, spec: TapSpec, source: torch.Tensor, autocast: tuple):
        module = self._hooks.modules[spec.name]
        dev = source.device.type

        def remake(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(dev, dtype=autocast[1], enabled=autocast[0]):
                return module.forward(x)  # bypasses hooks; conv/linear are stateless and deterministic

        return remake

    def _sources(self, spec: TapSpec, full_a, full_b, a, b, rot_hw):
        """What the exact distance differentiates: the captured map(s) and how to view the pair in them.

        In a stacked pass both halves are views of one captured tensor, so the gradient is written
        into one buffer of its shape. If a layout change copied (not viewed) the data, or the capture
        is not dense (so a gradient buffer would not have its strides), the pair itself is used.
        """
        m, n = self.last_rotated, self.last_batch
        hw = (self._input_hw, rot_hw)
        if full_b is None and _dense(full_a) and _views_of(full_a, a, b):
            rows = (slice(0, m), slice(n, n + m))
            return full_a, None, lambda f, i: feature_pair_to_nchw(f[rows[i]], spec, hw[i])[0]
        if full_b is not None and _dense(full_a) and _dense(full_b) and _views_of(full_a, a) and _views_of(full_b, b):
            return full_a, full_b, lambda f, i: feature_pair_to_nchw(f[:m] if i == 0 else f, spec, hw[i])[0]
        return a, b, lambda f, i: f

    def discard(self) -> None:
        """Drop what the taps captured and disarm them without computing a loss (e.g. on an error path)."""
        if self._hooks is not None:
            self._hooks.clear()
            self._hooks.disarm()
        if self._tracer is not None:
            self._tracer.remove()
            self._tracer = None
        self.last_rotated = 0

    def _pairs(self, items: list[tuple[int, torch.Tensor]], m: int, b: int) -> list[tuple]:
        """(captured map, second-pass map or None, original part, rotated part) for each call of a tap."""
        if self._two_pass:
            first = [t for p, t in items if p == 0]
            second = [t for p, t in items if p == 1]
            return [(f, g, f[:m], g) for f, g in zip(first, second)]
        return [(f, None, f[:m], f[b:b + m]) for _, f in items]

    def _finish_tracer(self, captured: dict | None = None) -> None:
        tracer, self._tracer = self._tracer, None
        if tracer is None:
            return
        tracer.remove()
        self._checked_sizes.add(tracer.input_hw)
        if not captured:
            return
        misaligned, sizes = [], []
        for spec in self.taps:
            items = captured.get(spec.name)
            if not items:
                continue
            try:
                g, layout = feature_pair_to_nchw(items[0][1][:1], spec, tracer.input_hw)
            except ValueError:
                continue
            if layout == "vector":
                continue
            res = tracer.check(tuple(g.shape[-2:]))
            if res is not None:
                sizes.append(tuple(g.shape[-2:]))
            if res is not None and not res[0]:
                misaligned.append((spec.name, tuple(g.shape[-2:]), res[1]))
        if misaligned:
            warn_misaligned(misaligned, tracer.input_hw, tracer.common_aligned(sizes))

    # ------------------------------------------------------------------ lifetime
    def remove(self) -> None:
        """Take every hook away (idempotent)."""
        if self._tracer is not None:
            self._tracer.remove()
            self._tracer = None
        if self._hooks is not None:
            self._hooks.remove()

    def __enter__(self) -> "EqReg":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return self.describe()


def _dense(x: torch.Tensor) -> bool:
    """True when x is non-overlapping and dense (``empty_like`` keeps exactly such strides), so a gradient
    buffer with x's strides holds one element per position and ``pick`` views it as it views x."""
    return torch.empty_like(x, device="meta").stride() == x.stride()


def _views_of(base: torch.Tensor, *views: torch.Tensor) -> bool:
    ptr = base.untyped_storage().data_ptr()
    return all(v.untyped_storage().data_ptr() == ptr for v in views)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
