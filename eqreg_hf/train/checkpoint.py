"""Checkpoints of the Accelerate loop: save, find the latest, resume.

A checkpoint is a folder ``<checkpoint_dir>/checkpoint-<step>`` (the ``transformers.Trainer`` naming)
holding Accelerate's ``save_state`` (model, optimizer, scheduler, RNG states) plus ``eqreg_loop.json``
(the optimizer step reached) and, with EQ-Reg on, ``eqreg_state.pt`` (the k sampler and the live λ,
as the Trainer mixin saves them). :func:`train_loop <eqreg_hf.train.loop.train_loop>` writes one every
``save_steps`` and resumes from one with ``resume_from_checkpoint=`` (a folder, or ``"latest"``): the
resumed run repeats the uninterrupted one (the skipped batches are drawn again, not trained on, so the
data order and random crops line up).

Example:
    >>> last_checkpoint("no/such/folder") is None
    True
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch

from eqreg_hf.core.io import atomic_torch_save, atomic_write_json

__all__ = [
    "CHECKPOINT_PREFIX",
    "LOOP_STATE_NAME",
    "EQREG_STATE_NAME",
    "last_checkpoint",
    "resolve_checkpoint",
    "save_loop_checkpoint",
    "load_loop_checkpoint",
    "save_eqreg_state",
    "load_eqreg_state",
]

CHECKPOINT_PREFIX = "checkpoint"
LOOP_STATE_NAME = "eqreg_loop.json"
EQREG_STATE_NAME = "eqreg_state.pt"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")


def last_checkpoint(folder: str | os.PathLike) -> str | None:
    """The ``checkpoint-<step>`` folder with the highest step under ``folder`` that holds a loop state, or
    None."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return None
    found = [
        (int(m.group(1)), name)
        for name in os.listdir(folder)
        if (m := _CHECKPOINT_RE.match(name)) and os.path.isfile(os.path.join(folder, name, LOOP_STATE_NAME))
    ]
    return os.path.join(folder, max(found)[1]) if found else None


def resolve_checkpoint(value: str | None, folder: str | os.PathLike | None) -> str | None:
    """The checkpoint folder that ``resume_from_checkpoint=value`` means (None: start fresh).

    ``"latest"`` is the last ``checkpoint-<step>`` under ``folder``; anything else must be a checkpoint
    folder. Raises ``ValueError`` naming the value, what was found and the fix.
    """
    if value is None:
        return None
    if value == "latest":
        path = last_checkpoint(folder) if folder is not None else None
        if path is None:
            raise ValueError(
                f"resume_from_checkpoint='latest' found no {CHECKPOINT_PREFIX}-<step> folder in "
                f"{os.fspath(folder) if folder else '(no checkpoint folder given)'!r}: give a checkpoint "
                "folder, or train with save_steps=N (--save-steps N) first."
            )
        return path
    if not os.path.isfile(os.path.join(value, LOOP_STATE_NAME)):
        raise ValueError(
            f"resume_from_checkpoint={value!r} is not a checkpoint of this loop (no {LOOP_STATE_NAME} "
            f"in it): give a {CHECKPOINT_PREFIX}-<step> folder written with save_steps, or 'latest'."
        )
    return value


def save_eqreg_state(reg: Any, folder: str | os.PathLike, **extra: Any) -> str:
    """``<folder>/eqreg_state.pt``: the regulariser's state (k sampler, live λ, automatic-λ statistics) and
    ``extra``, written atomically. The one writer for the loop's and the Trainer's checkpoints."""
    return atomic_torch_save({**reg.state_dict(), **extra}, os.path.join(os.fspath(folder), EQREG_STATE_NAME))


def load_eqreg_state(reg: Any, folder: str | os.PathLike) -> bool:
    """Restore :func:`save_eqreg_state` into ``reg``; False (nothing changed) when the folder has no state
    file."""
    path = os.path.join(os.fspath(folder), EQREG_STATE_NAME)
    if not os.path.isfile(path):
        return False
    reg.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return True


def save_loop_checkpoint(
    accelerator: Any, checkpoint_dir: str | os.PathLike, step: int, reg: Any = None
) -> str:
    """Write ``<checkpoint_dir>/checkpoint-<step>``: Accelerate's state, the step and the EQ-Reg state."""
    path = os.path.join(os.fspath(checkpoint_dir), f"{CHECKPOINT_PREFIX}-{step}")
    accelerator.save_state(path)  # every process takes part; the main one writes
    if accelerator.is_main_process:
        if reg is not None:
            save_eqreg_state(reg, path)
        atomic_write_json(os.path.join(path, LOOP_STATE_NAME), {"step": int(step)})  # last: marks it complete
    accelerator.wait_for_everyone()
    return path


def load_loop_checkpoint(accelerator: Any, path: str | os.PathLike, reg: Any = None) -> int:
    """Restore a :func:`save_loop_checkpoint` folder into the prepared objects; returns its step."""
    path = os.fspath(path)
    accelerator.load_state(path)
    with open(os.path.join(path, LOOP_STATE_NAME), encoding="utf-8") as fh:
        step = int(json.load(fh)["step"])
    if reg is not None:
        load_eqreg_state(reg, path)
    return step
