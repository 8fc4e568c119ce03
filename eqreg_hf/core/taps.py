"""Feature taps: choose layers of any model by name or glob, capture what they return, remove cleanly.

The hooks are owned by a :class:`FeatureTaps` object: ``remove()`` (or leaving its ``with`` block,
also on an exception) takes every hook away, and the model then saves, pickles and deep-copies
exactly as before. A tap only records while it is *armed*, so an attached but idle regulariser
costs nothing in evaluation or inference.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["TapSpec", "FeatureTaps", "resolve_taps", "first_tensor", "per_layer", "AlignmentTracer",
           "EqRegAlignmentWarning"]


class EqRegAlignmentWarning(UserWarning):
    """A tapped map's sampling grid is not symmetric for this input size, so rot90 cannot be exact."""


@dataclass
class TapSpec:
    """One tapped layer: module name, field type, layout of its output, prefix tokens, weight."""

    name: str
    field: str = "regular"
    layout: str = "auto"
    prefix_tokens: int | None = None
    weight: float = 1.0
    explicit: bool = True  # named by the user (refuse bad channel counts) vs chosen by "auto" (skip them)

    def describe(self) -> str:
        prefix = "" if self.prefix_tokens in (None, 0) else f", prefix_tokens={self.prefix_tokens}"
        return f"{self.name:<40s} layout={self.layout:<6s} field={self.field:<7s} weight={self.weight:g}{prefix}"


def per_layer(value: Any, name: str, default: Any) -> Any:
    """Resolve a setting given as one value or as a ``{layer name or glob: value}`` dict."""
    if not isinstance(value, dict):
        return default if value is None else value
    if name in value:
        return value[name]
    for pattern, v in value.items():
        if fnmatch.fnmatchcase(name, pattern):
            return v
    return default


def _plain_conv_taps(model: nn.Module, group_order: int) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels % group_order == 0]


def resolve_taps(model: nn.Module, config) -> list[TapSpec]:
    """Turn ``config.layers`` (names, globs or ``"auto"``) into a list of :class:`TapSpec`.

    Exact names must exist; a glob must match at least one module. ``"auto"`` asks
    :func:`eqreg_hf.core.select.auto_taps` for a model-specific choice (timm, transformers) and falls
    back to every ``nn.Conv2d`` whose output channels divide by t.
    """
    modules = dict(model.named_modules())
    layers = config.layers
    specs: list[TapSpec] = []
    if layers == "auto":
        auto = None
        try:
            from eqreg_hf.core.select import auto_taps  # optional: model-family specific choices
        except ImportError:
            auto_taps = None
        if auto_taps is not None:
            auto = auto_taps(model, config.group_order)
        if auto:
            for spec in auto:
                spec.explicit = False
            specs = list(auto)
        else:
            names = _plain_conv_taps(model, config.group_order)
            if not names:
                raise ValueError(
                    f"layers='auto' found no layer to tap in {type(model).__name__}: no nn.Conv2d has output "
                    f"channels divisible by group_order={config.group_order}. Name the layers explicitly "
                    "(EqRegConfig(layers=[...])) and mark non-divisible ones trivial."
                )
            specs = [TapSpec(n, explicit=False) for n in names]
    else:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        seen: set[str] = set()
        for pattern in patterns:
            if any(ch in pattern for ch in "*?["):
                matched = [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]
                if not matched:
                    raise ValueError(
                        f"Layer pattern {pattern!r} matches no module of {type(model).__name__}. "
                        f"Some module names: {_some_names(modules)}."
                    )
            else:
                if pattern not in modules or pattern == "":
                    close = difflib.get_close_matches(pattern, list(modules), n=5)
                    raise ValueError(
                        f"No module named {pattern!r} in {type(model).__name__}. "
                        + (f"Did you mean one of {close}? " if close else "")
                        + "List them with [n for n, _ in model.named_modules()], or use a glob such as 'body.*'."
                    )
                matched = [pattern]
            for n in matched:
                if n not in seen:
                    seen.add(n)
                    specs.append(TapSpec(n))
    for spec in specs:
        # A dict or a non-default string from the user wins; otherwise an adapter's choice stands.
        if isinstance(config.fields, dict):
            spec.field = per_layer(config.fields, spec.name, spec.field)
        elif spec.explicit or config.fields != "regular":
            spec.field = config.fields
        if isinstance(config.layouts, dict):
            spec.layout = per_layer(config.layouts, spec.name, spec.layout)
        elif spec.explicit or config.layouts != "auto":
            spec.layout = config.layouts
        if config.prefix_tokens is not None:
            spec.prefix_tokens = per_layer(config.prefix_tokens, spec.name, spec.prefix_tokens)
        spec.weight = float(per_layer(config.layer_weights, spec.name, 1.0))
    return specs


def _some_names(modules: dict, n: int = 12) -> list[str]:
    names = [k for k in modules if k]
    return names[:n] + (["..."] if len(names) > n else [])


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer returned: itself, the first tensor of a tuple/list, of a ``ModelOutput``/dict, or
    the ``.tensor`` of an e2cnn/escnn ``GeometricTensor``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(getattr(output, "tensor", None), torch.Tensor):  # e2cnn / escnn GeometricTensor
        return output.tensor
    if isinstance(output, dict):  # transformers ModelOutput is an OrderedDict
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def model_has_inplace(model: nn.Module) -> bool:
    return any(getattr(m, "inplace", False) is True for m in model.modules())


class FeatureTaps:
    """Forward hooks on named modules that record their outputs while armed.

    Args:
        model: the network (hooks go on its submodules, so a DDP/compiled wrapper still triggers them).
        names: module names to tap.
        clone: copy each captured output (needed when an in-place op such as ``ReLU(inplace=True)``
            follows a tap). ``None`` = only when the model holds an in-place module.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> with FeatureTaps(net, ["0"]) as taps:
        ...     taps.arm(); _ = net(torch.randn(1, 3, 8, 8)); feats = taps.take()
        >>> feats["0"][0][1].shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(self, model: nn.Module, names: Iterable[str], clone: bool | None = None):
        modules = dict(model.named_modules())
        self.names = list(names)
        self.modules = {n: modules[n] for n in self.names if n in modules}
        self.clone = model_has_inplace(model) if clone is None else clone
        self._handles: list = []
        self._captured: dict[str, list[tuple[int, torch.Tensor, int]]] = {n: [] for n in self.names}
        self.inputs: dict[str, list[tuple | None]] = {n: [] for n in self.names}  # (input, autocast state)
        self._armed = False
        self.pass_index = 0
        try:
            for name in self.names:
                self._handles.append(modules[name].register_forward_hook(self._make_hook(name)))
        except Exception:
            self.remove()
            raise

    def _make_hook(self, name: str):
        def hook(module, args, output):
            if not self._armed:
                return None
            t = first_tensor(output)
            if t is None:
                raise TypeError(
                    f"Tapped layer {name!r} ({type(module).__name__}) returned {type(output).__name__} with no "
                    "tensor in it; tap a layer that returns a tensor, a tuple or a ModelOutput."
                )
            if self.clone:
                t = t.clone()
            self._captured[name].append((self.pass_index, t, t._version))
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is not None:
                dev = x.device.type
                # the autocast state of this forward, so a recompute in backward matches it exactly
                x = (x, (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)))
            self.inputs[name].append(x)
            return None

        return hook

    def arm(self) -> None:
        self.clear()
        self.pass_index = 0
        self._armed = True

    def disarm(self) -> None:
        self._armed = False

    @property
    def armed(self) -> bool:
        return self._armed

    def take(self) -> dict[str, list[tuple[int, torch.Tensor]]]:
        """Return ``{name: [(pass_index, tensor), ...]}`` and forget them (refuses mutated captures)."""
        out = {}
        for name, items in self._captured.items():
            for _, t, version in items:
                if t._version != version:
                    raise RuntimeError(
                        f"The output of tapped layer {name!r} was modified in place after it was captured "
                        "(an in-place op such as x += y or relu_() follows it), so EQ-Reg would compare the "
                        "wrong values. Tap a later layer, or copy captures with EqRegConfig(capture='clone')."
                    )
            out[name] = [(p, t) for p, t, _ in items]
        for items in self._captured.values():
            items.clear()
        self._armed = False
        return out

    def take_inputs(self) -> dict[str, list[torch.Tensor | None]]:
        """The inputs of the tapped layers in the last armed pass (for recomputing outputs), then forget them."""
        out = {n: list(v) for n, v in self.inputs.items()}
        for v in self.inputs.values():
            v.clear()
        return out

    def clear(self) -> None:
        for items in self._captured.values():
            items.clear()
        for items in self.inputs.values():
            items.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()
        self._armed = False

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# --------------------------------------------------------------------------------------------------
# Alignment: is the sampling grid of a tapped map symmetric, so that rot90 maps it onto itself?
# --------------------------------------------------------------------------------------------------

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
        return _AxisMap(m.a + m.b * (d * (k - 1) / 2 - p), m.b * s, _append(m.ops, ("conv", k, s, p, d, ceil)))
    if _conv_like(module):  # duck-typed convolutions: e2cnn R2Conv, hand-written group convs, ...
        k = _pair(getattr(module, "kernel_size", None) or tuple(module.weight.shape[-2:]))[axis]
        s = _pair(module.stride)[axis]
        p = _pair(module.padding if not isinstance(module.padding, str) else 0)[axis]
        d = _pair(getattr(module, "dilation", 1))[axis]
        return _AxisMap(m.a + m.b * (d * (k - 1) / 2 - p), m.b * s, _append(m.ops, ("conv", k, s, p, d, False)))
    if isinstance(module, nn.ConvTranspose2d):
        k, s, p, d = (_pair(v)[axis] for v in (module.kernel_size, module.stride, module.padding, module.dilation))
        op_pad = _pair(module.output_padding)[axis]
        return _AxisMap(m.a + m.b * (p - d * (k - 1) / 2) / s, m.b / s, m.ops + (("tconv", k, s, p, d, op_pad),))
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
        isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.dim() == 4)
    return has_kernel and hasattr(module, "stride") and hasattr(module, "padding")


_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ConvTranspose2d, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle)


class AlignmentTracer:
    """Follows the sampling grid through the spatial layers of one forward pass.

    Each spatial layer (conv, pooling, transposed conv, nearest upsampling, pixel (un)shuffle, duck-typed
    convs) composes the map "feature index -> input coordinate". A map of size h from an input of size H
    is symmetric (and a 90° rotation of it exact) iff ``2a + b (h - 1) = H - 1`` on both axes. Every map
    that reaches a spatial size is kept (main path and shortcut of a residual block, encoder and decoder
    of a U-Net), and a map of that size counts as aligned only if all of them are: a sum of a shifted and
    an unshifted path is not rotation-exact. Functional resampling (``F.interpolate`` in ``forward``) is
    invisible to it.
    """

    def __init__(self, model: nn.Module, input_hw: tuple[int, int]):
        self.input_hw = tuple(input_hw)
        start = (_AxisMap(0.0, 1.0), _AxisMap(0.0, 1.0))
        self.maps: dict[tuple[int, int], dict[tuple, tuple[_AxisMap, _AxisMap]]] = {self.input_hw: {_key(start): start}}
        self._handles = [m.register_forward_hook(self._hook) for m in model.modules()
                         if isinstance(m, _SPATIAL) or _conv_like(m)]

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
        maps = self.maps.get(tuple(hw))
        if not maps:
            return None
        bad = [m for m in maps.values()
               if not all(a.aligned(n_in, n_out) for a, n_in, n_out in zip(m, self.input_hw, hw))]
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
            found = None
            for delta in range(radius + 1):
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


def warn_misaligned(misaligned: list[tuple[str, tuple, tuple]], input_hw, common: tuple | None = None) -> None:
    """One warning for an input size: every misaligned tap (name, map size, nearest aligned input size),
    and the nearest size that suits all taps at once (``common``)."""
    parts = []
    for name, hw, nearest in misaligned:
        sizes = "x".join(str(n) for n in nearest) if nearest and None not in nearest else "none within ±64 px"
        parts.append(f"{name!r} (map {hw[0]}x{hw[1]}; nearest aligned input size {sizes})")
    if common:
        fix = "Crop/pad inputs to " + "x".join(str(n) for n in common) + " (aligned for every tap)"
    else:
        fix = ("No input size within ±64 px aligns every tap at once (e.g. paths with different grid offsets "
               "meet, such as an average-pooled shortcut beside a strided conv); tap only the layers that can be "
               "aligned")
    warnings.warn(
        f"EQ-Reg: for input size {input_hw[0]}x{input_hw[1]}, tap(s) {', '.join(parts)} are misaligned: strides/"
        "padding make the sampling grid asymmetric, so a 90° rotation of the map does not line up with the map of "
        f"the rotated input and the loss cannot reach 0. {fix}, or tap other layers.",
        EqRegAlignmentWarning,
        stacklevel=3,
    )
