"""The paper's Table 4 layout, small: inpainting learned from measurements alone (REI), with / without EQ-Reg.

    python scripts/bench_selfsup.py                 # the default sweep (about an hour on 2 idle CPU cores)
    python scripts/bench_selfsup.py --quick         # tiny networks and images, a minute (what the test runs)
    python scripts/bench_selfsup.py --gains 0.05 --seeds 0 --workers 1    # a slice

Every run is ``train_restorer`` with ``supervision="self"`` (the function behind ``eqreg-hf train-restore
--supervision self``): the built-in training photos are measured once (50 % of the pixels missing, a fresh
mask per image, Poisson noise of gain γ), the network never sees a clean training image, and the loss is
deepinv's REI (``SurePoissonLoss`` + ``EILoss`` over C4). Scored on whole held-out photos (PSNR / SSIM, RGB),
measured like the training ones with a fixed seed. Rows, at each gain:

    rei                 REI alone (DnCNN)
    rei+aug-c4          + rotation augmentation of the measurement crops (C4)
    rei+eqreg-c4-auto   + EQ-Reg C4, weight="auto" (relative distance, the default share)
    rei+eqreg-d4-auto   + EQ-Reg D4, weight="auto"
    rei+eqreg-c4-<λ>    + EQ-Reg C4 at each λ of --lambdas
    rei+pair-c4         the stacked-batch control: EQ-Reg's own step ([y; R y], the REI loss on both halves)
                        without the term (EqRegConfig.pair("C4"))
    rei+strict-c4/-d4   the strictly C4 / D4-equivariant nets (parameters matched to DnCNN), the same loss

Writes (default --out-dir docs/results, --name selfsup): selfsup.json (every run; rewritten after each run, so
a killed sweep leaves a usable file and rerunning the same command skips the finished runs) and
selfsup_tables.md (PSNR / SSIM per gain, mean ± std over seeds; each EQ-Reg row against REI alone and against
the stacked control, paired by seed, with a 95 % interval and a verdict: helps / ties / hurts).

Example:
    >>> from bench_selfsup import BenchSettings, plan_runs
    >>> runs = plan_runs(BenchSettings(quick=True, gains=[0.05], seeds=[0]))
    >>> [r.row for r in runs][:4]
    ['rei', 'rei+aug-c4', 'rei+eqreg-c4-auto', 'rei+eqreg-d4-auto']
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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import torch

from eqreg_hf.core.io import atomic_write_json, atomic_write_text

__all__ = ["BenchSettings", "Run", "plan_runs", "execute", "run_benchmark", "format_tables", "main"]


@dataclass
class BenchSettings:
    """Everything a sweep depends on (two files with different settings are never mixed)."""

    gains: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # around where weight="auto" settled in a 200-step check (C4 5e-3, D4 1e-3); λ = 0.1 collapsed
    lambdas: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2])
    mask_ratio: float = 0.5
    photo_size: int = 96
    crop_size: int = 32
    batch_size: int = 4
    max_steps: int = 400
    learning_rate: float = 2e-3
    strict_learning_rate: float = 1e-3  # the strict nets share weights across |G| copies (bench_restore)
    channels: int = 16
    depth: int = 5
    distance: str = "relative"
    share: float = 0.05
    quick: bool = False

    def __post_init__(self) -> None:
        bad = [g for g in self.gains if not (isinstance(g, (int, float)) and g > 0)]
        if bad:
            raise ValueError(f"gains {bad} are not Poisson gains > 0; e.g. --gains 0.01 0.05 0.1.")
        if self.quick:
            self.lambdas, self.photo_size, self.crop_size, self.batch_size = [1e-2], 32, 16, 2
            self.max_steps, self.channels, self.depth = 3, 8, 3

    def comparable(self) -> dict[str, Any]:
        """The settings a result depends on (not gains or seeds: those only add runs)."""
        out = dataclasses.asdict(self)
        for key in ("gains", "seeds"):
            out.pop(key)
        return out


@dataclass(frozen=True)
class Run:
    """One training run: a row of the table, at one Poisson gain, with one seed."""

    row: str
    gain: float
    seed: int
    model: str = "dncnn"
    augment: str = "none"
    group: str | None = None  # EQ-Reg's group (None: no EQ-Reg)
    weight: float | str | None = None
    mode: str = "eqreg"  # "pair": the stacked step without the term

    @property
    def run_id(self) -> str:
        return f"{self.gain:g}/{self.row}/seed{self.seed}"


def rows(s: BenchSettings) -> list[dict[str, Any]]:
    """The rows of the table, in order (``row`` is the name; the rest are :class:`Run` fields)."""
    out = [
        {"row": "rei"},
        {"row": "rei+aug-c4", "augment": "C4"},
        {"row": "rei+eqreg-c4-auto", "group": "C4", "weight": "auto"},
        {"row": "rei+eqreg-d4-auto", "group": "D4", "weight": "auto"},
    ]
    out += [{"row": f"rei+eqreg-c4-{lam:g}", "group": "C4", "weight": lam} for lam in s.lambdas]
    out += [
        {"row": "rei+pair-c4", "group": "C4", "mode": "pair"},
        {"row": "rei+strict-c4", "model": "strict-c4"},
        {"row": "rei+strict-d4", "model": "strict-d4"},
    ]
    return out


def plan_runs(s: BenchSettings) -> list[Run]:
    """Every run: gains x seeds x rows."""
    return [Run(gain=g, seed=seed, **r) for g in s.gains for seed in s.seeds for r in rows(s)]


# ------------------------------------------------------------------------------------------------------- runs
def _network(run: Run, s: BenchSettings) -> torch.nn.Module:
    from eqreg_hf.tasks.restore.networks import StrictRestorer, build_restorer

    torch.manual_seed(run.seed)  # the same seed gives the same initial weights to every DnCNN row
    if run.model == "dncnn":
        return build_restorer("dncnn", task="inpaint", channels=s.channels, depth=s.depth)
    fields = StrictRestorer.matched_fields(s.channels, s.depth, run.model[-2:].upper())
    return build_restorer(run.model, task="inpaint", depth=s.depth, num_fields=fields)


def execute(run: Run, s: BenchSettings, threads: int = 1) -> dict[str, Any]:
    """One run, in this process (a worker of the pool or the main process)."""
    from eqreg_hf import EqRegConfig
    from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments, train_restorer

    torch.set_num_threads(threads)
    start = time.perf_counter()
    args = RestoreTrainingArguments(
        supervision="self",
        task="inpaint",
        selfsup_loss="rei",
        poisson_gain=run.gain,
        mask_ratio=s.mask_ratio,
        model=run.model,
        photo_size=s.photo_size,
        crop_size=s.crop_size,
        batch_size=s.batch_size,
        max_steps=s.max_steps,
        learning_rate=s.strict_learning_rate if run.model.startswith("strict") else s.learning_rate,
        augment=run.augment,
        eval_group="C4",  # every row's equivariance error under the same group
        seed=run.seed,
        progress=False,
    )
    cfg = None
    if run.mode == "pair":
        cfg = EqRegConfig.pair(run.group, seed=run.seed)
    elif run.group is not None:
        auto = {"target_share": s.share} if run.weight == "auto" else {}
        cfg = EqRegConfig(
            layers="auto", group=run.group, weight=run.weight, distance=s.distance, seed=run.seed, **auto
        )
    result = train_restorer(args, cfg, model=_network(run, s), save=False)
    m = result.metrics
    return {
        **dataclasses.asdict(run),
        "run_id": run.run_id,
        "psnr": m["psnr"],
        "ssim": m["ssim"],
        "degraded_psnr": m["degraded_psnr"],
        "error": m["equivariance_error"],
        "final_weight": m.get("eqreg_weight", math.nan),
        "train_time_s": result.train_time_s,
        "wall_s": time.perf_counter() - start,
        "params": sum(p.numel() for p in result.model.parameters()),
    }


# ------------------------------------------------------------------------------------------------------ sweep
def _load(path: str, s: BenchSettings) -> dict[str, Any]:
    if not os.path.exists(path):
        return {"meta": {}, "runs": {}}
    with open(path, encoding="utf-8") as fh:
        payload = json.load(fh)
    old, new = payload.get("meta", {}).get("settings", {}), s.comparable()
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ValueError(
            f"{path} holds runs made with other settings ({', '.join(diff)}); resume with the same settings, "
            "or write to another file (--name)."
        )
    return payload


def run_benchmark(s: BenchSettings, path: str, *, workers: int = 2, command: str | None = None) -> dict:
    """Run (or resume) the sweep, saving after every run; returns the payload (``meta``, ``runs``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = _load(path, s)
    cpu = platform.processor() or platform.machine()
    payload["meta"].update(
        settings=s.comparable(),
        rows=[r["row"] for r in rows(s)],
        machine=f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}",
        invocations=payload["meta"].get("invocations", []) + [{"command": command, "workers": workers}],
    )
    todo = [r for r in plan_runs(s) if r.run_id not in payload["runs"]]
    wall = time.perf_counter()

    def done(record: dict[str, Any]) -> None:
        payload["runs"][record["run_id"]] = record
        atomic_write_json(path, payload, indent=1)
        print(f"{record['run_id']}: PSNR {record['psnr']:.2f} dB, {record['train_time_s']:.0f} s", flush=True)

    if workers <= 1:
        for run in todo:
            done(execute(run, s, threads=torch.get_num_threads()))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(execute, run, s, 1) for run in todo]):
                done(fut.result())
    payload["meta"]["wall_s"] = payload["meta"].get("wall_s", 0.0) + time.perf_counter() - wall
    atomic_write_json(path, payload, indent=1)
    return payload


# ----------------------------------------------------------------------------------------------------- report
def _by_seed(runs: dict, gain: float, row: str, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in runs.values() if r["gain"] == gain and r["row"] == row}


def _mean_std(values: list[float], fmt: str = ".2f", spread: bool = True) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return ""
    mean = format(statistics.fmean(values), fmt)
    return f"{mean} ± {statistics.stdev(values):{fmt}}" if spread and len(values) > 1 else mean


def _versus(runs: dict, gain: float, row: str, control: str) -> str:
    from eqreg_hf.tasks.evidence import paired_effect

    a, b = _by_seed(runs, gain, row, "psnr"), _by_seed(runs, gain, control, "psnr")
    if not set(a) & set(b):
        return ""
    effect = paired_effect(a, b)
    return f"{effect.format()} {effect.verdict()}"


def format_tables(payload: dict[str, Any]) -> str:
    """Markdown: Table 4's layout (rows x gains, PSNR / SSIM), then each gain's rows against the controls."""
    runs, meta = payload["runs"], payload["meta"]
    gains = sorted({r["gain"] for r in runs.values()})
    order = [row for row in meta["rows"] if any(r["row"] == row for r in runs.values())]
    head = "| method | " + " | ".join(f"γ = {g:g}: PSNR (dB) / SSIM" for g in gains) + " |"
    lines = [head, "|---|" + "---|" * len(gains)]
    for row in order:
        cells = []
        for g in gains:
            psnr, ssim = _by_seed(runs, g, row, "psnr"), _by_seed(runs, g, row, "ssim")
            cells.append(
                f"{_mean_std(list(psnr.values()))} / {_mean_std(list(ssim.values()))}" if psnr else ""
            )
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    degraded = [
        _mean_std([r["degraded_psnr"] for r in runs.values() if r["gain"] == g], spread=False) for g in gains
    ]
    lines.append("| (the measurement itself) | " + " | ".join(degraded) + " |")
    parts = [
        f"Machine: {meta.get('machine')}. Sweep wall time: {meta.get('wall_s', math.nan) / 60:.1f} min. "
        "PSNR mean ± std over seeds.",
        "\n".join(lines),
    ]
    detail = ["| γ | method | Δ PSNR vs rei | Δ PSNR vs rei+pair-c4 | final λ | C4 err. | time / run (s) |"]
    detail.append("|---|---|---|---|---|---|---|")
    for g in gains:
        for row in order:
            lam = _mean_std(list(_by_seed(runs, g, row, "final_weight").values()), ".3g", spread=False)
            err = _mean_std(list(_by_seed(runs, g, row, "error").values()), ".3f")
            secs = _mean_std(list(_by_seed(runs, g, row, "train_time_s").values()), ".0f")
            versus_rei = _versus(runs, g, row, "rei") if row != "rei" else ""
            versus_pair = _versus(runs, g, row, "rei+pair-c4") if "eqreg" in row else ""
            detail.append(f"| {g:g} | {row} | {versus_rei} | {versus_pair} | {lam} | {err} | {secs} |")
    parts.append(
        "Paired by seed (95 % interval; helps / ties / hurts: the interval above 0, holding 0, below 0):\n\n"
        + "\n".join(detail)
    )
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny networks and images (seconds per run)")
    p.add_argument("--gains", nargs="+", type=float, default=[0.01, 0.05, 0.1])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, default=None, help="override the optimizer steps per run")
    p.add_argument(
        "--workers", type=int, default=2, help="runs at once, one thread each (1: in this process)"
    )
    p.add_argument("--out-dir", default="docs/results")
    p.add_argument("--name", default="selfsup")
    a = p.parse_args(argv)
    settings = BenchSettings(gains=a.gains, seeds=a.seeds, quick=a.quick)
    if a.max_steps is not None:
        settings.max_steps = a.max_steps
    path = os.path.join(a.out_dir, f"{a.name}.json")
    command = "python scripts/bench_selfsup.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    payload = run_benchmark(settings, path, workers=a.workers, command=command)
    tables = format_tables(payload)
    atomic_write_text(os.path.join(a.out_dir, f"{a.name}_tables.md"), tables)
    print(tables)
    return payload


if __name__ == "__main__":
    main()
