"""Feature taps: choose layers of any model by name or glob, capture what they return, remove cleanly.

The hooks are owned by a :class:`FeatureTaps` object: ``remove()`` (or leaving its ``with`` block,
also on an exception) takes every hook away, and the model then saves, pickles and deep-copies
exactly as before. A tap only records while it is *armed*, so an attached but idle regulariser
costs nothing in evaluation or inference.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, is_dataclass
from dataclasses import field as dc_field
from dataclasses import fields as dc_fields
from typing import Any

import torch
from torch import nn

__all__ = [
    "TapSpec",
    "FeatureTaps",
    "first_tensor",
    "select_output",
    "parse_selector",
    "match_layer",
    "per_layer",
    "model_has_inplace",
    "OUTPUT_SEP",
]

# "<module name or glob>:<selector>" picks one element of a layer that returns a tuple / dict / dataclass:
# "block:0" (an index), "encoder:last_hidden_state" (a key or attribute), "block:1:aux" (nested).
OUTPUT_SEP = ":"


@dataclass
class TapSpec:
    """One tapped layer: module name, field type, layout of its output, prefix tokens, weight."""

    name: str
    field: str = "regular"
    layout: str = "auto"
    prefix_tokens: int | None = None
    weight: float = 1.0
    explicit: bool = True  # named by the user (refuse bad channel counts) vs chosen by "auto" (skip them)
    output: tuple = dc_field(default=())  # selector into a tuple / dict / dataclass output (see OUTPUT_SEP)

    @property
    def label(self) -> str:
        """The tap as it is written in ``layers``: the module name, plus ``:<selector>`` when there is one."""
        return OUTPUT_SEP.join([self.name, *map(str, self.output)])

    def describe(self) -> str:
        prefix = "" if self.prefix_tokens in (None, 0) else f", prefix_tokens={self.prefix_tokens}"
        return (
            f"{self.label:<40s} layout={str(self.layout):<6s} field={str(self.field):<7s} "
            f"weight={float(self.weight):g}{prefix}"
        )


@functools.lru_cache(maxsize=512)
def _layer_regex(pattern: str) -> re.Pattern:
    """``*`` and ``?`` stay inside one dotted level of a module name, ``**`` crosses levels, ``[...]`` is a
    class."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[" and _class_end(pattern, i) > 0:
            end = _class_end(pattern, i)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _class_end(pattern: str, i: int) -> int:
    """Index of the ``]`` closing the character class that opens at ``pattern[i]`` (-1: a literal ``[``)."""
    j = i + 1 + (pattern[i + 1 : i + 2] == "!")
    j += pattern[j : j + 1] == "]"  # a "]" right after "[" or "[!" belongs to the class
    return pattern.find("]", j)


def match_layer(name: str, pattern: str) -> bool:
    """Does module ``name`` match the layer ``pattern``? Globs work per level of the dotted name: ``*``
    matches within one level (``stages.*`` is ``stages.0``, not ``stages.0.blocks.1``), ``**`` any depth
    (``stages.**`` is everything under ``stages``), ``?`` one character, ``[03]`` a character class.

    Example:
        >>> match_layer("stages.0", "stages.*"), match_layer("stages.0.conv", "stages.*")
        (True, False)
        >>> match_layer("stages.0.conv", "stages.**")
        True
    """
    return name == pattern or _layer_regex(pattern).match(name) is not None


def parse_selector(text: str) -> tuple:
    """``"0:aux"`` -> ``(0, "aux")``: integers are indices, anything else a key or attribute name."""
    parts = text.split(OUTPUT_SEP)
    if any(not p.strip() for p in parts):
        raise ValueError(
            f"Empty output selector in {text!r}: write '<layer>:<index or key>', e.g. 'block:0' or "
            "'encoder:last_hidden_state' (nested: 'block:1:aux')."
        )
    return tuple(int(p) if re.fullmatch(r"-?\d+", p.strip()) else p.strip() for p in parts)


def per_layer(value: Any, name: str, default: Any) -> Any:
    """Resolve a setting given as one value or as a ``{layer name or glob: value}`` dict."""
    if not isinstance(value, dict):
        return default if value is None else value
    if name in value:
        return value[name]
    for pattern, v in value.items():
        if match_layer(name, pattern):
            return v
    return default


def _tensor_items(output: Any, path: tuple = ()) -> list[tuple[tuple, torch.Tensor]]:
    """Every tensor in a layer's output with the selector that reaches it (tuples, lists, dicts,
    dataclasses)."""
    if isinstance(output, torch.Tensor):
        return [(path, output)]
    if isinstance(getattr(output, "tensor", None), torch.Tensor):  # e2cnn / escnn GeometricTensor
        return [(path, output.tensor)]
    if isinstance(output, dict):  # transformers ModelOutput is an OrderedDict
        children = list(output.items())
    elif isinstance(output, (tuple, list)):
        children = list(enumerate(output))
    elif is_dataclass(output) and not isinstance(output, type):
        children = [(f.name, getattr(output, f.name, None)) for f in dc_fields(output)]
    else:
        return []
    return [item for key, child in children for item in _tensor_items(child, path + (key,))]


def _listing(output: Any, prefix: tuple = ()) -> str:
    return (
        ", ".join(
            f"'{OUTPUT_SEP.join(map(str, prefix + p))}' {tuple(t.shape)}" for p, t in _tensor_items(output)
        )
        or "none"
    )


def _step(output: Any, key: Any, where: str) -> Any:
    try:
        if isinstance(output, dict) and not isinstance(key, int):
            return output[key]
        if isinstance(output, (tuple, list, dict)) and isinstance(key, int):
            return (list(output.values()) if isinstance(output, dict) else output)[key]
        if isinstance(key, str) and hasattr(output, key) and not isinstance(output, torch.Tensor):
            return getattr(output, key)
    except (KeyError, IndexError):
        pass
    raise ValueError(
        f"{where}: output selector {key!r} is not in the {type(output).__name__} it returned (tensors "
        f"in it, by selector: {_listing(output)}). Write one of those after '{OUTPUT_SEP}'."
    )


def select_output(
    output: Any, selector: tuple = (), name: str | None = None
) -> tuple[torch.Tensor | None, str | None]:
    """The tensor a tapped layer returned, and a note when it had to be chosen among several.

    With a ``selector`` (``(0,)``, ``("last_hidden_state",)``, ``(1, "aux")``) exactly that element. Without
    one: the only tensor in the output; if there are several, the only one with 3 or more dimensions (a
    feature map or tokens; the note names the choice and the selector that makes it explicit); if several
    such tensors exist, a ``ValueError`` listing them with their selectors. Never silently the first of
    several maps.

    Example:
        >>> x = torch.zeros(2, 4, 5, 5)
        >>> select_output((x, torch.zeros(2)))[0] is x, select_output({"a": x, "m": x[:, :1]}, ("a",))[0] is x
        (True, True)
    """
    where = f"Tapped layer {name!r}" if name is not None else "The model"
    label = name if name is not None else "<layer>"
    for key in selector:
        output = _step(output, key, where)
    items = _tensor_items(output)
    if len(items) <= 1:
        return (items[0][1] if items else None), None
    maps = [(p, t) for p, t in items if t.dim() >= 3]
    listing = _listing(output, tuple(selector))
    if len(maps) == 1:
        chosen = OUTPUT_SEP.join(map(str, tuple(selector) + maps[0][0]))
        fix = (
            f"Write the layer as '{label}{OUTPUT_SEP}{chosen}' to make this choice explicit."
            if name is not None
            else "Return one tensor from the model to compare another."
        )
        return maps[0][1], (
            f"{where} returns a {type(output).__name__} holding several tensors ({listing}); EQ-Reg "
            f"compares the only feature map among them, '{chosen}'. {fix}"
        )
    first = OUTPUT_SEP.join(map(str, tuple(selector) + maps[0][0])) if maps else "0"
    raise ValueError(
        f"{where} returns a {type(output).__name__} holding several tensors ({listing}), so which one "
        f"EQ-Reg should compare is not clear. Name it in the layer spec, e.g. '{label}{OUTPUT_SEP}{first}'."
    )


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a model returned: the only one, a ``ModelOutput``'s ``logits`` (else
    ``last_hidden_state``), or the only feature map among several (with a warning); several maps are an
    error (:func:`select_output`)."""
    for key in (
        "logits",
        "last_hidden_state",
    ):  # what a transformers head / base model returns first and foremost
        if isinstance(output, dict) and isinstance(output.get(key), torch.Tensor):
            return output[key]
    t, note = select_output(output)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    return t


def model_has_inplace(model: nn.Module) -> bool:
    return any(getattr(m, "inplace", False) is True for m in model.modules())


class FeatureTaps:
    """Forward hooks on named modules that record their outputs while armed.

    Args:
        model: the network (hooks go on its submodules, so a DDP/compiled wrapper still triggers them).
        names: module names to tap, or :class:`TapSpec` objects (their ``output`` selector picks the tensor of
        a
            layer that returns a tuple / dict / dataclass; see :func:`select_output`).
        clone: copy each captured output (needed when an in-place op such as ``ReLU(inplace=True)``
            follows a tap). ``None`` = only when the model holds an in-place module.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> with FeatureTaps(net, ["0"]) as taps:
        ...     taps.arm(); _ = net(torch.randn(1, 3, 8, 8)); feats = taps.take()
        >>> feats["0"][0][1].shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(self, model: nn.Module, names: Iterable[str | TapSpec], clone: bool | None = None):
        modules = dict(model.named_modules())
        names = list(names)
        self.names = [n.name if isinstance(n, TapSpec) else n for n in names]
        self.selectors = {n.name: tuple(n.output) for n in names if isinstance(n, TapSpec) and n.output}
        self._noted: set[str] = set()
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
            t, note = select_output(output, self.selectors.get(name, ()), name)
            if note and name not in self._noted:
                self._noted.add(name)
                warnings.warn(note, UserWarning, stacklevel=2)
            if t is None:
                raise TypeError(
                    f"Tapped layer {name!r} ({type(module).__name__}) returned {type(output).__name__} with "
                    "no tensor in it; tap a layer that returns a tensor, a tuple or a ModelOutput."
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

    def arm(self, clear: bool = True) -> None:
        """Record from now on (``clear``: forget earlier captures and start at pass 0)."""
        if clear:
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
        """The inputs of the tapped layers in the last armed pass (for recomputing outputs), then forget
        them."""
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

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# --------------------------------------------------------------------------------------------------
# Alignment: is the sampling grid of a tapped map symmetric, so that rot90 maps it onto itself?
# --------------------------------------------------------------------------------------------------
