"""What EQ-Reg buys on deraining: plain vs rotation augmentation vs EQ-Reg (λ sweep) vs strict C4.

    python scripts/bench_quality.py                          # the full default sweep (hours on 2 CPU cores)
    python scripts/bench_quality.py --seeds 0 1 --steps 60 \\
        --lambdas fro=1e-6,1e-5 relative=1e-4,1e-3          # a smaller one
    python scripts/bench_quality.py --quick                  # tiny network, seconds (what the test runs)
    python scripts/bench_quality.py --groups 2 --lambdas relative=1e-4 --auto relative=0.01,0.05,0.2
                                                             # + weight="auto" runs at three target shares
    python scripts/bench_quality.py --groups 4 D4            # C4 and D4 (rotations and flips) side by side

Writes (default --out-dir docs/results, --name quality): quality.json (every run; rewritten after each run, so
a killed sweep leaves a usable file; rerunning the same command skips finished runs), quality_table.md,
quality_psnr_vs_lambda.png, quality_layers_c4.png. The harness lives here, the training and evaluation it
calls in the library.

Every run goes through the library's own training function
(:func:`eqreg_hf.tasks.derain.recipe.train_derainer`, the same one behind ``eqreg-hf train-derain``) on the
built-in synthetic rain benchmark, and is scored on full held-out photos:

* PSNR / SSIM on the Y channel (:func:`eqreg_hf.tasks.derain.recipe.evaluate_derainer`);
* the per-layer equivariance error ``||T_k F_l(x) - F_l(R_k x)|| / ||F_l(R_k x)||``
  (:func:`eqreg_hf.equivariance_error`) of the network's default taps, under C4 *and* C2, so
  runs regularised for C2 and C4 are measured on the same scale (and under D4 too when the sweep
  has D4 runs: ``equivariance_error_d4`` / ``layer_errors_d4`` in every record).

Methods (one "config" each; every config is run for every seed):

    plain                       FastDerainer, MSE loss
    rot-aug                     the same + random 90° rotations of the crops
    rot-aug-c2                  the same + random 180° rotations (with C2 runs: C2 EQ-Reg's fair baseline)
    rot-aug-d4                  the same + random 90° rotations and left-right flips (with D4 runs: the
                                D4 augmentation next to the C4 one)
    eqreg-c{t}-{distance}-{λ}   the same + EQ-Reg (C_t, the network's body convs, task loss on the
                                rotated half too, as in the paper)
    eqreg-d4-{distance}-{λ}     the same with D4 (rotations and flips; --groups D4)
    strict-c4                   StrictC4Derainer: exactly C4-equivariant (e2cnn), ~same parameters

Results go to one JSON file, rewritten atomically after every run (a killed sweep leaves a
usable file), and a rerun with the same settings skips the runs already in it (resume).

Example:
    >>> from bench_quality import QualitySettings, plan_runs
    >>> runs = plan_runs(QualitySettings(seeds=[0], lambdas={"fro": [1e-6]}, groups=[4]))
    >>> [r.config_id for r in runs]
    ['plain', 'rot-aug', 'strict-c4', 'eqreg-c4-fro-1e-06']
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import atomic_write_text, save_figure
from eqreg_hf.tasks.derain.demo import demo_arguments
from eqreg_hf.tasks.derain.recipe import (
    DerainTrainingArguments,
    held_out_pairs,
    load_rain_split,
    train_derainer,
)

__all__ = [
    "QualitySettings",
    "QualityRun",
    "plan_runs",
    "run_quality_benchmark",
    "summarize",
    "format_quality_tables",
    "plot_psnr_vs_lambda",
    "plot_layer_errors",
    "DEFAULT_LAMBDAS",
    "RESULT_KEYS",
]

# λ grids per distance. λ is not portable between distances (docs/design.md): "fro" is an unsquared
# norm summed over the whole batch (Σ over the 12 taps ≈ 620 at init on 8 crops of 32²), "relative"
# lies in [0, 2] per tap (Σ ≈ 11 at init); the MSE task loss is ~5e-3 after a few steps. Each grid
# runs from "a few percent of the task loss" (little effect in short runs: docs/results.md) to
# "comparable to it" (equivariance error well down, PSNR cost visible).
DEFAULT_LAMBDAS: dict[str, list[float]] = {"fro": [1e-6, 1e-5, 1e-4], "relative": [1e-4, 1e-3, 1e-2]}
DISTANCE_CHOICES = ("fro", "relative", "mse")
# Keys every run record in the JSON has (tests pin them).
RESULT_KEYS = (
    "run_id",
    "config_id",
    "method",
    "model",
    "group_order",
    "distance",
    "weight",
    "seed",
    "params",
    "psnr_y",
    "ssim_y",
    "psnr_rgb",
    "ssim_rgb",
    "rainy_psnr_y",
    "output_equivariance_error",
    "equivariance_error_c4",
    "equivariance_error_c2",
    "layer_errors_c4",
    "layer_errors_c2",
    "final_task_loss",
    "final_eqreg_loss",
    "train_time_s",
)


@dataclass
class QualitySettings:
    """What the sweep runs. Everything here is saved in the JSON and must match for a resume.

    Args:
        seeds: seeds; each config is trained once per seed (default 0, 1, 2).
        steps: optimizer steps per run (default 150, the demo's).
        lambdas: ``{distance: [λ, ...]}`` for the EQ-Reg runs (default :data:`DEFAULT_LAMBDAS`).
        groups: groups of the EQ-Reg runs: t for C_t (4, 2) or ``"D4"`` (default C4 and C2).
        strict: include the strictly C4-equivariant StrictC4Derainer.
        quick: a tiny network on 32² images (seconds; for tests).
        crop_size, batch_size, lr: training settings (default: the demo's, ``demo_arguments()``).
        equiv_images: held-out images the equivariance error is measured on.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 150
    lambdas: dict[str, list[float]] = field(
        default_factory=lambda: {d: list(v) for d, v in DEFAULT_LAMBDAS.items()}
    )
    groups: list[int | str] = field(default_factory=lambda: [4, 2])
    strict: bool = True
    quick: bool = False
    crop_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    equiv_images: int = 1
    auto: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for dist, shares in self.auto.items():
            if dist not in DISTANCE_CHOICES:
                raise ValueError(
                    f"Unknown distance {dist!r} in auto. Choose between {list(DISTANCE_CHOICES)}."
                )
            bad = [v for v in shares if not 0 < float(v) < 10]
            if bad:
                raise ValueError(
                    f"target shares {bad} for {dist!r} must lie in (0, 10) (e.g. 0.01, 0.05, 0.2)."
                )
        for dist in self.lambdas:
            if dist not in DISTANCE_CHOICES:
                raise ValueError(
                    f"Unknown distance {dist!r} in lambdas. Choose between {list(DISTANCE_CHOICES)}."
                )
            bad = [w for w in self.lambdas[dist] if not float(w) > 0]
            if bad:
                raise ValueError(
                    f"λ values {bad} for {dist!r} must be > 0 (plain training is always included)."
                )
        self.groups = [_group_arg(g) for g in self.groups]
        if int(self.steps) < 1 or not self.seeds:
            raise ValueError(f"steps={self.steps!r} must be >= 1 and seeds={self.seeds!r} non-empty.")

    def training_arguments(self) -> DerainTrainingArguments:
        """The shared training arguments (model, seed and rotation augmentation are set per run)."""
        base = demo_arguments(steps=int(self.steps), quick=self.quick, progress=False)
        changes: dict[str, Any] = {"equiv_images": self.equiv_images}
        # QualitySettings keeps the names its saved JSON files have; "lr" is the arguments' learning_rate
        for name, arg in (("crop_size", "crop_size"), ("batch_size", "batch_size"), ("lr", "learning_rate")):
            if getattr(self, name) is not None:
                changes[arg] = getattr(self, name)
        return dataclasses.replace(base, **changes)

    def comparable(self) -> dict[str, Any]:
        """The settings that change a run's result (a resume must match these)."""
        d = dataclasses.asdict(self)
        for key in ("seeds", "lambdas", "groups", "strict", "auto"):  # these only add or drop runs
            d.pop(key)
        d["training"] = {k: v for k, v in self.training_arguments().to_dict().items() if k != "progress"}
        return d


@dataclass(frozen=True)
class QualityRun:
    """One training run of the sweep."""

    method: str  # "plain" | "rot-aug" | "rot-aug-c2" | "rot-aug-d4" | "eqreg" | "eqreg-auto" | "strict-c4"
    seed: int
    group_order: int = 1
    distance: str | None = None
    weight: float = 0.0  # λ; for "eqreg-auto" the target share of weight="auto"
    dihedral: bool = False  # EQ-Reg with D_t (rotations and flips) instead of C_t

    @property
    def group(self) -> str | None:
        """The EQ-Reg group's name ("C4", "D4"), None for runs without EQ-Reg."""
        return (
            f"{'D' if self.dihedral else 'C'}{self.group_order}" if self.method.startswith("eqreg") else None
        )

    @property
    def config_id(self) -> str:
        if self.method == "eqreg":
            return f"eqreg-{self.group.lower()}-{self.distance}-{self.weight:g}"
        if self.method == "eqreg-auto":
            return f"eqreg-{self.group.lower()}-{self.distance}-auto-share{self.weight:g}"
        return self.method

    @property
    def run_id(self) -> str:
        return f"{self.config_id}/seed{self.seed}"


def plan_runs(settings: QualitySettings) -> list[QualityRun]:
    """All runs, seed-major: every config for the first seed, then the next seed.

    Seed-major order means a sweep cut short still covers every config (with fewer seeds).
    """
    runs = []
    for seed in settings.seeds:
        runs.append(QualityRun("plain", seed))
        runs.append(QualityRun("rot-aug", seed))
        if 2 in settings.groups:  # the fair baseline of C2 EQ-Reg: 180° turns only
            runs.append(QualityRun("rot-aug-c2", seed))
        if "D4" in settings.groups:  # the baseline of D4 EQ-Reg: 90° turns and flips
            runs.append(QualityRun("rot-aug-d4", seed))
        if settings.strict:
            runs.append(QualityRun("strict-c4", seed))
        for g in settings.groups:
            t, dih = (int(g[1:]), True) if isinstance(g, str) else (g, False)
            for dist, weights in settings.lambdas.items():
                for w in weights:
                    runs.append(
                        QualityRun("eqreg", seed, group_order=t, distance=dist, weight=float(w), dihedral=dih)
                    )
            for dist, shares in settings.auto.items():
                for share in shares:
                    runs.append(
                        QualityRun(
                            "eqreg-auto",
                            seed,
                            group_order=t,
                            distance=dist,
                            weight=float(share),
                            dihedral=dih,
                        )
                    )
    return runs


def _group_arg(value: int | str) -> int | str:
    """A group of the sweep: 2 / 4 (C_t, also "C2" / "C4") or "D4"; anything else is refused by name."""
    text = str(value).strip().upper()
    if text in ("2", "4", "C2", "C4"):
        return int(text[-1])
    if text == "D4":
        return "D4"
    raise ValueError(
        f"groups: {value!r} is unsupported; use 2, 4 (exact rotations, C2 / C4) and/or D4 (90° turns and "
        "flips)."
    )


def _layer_errors(model: torch.nn.Module, pairs: list, group_order: int | str, n: int) -> dict[str, float]:
    from eqreg_hf.core.measure import equivariance_error

    ref = pairs[0][0].shape
    batch = torch.stack([r for r, _ in pairs[:n] if r.shape == ref])
    if group_order == "D4":
        # The body taps of C4 (their channels divide by 8 here too). StrictC4Derainer's C4 fields are read two
        # by two as D4 fields: its rotations act on them as the D4 rotations do, its flips are unconstrained.
        report = equivariance_error(model, batch, layers=model.eqreg_layers(4), group="D4")
    elif group_order == 2 and type(model).__name__ == "StrictC4Derainer":
        # Its hidden fields are C4-regular (4 channels each): the 180° rotation acts on them as the
        # C4 element k = 2 (shift by 2 within each 4-block), not as a C2-regular field of size 2.
        report = equivariance_error(model, batch, layers=model.eqreg_layers(4), group_order=4, ks=[2])
    else:
        report = equivariance_error(
            model, batch, layers=model.eqreg_layers(group_order), group_order=group_order
        )
    return {name: float(v) for name, v in report.items()}


def _train_one(run: QualityRun, settings: QualitySettings, train_ds: Any, eval_pairs: list) -> dict[str, Any]:
    base = settings.training_arguments()
    augment = "none"
    if run.method.startswith("rot-aug"):
        augment = "C2" if run.method == "rot-aug-c2" else "C4"
    args = dataclasses.replace(
        base,
        seed=run.seed,
        augment=augment,
        hflip=run.method == "rot-aug-d4",  # with random 90° turns: uniform over D4
        model="strict-c4" if run.method == "strict-c4" else "fast",
    )
    if run.method == "strict-c4":
        # the default (24 fields, 4 blocks: 111,675 parameters) matches FastDerainer's budget (112,739)
        args = (
            dataclasses.replace(args, num_fields=4, num_blocks=1)
            if settings.quick
            else dataclasses.replace(args, num_fields=24, num_blocks=None)
        )
    cfg = None
    if run.method == "eqreg":
        cfg = EqRegConfig(
            layers="auto", group=run.group, distance=run.distance, weight=run.weight, seed=run.seed
        )
    elif run.method == "eqreg-auto":  # weight="auto" at its default warm-up, the share of this run
        cfg = EqRegConfig(
            layers="auto",
            group=run.group,
            distance=run.distance,
            weight="auto",
            target_share=run.weight,
            seed=run.seed,
        )
    result = train_derainer(
        args, cfg, train_dataset=train_ds, eval_dataset=eval_pairs, save=False, desc=run.run_id
    )
    model = result.model
    m = result.metrics
    # train_derainer already measured the C_t of the run (C4 for plain / rot-aug / strict, C_t for
    # EQ-Reg with C_t or D_t) on the same images and taps: reuse it, measure only the other groups.
    own = {int(result.report.group_order): {n: float(v) for n, v in result.report.items()}}
    if run.method == "strict-c4":
        own.pop(2, None)  # its C2 error needs the C4-field action (see _layer_errors)
    c4 = own.get(4) or _layer_errors(model, eval_pairs, 4, settings.equiv_images)
    c2 = own.get(2) or _layer_errors(model, eval_pairs, 2, settings.equiv_images)
    # The last logging windows: how large the EQ-Reg term was next to the task loss.
    tail = result.history.logs[-3:] or [{}]
    record = {
        "run_id": run.run_id,
        "config_id": run.config_id,
        "method": run.method,
        "model": args.model,
        "group_order": run.group_order,
        "distance": run.distance,
        "weight": run.weight,
        "seed": run.seed,
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "psnr_y": m["psnr_y"],
        "ssim_y": m["ssim_y"],
        "psnr_rgb": m["psnr_rgb"],
        "ssim_rgb": m["ssim_rgb"],
        "rainy_psnr_y": m["rainy_psnr_y"],
        "output_equivariance_error": m["output_equivariance_error"],
        "equivariance_error_c4": statistics.fmean(c4.values()),
        "equivariance_error_c2": statistics.fmean(c2.values()),
        "layer_errors_c4": c4,
        "layer_errors_c2": c2,
        "final_task_loss": statistics.fmean(log.get("task_loss", math.nan) for log in tail),
        "final_eqreg_loss": statistics.fmean(log.get("eqreg_loss", 0.0) for log in tail),
        "train_time_s": result.train_time_s,
        "group": run.group,
        # the live λ at the end (weight="auto": where the automatic weight settled)
        "final_weight": (
            result.history.series("eqreg_weight") or [run.weight if run.method == "eqreg" else 0.0]
        )[-1],
    }
    if "D4" in settings.groups:  # every run of a sweep with D4 runs is measured under D4 too
        d4 = _layer_errors(model, eval_pairs, "D4", settings.equiv_images)
        record.update(equivariance_error_d4=statistics.fmean(d4.values()), layer_errors_d4=d4)
    return record


def _write_json(path: str, payload: dict[str, Any]) -> None:
    # atomic: never a half-written file, even when the sweep is killed
    atomic_write_text(
        path,
        json.dumps(
            payload,
            indent=1,
            default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v),
        ),
    )


def load_results(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON written by :func:`run_quality_benchmark`, or None when the file does not exist."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def machine_description() -> str:
    """CPU / GPU, core count and torch version, for the results."""
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {dev}"
    )


# DerainTrainingArguments fields renamed to transformers.TrainingArguments' names (files written before
# keep the old).
_RENAMED_TRAINING = {"steps": "max_steps", "lr": "learning_rate", "log_every": "logging_steps"}


def _settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the settings that differ. A training field only one side has (a field added to
    DerainTrainingArguments since the file was written, at its default) is not a difference; fields
    renamed since are compared under their new names."""
    diff = [k for k in sorted(set(old) | set(new)) if k != "training" and old.get(k) != new.get(k)]
    old_t = {_RENAMED_TRAINING.get(k, k): v for k, v in old.get("training", {}).items()}
    new_t = new.get("training", {})
    diff += [f"training.{k}" for k in sorted(set(old_t) & set(new_t)) if old_t[k] != new_t[k]]
    return diff


def _show(settings: dict[str, Any], keys: list[str]) -> str:
    out = []
    for key in keys:
        head, _, sub = key.partition(".")
        out.append(repr(settings.get(head, {}).get(sub) if sub else settings.get(head)))
    return ", ".join(out)


def run_quality_benchmark(
    settings: QualitySettings,
    output: str | os.PathLike,
    *,
    command: str | None = None,
    progress: bool = True,
    print_fn: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run (or resume) the sweep, saving the JSON after every run; returns the JSON's content.

    Args:
        settings: :class:`QualitySettings`.
        output: the JSON file; runs already in it are skipped when its settings match ``settings``
            (otherwise a ValueError says which setting differs).
        command: the command line, recorded in the JSON.
        progress: a tqdm bar over the runs.
        print_fn: one line per finished run.

    Returns:
        ``{"meta": {...}, "runs": {run_id: record}, "summary": {config_id: {...}}}``; each record has
        the keys :data:`RESULT_KEYS`.
    """
    from tqdm.auto import tqdm

    output = os.fspath(output)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    comparable = settings.comparable()
    payload = load_results(output)
    if payload is not None:
        old = payload.get("meta", {}).get("settings", {})
        diff = _settings_diff(old, comparable)
        if diff:
            raise ValueError(
                f"{output} holds runs made with other settings ({', '.join(diff)}: {_show(old, diff)} -> "
                f"{_show(comparable, diff)}). "
                "Resume with the same settings, or write to another file (--output)."
            )
    else:
        payload = {"meta": {}, "runs": {}}
    payload["meta"].update(
        {
            "settings": comparable,
            "machine": machine_description(),
            # Several invocations may fill one file (e.g. a C2 sweep added to a C4 one): keep them all.
            "invocations": payload["meta"].get("invocations", [])
            + [
                {
                    "command": command,
                    "seeds": settings.seeds,
                    "lambdas": settings.lambdas,
                    "groups": settings.groups,
                    "strict": settings.strict,
                }
            ],
            "benchmark": "synthetic rain (eqreg-hf built-in), PSNR/SSIM on Y of full held-out images",
        }
    )
    runs = plan_runs(settings)
    todo = [r for r in runs if r.run_id not in payload["runs"]]
    if len(todo) < len(runs):
        print_fn(f"Resuming: {len(runs) - len(todo)} of {len(runs)} runs already in {output}.")
    args = settings.training_arguments()
    train_ds = load_rain_split("synthetic", "train", synthetic_size=args.synthetic_size)
    eval_pairs = held_out_pairs(
        load_rain_split("synthetic", "test", synthetic_size=args.synthetic_size), args.eval_max_images
    )
    start = time.perf_counter()
    for run in tqdm(todo, desc="bench_quality", disable=not progress):
        record = _train_one(run, settings, train_ds, eval_pairs)
        payload["runs"][run.run_id] = record
        payload["summary"] = summarize(payload["runs"])
        payload["meta"]["elapsed_s"] = payload["meta"].get("elapsed_s", 0.0) + (time.perf_counter() - start)
        start = time.perf_counter()
        _write_json(output, payload)
        print_fn(
            f"{run.run_id}: PSNR-Y {record['psnr_y']:.2f} dB, SSIM-Y {record['ssim_y']:.4f}, "
            f"C4 error {record['equivariance_error_c4']:.4f}, {record['train_time_s']:.0f} s"
        )
    payload["summary"] = summarize(payload["runs"])
    _write_json(output, payload)
    return payload


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation (over seeds) per config of PSNR/SSIM, equivariance errors and time."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in runs.values():
        groups.setdefault(rec["config_id"], []).append(rec)
    summary = {}
    for cid, recs in groups.items():
        first = recs[0]
        row: dict[str, Any] = {
            k: first[k] for k in ("method", "model", "group_order", "distance", "weight", "params")
        }
        row["group"] = _group_of(first)
        row["n_seeds"] = len(recs)
        for key in (
            "psnr_y",
            "ssim_y",
            "equivariance_error_c4",
            "equivariance_error_c2",
            "equivariance_error_d4",
            "output_equivariance_error",
            "train_time_s",
            "final_task_loss",
            "final_eqreg_loss",
            "final_weight",
        ):
            row[key + "_mean"], row[key + "_std"] = _mean_std([r.get(key, math.nan) for r in recs])
        for t in ("c4", "c2", "d4"):
            if f"layer_errors_{t}" not in first:  # D4 errors: only in sweeps with D4 runs
                continue
            names = list(first[f"layer_errors_{t}"])
            row[f"layer_errors_{t}"] = {
                n: _mean_std([r[f"layer_errors_{t}"][n] for r in recs])[0] for n in names
            }
        row["rainy_psnr_y"] = first["rainy_psnr_y"]
        summary[cid] = row
    return summary


def _group_of(row: dict[str, Any]) -> str | None:
    """The EQ-Reg group of a record or summary row ("C4", "D4"; None without EQ-Reg).

    Also for files written before rows had one."""
    return row.get("group") or (f"C{row['group_order']}" if row["method"].startswith("eqreg") else None)


def _order(summary: dict[str, dict[str, Any]]) -> list[str]:
    head = [c for c in ("plain", "rot-aug", "rot-aug-c2", "rot-aug-d4", "strict-c4") if c in summary]
    rest = sorted(
        (c for c in summary if c not in head),
        key=lambda c: (
            -summary[c]["group_order"],
            _group_of(summary[c]) or "",
            summary[c]["distance"] or "",
            summary[c]["method"],
            summary[c]["weight"],
        ),
    )
    return head + rest


def format_quality_tables(payload: dict[str, Any]) -> str:
    """Markdown: the main table (mean ± std over seeds), one row per config."""
    summary = payload.get("summary") or summarize(payload["runs"])
    if not summary:
        return "(no runs yet)"
    d4 = any("layer_errors_d4" in s for s in summary.values())  # a column of its own in sweeps with D4 runs
    lines = [
        "| method | t | distance | λ | params | seeds | PSNR-Y (dB) | SSIM-Y | equiv. err. C4 (taps) | "
        "equiv. err. C2 (taps) | "
        + ("equiv. err. D4 (taps) | " if d4 else "")
        + "equiv. err. output C4 | EQ-Reg / task loss (end) | time / run (s) |",
        "|" + "---|" * (13 + d4),
    ]
    rainy = next(iter(summary.values()))["rainy_psnr_y"]
    lines.append(f"| rainy input (do nothing) | | | | | | {rainy:.2f} | | | | | | |" + (" |" if d4 else ""))
    for cid in _order(summary):
        s = summary[cid]
        eqreg = s["method"].startswith("eqreg")
        share = (
            s["final_eqreg_loss_mean"] / s["final_task_loss_mean"]
            if eqreg and s["final_task_loss_mean"]
            else math.nan
        )
        weight = (
            f"auto, share {s['weight']:g} (end: λ = {s['final_weight_mean']:.2g})"
            if s["method"] == "eqreg-auto"
            else f"{s['weight']:g}"
        )
        group = _group_of(s) if (_group_of(s) or "").startswith("D") else s["group_order"]
        lines.append(
            f"| {s['method']} | {group if eqreg else ('4 (exact)' if s['method'] == 'strict-c4' else '')} "
            f"| {s['distance'] or ''} | {weight} | {s['params']:,} | {s['n_seeds']} "
            f"| {s['psnr_y_mean']:.2f} ± {s['psnr_y_std']:.2f} | {s['ssim_y_mean']:.4f} ± "
            f"{s['ssim_y_std']:.4f} | {s['equivariance_error_c4_mean']:.3f} ± "
            f"{s['equivariance_error_c4_std']:.3f} | {s['equivariance_error_c2_mean']:.3f} ± "
            f"{s['equivariance_error_c2_std']:.3f} "
            + (
                f"| {s['equivariance_error_d4_mean']:.3f} ± {s['equivariance_error_d4_std']:.3f} "
                if d4
                else ""
            )
            + f"| {s['output_equivariance_error_mean']:.4f} "
            f"| {'' if math.isnan(share) else f'{share:.2f}'} | {s['train_time_s_mean']:.0f} |"
        )
    return "\n".join(lines)


def _save_fig(fig: Any, path: str) -> str:
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_psnr_vs_lambda(payload: dict[str, Any], path: str | os.PathLike) -> str:
    """PNG: held-out PSNR-Y vs λ (log axis), one panel per distance, one line per group order.

    Plain, rotation augmentation and the strict C4 network are horizontal lines (mean) with a
    ±std band, so each λ can be read against them. Error bars are the std over seeds.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    summary = payload.get("summary") or summarize(payload["runs"])
    dists = sorted({s["distance"] for s in summary.values() if s["method"].startswith("eqreg")}) or ["(none)"]
    fig, axes = plt.subplots(1, len(dists), figsize=(5.2 * len(dists), 3.8), squeeze=False)
    refs = [
        ("plain", "black", "-"),
        ("rot-aug", "tab:green", "--"),
        ("rot-aug-c2", "tab:olive", "-."),
        ("rot-aug-d4", "tab:cyan", "--"),
        ("strict-c4", "tab:purple", ":"),
    ]
    for ax, dist in zip(axes[0], dists):
        rows = [s for s in summary.values() if s["method"] == "eqreg" and s["distance"] == dist]
        for name, color in (("C4", "tab:blue"), ("C2", "tab:orange"), ("D4", "tab:red")):
            pts = sorted(
                (s["weight"], s["psnr_y_mean"], s["psnr_y_std"]) for s in rows if _group_of(s) == name
            )
            if pts:
                w, m, sd = zip(*pts)
                ax.errorbar(w, m, yerr=sd, marker="o", color=color, capsize=3, label=f"EQ-Reg {name}")
            for s in (
                s
                for s in summary.values()
                if s["method"] == "eqreg-auto"
                and s["distance"] == dist
                and _group_of(s) == name
                and s["final_weight_mean"] > 0
            ):
                # weight="auto": drawn at the λ it settled on, labelled with its share
                ax.errorbar(
                    [s["final_weight_mean"]],
                    [s["psnr_y_mean"]],
                    yerr=[s["psnr_y_std"]],
                    marker="x",
                    color=color,
                    capsize=3,
                    linestyle="none",
                    markersize=8,
                )
                ax.annotate(
                    f"auto {s['weight']:g}",
                    (s["final_weight_mean"], s["psnr_y_mean"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(4, -10),
                    color=color,
                )
        for cid, color, style in refs:
            if cid in summary:
                m, sd = summary[cid]["psnr_y_mean"], summary[cid]["psnr_y_std"]
                ax.axhline(m, color=color, linestyle=style, label=cid)
                ax.axhspan(m - sd, m + sd, color=color, alpha=0.08)
        ax.set_xscale("log")
        ax.set_xlabel("λ")
        ax.set_ylabel("held-out PSNR-Y (dB)")
        ax.set_title(f"distance = {dist}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    n = max((s["n_seeds"] for s in summary.values()), default=0)
    fig.suptitle(f"Synthetic rain: PSNR vs EQ-Reg weight (mean ± std over up to {n} seeds)", fontsize=10)
    return _save_fig(fig, os.fspath(path))


def plot_layer_errors(payload: dict[str, Any], path: str | os.PathLike, group_order: int | str = 4) -> str:
    """PNG: per-layer C_t (or D4: ``group_order="D4"``) equivariance error of plain / rot-aug / EQ-Reg of that
    group (each λ) / strict, one panel per distance.

    Taps are the networks' body convolutions in order (FastDerainer ``body.i.conv1/2``;
    StrictC4Derainer ``body.i.feat1/2``, drawn at the same block positions).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    summary = payload.get("summary") or summarize(payload["runs"])
    name = group_order if isinstance(group_order, str) else f"C{group_order}"
    key = f"layer_errors_{name.lower()}"
    dists = sorted({s["distance"] for s in summary.values() if s["method"] == "eqreg"}) or ["(none)"]
    fig, axes = plt.subplots(1, len(dists), figsize=(5.8 * len(dists), 3.9), squeeze=False)
    ref_names = list(summary["plain"][key]) if "plain" in summary else []

    def xs_of(names: list[str]) -> list[int]:
        # body.i.conv1/2 and body.i.feat1/2 both map to 2*i + (j - 1).
        out = []
        for n in names:
            parts = n.split(".")
            out.append(
                2 * int(parts[1]) + int(parts[2][-1]) - 1
                if len(parts) == 3 and parts[1].isdigit()
                else len(out)
            )
        return out

    for ax, dist in zip(axes[0], dists):
        for cid, color, marker in (
            ("plain", "black", "o"),
            ("rot-aug", "tab:green", "s"),
            ("rot-aug-d4", "tab:cyan", "v"),
            ("strict-c4", "tab:purple", "^"),
        ):
            if cid in summary and key in summary[cid]:
                errs = summary[cid][key]
                ax.plot(xs_of(list(errs)), list(errs.values()), color=color, marker=marker, label=cid)
        rows = sorted(
            (
                s
                for s in summary.values()
                if s["method"] == "eqreg" and s["distance"] == dist and _group_of(s) == name
            ),
            key=lambda s: s["weight"],
        )
        cmap = plt.get_cmap("Blues")
        for i, s in enumerate(rows):
            errs = s[key]
            ax.plot(
                xs_of(list(errs)),
                list(errs.values()),
                color=cmap(0.4 + 0.6 * (i + 1) / len(rows)),
                marker=".",
                label=f"EQ-Reg {name} λ={s['weight']:g}",
            )
        if ref_names:
            ax.set_xticks(range(len(ref_names)))
            ax.set_xticklabels([n.replace("body.", "") for n in ref_names], rotation=60, fontsize=7)
        ax.set_ylabel(f"{name} equivariance error (held-out)")
        ax.set_title(f"EQ-Reg distance = {dist}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Per-layer relative equivariance error ||T_k F(x) - F(R_k x)|| / ||F(R_k x)|| (mean over seeds)",
        fontsize=10,
    )
    return _save_fig(fig, os.fspath(path))


def write_report_files(
    payload: dict[str, Any], out_dir: str | os.PathLike, prefix: str = "quality"
) -> list[str]:
    """Write ``{prefix}_table.md``, ``{prefix}_psnr_vs_lambda.png`` and ``{prefix}_layers_c4.png`` into
    ``out_dir`` (and ``{prefix}_layers_d4.png`` when the runs were measured under D4)."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    files = []
    table = format_quality_tables(payload)
    md = os.path.join(out_dir, f"{prefix}_table.md")
    with open(md + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(table + "\n")
    os.replace(md + ".tmp", md)
    files.append(md)
    if payload["runs"]:
        files.append(plot_psnr_vs_lambda(payload, os.path.join(out_dir, f"{prefix}_psnr_vs_lambda.png")))
        files.append(
            plot_layer_errors(payload, os.path.join(out_dir, f"{prefix}_layers_c4.png"), group_order=4)
        )
        if any("layer_errors_d4" in r for r in payload["runs"].values()):
            files.append(
                plot_layer_errors(payload, os.path.join(out_dir, f"{prefix}_layers_d4.png"), group_order="D4")
            )
    return files


def parse_lambdas(items: list[str]) -> dict[str, list[float]]:
    """``["fro=1e-6,1e-5", "relative=1e-3"]`` -> ``{"fro": [1e-6, 1e-5], "relative": [1e-3]}``."""
    out: dict[str, list[float]] = {}
    for item in items:
        dist, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(
                f"--lambdas item {item!r} is not DISTANCE=λ1,λ2 (e.g. fro=1e-6,1e-5 relative=1e-3)."
            )
        try:
            out[dist] = [float(v) for v in values.split(",") if v]
        except ValueError:
            raise SystemExit(
                f"--lambdas item {item!r}: the λ values must be numbers (e.g. fro=1e-6,1e-5)."
            ) from None
    return out


def _group_cli(text: str) -> int | str:
    try:
        return _group_arg(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds (default 0 1 2).")
    ap.add_argument("--steps", type=int, default=None, help="Steps per run (default 150; 2 with --quick).")
    ap.add_argument(
        "--lambdas",
        nargs="+",
        default=None,
        metavar="DIST=λ,λ",
        help="EQ-Reg weights per distance (default: "
        + " ".join(f"{d}={','.join(f'{w:g}' for w in ws)}" for d, ws in DEFAULT_LAMBDAS.items())
        + ").",
    )
    ap.add_argument(
        "--groups",
        type=_group_cli,
        nargs="+",
        default=[4, 2],
        help="Groups of the EQ-Reg runs: 4, 2 (C4, C2) and/or D4 (rotations and flips; adds the D4 "
        "augmentation baseline and D4 errors of every run) (default 4 2).",
    )
    ap.add_argument(
        "--auto",
        nargs="+",
        default=None,
        metavar="DIST=s,s",
        help="weight='auto' runs: target shares per distance, e.g. relative=0.01,0.05,0.2 (default: none).",
    )
    ap.add_argument("--no-strict", action="store_true", help="Leave out the strictly C4-equivariant network.")
    ap.add_argument(
        "--crop-size", type=int, default=None, help="Training crop size (default: the demo's, 48)."
    )
    ap.add_argument("--batch-size", type=int, default=None, help="Crops per batch (default: the demo's, 8).")
    ap.add_argument("--equiv-images", type=int, default=1, help="Held-out images for the equivariance error.")
    ap.add_argument(
        "--quick", action="store_true", help="Tiny network and 32x32 images (seconds; for tests)."
    )
    ap.add_argument(
        "--out-dir", default="docs/results", help="Folder of the table and plots (default docs/results)."
    )
    ap.add_argument(
        "--name", default="quality", help="File name prefix of the JSON, table and plots (default quality)."
    )
    ap.add_argument("--output", default=None, help="The JSON file (default OUT_DIR/NAME.json).")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    lambdas = (
        parse_lambdas(args.lambdas) if args.lambdas else {d: list(v) for d, v in DEFAULT_LAMBDAS.items()}
    )
    steps = args.steps if args.steps is not None else (2 if args.quick else 150)
    settings = QualitySettings(
        seeds=args.seeds,
        steps=steps,
        lambdas=lambdas,
        groups=args.groups,
        strict=not args.no_strict,
        quick=args.quick,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        equiv_images=args.equiv_images,
        auto=parse_lambdas(args.auto) if args.auto else {},
    )
    output = args.output or os.path.join(args.out_dir, f"{args.name}.json")
    command = "python scripts/bench_quality.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    payload = run_quality_benchmark(settings, output, command=command.strip(), progress=not args.no_progress)
    files = write_report_files(payload, args.out_dir, prefix=args.name)
    print(format_quality_tables(payload))
    print("Wrote " + ", ".join([output] + files))
    return payload


if __name__ == "__main__":
    main()
