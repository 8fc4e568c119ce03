"""Feature taps: choose layers of any model by name or glob, capture what they return, remove cleanly.

The hooks are owned by a :class:`FeatureTaps` object: ``remove()`` (or leaving its ``with`` block,
also on an exception) takes every hook away, and the model then saves, pickles and deep-copies
exactly as before. A tap only records while it is *armed*, so an attached but idle regulariser
costs nothing in evaluation or inference.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["TapSpec", "FeatureTaps", "first_tensor", "per_layer", "model_has_inplace"]


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
    def attached(self) -> bool:
        """True while the hooks are registered (until :meth:`remove`)."""
        return bool(self._handles)

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# --------------------------------------------------------------------------------------------------
# Alignment: is the sampling grid of a tapped map symmetric, so that rot90 maps it onto itself?
# --------------------------------------------------------------------------------------------------

