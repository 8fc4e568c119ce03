"""Writes that never leave a half-written file: write beside the target, then ``os.replace``."""

from __future__ import annotations

import json
import os
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to ``path`` (parent folders created); a crash leaves the old file or none."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> str:
    """Save a matplotlib figure as PNG atomically and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"  # keeps the extension, so matplotlib picks the PNG writer
    try:
        fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    """``json.dumps`` default: tensors and arrays as lists, anything else as its text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Write ``data`` as JSON (tensors/arrays as lists, other odd values as text) through :func:`atomic_write_text`."""
    return atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=_jsonable) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` through a file beside the target and ``os.replace``: never a half-written state file."""
    import torch

    path = os.fspath(path)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path
