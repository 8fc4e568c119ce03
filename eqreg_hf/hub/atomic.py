"""Writing a folder atomically: it is built next to the target and renamed into place, so a crash never
leaves half a checkpoint, and only a folder this library wrote is ever replaced."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from eqreg_hf.hub.layout import MODEL_INFO_NAME

__all__ = ["atomic_folder"]


@contextlib.contextmanager
def atomic_folder(directory: str | os.PathLike, overwrite: bool) -> Iterator[str]:
    """Yield a temporary folder that replaces ``directory`` only if the block succeeds."""
    target = os.path.abspath(os.fspath(directory))
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(target):
        _check_replaceable(target, overwrite)
    # Same parent folder -> same file system, so the final rename is atomic.
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700; the final folder should look like any other
    try:
        yield tmp
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            try:
                os.replace(target, os.path.join(old, name))
            except BaseException:
                os.rmdir(old)
                raise
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(os.path.join(old, name), target)  # put the previous folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(target: str, overwrite: bool) -> None:
    if not os.path.isdir(target):
        raise FileExistsError(f"{target!r} exists and is not a folder: choose another directory.")
    entries = sorted(os.listdir(target))
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"{target!r} already holds {entries[:5]}: pass overwrite=True or another directory."
        )
    # Only a folder this module wrote may be replaced wholesale: a training output_dir with
    # checkpoints and logs must never be swept away by a mistyped path.
    if MODEL_INFO_NAME not in entries:
        raise FileExistsError(
            f"{target!r} exists and was not written by save_folder (it holds {entries[:5]}"
            f"{' ...' if len(entries) > 5 else ''}): save into a new folder, "
            f"e.g. {os.path.join(target, 'hub')!r}."
        )
