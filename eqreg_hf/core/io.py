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


def atomic_write_json(
    path: str | os.PathLike, data: Any, indent: int | None = 2, sort_keys: bool = False
) -> str:
    """Write ``data`` as JSON (tensors/arrays as lists, other odd values as text) through
    :func:`atomic_write_text`."""
    return atomic_write_text(
        path, json.dumps(data, indent=indent, sort_keys=sort_keys, default=_jsonable) + "\n"
    )


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save`` through a file beside the target and ``os.replace``: never a half-written state file."""
    import torch

    path = os.fspath(path)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output_dir") -> str:
    """Refuse, before any work is done, a folder that cannot be written: an existing file, a path through a
    file, or a folder without write permission. Returns the absolute path (the folder is not created)."""
    target = os.path.abspath(os.fspath(path))
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(
            f"{what}={os.fspath(path)!r} is an existing file, not a folder: give a folder path (created "
            "if missing), or move the file away."
        )
    parent = target
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(
            f"{what}={os.fspath(path)!r} cannot be created: {parent!r} is a file. Give a folder path "
            "whose parents are folders."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"{what}={os.fspath(path)!r}: {parent!r} is not writable. Give a folder you can write to."
        )
    return target


def check_output_file(path: str | os.PathLike, what: str = "output") -> str:
    """Refuse, before any work is done, a file path that cannot be written: an existing folder, or a path
    whose folder cannot be created. Returns the absolute path."""
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise ValueError(
            f"{what}={os.fspath(path)!r} is a folder: give a file path, e.g. "
            f"{os.path.join(os.fspath(path), 'report')!r} plus an extension."
        )
    check_output_dir(os.path.dirname(target), what=f"the folder of {what}")
    return target


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; a one-line ``ValueError`` naming the file and ``fix`` when it is not JSON
    or not an object (a YAML file, a list, a half-written file)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path!r} is not valid JSON ({err}): {fix}.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path!r} holds a {type(data).__name__}, not a JSON object: {fix}.")
    return data
