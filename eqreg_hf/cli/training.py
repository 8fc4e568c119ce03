"""What the three training commands share: run the recipe, report a refused push, print where the model
went."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["train_or_report", "print_saved", "eqreg_or_baseline"]


def train_or_report(
    command: str, train: Callable[[], Any], folder: str | None, hub_model_id: str | None
) -> Any:
    """``train()``, or None after one line on stderr when the model was trained and saved but the Hub refused
    the push (the command then exits with 1, as ``eqreg-hf push`` does)."""
    from eqreg_hf.cli import one_line
    from eqreg_hf.hub import HubPushError

    try:
        return train()
    except HubPushError as err:
        print(
            f"eqreg-hf {command}: error: {one_line(err)} (the model is saved in {folder}; push it later "
            f"with: eqreg-hf push {folder} {hub_model_id})",
            file=sys.stderr,
        )
        return None


def print_saved(output_dir: str | None, hub_url: str | None, hub_model_id: str | None) -> None:
    """``saved to ...`` and ``pushed to ...`` lines, for what happened."""
    if output_dir:
        print(f"saved to {output_dir}")
    if hub_url:
        print(f"pushed to https://huggingface.co/{hub_model_id}: {hub_url}")


def eqreg_or_baseline(cfg: Any, train_args: Any) -> Any:
    """The run's EQ-Reg config, or None for a baseline (weight 0); a baseline is still measured under the
    group its ``--eqreg.group`` names (``train_args.eval_group``, unless that is given), not C4."""
    if cfg.stacks:
        return cfg
    if getattr(train_args, "eval_group", None) is None and cfg.group_spec.size > 1:
        train_args.eval_group = cfg.group_spec.name
    return None
