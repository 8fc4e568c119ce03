"""Checks shared by the tasks' run-argument dataclasses (``DerainTrainingArguments``, ``ClassifierArgs``).

Both call these from ``__post_init__``, so a bad value is refused when the arguments are built, with
a message that names the field, the value, what is valid and how to fix it.

Example:
    >>> check_choice("dataset", "imagenet", ("shapes", "cifar100"))
    Traceback (most recent call last):
    ...
    ValueError: Unknown dataset 'imagenet'. Choose between ['shapes', 'cifar100'].
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from typing import Any

__all__ = ["check_choice", "check_positive_ints", "check_non_negative"]


def check_choice(name: str, value: Any, choices: Iterable[Any], fix: str = "") -> None:
    """Refuse ``value`` unless it is one of ``choices``; ``fix`` is appended to the message."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}. Choose between {choices}." + (f" {fix}" if fix else ""))


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_positive_ints(args: Any, names: Iterable[str], optional: Iterable[str] = ()) -> None:
    """Refuse any field of ``args`` in ``names`` that is not an integer >= 1 (``optional`` ones may be None).

    Example:
        >>> from types import SimpleNamespace
        >>> check_positive_ints(SimpleNamespace(max_steps=0), ["max_steps"])
        Traceback (most recent call last):
        ...
        ValueError: max_steps=0 is not valid: use a positive integer (1 or more).
    """
    optional = set(optional)
    for name in names:
        value = getattr(args, name)
        if value is None and name in optional:
            continue
        number = _as_int(value)
        if number is None or number < 1:
            default = " or None for the default" if name in optional else ""
            raise ValueError(f"{name}={value!r} is not valid: use a positive integer (1 or more){default}.")


def check_non_negative(args: Any, names: Iterable[str], integer: bool = False) -> None:
    """Refuse any field of ``args`` in ``names`` that is not a finite number >= 0 (integer: an int >= 0)."""
    for name in names:
        value = getattr(args, name)
        kinds = (int,) if integer else (int, float)
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or not (value >= 0 and math.isfinite(value))
        ):
            raise ValueError(
                f"{name}={value!r} is not valid: use "
                f"{'an integer >= 0' if integer else 'a number >= 0 (finite)'}."
            )


def take_renamed(args: Any, old: str, new: str, value: Any) -> None:
    """Move a deprecated field's value to its new name: ``args.<new> = value`` and ``args.<old>`` back to its
    default, with a ``FutureWarning`` naming both (a value already given under the new name wins)."""
    import dataclasses
    import warnings

    default = next(f.default for f in dataclasses.fields(args) if f.name == old)
    warnings.warn(
        f"{old}={getattr(args, old)!r} is now spelled {new}={value!r} (--{new.replace('_', '-')}); "
        f"the old name will stop being accepted.",
        FutureWarning,
        stacklevel=4,
    )
    setattr(args, old, default)
    new_default = next(f.default for f in dataclasses.fields(args) if f.name == new)
    if getattr(args, new) == new_default:
        setattr(args, new, value)


def check_group(value: Any, name: str) -> None:
    """A group name field ("C4", "D4", ...; None: the default) is one the core knows: one line if not."""
    if value is None:
        return
    from eqreg_hf.core.groups import as_group

    try:
        as_group(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}={value!r} is not valid: {err}") from None
