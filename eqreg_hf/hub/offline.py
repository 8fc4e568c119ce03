"""Whether ``huggingface_hub`` is in offline mode: the one place this library reads the flag."""

from __future__ import annotations

import os

__all__ = ["hub_offline"]

_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (``huggingface_hub``'s constant, or the variable itself).

    The constant is read once, when ``huggingface_hub`` is imported; the variable may have been set
    afterwards, so both count. Values 1, ON, YES and TRUE (any case) mean offline.

    Example:
        >>> if hub_offline():  # doctest: +SKIP
        ...     print("HF_HUB_OFFLINE is set: only the local cache is used")
    """
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in _TRUE
