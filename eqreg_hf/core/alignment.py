"""Alignment: is the sampling grid of a tapped map symmetric, so that a quarter turn maps it onto itself?

A 90° rotation of a feature map matches the map of the rotated input only when strides and padding
give a symmetric sampling grid (a 3×3 / stride-2 / pad-1 conv on an even size is off by one input
pixel). A flip of the width axis has the same condition on that axis alone, so D_t (t >= 2) needs
both axes like C_t, and D1 (a flip only) the width axis. :class:`AlignmentTracer` follows the grid
through one forward pass; :func:`warn_misaligned` says which taps are off and which input size would
fix them.

Window transformers that pad (transformers' Swin2SR pads its input to a multiple of ``window_size``,
bottom/right) are checked before the forward, by :func:`window_problem`: such padding is not mapped
onto itself by a rotation or flip (and transformers 5.x even fails on those sizes), and shifted windows
(shift ``window_size // 2``) split the grid symmetrically only for an even ``window_size``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from eqreg_hf.core.group_families import Group
from eqreg_hf.core.layouts import feature_to_nchw
from eqreg_hf.core.taps import TapSpec

__all__ = [
    "EqRegAlignmentWarning",
    "AlignmentTracer",
    "warn_misaligned",
    "check_tap_alignment",
    "AlignmentCheck",
    "window_problem",
]


class EqRegAlignmentWarning(UserWarning):
    """A tapped map's sampling grid is not symmetric for this input size, so rot90 cannot be exact."""


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


@dataclass
class _AxisMap:
    """Feature index i sits at input coordinate ``a + b * i``; ``ops`` replays the size along the way."""

    a: float
    b: float
    ops: tuple = ()

    def aligned(self, size_in: int, size_out: int) -> bool:
        return abs(2 * self.a + self.b * (size_out - 1) - (size_in - 1)) < 1e-6

    def size_for(self, size_in: int) -> int | None:
        n = size_in
        for op in self.ops:
            n = _op_size(op, n)
            if n is None or n < 1:
                return None
        return n


def _op_size(op: tuple, n: int) -> int | None:
    kind = op[0]
    if kind == "conv":
        _, k, s, p, d, ceil = op
        num = n + 2 * p - d * (k - 1) - 1
        return (math.ceil(num / s) if ceil else num // s) + 1
    if kind == "tconv":
        _, k, s, p, d, op_pad = op
        return (n - 1) * s - 2 * p + d * (k - 1) + op_pad + 1
    if kind == "scale":
        return int(math.floor(n * op[1]))
    if kind == "unscale":
        return n // op[1] if n % op[1] == 0 else None
    return None


def _append(ops: tuple, op: tuple) -> tuple:
    _, k, s, p, d, _ = op
    if s == 1 and 2 * p == d * (k - 1):  # keeps every size: no need to replay it
        return ops
    return ops + (op,)


def _axis_step(m: _AxisMap, module: nn.Module, axis: int) -> _AxisMap | None:
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)[axis]
        s = _pair(module.stride if module.stride is not None else module.kernel_size)[axis]
        pad = module.padding
        if isinstance(pad, str):
            if pad != "same":
                pad = 0
            else:
                d = _pair(getattr(module, "dilation", 1))[axis]
                pad = d * (k - 1) // 2
        p = _pair(pad)[axis]
        d = _pair(getattr(module, "dilation", 1))[axis]
        ceil = bool(getattr(module, "ceil_mode", False))
        return _AxisMap(
            m.a + m.b * (d * (k - 1) / 2 - p), m.b * s, _append(m.ops, ("conv", k, s, p, d, ceil))
        )
    if _conv_like(module):  # duck-typed convolutions: e2cnn R2Conv, hand-written group convs, ...
        k = _pair(getattr(module, "kernel_size", None) or tuple(module.weight.shape[-2:]))[axis]
        s = _pair(module.stride)[axis]
        p = _pair(module.padding if not isinstance(module.padding, str) else 0)[axis]
        d = _pair(getattr(module, "dilation", 1))[axis]
        return _AxisMap(
            m.a + m.b * (d * (k - 1) / 2 - p), m.b * s, _append(m.ops, ("conv", k, s, p, d, False))
        )
    if isinstance(module, nn.ConvTranspose2d):
        k, s, p, d = (
            _pair(v)[axis] for v in (module.kernel_size, module.stride, module.padding, module.dilation)
        )
        op_pad = _pair(module.output_padding)[axis]
        return _AxisMap(
            m.a + m.b * (p - d * (k - 1) / 2) / s, m.b / s, m.ops + (("tconv", k, s, p, d, op_pad),)
        )
    if isinstance(module, nn.Upsample) and module.mode == "nearest" and module.scale_factor is not None:
        s = float(_pair(module.scale_factor)[axis])
        return _AxisMap(m.a + m.b * (0.5 / s - 0.5), m.b / s, m.ops + (("scale", s),))
    if isinstance(module, nn.PixelShuffle):
        r = module.upscale_factor
        return _AxisMap(m.a - m.b * (r - 1) / (2 * r), m.b / r, m.ops + (("scale", float(r)),))
    if isinstance(module, nn.PixelUnshuffle):
        r = module.downscale_factor
        return _AxisMap(m.a + m.b * (r - 1) / 2, m.b * r, m.ops + (("unscale", r),))
    return None


def _conv_like(module: nn.Module) -> bool:
    if isinstance(module, (nn.ConvTranspose2d, nn.Conv1d, nn.Conv3d)):
        return False
    has_kernel = hasattr(module, "kernel_size") or (
        isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 4
    )
    return has_kernel and hasattr(module, "stride") and hasattr(module, "padding")


_SPATIAL = (
    nn.Conv2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.ConvTranspose2d,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
)


class AlignmentTracer:
    """Follows the sampling grid through the spatial layers of one forward pass.

    Each spatial layer (conv, pooling, transposed conv, nearest upsampling, pixel (un)shuffle, duck-typed
    convs) composes the map "feature index -> input coordinate". A map of size h from an input of size H
    is symmetric (and a 90° rotation of it exact) iff ``2a + b (h - 1) = H - 1`` on both axes. Every map
    that reaches a spatial size is kept (main path and shortcut of a residual block, encoder and decoder
    of a U-Net), and a map of that size counts as aligned only if all of them are: a sum of a shifted and
    an unshifted path is not rotation-exact. Functional resampling (``F.interpolate`` in ``forward``) is
    invisible to it. ``group`` (a :class:`~eqreg_hf.core.groups.Group`) says which axes count: both for
    rotations, the width axis alone for D1, whose only motion is a flip of that axis.
    """

    def __init__(self, model: nn.Module, input_hw: tuple[int, int], group: Group | None = None):
        self.input_hw = tuple(input_hw)
        self.axes = group.axes if group is not None else (0, 1)
        self.motion = group.motion if group is not None else "a 90° rotation"
        start = (_AxisMap(0.0, 1.0), _AxisMap(0.0, 1.0))
        self.maps: dict[tuple[int, int], dict[tuple, tuple[_AxisMap, _AxisMap]]] = {
            self.input_hw: {_key(start): start}
        }
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in model.modules()
            if isinstance(m, _SPATIAL) or _conv_like(m)
        ]
        # A padding window transformer: warned now, before a forward that transformers may refuse.
        self.window_problem, self.window_fix = window_problem(model, self.input_hw, self.axes, self.motion)
        if self.window_problem:
            warnings.warn(self.window_problem, EqRegAlignmentWarning, stacklevel=3)

    def _hook(self, module, args, output):
        x = args[0] if args else None
        x = getattr(x, "tensor", x)  # e2cnn / escnn GeometricTensor
        output = getattr(output, "tensor", output)
        if not isinstance(x, torch.Tensor) or x.dim() < 3 or not isinstance(output, torch.Tensor):
            return
        sources = self.maps.get(tuple(x.shape[-2:]))
        if not sources:
            return
        out = self.maps.setdefault(tuple(output.shape[-2:]), {})
        for src in list(sources.values()):
            new = (_axis_step(src[0], module, 0), _axis_step(src[1], module, 1))
            if new[0] is None or new[1] is None:
                continue
            if len(out) < 32:  # bounded: a pathological net cannot blow this up
                out.setdefault(_key(new), new)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def check(self, hw: tuple[int, int]) -> tuple[bool, tuple[int, int] | None] | None:
        """For a map of spatial size ``hw``: (aligned?, nearest aligned input size) or None if unknown."""
        if self.window_problem:  # the padded / shifted window grid is behind every map of the model
            return False, self.window_fix
        maps = self.maps.get(tuple(hw))
        if not maps:
            return None
        bad = [m for m in maps.values() if not all(m[i].aligned(self.input_hw[i], hw[i]) for i in self.axes)]
        if not bad:
            return True, None
        return False, self.common_aligned([hw])

    def common_aligned(self, hws: list[tuple[int, int]], radius: int = 64) -> tuple[int, int] | None:
        """Nearest input size at which every map of every given spatial size is aligned at once."""
        maps = [m for hw in hws for m in self.maps.get(tuple(hw), {}).values()]
        if not maps:
            return None
        best = []
        for axis, size in enumerate(self.input_hw):
            found = None if axis in self.axes else size  # an axis the group does not move keeps its size
            for delta in range(radius + 1 if found is None else 0):
                for cand in (size - delta, size + delta):
                    if cand < 1 or found is not None:
                        continue
                    outs = [m[axis].size_for(cand) for m in maps]
                    if all(o is not None and m[axis].aligned(cand, o) for m, o in zip(maps, outs)):
                        found = cand
                if found is not None:
                    break
            if found is None:
                return None
            best.append(found)
        return tuple(best)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _key(maps: tuple[_AxisMap, _AxisMap]) -> tuple:
    return tuple((round(m.a, 6), round(m.b, 6)) for m in maps)


def warn_misaligned(
    misaligned: list[tuple[str, tuple, tuple]],
    input_hw,
    common: tuple | None = None,
    motion: str = "a 90° rotation",
) -> None:
    """One warning for an input size: every misaligned tap (name, map size, nearest aligned input size),
    and the nearest size that suits all taps at once (``common``); ``motion`` names what does not line up."""
    parts = []
    for name, hw, nearest in misaligned:
        sizes = "x".join(str(n) for n in nearest) if nearest and None not in nearest else "none within ±64 px"
        parts.append(f"{name!r} (map {hw[0]}x{hw[1]}; nearest aligned input size {sizes})")
    if common:
        fix = "Crop/pad inputs to " + "x".join(str(n) for n in common) + " (aligned for every tap)"
    else:
        fix = (
            "No input size within ±64 px aligns every tap at once (e.g. paths with different grid offsets "
            "meet, such as an average-pooled shortcut beside a strided conv); tap only the layers that can "
            "be aligned"
        )
    warnings.warn(
        f"EQ-Reg: for input size {input_hw[0]}x{input_hw[1]}, tap(s) {', '.join(parts)} are misaligned: "
        f"strides/padding make the sampling grid asymmetric, so {motion} of the map does not line up with "
        f"the map of the {'rotated' if motion == 'a 90° rotation' else 'transformed'} input and the loss "
        f"cannot reach 0. {fix}, or tap other layers.",
        EqRegAlignmentWarning,
        stacklevel=4,
    )


def check_tap_alignment(
    tracer: AlignmentTracer, specs: list[TapSpec], maps: dict[str, torch.Tensor], warn: bool = True
) -> list[tuple[str, tuple, tuple | None]]:
    """The taps whose map is misaligned for the tracer's input size: ``[(name, map size, nearest aligned
    input size)]``, with one :class:`EqRegAlignmentWarning` for all of them (``warn=True``).

    ``maps`` holds one captured output per tap (any layout; vectors have no grid and are skipped).
    """
    misaligned, sizes = [], []
    for spec in specs:
        f = maps.get(spec.name)
        if f is None:
            continue
        try:
            g, layout = feature_to_nchw(f, spec, tracer.input_hw)
        except ValueError:
            continue
        if layout == "vector":
            continue
        hw = tuple(g.shape[-2:])
        res = tracer.check(hw)
        if res is not None:
            sizes.append(hw)
            if not res[0]:
                misaligned.append((spec.name, hw, res[1]))
    if misaligned and warn and not tracer.window_problem:  # a window problem was warned about already
        warn_misaligned(misaligned, tracer.input_hw, tracer.common_aligned(sizes), tracer.motion)
    return misaligned


class AlignmentCheck:
    """The regulariser's alignment check: once per input size, an :class:`AlignmentTracer` follows the
    stacked forward (:meth:`start`, when that forward begins) and the captured maps are checked against it
    (:meth:`finish`, when the term is computed)."""

    def __init__(self, model: nn.Module, group: Group):
        self.model, self.group = model, group
        self.checked: set[tuple[int, int]] = set()
        self.tracer: AlignmentTracer | None = None

    def start(self, input_hw: tuple[int, int]) -> None:
        if input_hw not in self.checked and self.tracer is None:
            self.tracer = AlignmentTracer(self.model, input_hw, group=self.group)

    def finish(self, specs: list[TapSpec], captured: dict | None = None) -> None:
        """Stop tracing; with ``captured`` (``{tap: [(pass, map), ...]}``) warn about misaligned taps."""
        tracer, self.tracer = self.tracer, None
        if tracer is None:
            return
        tracer.remove()
        self.checked.add(tracer.input_hw)
        if captured:
            check_tap_alignment(tracer, specs, {n: items[0][1][:1] for n, items in captured.items() if items})

    def cancel(self) -> None:
        """Stop tracing without a check (the captures were dropped)."""
        if self.tracer is not None:
            self.tracer.remove()
            self.tracer = None


def _window_model(model: nn.Module) -> nn.Module | None:
    """The first transformers Swin2SR base model inside ``model`` (recognised by its class's module and its
    ``pad_and_normalize``: it pads inputs to a multiple of ``config.window_size``), or None."""
    for m in model.modules():
        pads = callable(getattr(m, "pad_and_normalize", None))
        if (
            pads
            and type(m).__module__.startswith("transformers.models.swin2sr")
            and isinstance(getattr(getattr(m, "config", None), "window_size", None), int)
        ):
            return m
    return None


def window_problem(
    model: nn.Module, input_hw: tuple[int, int], axes: tuple = (0, 1), motion: str = "a 90° rotation"
) -> tuple[str | None, tuple[int, int] | None]:
    """``(message, nearest input size that fixes it)`` when a padding window transformer inside ``model``
    cannot be exact for ``input_hw`` on the ``axes`` the group moves; ``(None, None)`` when it can (or there
    is none).

    Two causes: a side that is not a multiple of ``window_size`` (Swin2SR pads it bottom/right, which
    ``motion`` does not map onto itself; the fix is the nearest multiple), and an odd ``window_size`` with
    shifted windows (the shift ``window_size // 2`` leaves strips of ``window_size // 2`` and
    ``window_size - window_size // 2`` at the two ends; the fix is an even ``window_size``).
    """
    base = _window_model(model)
    if base is None:
        return None, None
    w = base.config.window_size
    hw = tuple(int(n) for n in input_hw)
    off = [i for i in axes if hw[i] % w]
    if off:
        fix = tuple(max(w, round(n / w) * w) if i in axes else n for i, n in enumerate(hw))
        size = "x".join(map(str, fix))
        return (
            f"EQ-Reg: for input size {hw[0]}x{hw[1]}, Swin2SR pads its input to a multiple of "
            f"window_size={w} (bottom/right), which {motion} does not map onto itself, so no tapped map can "
            f"line up (and transformers 5.x fails on such sizes). Crop inputs to {size}: sides multiples of "
            f"window_size={w} (for super-resolution the degraded, low-resolution input; the clean crop a "
            "multiple of window_size x scale)."
        ), fix
    odd = sorted(
        {
            m.window_size
            for m in base.modules()
            if getattr(m, "shift_size", 0) and m.window_size - m.shift_size != m.shift_size
        }
    )
    if odd:
        return (
            f"EQ-Reg: Swin2SR's shifted windows (window_size={odd[0]}, shift {odd[0] // 2}) split the token "
            f"grid asymmetrically (an odd window_size), so {motion} of its maps cannot line up for any input "
            "size. Build it with an even window_size."
        ), None
    return None, None
