"""Writes that never leave a half-written file: write beside the target, then ``os.replace``."""

from __future__ import annotations

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
