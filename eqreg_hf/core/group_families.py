"""The registry of group families: C_t (rotations) and D_t (rotations and mirror images), one class each.

A group is a family and an order t, named ``<prefix><t>`` (``"C4"``, ``"D4"``). An element is
``(f, k)`` (:class:`GroupElement`): flip the W axis when f = 1, then rotate by k steps of 2π / t; a
plain int k is the rotation ``(0, k)``. What differs between families lives in their class: which
elements they hold (:meth:`Group.elements`), how an element is written (:meth:`Group.element`), how
``T_g`` permutes the channels of one regular field (:meth:`Group.permute_channels`, a field has
:attr:`Group.size` channels) and which image axes its motions move (:attr:`Group.axes`).

Adding a family is one class and one line: subclass :class:`Group` with its ``prefix``, ``form`` and
those methods, then ``register_group(MyFamily)``; :func:`as_group` then parses ``"<prefix><t>"``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, NamedTuple

import torch

from eqreg_hf.core.registry import add_unique

__all__ = [
    "Group",
    "GroupElement",
    "Cyclic",
    "Dihedral",
    "GROUPS",
    "register_group",
    "as_group",
    "as_element",
    "parts",
]


class GroupElement(NamedTuple):
    """``(f, k)``: flip the W axis when ``f == 1``, then rotate by ``k`` steps of ``2π / t``."""

    flip: int
    k: int


class _Legacy(type):
    """``Group(dihedral, t)``, the old NamedTuple's constructor, still builds D_t or C_t."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Group:
            dihedral, t = _legacy_args(*args, **kwargs)
            return (Dihedral if dihedral else Cyclic)(t)
        return super().__call__(*args, **kwargs)


def _legacy_args(dihedral: bool, t: int) -> tuple[bool, int]:
    return bool(dihedral), t


class Group(metaclass=_Legacy):
    """A group of motions of the image plane: a family (``prefix``) and an order ``t``."""

    prefix: ClassVar[str] = ""
    form: ClassVar[str] = ""  # for error messages: "'C<t>' (the t rotations by multiples of 360°/t)"
    has_flips: ClassVar[bool] = False  # True: some elements mirror the image
    setting: ClassVar[str] = "the group"  # what to change when a channel count does not fit

    def __init__(self, t: int):
        if not isinstance(t, int) or isinstance(t, bool) or t < 1:
            raise ValueError(f"t={t!r} is not valid for {self.prefix}<t>: give a positive integer, e.g. 4.")
        self.t = t

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.t}"

    @property
    def dihedral(self) -> bool:
        """True when the group holds mirror images (the old ``Group.dihedral`` field)."""
        return self.has_flips

    @property
    def size(self) -> int:
        """Number of elements, which is also the number of channels of one regular field."""
        raise NotImplementedError

    def elements(self, include_identity: bool = False) -> list:
        """All elements in index order (the identity first, left out unless ``include_identity``)."""
        raise NotImplementedError

    def element(self, g: Any) -> Any:
        """``g`` written the group's way (k mod t; a :class:`GroupElement` where flips exist)."""
        raise NotImplementedError

    @property
    def identity(self) -> Any:
        return self.element(0)

    def permute_channels(self, f: torch.Tensor, g: tuple[int, int], dim: int) -> torch.Tensor:
        """The channel permutation of ``T_g`` (``g = (flip, k mod t)``) on field-major regular fields."""
        raise NotImplementedError

    @property
    def axes(self) -> tuple[int, ...]:
        """Image axes (0: H, 1: W) that the group's motions move (the alignment check looks at these)."""
        return (0, 1)

    @property
    def motion(self) -> str:
        """What a non-identity element does, in words (alignment messages)."""
        return "a 90° rotation"

    def field_rule(self) -> str:
        """The channel rule in words, after "not divisible by" / "divisible by"."""
        return f"{self.size} (a regular {self.name} field has {self.size} channels)"

    def __eq__(self, other: Any) -> bool:
        return type(other) is type(self) and other.t == self.t

    def __hash__(self) -> int:
        return hash((self.prefix, self.t))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.t})"


def _roll_view(f: torch.Tensor, k: int, t: int, dim: int) -> torch.Tensor:
    """Roll the group axis of fields of ``t`` channels by ``+k`` (channel ``c = i * t + j``)."""
    shape = f.shape
    g = f.reshape(*shape[:dim], shape[dim] // t, t, *shape[dim + 1 :])
    return g.roll(k, dims=dim + 1).reshape(shape)


class Cyclic(Group):
    """C_t: the t rotations by multiples of 2π / t; an element is the int k, a field has t channels."""

    prefix = "C"
    form = "'C<t>' (the t rotations by multiples of 360°/t)"
    setting = "group_order"

    @property
    def size(self) -> int:
        return self.t

    def elements(self, include_identity: bool = False) -> list:
        return list(range(0 if include_identity else 1, self.t))

    def element(self, g: Any) -> int:
        return as_element(g, self).k

    def permute_channels(self, f, g, dim):
        return _roll_view(f, g[1], self.t, dim)

    def field_rule(self) -> str:
        return f"group_order={self.t}"


class Dihedral(Group):
    """D_t: C_t and its t mirror images; an element is ``(f, k)``, indexed ``f * t + k``; a field has 2t
    channels ``c = i * 2t + s * t + r``."""

    prefix = "D"
    form = "'D<t>' (those and their t mirror images)"
    has_flips = True

    @property
    def size(self) -> int:
        return 2 * self.t

    def elements(self, include_identity: bool = False) -> list:
        every = [GroupElement(f, k) for f in (0, 1) for k in range(self.t)]
        return every if include_identity else every[1:]

    def element(self, g: Any) -> GroupElement:
        return as_element(g, self)

    def permute_channels(self, f, g, dim):
        flip, k = g
        if not flip:  # the two halves of a field are rolled alike, so the C_t view serves
            return _roll_view(f, k, self.t, dim)
        shape = f.shape
        h = f.reshape(*shape[:dim], shape[dim] // (2 * self.t), 2, self.t, *shape[dim + 1 :])
        # swap the halves and reverse r (r <- t-1-r), then roll by k+1: r <- (k - r) mod t
        return h.flip((dim + 1, dim + 2)).roll(k + 1, dims=dim + 2).reshape(shape)

    @property
    def axes(self) -> tuple[int, ...]:
        return (1,) if self.t == 1 else (0, 1)  # D1's only motion is a flip of the width axis

    @property
    def motion(self) -> str:
        return "a flip" if self.t == 1 else "a rotation or flip"

    def field_rule(self) -> str:
        return f"{self.size} (a regular {self.name} field has 2t = {self.size} channels)"


GROUPS: dict[str, type[Group]] = {}


def register_group(family: type[Group]) -> type[Group]:
    """Add a family under its ``prefix`` (letters, e.g. ``"C"``); returns it (usable as a decorator)."""
    if not (isinstance(family, type) and issubclass(family, Group) and re.fullmatch("[A-Z]+", family.prefix)):
        raise TypeError(f"{family!r} is not a Group subclass with an upper-case letter prefix.")
    return add_unique(GROUPS, family.prefix, family, "Group family", "GROUPS")


def as_group(group: Any) -> Group:
    """A :class:`Group` from ``t`` (an int: C_t), a name (``"C4"``, ``"D4"``) or a :class:`Group`.

    Example:
        >>> as_group("D4").size, as_group(4).name
        (8, 'C4')
    """
    if isinstance(group, Group):
        return group
    if isinstance(group, int) and not isinstance(group, bool) and group >= 1:
        return Cyclic(group)
    found = re.fullmatch(r"\s*([A-Za-z]+)(\d+)\s*", group) if isinstance(group, str) else None
    if found and found.group(1).upper() in GROUPS and int(found.group(2)) >= 1:
        return GROUPS[found.group(1).upper()](int(found.group(2)))
    forms = " or ".join(f.form for f in GROUPS.values())
    unknown = (
        f"the family {found.group(1)!r} is not registered (add one with "
        "eqreg_hf.core.group_families.register_group); "
        if found and found.group(1).upper() not in GROUPS
        else ""
    )
    raise ValueError(
        f"group={group!r} is not valid: {unknown}use {forms}, t a positive integer, e.g. 'C4' or 'D4'; "
        f"a plain integer t means 'C<t>' (registered families: {list(GROUPS)})."
    )


def as_element(g: Any, group: Any = None) -> GroupElement:
    """``g`` as a :class:`GroupElement`: an int k is the rotation ``(0, k)``, a pair ``(f, k)`` a
    flip-rotation.

    ``group`` (t, a name or a :class:`Group`) reduces k mod t; a flip in a group without mirror images
    (``"C<t>"``) is refused.
    """
    t = as_group(group).t if group is not None else None
    if hasattr(g, "__index__") and not isinstance(g, bool) and not (torch.is_tensor(g) and g.dim() > 0):
        f, k = 0, int(g.__index__())
    elif (
        isinstance(g, (tuple, list))
        and len(g) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in g)
        and g[0] in (0, 1)
    ):
        f, k = int(g[0]), int(g[1])
    else:
        raise ValueError(
            f"Group element {g!r} is not valid: give an int k (rotation by k steps) or a pair (f, k) "
            "with f in {0, 1} (f = 1: flip the width axis first, then rotate by k steps)."
        )
    if f and isinstance(group, (str, Group)) and not as_group(group).has_flips:
        raise ValueError(
            f"Group element {g!r} has a flip, but {as_group(group).name} has rotations only: "
            f"use group='D{t}' or an element (0, k)."
        )
    return GroupElement(f, k % t if t else k)


def parts(g: Any, t: int) -> tuple[int, int]:
    """(flip, k mod t) of an int or a pair, without the checks of :func:`as_element` for plain ints."""
    if isinstance(g, tuple) and len(g) == 2:
        return int(g[0]), int(g[1]) % t
    return 0, int(g) % t


register_group(Cyclic)
register_group(Dihedral)
