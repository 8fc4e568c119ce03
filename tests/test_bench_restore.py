"""scripts/bench_restore.py: the --quick sweep end to end (every section), resume, settings guard, plan."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location(
        "bench_restore", os.path.join(ROOT, "scripts", "bench_restore.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and the worker pool look the module up there
    spec.loader.exec_module(module)
    return module


bench = _script()


def test_plan_has_every_method_size_and_seed():
    s = bench.BenchSettings(seeds=[0, 1, 2])
    runs = bench.plan_runs(s, weight=1e-3, ei_weight=0.5)
    ids = [r.run_id for r in runs]
    assert len(ids) == len(set(ids))
    for size in s.sizes:
        for method in bench.METHODS + bench.CONTROLS:
            assert {
                r.seed for r in runs if r.section == "denoise" and r.config == method and r.size == size
            } == {0, 1, 2}
    # the pilot's λ reaches every EQ-Reg run that has no λ of its own; auto runs keep "auto"
    assert all(r.weight == 1e-3 for r in runs if r.config == "eqreg-c4" and r.section == "denoise")
    assert all(r.weight == "auto" for r in runs if r.section == "auto")
    assert all(r.ei_weight == 0.5 for r in runs if r.config == "ei-c4")
    assert [r.config for r in runs if r.section == "pilot"] == (
        [f"eqreg-c4-{lam:g}" for lam in s.lambdas] + [f"ei-c4-{w:g}" for w in s.ei_weights]
    )
    # the default share runs on every seed, the other shares on the first one
    assert sorted(r.seed for r in runs if r.config == "eqreg-c4-auto-0.05") == [0, 1, 2]
    assert [r.seed for r in runs if r.config == "eqreg-c4-auto-0.2"] == [0]
    # every section that trains EQ-Reg has its stacked step with no term, on the same seeds
    for section in ("denoise", "dihedral", "inpaint", "swin2sr", "shift"):
        eqreg = {(r.size, r.seed) for r in runs if r.section == section and r.config.startswith("eqreg-")}
        pair = {(r.size, r.seed) for r in runs if r.section == section and r.config.startswith("pair-")}
        assert eqreg and eqreg <= pair, section
    assert all(r.mode == "pair" and r.weight is None for r in runs if r.config.startswith("pair-"))
    assert all(r.batch_scale == 2 for r in runs if r.config.endswith("-2b"))


def test_equal_time_runs_get_eqreg_seconds():
    s = bench.BenchSettings(seeds=[0, 1], sections=["denoise", "equaltime"])
    small = s.sizes[0]
    done = {
        f"denoise/{c}/{small}/seed0": {"train_time_s": t}
        for c, t in (("eqreg-c4", 90.0), ("plain", 30.0), ("aug-c4", 45.0), ("pair-c4", 80.0))
    }
    runs = {r.config: r for r in bench.plan_equal_time(s, done)}
    assert sorted(runs) == ["aug-c4-eqtime", "pair-c4-eqtime", "plain-eqtime"]  # seed 1 has no runs yet
    assert (runs["plain-eqtime"].steps, runs["aug-c4-eqtime"].steps) == (3 * s.max_steps, 2 * s.max_steps)
    assert runs["pair-c4-eqtime"].mode == "pair" and runs["aug-c4-eqtime"].augment == "C4"


def test_effect_rows_pair_eqreg_with_its_control_by_seed():
    def rec(section, config, seed, psnr, group=None, mode="eqreg"):
        return {
            "section": section,
            "config": config,
            "size": "all",
            "seed": seed,
            "psnr": psnr,
            "task": "denoise",
            "model": "dncnn",
            "group": group,
            "mode": mode,
        }

    runs = {}
    for seed in range(5):
        runs[f"a{seed}"] = rec("denoise", "eqreg-c4", seed, 30.0 + 0.1 * seed, "C4")
        runs[f"b{seed}"] = rec("denoise", "pair-c4", seed, 29.5 + 0.1 * seed, "C4", "pair")
        runs[f"c{seed}"] = rec("auto", "eqreg-c4-auto-0.05", seed, 29.0 + 0.1 * seed + 0.01 * seed**2, "C4")
    runs["x"] = rec("denoise", "pair-c4", 9, 0.0, "C4", "pair")  # no EQ-Reg run for seed 9: left out
    rows = {(r["section"], r["config"], r["control"]): r for r in bench.effect_rows(runs)}
    term = rows[("denoise", "eqreg-c4", "pair-c4")]
    assert term["n"] == 5 and term["mean"] == pytest.approx(0.5) and term["verdict"] == "helps"
    auto = rows[("auto", "eqreg-c4-auto-0.05", "pair-c4")]  # the auto section uses the denoise control
    assert auto["n"] == 5 and auto["verdict"] == "hurts"
    assert "[" in bench._effect_table(list(rows.values()))


def test_unknown_section_is_refused():
    with pytest.raises(ValueError, match="sections"):
        bench.BenchSettings(sections=["denoise", "nope"])


@pytest.mark.slow
def test_quick_sweep_end_to_end_and_resume(tmp_path):
    payload = bench.main(["--quick", "--seeds", "0", "--workers", "1", "--out-dir", str(tmp_path)])
    runs = payload["runs"]
    sections = {r["section"] for r in runs.values()}
    assert sections == set(bench.SECTIONS)
    for rec in runs.values():
        assert math.isfinite(rec["psnr"]) and rec["train_time_s"] > 0, rec["run_id"]
    # the pilot's best λ is the one the EQ-Reg runs used
    lam = payload["meta"]["pilot_weight"]
    pilot = [r for r in runs.values() if r["section"] == "pilot" and r["group"]]
    assert lam == max(pilot, key=lambda r: r["psnr"])["weight"]
    assert all(
        r["weight"] == lam for r in runs.values() if r["section"] == "denoise" and r["config"] == "eqreg-c4"
    )
    assert payload["meta"]["pilot_ei_weight"] == 1.0
    # a strict net reads ~0 under its own group; training and held-out curves were recorded
    strict = [r for r in runs.values() if r["config"] == "strict-c4" and r["section"] == "denoise"]
    assert all(r["error_c4"] < 1e-4 for r in strict)
    plain = next(r for r in runs.values() if r["section"] == "denoise" and r["config"] == "plain")
    assert len(plain["curves"]["train_psnr"]) >= 2 and len(plain["curves"]["eval_psnr"]) >= 2
    shift = next(r for r in runs.values() if r["section"] == "shift")
    assert math.isfinite(shift["psnr_shift"])
    for name in (
        "restore.json",
        "restore_tables.md",
        "restore_psnr_vs_size.png",
        "restore_overfit.png",
        "restore_shift.png",
        "restore_frontier.png",
        "restore_effects.png",
        "restore_consistency.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    table = (tmp_path / "restore_tables.md").read_text()
    assert "### denoise" in table and "### shift" in table and "The term's own effect" in table
    assert "Rotation consistency and its price" in table
    # the control is EQ-Reg's stacked step with no term: twice the images, no λ
    pair = next(r for r in runs.values() if r["section"] == "denoise" and r["config"] == "pair-c4")
    assert pair["mode"] == "pair" and pair["final_weight"] == 0.0
    assert {r["config"] for r in runs.values() if r["section"] == "equaltime"} == {
        f"{c}-eqtime" for c in bench.EQUAL_TIME
    }
    # resume: the same command runs nothing new
    before = json.loads((tmp_path / "restore.json").read_text())["runs"]
    again = bench.main(["--quick", "--seeds", "0", "--workers", "1", "--out-dir", str(tmp_path)])
    assert {k: v["wall_s"] for k, v in again["runs"].items()} == {k: v["wall_s"] for k, v in before.items()}


def test_other_settings_are_not_mixed(tmp_path):
    path = tmp_path / "restore.json"
    path.write_text(json.dumps({"meta": {"settings": {"max_steps": 1}}, "runs": {}}))
    with pytest.raises(ValueError, match="other settings"):
        bench.run_benchmark(bench.BenchSettings(quick=True, sections=["denoise"]), str(path), workers=1)


def test_a_run_replays_from_its_seed():
    # the network is built after seeding: a run done twice in one process (as in a pool worker) gives the
    # same numbers
    s = bench.BenchSettings(quick=True)
    run = bench.Run("denoise", "eqreg-c4", "region32", 0, group="C4", weight=1e-3)
    first, second = bench.execute(run, s), bench.execute(run, s)
    assert (first["psnr"], first["error_c4"]) == (second["psnr"], second["error_c4"])


def test_focus_runs_given_lambdas_without_the_pilot():
    s = bench.BenchSettings(seeds=[0, 1], sections=["denoise", "auto"])
    focus = bench.Focus(configs=["eqreg-c4", "pair-c4", "eqreg-c4-auto-0.05"], weights=[1e-6, 1e-4])
    runs = focus.plan(s)
    configs = sorted({r.config for r in runs})
    assert configs == ["eqreg-c4-0.0001", "eqreg-c4-1e-06", "eqreg-c4-auto-0.05", "pair-c4"]
    assert {r.weight for r in runs if r.config == "eqreg-c4-1e-06"} == {1e-6}
    assert all(r.weight == "auto" for r in runs if "auto" in r.config) and not any(
        r.section == "pilot" for r in runs
    )
    with pytest.raises(ValueError, match="--ei-weight"):
        bench.Focus(configs=["ei-c4"], weights=[1e-6]).plan(s)
