"""Plain vs rotation augmentation vs EQ-Reg classification, over seeds (docs/classification.md's table)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time

import torch

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.tasks.classify.arguments import ClassifierArgs
from eqreg_hf.tasks.classify.recipe import train_classifier

__all__ = ["COMPARISON", "compare_classifiers", "comparison_table"]

logger = logging.getLogger(__name__)


# Variants of the comparison in docs/classification.md: (name, augment, EQ-Reg on)
COMPARISON = (("plain", "none", False), ("rotation augmentation", "C4", False), ("EQ-Reg", "none", True))


def compare_classifiers(
    args: ClassifierArgs,
    eqreg: EqRegConfig,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    variants: tuple = COMPARISON,
) -> dict[str, list[dict[str, float]]]:
    """Train each variant (plain / rotation augmentation / EQ-Reg) once per seed; collect the metrics.

    The plain and augmentation runs use ``eqreg`` with ``weight=0`` (same taps measured, no loss term).

    Returns:
        ``{variant: [{"accuracy", "equiv_error", "output_error", "seconds"} per seed]}``.
    """
    rows: dict[str, list[dict[str, float]]] = {}
    for name, augment, on in variants:
        for seed in seeds:
            run = dataclasses.replace(
                args,
                seed=seed,
                augment=augment,
                output_dir=os.path.join(args.output_dir, _slug(name), f"seed{seed}"),
            )
            cfg = dataclasses.replace(eqreg, seed=seed, weight=eqreg.weight if on else 0.0)
            start = time.time()
            m = train_classifier(run, cfg).metrics
            rows.setdefault(name, []).append(
                {
                    "accuracy": m.get("eval_accuracy", math.nan),
                    "equiv_error": m.get("eval_equiv_error", math.nan),
                    "output_error": m.get("eval_equiv_error/output", math.nan),
                    "seconds": time.time() - start,
                }
            )
            logger.info("%s seed %d: %s", name, seed, rows[name][-1])
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def comparison_table(rows: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table, mean ± std (sample std over seeds) of accuracy and equivariance errors."""

    def stat(values: list[float]) -> str:
        t = torch.tensor(values, dtype=torch.float64)
        std = float(t.std()) if len(values) > 1 else 0.0
        return f"{float(t.mean()):.3f} ± {std:.3f}"

    lines = [
        "| training | top-1 accuracy | equivariance error (stages) | logit invariance error | seeds |",
        "|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        lines.append(
            f"| {name} | {stat([r['accuracy'] for r in runs])} | {stat([r['equiv_error'] for r in runs])} "
            f"| {stat([r['output_error'] for r in runs])} | {len(runs)} |"
        )
    return "\n".join(lines)
