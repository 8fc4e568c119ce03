"""`EqReg`: the EQ-Reg loss of Bai, Fu, Xie, Meng (CVPR 2025) for any model, from the outside.

    L_eq = Σ_l w_l · d( T_k F_l(x), F_l(R_k x) ),     total = L_task + λ · L_eq

One forward pass of the stacked batch ``[x; R_k x]`` (the paper's reference code does the same, so
BatchNorm sees both halves and DDP sees one forward per backward); forward hooks on the tapped
layers capture ``F_l`` of both halves, and the distance is computed in float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.alignment import AlignmentCheck
from eqreg_hf.core.arming import StackedPass, replace_attached
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.distance import (
    SMALL_MAP,
    ExactDistance,
    ExactSpec,
    batched_exact_distance,
    equivariance_distance,
)
from eqreg_hf.core.groups import (
    check_regular_channels,
    is_exact,
    is_identity,
    regular_channels_ok,
    rotate_image,
    rotation_mask,
    sample_k,
    swaps_hw,
)
from eqreg_hf.core.layouts import check_rotated_shape, feature_to_nchw, transform_feature
from eqreg_hf.core.schedule import AutoWeight
from eqreg_hf.core.selection import resolve_taps
from eqreg_hf.core.stacked import (
    exact_sources,
    fsdp_managed,
    remake_fn,
    shape_keeping,
    split_rows,
    stack_batch,
    stack_targets,
    tap_pairs,
)
from eqreg_hf.core.taps import FeatureTaps, TapSpec
from eqreg_hf.core.unwrap import model_device

__all__ = ["EqReg", "split_rows"]


_RECOMPUTABLE = (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)


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
        self._hooks = self._pass = None
        if self.taps:
            replace_attached(model)  # one regulariser per model (an older one is removed, with a warning)
            self._hooks = FeatureTaps(model, self.taps, clone=clone)
            self._pass = StackedPass(
                model, self._hooks, self, on_start=lambda: self._align.start(self._input_hw)
            )
        self._align = AlignmentCheck(model, config.group_spec)
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
        # weight="auto": λ comes from running averages of both terms (set by the training step); it starts
        # at 0
        self.auto = AutoWeight(config.target_share, config.auto_warmup) if config.auto_weight else None
        self.weight = 0.0 if self.auto is not None else float(config.weight)
        self._sum: torch.Tensor | None = None

    # ------------------------------------------------------------------ state
    @property
    def weight(self) -> float:
        """The live λ: ``config.weight`` at start; a schedule sets it each step (the config is never
        changed)."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        value = float(value)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"EQ-Reg weight {value!r} must be a finite number >= 0 (0 skips the rotated pass)."
            )
        self._weight = value

    @property
    def active(self) -> bool:
        """True when the next :meth:`stack` does something: hooks attached, model training, live weight > 0.

        The weight is read each step, so a schedule at 0 (e.g. the start of a warm-up) skips the extra pass
        too; with ``weight="auto"`` the term is always computed (its size sets λ, also while λ is still 0).
        """
        if self.config.mode == "pair":  # the stacked step with no term: no taps, nothing to capture
            return self.model.training and self.config.stacks
        return (
            self._hooks is not None
            and self._hooks.attached
            and self.model.training
            and (self._weight > 0 or self.auto is not None)
        )

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
        weight = f"auto (λ now {self.weight:g})" if self.auto is not None else f"{self.weight:g}"
        head = (
            f"EQ-Reg: {c.group_spec.name}, weight={weight}, distance={c.distance}, "
            f"rotated_fraction={c.rotated_fraction:g}, {len(self.tap_names)} tap(s)"
        )
        if c.mode == "pair":
            return head + " (mode='pair': the stacked step [x; R_g x] without the term)"
        if not c.active:
            return head + " (inactive: weight 0 or group_order 1)"
        lines = [head] + ["  " + t.describe() for t in self.taps if t.name not in self._dropped]
        lines += [
            f"  skipped {n}: channels not divisible by {c.group_spec.size}" for n in sorted(self._dropped)
        ]
        return "\n".join(lines)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume exactly: the k sampler's state and the live weight."""
        state = {
            "generator": self.generator.get_state(),
            "config": self.config.to_dict(),
            "weight": self.weight,
        }
        if self.auto is not None:
            state["auto_weight"] = self.auto.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        if "weight" in state:
            self.weight = state["weight"]
        if self.auto is not None and "auto_weight" in state:
            self.auto.load_state_dict(state["auto_weight"])

    @property
    def last_unweighted(self) -> torch.Tensor | None:
        """``Σ_l w_l d_l`` of the last :meth:`loss` (detached; None if it compared nothing): what λ
        multiplies."""
        return self._sum

    # ------------------------------------------------------------------ sampling / stacking
    def sample_k(self, hw: tuple[int, int] | None = None) -> Any:
        """A group element from the seeded sampler: an int k for C_t, a ``GroupElement(f, k)`` for D_t."""
        group = self.config.group_spec
        allowed = None
        if hw is not None and hw[0] != hw[1]:
            allowed = shape_keeping(group, self.config.include_identity, hw, warn=not self._warned_nonsquare)
            self._warned_nonsquare = True
        return sample_k(group, self.generator, self.config.include_identity, allowed)

    def _element(self, k: Any) -> Any:
        """A given element the group's way: ``k mod t`` for C_t, a ``GroupElement`` for D_t."""
        return self.config.group_spec.element(k)

    def _prepare(self, x: torch.Tensor, k: int | None) -> tuple[int, int] | None:
        if self._pass is not None:
            self._pass.check_attached()
        if not self.active:
            self._skip(x)
            return None
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise TypeError(
                f"EqReg expects an image batch [B, C, H, W]; got {type(x).__name__} "
                f"{tuple(getattr(x, 'shape', ()))}."
            )
        hw = tuple(x.shape[-2:])
        k = self.sample_k(hw) if k is None else self._element(k)
        b = x.shape[0]
        self.last_k, self.last_batch, self._input_hw = k, b, hw
        if is_identity(k):
            self._skip(x)
            return None
        if self._pass is not None:
            self._pass.check_can_stack()
        self.last_rotated = max(1, math.ceil(self.config.rotated_fraction * b))
        return k, self.last_rotated

    def _skip(self, x: Any) -> None:
        """``stack`` returns ``x`` itself: EQ-Reg is off (weight 0, eval mode) or the identity was drawn."""
        self.last_rotated, self.last_batch = 0, x.shape[0]
        if self._pass is not None:
            self._pass.skip()

    def stack(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """``cat([x, R_k x[:m]])`` and arm the taps; ``x`` unchanged when EQ-Reg is off or k = 0."""
        plan = self._prepare(x, k)
        if plan is None:
            return x
        try:
            xs = stack_batch(x, *plan, self.config.group_order, self.config.interpolation)
        except ValueError:
            self.last_rotated = 0
            raise
        self._two_pass = False
        if self._pass is not None:
            self._pass.expect(xs)  # the taps capture the forward of exactly this tensor
        return xs

    def stack_targets(self, y: Any, rotate: bool | None = None) -> Any:
        """Targets for the stacked batch: images rotated with the same k, labels copied."""
        c = self.config
        return stack_targets(y, self.last_k, self.last_rotated, rotate, c.group_order, c.interpolation)

    def split(self, outputs: Any) -> tuple[Any, Any]:
        """(outputs of the original batch, outputs of the rotated copies), by :func:`split_rows`."""
        if isinstance(outputs, tuple) and self._two_pass:
            return outputs
        b, total = self.last_batch, self.last_batch + self.last_rotated
        return split_rows(outputs, slice(0, b), total), split_rows(outputs, slice(b, total), total)

    def __call__(
        self, x: torch.Tensor, k: int | None = None, **model_kwargs: Any
    ) -> tuple[Any, torch.Tensor]:
        """One forward of ``cat([x, R_k x[:m]])``; returns ``(outputs, weight * Σ_l w_l d_l)``.

        For a non-square batch and a 90° k the shapes differ, so two passes run and ``outputs`` is the
        tuple ``(model(x), model(R_k x[:m]))``.
        """
        if (
            self.active
            and k is not None
            and x.shape[-2] != x.shape[-1]
            and swaps_hw(self._element(k), self.config.group_order)
        ):
            return self._two_pass_call(x, self._element(k), **model_kwargs)
        xs = self.stack(x, k)
        outputs = self.model(xs, **model_kwargs)
        return outputs, self.loss()

    def _two_pass_call(self, x: torch.Tensor, k: int, **model_kwargs: Any) -> tuple[Any, torch.Tensor]:
        k, m = self._prepare(x, k)
        self._two_pass = True
        xr = rotate_image(x[:m], k, self.config.group_order, self.config.interpolation)
        if self._pass is not None:  # mode="pair": two plain passes
            self._pass.expect(x)
        out_x = self.model(x, **model_kwargs)
        if self._pass is not None:
            self._pass.expect(xr, pass_index=1)
        out_r = self.model(xr, **model_kwargs)
        return (out_x, out_r), self.loss()

    # ------------------------------------------------------------------ the loss
    def loss(self) -> torch.Tensor:
        """``weight * Σ_l w_l d_l`` from the features captured in the last forward (float32, 0-dim)."""
        device = model_device(self.model)
        self._sum = None
        if self._pass is None or not self._pass.take_term(self.active):
            self._terms = {}
            self._align.finish(self.taps)
            return torch.zeros((), device=device)
        captured = self._hooks.take()
        inputs = self._hooks.take_inputs()
        self._align.finish(self.taps, captured)
        recompute_ok = self._recompute_allowed()
        dists: dict[str, list[torch.Tensor]] = {}
        small: dict[tuple, list] = {}  # small exact maps, compared together per (shape, dtype, layout, field)
        for spec in self.taps:
            if spec.name in self._dropped:
                continue
            items = captured.get(spec.name, [])
            if not items:
                raise RuntimeError(
                    f"Tapped layer {spec.name!r} did not run in the forward pass, so EQ-Reg has nothing to "
                    "compare. Tap layers that every forward uses (check reg.describe())."
                )
            found = self._tap_distances(spec, items, inputs.get(spec.name, []), recompute_ok, small)
            if found is not None:
                dists[spec.name] = found
        c = self.config
        for (_, _, layout, field), group in small.items():
            values = batched_exact_distance(
                [(a, b) for _, a, b in group], self.last_k, c.group_order, field, layout, c.distance, c.eps
            )
            for (name, _, _), d in zip(group, values.unbind(0)):
                if name in dists:
                    dists[name].append(d)
        total = torch.zeros((), device=device)
        self._terms = {}
        for spec in self.taps:
            if dists.get(spec.name):
                d_sum = sum(dists[spec.name][1:], dists[spec.name][0])
                self._terms[spec.name] = d_sum.detach()
                total = total + spec.weight * d_sum
        self._sum = total.detach()
        return self.weight * total

    def _tap_distances(
        self, spec: TapSpec, items: list, sources: list, recompute_ok: bool, small: dict[tuple, list]
    ) -> list[torch.Tensor] | None:
        """The distances of one tap (one per call of its layer); small exact maps go to ``small`` instead.

        None when an auto-chosen tap turns out not to hold regular fields (dropped with a warning).
        """
        c = self.config
        t, k = c.group_order, self.last_k
        channels = c.group_spec  # the channel rule: one regular field has group_spec.size channels
        interp = not is_exact(k, t)
        rot_hw = self._input_hw[::-1] if swaps_hw(k, t) else self._input_hw
        out: list[torch.Tensor] = []
        for call, (full_a, full_b, f_orig, f_rot) in enumerate(
            tap_pairs(items, self.last_rotated, self.last_batch, self._two_pass)
        ):
            a, layout = feature_to_nchw(f_orig, spec, self._input_hw)
            b, _ = feature_to_nchw(f_rot, spec, rot_hw)
            if spec.field == "regular" and not regular_channels_ok(a.shape[1], channels):
                if spec.explicit:
                    check_regular_channels(spec.name, a.shape[1], channels)
                self._dropped.add(spec.name)
                warnings.warn(
                    f"EQ-Reg: skipping auto-chosen tap {spec.name!r}: {a.shape[1]} channels are not "
                    f"divisible by {c.group_spec.size}, the channels of a regular {c.group_spec.name} "
                    "field.",
                    UserWarning,
                    stacklevel=3,
                )
                return None
            ta = transform_feature(a, k, t, spec.field, layout, c.interpolation) if interp else None
            check_rotated_shape(spec.name, a, b, ta, layout, k, t)
            if interp:
                mask = (
                    rotation_mask(ta.shape[-2], ta.shape[-1], device=ta.device)
                    if layout != "vector"
                    else None
                )
                out.append(equivariance_distance(ta, b, c.distance, mask, c.eps))
            elif a.numel() <= SMALL_MAP:
                small.setdefault((tuple(a.shape), a.dtype, layout, spec.field), []).append((spec.name, a, b))
            else:
                remake, source = None, None
                if (
                    recompute_ok
                    and spec.name in self._recomputable
                    and call < len(sources)
                    and sources[call] is not None
                    and sources[call][0].requires_grad
                ):
                    source, amp = sources[call]
                    remake = remake_fn(self._hooks.modules[spec.name], source, amp)
                rows = (self.last_rotated, self.last_batch)
                src_a, src_b, pick = exact_sources(
                    spec, (full_a, full_b, a, b), rows, (self._input_hw, rot_hw)
                )
                exact = ExactSpec(pick, k, t, spec.field, layout, c.distance, c.eps)
                exact.remake, exact.source = (remake if src_b is None else None), source
                exact.pair = [a, b]  # the views, in a list so that autograd does not see them
                out.append(ExactDistance.apply(src_a, src_b, exact))
        return out

    def _recompute_allowed(self) -> bool:
        if self._two_pass or self._hooks.clone or self.config.capture != "recompute":
            return False
        if self._fsdp is None:
            self._fsdp = fsdp_managed(self.model)
        return not self._fsdp and torch.is_grad_enabled()

    def discard(self) -> None:
        """Drop what the taps captured and disarm them without computing a loss (e.g. on an error path)."""
        if self._pass is not None:
            self._pass.reset(dropped=True)
        self._align.cancel()
        self.last_rotated = 0

    # ------------------------------------------------------------------ lifetime
    def paused(self) -> contextlib.AbstractContextManager:
        """``with reg.paused(): model(y)``: no forward inside the block is captured (also between ``stack``
        and the stacked forward). Forwards of other batches are never captured anyway; this makes it
        explicit, e.g. for another loss's pass of the stacked tensor itself."""
        return self._pass.paused() if self._pass is not None else contextlib.nullcontext()

    def remove(self) -> None:
        """Take every hook away (idempotent); the regulariser then refuses to compute anything."""
        self._align.cancel()
        if self._pass is not None:
            self._pass.remove()
            self._hooks.remove()

    def __enter__(self) -> EqReg:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return self.describe()
