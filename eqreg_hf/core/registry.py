"""The one way an open set of core (distances, group families) takes a new member."""

from __future__ import annotations

from typing import Any

__all__ = ["add_unique"]


def add_unique(table: dict[str, Any], key: str, item: Any, what: str, table_name: str) -> Any:
    """``table[key] = item`` unless ``key`` is taken (then an error naming the holder and the fix);
    returns ``item``."""
    if key in table:
        raise ValueError(
            f"{what} {key!r} is already registered ({table[key]!r}): choose another one, or delete "
            f"{table_name}[{key!r}] first."
        )
    table[key] = item
    return item
