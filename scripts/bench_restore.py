"""Where rotations are the right prior: denoising and inpainting with little data, rain turned by 90°.

    python scripts/bench_restore.py                 # the default sweep (about an hour on 2 idle CPU cores)
    python scripts/bench_restore.py --quick         # tiny networks and images, a minute (what the test runs)
    python scripts/bench_restore.py --sections pilot denoise      # only some sections
    python scripts/bench_restore.py --workers 1     # one run at a time (default: 2 runs, one thread each)

Writes (default --out-dir docs/results, --name restore): restore.json (every run; rewritten after each
run, so a killed sweep leaves a usable file, and rerunning the same command skips the finished runs),
restore_tables.md and the plots restore_psnr_vs_size.png, restore_overfit.png, restore_shift.png,
restore_frontier.png. The harness lives here; every run goes through the library's own training
functions (:func:`eqreg_hf.tasks.restore.recipe.train_restorer`, the function behind
``eqreg-hf train-restore``, and :func:`eqreg_hf.tasks.derain.recipe.train_derainer` for the rain
section), and is scored on whole held-out photos.

Sections (each a list of runs; every run is one (config, training-set size, seed)):

    pilot      denoising (σ = 25/255) at the smallest training set, EQ-Reg C4 at each λ of --lambdas,
               one seed: the λ with the best held-out PSNR is the one the other sections use.
    denoise    every training-set size x {plain, aug-c4, eqreg-c4, ei-c4 (deepinv's equivariant
               imaging loss, output level), strict-c4 (exactly C4-equivariant, matched parameters)}.
    dihedral   smallest size: aug-d4, eqreg-d4, strict-d4 (flips too; issue "D_t").
    auto       smallest size: EQ-Reg C4 with weight="auto" at the default share (all seeds) and at
               the other --shares (first seed): the tuning-free λ against the pilot's best.
    frontier   smallest size: EQ-Reg C4 at rotated_fraction 0.5 and 0.25 (1.0 is the denoise run).
    inpaint    50 % missing pixels, smallest size, the denoise methods.
    swin2sr    transformers' Swin2SR (denoising) through the HF Trainer, smallest size, plain vs EQ-Reg.
    shift      rain benchmark: plain, aug-c4, eqreg-c4 (weight="auto"), strict-c4 FastDerainer runs,
               scored on the usual held-out rain and on the same photos with the rain turned by 90°.

Example:
    >>> from bench_restore import BenchSettings, plan_runs
    >>> runs = plan_runs(BenchSettings(quick=True, sections=["denoise"], seeds=[0]), weight=1e-3)
    >>> sorted({r.config for r in runs})
    ['aug-c4', 'ei-c4', 'eqreg-c4', 'plain', 'strict-c4']
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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import torch

from eqreg_hf.core.io import atomic_write_json, atomic_write_text

__all__ = [
    "BenchSettings",
    "Run",
    "plan_runs",
    "run_benchmark",
    "summarize",
    "format_tables",
    "write_report_files",
    "SECTIONS",
]

SECTIONS = ("pilot", "denoise", "dihedral", "auto", "frontier", "inpaint", "swin2sr", "shift", "equaltime")
METHODS = ("plain", "aug-c4", "eqreg-c4", "ei-c4", "strict-c4")
# The controls of every section: EQ-Reg's own stacked step with no term (EqRegConfig(mode="pair")), and
# augmentation and plain training at EQ-Reg's images per step (2b).
CONTROLS = ("pair-c4", "aug-c4-2b", "plain-2b")
# Equal training time: these methods get as many steps as fit in the seconds EQ-Reg C4 took (same seed).
EQUAL_TIME = ("plain", "aug-c4", "pair-c4")
# The rain section's angle range for the shifted test set: the training rain falls within ±30° of
# vertical (data.RainSettings' default), this is the same range turned by 90° (near-horizontal).
SHIFTED_ANGLES = (60.0, 120.0)


@dataclass
class BenchSettings:
    """Everything a sweep depends on (two files with different settings are never mixed)."""

    # five seeds: the term's effect (EQ-Reg - pair) is a paired difference with a 95 % t interval
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    sections: list[str] = field(default_factory=lambda: list(SECTIONS))
    # two sizes and 800 steps keep the default sweep inside 2 h on 2 cores with the controls added
    sizes: list[str] = field(default_factory=lambda: ["region48", "all"])
    max_steps: int = 800
    crop_size: int = 40
    batch_size: int = 8
    learning_rate: float = 2e-3
    # The strict nets share each weight across the |G| rotated (and flipped) copies of a kernel, so a step
    # moves their function more: at 2e-3 two of four seed-0 strict runs collapsed to the identity before
    # step 100 (dead ReLUs; PSNR = the noisy input's). At 1e-3 they train.
    strict_learning_rate: float = 1e-3
    photo_size: int = 128
    channels: int = 32
    depth: int = 6
    sigma: float = 25 / 255
    mask_ratio: float = 0.5
    distance: str = "relative"
    lambdas: list[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3])
    shares: list[float] = field(default_factory=lambda: [0.05, 0.01, 0.2])
    fractions: list[float] = field(default_factory=lambda: [0.5, 0.25])
    ei_weights: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    eval_every: int = 100
    swin_steps: int = 500
    swin_crop: int = 32
    swin_learning_rate: float = (
        5e-4  # AdamW on a transformer: 2e-3 trains too, 0.4 dB lower at 200 steps (one seed)
    )
    rain_steps: int = 300
    rain_crop: int = 48
    quick: bool = False

    def __post_init__(self) -> None:
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise ValueError(f"sections {bad} unknown; choose among {list(SECTIONS)}.")
        if self.quick:  # tiny everything: the test suite's end-to-end check of this harness
            self.sizes, self.max_steps, self.crop_size, self.batch_size = ["region32"], 6, 16, 2
            self.photo_size, self.channels, self.depth, self.eval_every = 32, 8, 3, 3
            self.lambdas, self.shares, self.fractions, self.ei_weights = (
                [1e-3, 1e-2],
                [0.05, 0.2],
                [0.5],
                [1.0],
            )
            self.swin_steps, self.swin_crop, self.rain_steps, self.rain_crop = 3, 16, 3, 16

    def comparable(self) -> dict[str, Any]:
        """The settings a result depends on (not seeds or sections: those only add runs)."""
        out = dataclasses.asdict(self)
        for key in ("seeds", "sections"):
            out.pop(key)
        return out


@dataclass(frozen=True)
class Run:
    """One training run: a config of a section, on one training-set size, with one seed."""

    section: str
    config: str
    size: str
    seed: int
    task: str = "denoise"
    model: str = "dncnn"
    augment: str = "none"
    group: str | None = None  # EQ-Reg group (None: no EQ-Reg)
    weight: float | str | None = None  # EQ-Reg λ, "auto", or None: the pilot's λ
    share: float | None = None
    fraction: float = 1.0
    ei_weight: float = 0.0
    mode: str = "eqreg"  # "pair": EQ-Reg's stacked step without its term (the control)
    batch_scale: int = 1  # 2: twice the batch (EQ-Reg's images per step)
    steps: int | None = None  # the equal-time runs' own step count (None: the section's)

    @property
    def run_id(self) -> str:
        return f"{self.section}/{self.config}/{self.size}/seed{self.seed}"


def _smallest(s: BenchSettings) -> str:
    return s.sizes[0]


def _method_runs(section: str, task: str, size: str, seed: int) -> list[Run]:
    """The five methods of the denoise / inpaint sections (EQ-Reg's λ and EI's weight: the pilot's, later)."""
    return [
        Run(section, "plain", size, seed, task),
        Run(section, "aug-c4", size, seed, task, augment="C4"),
        Run(section, "eqreg-c4", size, seed, task, group="C4"),
        Run(section, "ei-c4", size, seed, task, ei_weight=math.nan),
        Run(section, "strict-c4", size, seed, task, model="strict-c4"),
        *_controls(section, task, size, seed),
    ]


def _controls(section: str, task: str, size: str, seed: int, model: str = "dncnn") -> list[Run]:
    """:data:`CONTROLS` for one section, size and seed."""
    return [
        Run(section, "pair-c4", size, seed, task, model, group="C4", mode="pair"),
        Run(section, "aug-c4-2b", size, seed, task, model, augment="C4", batch_scale=2),
        Run(section, "plain-2b", size, seed, task, model, batch_scale=2),
    ]


def plan_runs(s: BenchSettings, weight: float | None = None, ei_weight: float | None = None) -> list[Run]:
    """Every run of the sections in ``s`` (the pilot's runs first). ``weight`` / ``ei_weight``: the pilot's
    EQ-Reg λ and EI weight, filled into the runs that take them (None until the pilot has run)."""
    small, runs = _smallest(s), []
    if "pilot" in s.sections:
        runs += [
            Run("pilot", f"eqreg-c4-{lam:g}", small, s.seeds[0], group="C4", weight=lam) for lam in s.lambdas
        ]
        runs += [Run("pilot", f"ei-c4-{w:g}", small, s.seeds[0], ei_weight=w) for w in s.ei_weights]
    for seed in s.seeds:
        if "denoise" in s.sections:
            for size in s.sizes:
                runs += _method_runs("denoise", "denoise", size, seed)
        if "dihedral" in s.sections:
            runs += [
                Run("dihedral", "aug-d4", small, seed, augment="D4"),
                Run("dihedral", "eqreg-d4", small, seed, group="D4"),
                Run("dihedral", "strict-d4", small, seed, model="strict-d4"),
                Run("dihedral", "pair-d4", small, seed, group="D4", mode="pair"),
                Run("dihedral", "aug-d4-2b", small, seed, augment="D4", batch_scale=2),
            ]
        if "auto" in s.sections:
            shares = s.shares if seed == s.seeds[0] else s.shares[:1]
            runs += [
                Run("auto", f"eqreg-c4-auto-{sh:g}", small, seed, group="C4", weight="auto", share=sh)
                for sh in shares
            ]
            if "denoise" not in s.sections:  # the control the auto runs are compared with
                runs.append(Run("auto", "pair-c4", small, seed, group="C4", mode="pair"))
        if "frontier" in s.sections:
            runs += [
                Run("frontier", f"eqreg-c4-f{f:g}", small, seed, group="C4", fraction=f) for f in s.fractions
            ]
        if "inpaint" in s.sections:
            runs += _method_runs("inpaint", "inpaint", small, seed)
        if "shift" in s.sections:
            runs += [
                Run("shift", "plain", "rain", seed, "derain", "fast"),
                Run("shift", "aug-c4", "rain", seed, "derain", "fast", augment="C4"),
                Run(
                    "shift", "eqreg-c4", "rain", seed, "derain", "fast", group="C4", weight="auto", share=0.05
                ),
                Run("shift", "strict-c4", "rain", seed, "derain", "strict-c4"),
                *_controls("shift", "derain", "rain", seed, "fast"),
            ]
    if "swin2sr" in s.sections:
        for seed in s.seeds:
            runs += [
                Run("swin2sr", "plain", small, seed, model="swin2sr"),
                Run(
                    "swin2sr", "eqreg-c4", small, seed, model="swin2sr", group="C4", weight="auto", share=0.05
                ),
                *_controls("swin2sr", "denoise", small, seed, "swin2sr"),
            ]
    if weight is not None:
        runs = [
            dataclasses.replace(r, weight=weight) if r.group and r.weight is None and r.mode == "eqreg" else r
            for r in runs
        ]
    if ei_weight is not None:
        runs = [dataclasses.replace(r, ei_weight=ei_weight) if math.isnan(r.ei_weight) else r for r in runs]
    return runs


def plan_equal_time(s: BenchSettings, done: dict[str, dict[str, Any]]) -> list[Run]:
    """The ``equaltime`` runs: each of :data:`EQUAL_TIME` at the smallest size, given as many steps as fit in
    the seconds EQ-Reg C4 trained for with the same seed (from the finished denoise runs' time per step)."""
    if "equaltime" not in s.sections:
        return []
    small, runs = _smallest(s), []
    for seed in s.seeds:
        eqreg = done.get(f"denoise/eqreg-c4/{small}/seed{seed}")
        for config in EQUAL_TIME:
            base = done.get(f"denoise/{config}/{small}/seed{seed}")
            if eqreg is None or base is None:
                continue
            steps = max(1, round(s.max_steps * eqreg["train_time_s"] / base["train_time_s"]))
            plan = next(r for r in _method_runs("equaltime", "denoise", small, seed) if r.config == config)
            runs.append(dataclasses.replace(plan, config=f"{config}-eqtime", steps=steps))
    return runs


@dataclass
class Focus:
    """A part of the sweep: only ``configs`` (by name, before any λ suffix), and with ``weights`` the EQ-Reg
    runs at each given λ (named ``eqreg-c4-<λ>``) instead of the pilot's, with no pilot run."""

    configs: list[str] | None = None
    weights: list[float] | None = None
    ei_weight: float | None = None

    def keep(self, runs: list[Run]) -> list[Run]:
        return [r for r in runs if self.configs is None or r.config in self.configs]

    def plan(self, s: BenchSettings) -> list[Run]:
        """The focused runs with the given λs (EI runs need ``ei_weight``)."""
        runs = self.keep([r for r in plan_runs(s) if r.section != "pilot"])
        if any(math.isnan(r.ei_weight) for r in runs) and self.ei_weight is None:
            raise ValueError("--weights skips the pilot, which also picks EI's weight: give --ei-weight too.")
        out = []
        for r in runs:
            r = dataclasses.replace(r, ei_weight=self.ei_weight) if math.isnan(r.ei_weight) else r
            if r.group and r.weight is None and r.mode == "eqreg":
                out += [dataclasses.replace(r, config=f"{r.config}-{w:g}", weight=w) for w in self.weights]
            else:
                out.append(r)
        return out


# ------------------------------------------------------------------------------------------------------- runs
def _eqreg_config(run: Run, s: BenchSettings):
    from eqreg_hf.core.config import EqRegConfig

    if run.group is None:
        return None
    kw = {"target_share": run.share} if run.weight == "auto" else {}
    if run.mode == "pair":
        return EqRegConfig(layers="auto", group=run.group, weight=0.0, mode="pair", seed=run.seed)
    return EqRegConfig(
        layers="auto",
        group=run.group,
        weight=run.weight,
        distance=s.distance,
        rotated_fraction=run.fraction,
        seed=run.seed,
        **kw,
    )


def _errors(model: torch.nn.Module, pairs: list, group: str) -> tuple[float, dict[str, float]]:
    """Mean per-tap equivariance error under ``group`` on two held-out images (NaN where no tap can)."""
    from eqreg_hf.tasks.restore.evaluate import evaluate_restorer

    try:
        metrics, report = evaluate_restorer(model, pairs[:2], group=group)
    except ValueError:  # e.g. a strict C4 net's 4-channel fields cannot be measured under D4
        return math.nan, {}
    return float(metrics["equivariance_error"]), {k: float(v) for k, v in dict(report).items()}


def _restore_run(run: Run, s: BenchSettings) -> dict[str, Any]:
    from eqreg_hf.tasks.restore.networks import StrictRestorer, build_restorer
    from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments, train_restorer

    swin = run.model == "swin2sr"
    args = RestoreTrainingArguments(
        task=run.task,
        sigma=s.sigma if run.task == "denoise" else None,
        mask_ratio=s.mask_ratio,
        model=run.model,
        photo_size=s.photo_size,
        train_size=run.size,
        crop_size=s.swin_crop if swin else s.crop_size,
        batch_size=s.batch_size * run.batch_scale,
        max_steps=run.steps or (s.swin_steps if swin else s.max_steps),
        learning_rate=(
            s.strict_learning_rate
            if run.model.startswith("strict")
            else s.swin_learning_rate
            if swin
            else s.learning_rate
        ),
        augment=run.augment,
        ei_weight=run.ei_weight,
        eval_steps=s.eval_every,
        seed=run.seed,
        progress=False,
    )
    torch.manual_seed(run.seed)  # before the network is built: the same seed gives the same initial weights
    model = None
    if run.model == "dncnn":
        model = build_restorer("dncnn", task=run.task, channels=s.channels, depth=s.depth)
    elif run.model.startswith("strict"):
        group = run.model.split("-")[1].upper()
        model = build_restorer(
            run.model,
            task=run.task,
            depth=s.depth,
            num_fields=StrictRestorer.matched_fields(s.channels, s.depth, group),
        )
    result = train_restorer(args, _eqreg_config(run, s), model=model, save=False)
    return _restore_record(result, _held_out(run, s))


def _held_out(run: Run, s: BenchSettings) -> list:
    """Two held-out photos, degraded as the recipe's evaluation does, for the per-layer errors."""
    from eqreg_hf.data.restore import Degradation, held_out_pairs, load_clean_images
    from eqreg_hf.tasks.restore.evaluate import EVAL_DEGRADATION_SEED

    degradation = Degradation(
        run.task, sigma=s.sigma if run.task == "denoise" else None, mask_ratio=s.mask_ratio
    )
    return held_out_pairs(
        load_clean_images("photos", "test", photo_size=s.photo_size),
        degradation,
        seed=EVAL_DEGRADATION_SEED,
        max_images=2,
    )


def _restore_record(result: Any, pairs: list) -> dict[str, Any]:
    """The run's record. The recipe already measured its own group's error on these held-out images (the
    first ``equiv_images`` = 2 pairs); only the other of C4 / D4 is measured here."""
    m = result.metrics
    errors = {
        result.eval_group: (
            float(m["equivariance_error"]),
            {k: float(v) for k, v in dict(result.report).items()},
        )
    }
    for group in ("C4", "D4"):
        if group not in errors:
            errors[group] = _errors(result.model, pairs, group)
    (c4, layers_c4), (d4, layers_d4) = errors["C4"], errors["D4"]
    return {
        **_consistency(result.model, pairs),
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        "train_psnr": m.get("train_psnr", math.nan),
        "degraded_psnr": m.get("degraded_psnr", math.nan),
        "error_c4": c4,
        "error_d4": d4,
        "layers_c4": layers_c4,
        "layers_d4": layers_d4,
        "train_time_s": result.train_time_s,
        "params": sum(p.numel() for p in result.model.parameters()),
        "final_weight": m.get("eqreg_weight", math.nan),
        "curves": _curves(result.history),
    }


def _consistency(model: torch.nn.Module, pairs: list) -> dict[str, float]:
    """Rotation consistency as a user sees it, and what self-ensembling buys instead (issue: controls)."""
    from eqreg_hf.tasks.consistency import consistency_report
    from eqreg_hf.tasks.restore.evaluate import restore

    def forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return restore(net, x).clamp(0, 1)

    c4 = consistency_report(model, pairs, "C4", forward=forward)
    d4 = consistency_report(model, pairs, "D4", forward=forward)
    return {
        "psnr_upright": c4["psnr"],
        "psnr_turned": c4["psnr_turned"],
        "output_consistency": c4["output_consistency"],
        "psnr_ensemble_c4": c4["psnr_ensemble"],
        "psnr_ensemble_d4": d4["psnr_ensemble"],
        "psnr_turned_d4": d4["psnr_turned"],
    }


def _curves(history: Any) -> dict[str, list[float]]:
    """Training-set and held-out PSNR against the step, from the run's evaluation records."""
    records = getattr(history, "evals", None) or []
    return {
        "step": [r["step"] for r in records],
        "train_psnr": [r.get("train_psnr", math.nan) for r in records],
        "eval_psnr": [r.get("eval_psnr", math.nan) for r in records],
    }


def _rain_run(run: Run, s: BenchSettings) -> dict[str, Any]:
    """A FastDerainer / strict C4 run on the built-in rain, scored on the usual and the 90°-turned rain."""
    from eqreg_hf.data.synthetic import RainSettings, make_synthetic_rain
    from eqreg_hf.tasks.derain.recipe import (
        DerainTrainingArguments,
        evaluate_derainer,
        held_out_pairs,
        train_derainer,
    )

    size = 32 if s.quick else 128
    kw = dict(channels=8, num_blocks=1, num_fields=2) if s.quick else {}
    args = DerainTrainingArguments(
        model=run.model,
        max_steps=s.rain_steps,
        crop_size=s.rain_crop,
        batch_size=s.batch_size * run.batch_scale,
        learning_rate=s.learning_rate,
        synthetic_size=size,
        augment="C4" if run.augment != "none" else "none",
        seed=run.seed,
        progress=False,
        **kw,
    )
    result = train_derainer(args, _eqreg_config(run, s), save=False)
    shifted_rain = RainSettings(angle_range=SHIFTED_ANGLES)
    shifted = held_out_pairs(make_synthetic_rain("test", size=size, rain=shifted_rain))
    metrics_shift, _ = evaluate_derainer(result.model, shifted, group_order=4)
    m = result.metrics
    return {
        "psnr": m["psnr_y"],
        "ssim": m["ssim_y"],
        "psnr_shift": metrics_shift["psnr_y"],
        "ssim_shift": metrics_shift["ssim_y"],
        "degraded_psnr": m.get("rainy_psnr_y", math.nan),
        "degraded_psnr_shift": metrics_shift.get("rainy_psnr_y", math.nan),
        "error_c4": m["equivariance_error"],
        "train_time_s": result.train_time_s,
        "params": sum(p.numel() for p in result.model.parameters()),
        "final_weight": m.get("eqreg_weight", math.nan),
    }


def execute(run: Run, s: BenchSettings, threads: int = 1) -> dict[str, Any]:
    """One run, in this process (a worker of the pool or the main process)."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    record = _rain_run(run, s) if run.task == "derain" else _restore_run(run, s)
    record.update(dataclasses.asdict(run), run_id=run.run_id, wall_s=time.perf_counter() - start)
    return record


# ------------------------------------------------------------------------------------------------------ sweep
def machine_description() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, {dev}"


def _load(path: str, s: BenchSettings) -> dict[str, Any]:
    if not os.path.exists(path):
        return {"meta": {}, "runs": {}}
    with open(path, encoding="utf-8") as fh:
        payload = json.load(fh)
    old = payload.get("meta", {}).get("settings", {})
    diff = sorted(k for k in set(old) | set(s.comparable()) if old.get(k) != s.comparable().get(k))
    if diff:
        raise ValueError(
            f"{path} holds runs made with other settings ({', '.join(diff)}); resume with the same "
            "settings, or write to another file (--name)."
        )
    return payload


def pilot_weights(runs: dict[str, dict[str, Any]]) -> tuple[float | None, float | None]:
    """The pilot's EQ-Reg λ and EI weight with the best held-out PSNR each (None before the pilot has run)."""
    eqreg = [r for r in runs.values() if r["section"] == "pilot" and r["group"]]
    ei = [r for r in runs.values() if r["section"] == "pilot" and not r["group"]]
    best = lambda rs, key: max(rs, key=lambda r: r["psnr"])[key] if rs else None  # noqa: E731
    return best(eqreg, "weight"), best(ei, "ei_weight")


def _run_batch(
    todo: list[Run], s: BenchSettings, workers: int, payload: dict, path: str, print_fn: Callable[[str], Any]
) -> None:
    """Run ``todo`` (``workers`` processes of one thread each, or in-process), saving after every run."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="bench_restore", disable=not s.quick and not sys.stderr.isatty())

    def done(record: dict[str, Any]) -> None:
        payload["runs"][record["run_id"]] = record
        atomic_write_json(path, payload, indent=1)
        bar.update(1)
        print_fn(
            f"{record['run_id']}: PSNR {record['psnr']:.2f} dB, C4 error {record['error_c4']:.3f}, "
            f"{record['train_time_s']:.0f} s"
        )

    if workers <= 1:
        for run in todo:
            done(execute(run, s, threads=torch.get_num_threads()))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(execute, run, s, 1) for run in todo]):
                done(fut.result())
    bar.close()


def run_benchmark(
    s: BenchSettings,
    path: str,
    *,
    workers: int = 2,
    command: str | None = None,
    print_fn: Callable[[str], Any] = print,
    focus: Focus | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep: the pilot first, then every other run with the pilot's λ (``focus``: only
    some configs, and/or given λs instead of the pilot's)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = _load(path, s)
    payload["meta"].update(
        settings=s.comparable(),
        machine=machine_description(),
        invocations=payload["meta"].get("invocations", [])
        + [{"command": command, "seeds": s.seeds, "sections": s.sections, "workers": workers}],
    )
    wall = time.perf_counter()
    if focus is not None and focus.weights:
        todo = [r for r in focus.plan(s) if r.run_id not in payload["runs"]]
        _run_batch(todo, s, workers, payload, path, print_fn)
        return _finish(payload, path, wall)
    # the pilot always runs first (the other sections need its choices): done once, then skipped on resume
    pilot = [
        r for r in plan_runs(dataclasses.replace(s, sections=["pilot"])) if r.run_id not in payload["runs"]
    ]
    _run_batch(pilot, s, workers, payload, path, print_fn)
    weight, ei_weight = pilot_weights(payload["runs"])
    payload["meta"].update(pilot_weight=weight, pilot_ei_weight=ei_weight)
    if weight is None or ei_weight is None:
        raise ValueError(
            "The pilot has not run: run the 'pilot' section first (it picks EQ-Reg's λ and EI's weight)."
        )
    todo = [
        r for r in plan_runs(s, weight, ei_weight) if r.run_id not in payload["runs"] and r.section != "pilot"
    ]
    todo = focus.keep(todo) if focus is not None else todo
    _run_batch(todo, s, workers, payload, path, print_fn)
    later = [r for r in plan_equal_time(s, payload["runs"]) if r.run_id not in payload["runs"]]
    later = focus.keep(later) if focus is not None else later
    _run_batch(later, s, workers, payload, path, print_fn)  # needs the denoise runs' times
    return _finish(payload, path, wall)


def _finish(payload: dict[str, Any], path: str, wall: float) -> dict[str, Any]:
    payload["meta"]["wall_s"] = payload["meta"].get("wall_s", 0.0) + time.perf_counter() - wall
    payload["summary"] = summarize(payload["runs"])
    atomic_write_json(path, payload, indent=1)
    return payload


# ----------------------------------------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


SUMMARY_KEYS = (
    "psnr",
    "ssim",
    "train_psnr",
    "psnr_shift",
    "ssim_shift",
    "error_c4",
    "error_d4",
    "train_time_s",
    "final_weight",
    "degraded_psnr",
    "degraded_psnr_shift",
    "psnr_upright",
    "psnr_turned",
    "output_consistency",
    "psnr_ensemble_c4",
    "psnr_ensemble_d4",
)


def summarize(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean ± std over seeds per (section, config, size)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in runs.values():
        groups.setdefault(f"{rec['section']}/{rec['config']}/{rec['size']}", []).append(rec)
    out = {}
    for key, recs in groups.items():
        row = {k: recs[0][k] for k in ("section", "config", "size", "task", "model", "params", "weight")}
        row["n_seeds"] = len(recs)
        for k in SUMMARY_KEYS:
            row[k + "_mean"], row[k + "_std"] = _mean_std([r.get(k) for r in recs])
        out[key] = row
    return out


def _pm(row: dict[str, Any], key: str, digits: int = 2) -> str:
    mean, std = row.get(key + "_mean", math.nan), row.get(key + "_std", math.nan)
    if mean is None or not math.isfinite(mean):
        return ""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if row["n_seeds"] > 1 else f"{mean:.{digits}f}"


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, int]]) -> str:
    head = "| section | method | training set | seeds | " + " | ".join(c[0] for c in cols) + " |"
    lines = [head, "|" + "---|" * (4 + len(cols))]
    for r in rows:
        cells = [_pm(r, key, d) if key != "params" else f"{r['params']:,}" for _, key, d in cols]
        lines.append(
            f"| {r['section']} | {r['config']} | {r['size']} | {r['n_seeds']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


RESTORE_COLS = [
    ("PSNR (dB)", "psnr", 2),
    ("SSIM", "ssim", 4),
    ("train PSNR (dB)", "train_psnr", 2),
    ("C4 err. (taps)", "error_c4", 3),
    ("D4 err. (taps)", "error_d4", 3),
    ("final λ", "final_weight", 5),
    ("time / run (s)", "train_time_s", 0),
    ("params", "params", 0),
]
SHIFT_COLS = [
    ("PSNR-Y usual rain (dB)", "psnr", 2),
    ("PSNR-Y rain turned 90° (dB)", "psnr_shift", 2),
    ("SSIM-Y turned", "ssim_shift", 4),
    ("C4 err. (taps)", "error_c4", 3),
    ("time / run (s)", "train_time_s", 0),
    ("params", "params", 0),
]


def _control_runs(runs: dict, rec: dict, config: str) -> dict[int, float]:
    """``config``'s held-out PSNR by seed, for the task, model and size of ``rec``: from ``rec``'s own
    section, else (the auto and frontier sections share the denoise section's controls) from any section."""
    want = (rec["task"], rec["model"], rec["size"], config)
    like = [r for r in runs.values() if (r["task"], r["model"], r["size"], r["config"]) == want]
    own = {r["seed"]: r["psnr"] for r in like if r["section"] == rec["section"]}
    return own or {r["seed"]: r["psnr"] for r in like}


def _md(head: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _consistency_table(rows: list[dict[str, Any]]) -> str:
    head = "method|training set|seeds|inference passes|PSNR (dB)|PSNR turned (dB)|output consistency error"
    cells = [
        [r["config"], r["size"], r["n"], r["passes"], f"{r['psnr']:.2f}", f"{r['turned']:.2f}"]
        + [f"{r['consistency']:.4f}"]
        for r in rows
    ]
    return _md(head.split("|"), cells)


def effect_rows(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The term's own effect: every EQ-Reg config minus its stacked step with no term (``pair-<group>``),
    and minus augmentation at the same images per step, paired by seed; the equal-time runs minus EQ-Reg."""
    from eqreg_hf.tasks.evidence import paired_effect

    rows, seen = [], set()
    for rec in runs.values():
        key = (rec["section"], rec["config"], rec["size"])
        if key in seen:
            continue
        seen.add(key)
        same = {r["seed"]: r["psnr"] for r in runs.values() if (r["section"], r["config"], r["size"]) == key}
        pairs = []
        if rec["config"].startswith("eqreg-") and rec.get("mode", "eqreg") == "eqreg":
            g = rec["group"].lower()
            pairs = [(f"pair-{g}", "the term (vs its stacked step)"), (f"aug-{g}-2b", "vs aug. at 2b")]
        elif rec["config"].endswith("-eqtime"):
            pairs = [("eqreg-c4", "equal time, vs EQ-Reg")]
        for control, what in pairs:
            base = _control_runs(runs, rec, control)
            if base and set(base) & set(same):
                effect = paired_effect(same, base)
                rows.append(
                    {
                        "section": key[0],
                        "config": key[1],
                        "size": key[2],
                        "control": control,
                        "what": what,
                        "n": effect.n,
                        "mean": effect.mean,
                        "low": effect.low,
                        "high": effect.high,
                        "verdict": effect.verdict(),
                        "text": effect.format(),
                    }
                )
    return rows


def consistency_rows(summary: dict[str, dict[str, Any]], section: str = "denoise") -> list[dict[str, Any]]:
    """PSNR, PSNR on turned images, output consistency and inference passes per method of ``section``; the
    self-ensembles (4 passes C4, 8 passes D4) of every method as rows of their own."""
    rows = []
    for r in summary.values():
        if r["section"] != section or not math.isfinite(r.get("psnr_turned_mean", math.nan)):
            continue
        base = {"config": r["config"], "size": r["size"], "n": r["n_seeds"]}
        rows.append(
            {
                **base,
                "passes": 1,
                "psnr": r["psnr_upright_mean"],
                "turned": r["psnr_turned_mean"],
                "consistency": r["output_consistency_mean"],
            }
        )
        for g, passes in (("c4", 4), ("d4", 8)):
            value = r[f"psnr_ensemble_{g}_mean"]
            rows.append(
                {
                    **base,
                    "config": f"{r['config']} + {g.upper()} ensemble",
                    "passes": passes,
                    "psnr": value,
                    "turned": value,
                    "consistency": 0.0,
                }
            )
    return rows


def _effect_table(rows: list[dict[str, Any]]) -> str:
    head = "section|method|training set|minus|seeds|ΔPSNR (dB) [95 % CI]|reading".split("|")
    keys = ("section", "config", "size", "control", "n", "text", "verdict")
    return _md(head, [[r[k] for k in keys] for r in rows])


def format_tables(payload: dict[str, Any]) -> str:
    """Markdown: one table per section, rows in plan order."""
    summary, meta = payload.get("summary") or summarize(payload["runs"]), payload["meta"]
    parts = [
        f"Machine: {meta.get('machine')}. Pilot (best held-out PSNR, one seed): EQ-Reg λ = "
        f"{meta.get('pilot_weight')} ({payload['meta']['settings']['distance']}), EI weight = "
        f"{meta.get('pilot_ei_weight')}. "
        f"Sweep wall time: {meta.get('wall_s', math.nan) / 60:.1f} min."
    ]
    for section in SECTIONS:
        rows = [r for r in summary.values() if r["section"] == section]
        if rows:
            parts.append(
                f"### {section}\n\n" + _table(rows, SHIFT_COLS if section == "shift" else RESTORE_COLS)
            )
    consistency = consistency_rows(summary)
    if consistency:
        parts.append(
            "### Rotation consistency and its price (denoise; the ensembles are exactly consistent)\n\n"
            + _consistency_table(consistency)
        )
    effects = effect_rows(payload["runs"])
    if effects:
        parts.append(
            "### The term's own effect (paired by seed; 'helps' / 'hurts' only when the interval excludes 0)"
            "\n\n" + _effect_table(effects)
        )
    return "\n\n".join(parts) + "\n"


def _size_label(size: str) -> str:
    if size.startswith("region"):
        return f"one {size[6:]}² region"
    return "all photos" if size == "all" else f"{size} photo" + ("s" if size != "1" else "")


def _save(fig: Any, ax: Any, path: str) -> str:
    import matplotlib.pyplot as plt

    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_psnr_vs_size(payload: dict[str, Any], path: str) -> str:
    import matplotlib.pyplot as plt

    summary, sizes = payload["summary"], payload["meta"]["settings"]["sizes"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, method in enumerate(METHODS):
        rows = [summary.get(f"denoise/{method}/{size}") for size in sizes]
        xs = [j + (i - 2) * 0.06 for j, r in enumerate(rows) if r]
        ax.errorbar(
            xs,
            [r["psnr_mean"] for r in rows if r],
            yerr=[r["psnr_std"] for r in rows if r],
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_xticks(range(len(sizes)), [_size_label(z) for z in sizes])
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title("Denoising σ=25/255: PSNR vs training-set size")
    return _save(fig, ax, path)


def plot_overfit(payload: dict[str, Any], path: str) -> str:
    import matplotlib.pyplot as plt

    sizes = payload["meta"]["settings"]["sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3.4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for rec in payload["runs"].values():
            if rec["section"] == "denoise" and rec["config"] == "plain" and rec["size"] == size:
                c = rec["curves"]
                ax.plot(
                    c["step"],
                    c["train_psnr"],
                    color="tab:red",
                    alpha=0.7,
                    label="training images" if rec["seed"] == 0 else None,
                )
                ax.plot(
                    c["step"],
                    c["eval_psnr"],
                    color="tab:blue",
                    alpha=0.7,
                    label="held-out photos" if rec["seed"] == 0 else None,
                )
        ax.set_title(f"plain, {_size_label(size)}")
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("PSNR (dB)")
    return _save(fig, axes[0][0], path)


def plot_shift(payload: dict[str, Any], path: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for row in (r for r in payload["summary"].values() if r["section"] == "shift"):
        ax.errorbar(
            row["psnr_mean"],
            row["psnr_shift_mean"],
            xerr=row["psnr_std"],
            yerr=row["psnr_shift_std"],
            marker="o",
            capsize=3,
            label=row["config"],
        )
    ax.set_xlabel("PSNR-Y, usual rain (dB)")
    ax.set_ylabel("PSNR-Y, rain turned by 90° (dB)")
    ax.set_title("Orientation shift (rain benchmark)")
    return _save(fig, ax, path)


def plot_frontier(payload: dict[str, Any], path: str) -> str:
    import matplotlib.pyplot as plt

    summary, small = payload["summary"], payload["meta"]["settings"]["sizes"][0]
    points = [
        ("plain", summary.get(f"denoise/plain/{small}")),
        ("fraction 1", summary.get(f"denoise/eqreg-c4/{small}")),
    ]
    points += [
        (f"fraction {r['config'].split('-f')[-1]}", r) for r in summary.values() if r["section"] == "frontier"
    ]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, row in points:
        if row:
            ax.errorbar(
                row["train_time_s_mean"],
                row["psnr_mean"],
                xerr=row["train_time_s_std"],
                yerr=row["psnr_std"],
                marker="o",
                capsize=3,
                label=label,
            )
    ax.set_xlabel("training time per run (s, one thread)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(f"EQ-Reg C4 rotated_fraction: cost vs effect ({_size_label(small)})")
    return _save(fig, ax, path)


def plot_consistency(payload: dict[str, Any], path: str) -> str:
    """Held-out PSNR against inference passes, per method and its self-ensembles; marker size: consistency."""
    import matplotlib.pyplot as plt

    rows = consistency_rows(payload["summary"])
    small = payload["meta"]["settings"]["sizes"][0]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for config in dict.fromkeys(r["config"].split(" + ")[0] for r in rows):
        mine = sorted(
            (r for r in rows if r["config"].split(" + ")[0] == config and r["size"] == small),
            key=lambda r: r["passes"],
        )
        ax.plot([r["passes"] for r in mine], [r["psnr"] for r in mine], marker="o", label=config)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 4, 8], ["1 (model)", "4 (C4 ensemble)", "8 (D4 ensemble)"])
    ax.set_xlabel("forward passes per image at inference")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(f"Consistency by training or by ensembling ({_size_label(small)})")
    return _save(fig, ax, path)


def plot_effects(payload: dict[str, Any], path: str) -> str:
    """Each EQ-Reg setting minus its stacked step with no term: mean ± 95 % interval, the zero line drawn."""
    import matplotlib.pyplot as plt

    rows = [r for r in effect_rows(payload["runs"]) if r["control"].startswith("pair-")]
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.35 * max(len(rows), 1)))
    ys = list(range(len(rows)))
    lows = [r["mean"] - r["low"] if math.isfinite(r["low"]) else 0.0 for r in rows]
    highs = [r["high"] - r["mean"] if math.isfinite(r["high"]) else 0.0 for r in rows]
    ax.errorbar([r["mean"] for r in rows], ys, xerr=[lows, highs], fmt="o", capsize=3, label="EQ-Reg − pair")
    ax.axvline(0.0, color="black", lw=1)
    ax.set_yticks(ys, [f"{r['section']} {r['config']} {r['size']} (n={r['n']})" for r in rows], fontsize=7)
    ax.set_xlabel("held-out PSNR difference (dB), 95 % interval")
    ax.set_title("What the EQ-Reg term itself buys")
    return _save(fig, ax, path)


def write_report_files(payload: dict[str, Any], out_dir: str, name: str = "restore") -> list[str]:
    """The tables and whichever plots the finished sections allow."""
    paths = [os.path.join(out_dir, f"{name}_tables.md")]
    atomic_write_text(paths[0], format_tables(payload))
    sections = {r["section"] for r in payload["runs"].values()}
    for section, plot, suffix in (
        ("denoise", plot_psnr_vs_size, "psnr_vs_size"),
        ("denoise", plot_overfit, "overfit"),
        ("shift", plot_shift, "shift"),
        ("frontier", plot_frontier, "frontier"),
    ):
        if section in sections:
            paths.append(plot(payload, os.path.join(out_dir, f"{name}_{suffix}.png")))
    if consistency_rows(payload["summary"]):
        paths.append(plot_consistency(payload, os.path.join(out_dir, f"{name}_consistency.png")))
    if any(r["control"].startswith("pair-") for r in effect_rows(payload["runs"])):
        paths.append(plot_effects(payload, os.path.join(out_dir, f"{name}_effects.png")))
    return paths


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny networks and images (seconds per run)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument(
        "--workers", type=int, default=2, help="runs at once, one thread each (1: in this process)"
    )
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--name", default="restore")
    p.add_argument("--sizes", nargs="+", help="training-set sizes (default: region48 all)")
    p.add_argument("--configs", nargs="+", help="only these configs (e.g. eqreg-c4 pair-c4 aug-c4-2b)")
    p.add_argument("--weights", nargs="+", type=float, help="EQ-Reg λs to run instead of the pilot's")
    p.add_argument("--ei-weight", type=float, help="EI's weight when --weights skips the pilot")
    a = p.parse_args(argv)
    settings = BenchSettings(seeds=a.seeds, sections=a.sections, quick=a.quick)
    settings.sizes = a.sizes or settings.sizes
    focus = Focus(a.configs, a.weights, a.ei_weight) if a.configs or a.weights else None
    path = os.path.join(a.out_dir, f"{a.name}.json")
    command = "python scripts/bench_restore.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    payload = run_benchmark(settings, path, workers=a.workers, command=command, focus=focus)
    for written in write_report_files(payload, a.out_dir, a.name):
        print("wrote", written)
    print(format_tables(payload))
    return payload


if __name__ == "__main__":
    main()
