"""`EqReg`: the EQ-Reg loss of Bai, Fu, Xie, Meng (CVPR 2025) for any model, from the outside.

    L_eq = Σ_l w_l · d( T_k F_l(x), F_l(R_k x) ),     total = L_task + λ · L_eq

One forward pass of the stacked batch ``[x; R_k x]`` (the paper's reference code does the same, so
BatchNorm sees both halves and DDP sees one forward per backward); forward hooks on the tapped
layers capture ``F_l`` of both halves, and the distance is computed in float32.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
from torch import nn

from .config import EqRegConfig
from .groups import is_exact, rotate_features, rotate_image, rotation_mask, sample_k, shift_channels, swaps_hw, to_nchw
from .taps import AlignmentTracer, FeatureTaps, TapSpec, resolve_taps, warn_misaligned

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


class _ExactDistance(torch.autograd.Function):
    """d(T_k a, b) for an exact (permutation) T_k, with a hand-written backward.

    Autograd through ``rot90``/``roll``/``pow`` would save three or four copies of every tapped map
    (the rotated copy, the difference, the squares); this keeps only references to the two halves of
    the captured map (views of memory the network holds anyway) and recomputes the rest in backward.
    T_k is a permutation, so its transpose is T_{-k}.
    """

    @staticmethod
    def forward(ctx, fa, fb, k, t, field, layout, distance, eps, remake=None, source=None):
        with torch.no_grad():
            a = transform_feature(fa.float(), k, t, field, layout, "nearest")
            b = fb.float()
            dist = torch.dist(a, b)  # fused: no difference tensor is materialised
            if distance == "fro":
                value = dist
            elif distance == "mse":
                value = dist.square() / a.numel()
            else:  # T_k is a permutation, so ||T_k fa|| = ||fa||; vector_norm allocates no temporaries
                value = dist.square() / (_sq_norm(fa) + _sq_norm(b) + eps)
            del a
        if remake is not None:
            # Keep only the tapped layer's input (which that layer saves for its own backward anyway)
            # and recompute its output in backward: the tapped map itself is not held.
            ctx.save_for_backward(source, value)
            ctx.remake = remake
        else:
            ctx.save_for_backward(fa, fb, value)
            ctx.remake = None
        ctx.dtypes = (fa.dtype, fb.dtype)
        ctx.cfg = (k, t, field, layout, distance, eps)
        return value

    @staticmethod
    def backward(ctx, grad):
        if ctx.remake is not None:
            source, value = ctx.saved_tensors
            with torch.no_grad():
                fa, fb = ctx.remake(source)
        else:
            fa, fb, value = ctx.saved_tensors
        k, t, field, layout, distance, eps = ctx.cfg
        fa32, b = fa.float(), fb.float()
        a = transform_feature(fa32, k, t, field, layout, "nearest")
        if a.data_ptr() == fa32.data_ptr() or a.data_ptr() == fa.data_ptr():  # T_k was the identity view (trivial vector): keep fa intact
            a = a.clone()
        diff = a.sub_(b)  # in place on our private rotated copy
        if distance == "fro":
            scale = grad / value if value > 0 else torch.zeros_like(grad)
        elif distance == "mse":
            scale = grad * (2.0 / diff.numel())
        else:
            denom = _sq_norm(fa32) + _sq_norm(b) + eps
            scale = grad * 2.0 / denom
        g = diff.mul_(scale)
        ga = transform_feature(g, -k, t, field, layout, "nearest")
        gb = g.neg() if ga.data_ptr() == g.data_ptr() else g.neg_()
        if distance == "relative":
            c = scale * value
            if ga.data_ptr() in (fa32.data_ptr(), g.data_ptr()):
                ga = ga.clone()
            ga = ga.addcmul_(fa32, c, value=-1.0)  # in place: each temporary of a large map costs page faults
            gb = gb.addcmul_(b, c, value=-1.0)
        return ga.to(ctx.dtypes[0]), gb.to(ctx.dtypes[1]), None, None, None, None, None, None, None, None


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


def _distance_value(a: torch.Tensor, b: torch.Tensor, distance: str, eps: float) -> torch.Tensor:
    diff = a - b
    if distance == "fro":
        return torch.linalg.vector_norm(diff)
    if distance == "mse":
        return diff.pow(2).mean()
    return diff.pow(2).sum() / (a.pow(2).sum() + b.pow(2).sum() + eps)


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
            d_sum = None
            for call, (f_orig, f_rot) in enumerate(pairs):
                a, layout = feature_pair_to_nchw(f_orig, spec, self._input_hw)
                bb, _ = feature_pair_to_nchw(f_rot, spec, rot_hw)
                if spec.field == "regular" and a.shape[1] % t:
                    if not spec.explicit:
                        self._dropped.add(spec.name)
                        warnings.warn(f"EQ-Reg: skipping auto-chosen tap {spec.name!r}: {a.shape[1]} channels are not "
                                      f"divisible by group_order={t}.", UserWarning, stacklevel=2)
                        d_sum = None
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
                else:
                    remake, source = None, None
                    if recompute_ok and spec.name in self._recomputable and call < len(sources) \
                            and sources[call] is not None and sources[call][0].requires_grad:
                        source, amp = sources[call]
                        remake = self._remake_fn(spec, source, amp, m, b, rot_hw)
                    d = _ExactDistance.apply(a, bb, k, t, spec.field, layout, c.distance, c.eps, remake, source)
                d_sum = d if d_sum is None else d_sum + d
            if d_sum is None:
                continue
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

    def _remake_fn(self, spec: TapSpec, source: torch.Tensor, autocast: tuple, m: int, b: int, rot_hw):
        module, input_hw = self._hooks.modules[spec.name], self._input_hw
        dev = source.device.type

        def remake(x: torch.Tensor):
            with torch.autocast(dev, dtype=autocast[1], enabled=autocast[0]):
                f = module.forward(x)  # bypasses hooks; conv/linear are stateless and deterministic
            fa, _ = feature_pair_to_nchw(f[:m], spec, input_hw)
            fb, _ = feature_pair_to_nchw(f[b:b + m], spec, rot_hw)
            return fa, fb

        return remake

    def discard(self) -> None:
        """Drop what the taps captured and disarm them without computing a loss (e.g. on an error path)."""
        if self._hooks is not None:
            self._hooks.clear()
            self._hooks.disarm()
        if self._tracer is not None:
            self._tracer.remove()
            self._tracer = None
        self.last_rotated = 0

    def _pairs(self, items: list[tuple[int, torch.Tensor]], m: int, b: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._two_pass:
            first = [t for p, t in items if p == 0]
            second = [t for p, t in items if p == 1]
            return [(f[:m], g) for f, g in zip(first, second)]
        return [(f[:m], f[b:b + m]) for _, f in items]

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


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
