"""Splits are never swapped: which split a folder or file name names; a check that two splits share no data.

A loader asked for a split that is not there must say so, not hand out another split: training pairs
returned for ``split="test"`` turn every "test" number of the run (and its model card) into a number
measured on training data. :func:`split_of` reads the split a name stands for (``train``, ``Train``,
``rain_data_train_Light``, ``testing``, ``val``); :func:`check_disjoint` refuses a held-out set that shares
data with the training set (the same folder given for both, or one file in each).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SPLIT_ALIASES", "split_of", "split_aliases", "check_disjoint"]

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training", "trainset", "train_set"),
    "test": ("test", "testing", "testset", "test_set"),
    "validation": ("validation", "val", "valid", "validset", "val_set"),
}


def split_aliases(split: str) -> tuple[str, ...]:
    """The folder names that hold ``split`` (``"train"`` -> ``train``, ``training``, ...)."""
    return SPLIT_ALIASES.get(split.lower(), (split.lower(),))


def split_of(name: str, exact: bool = False) -> str | None:
    """The split a folder or file name stands for, or None: the whole name or (``exact=False``) one of its
    ``_``/``-``/``.``-separated words is a split name (``rain_data_train_Light`` -> ``"train"``,
    ``train-00000-of-00001.parquet`` -> ``"train"``).

    Example:
        >>> split_of("Training"), split_of("rain_data_test_Heavy"), split_of("Rain100L"), split_of("latest")
        ('train', 'test', None, None)
    """
    low = name.lower()
    words = [low] + ([] if exact else [w for w in re.split(r"[^a-z0-9]+", low) if w])
    for word in words:
        for split, aliases in SPLIT_ALIASES.items():
            if word in aliases:
                return split
    return None


def _paths(ds: Any) -> set[str]:
    """The file paths behind the Image columns of a ``datasets.Dataset`` (none for images stored as bytes)."""
    import datasets

    out: set[str] = set()
    features = getattr(ds, "features", None) or {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            column = ds.data.column(name).combine_chunks()
            if hasattr(column, "field"):
                out.update(p for p in column.field("path").to_pylist() if p)
    return out


def check_disjoint(train: Any, held_out: Any, train_split: str, held_out_split: str, source: str) -> None:
    """Refuse a held-out set that shares data with the training set (the same dataset, or an image file).

    Args:
        train, held_out: ``datasets.Dataset`` objects (anything else is not checked).
        train_split, held_out_split: their split names, for the message.
        source: what was loaded (a folder, a name), for the message.

    Raises:
        ValueError: naming the shared file (or the shared dataset) and what to pass instead.
    """
    if train is held_out or (
        getattr(train, "_fingerprint", None) is not None
        and getattr(train, "_fingerprint", None) == getattr(held_out, "_fingerprint", None)
    ):
        shared = "they are the same data"
    else:
        common = (
            sorted(_paths(train) & _paths(held_out))
            if hasattr(train, "features") and hasattr(held_out, "features")
            else []
        )
        if not common:
            return
        shared = f"{len(common)} image file(s) are in both, e.g. {common[0]!r}"
    raise ValueError(
        f"The {held_out_split!r} and {train_split!r} splits of {source!r} overlap ({shared}), so the "
        f"evaluation would measure training data. Give a dataset with separate {train_split}/ and "
        f"{held_out_split}/ folders (or files named after the splits), or pass the held-out data separately."
    )
