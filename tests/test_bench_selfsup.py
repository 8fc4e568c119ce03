"""scripts/bench_selfsup.py: the plan (Table 4's rows x gains x seeds), the --quick sweep end to end, resume,
and the settings guard."""

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
        "bench_selfsup", os.path.join(ROOT, "scripts", "bench_selfsup.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and the worker pool look the module up there
    spec.loader.exec_module(module)
    return module


bench = _script()


def test_plan_has_every_row_gain_and_seed():
    s = bench.BenchSettings()
    runs = bench.plan_runs(s)
    ids = [r.run_id for r in runs]
    assert len(ids) == len(set(ids)) == len(s.gains) * len(s.seeds) * len(bench.rows(s))
    assert s.gains == [0.01, 0.05, 0.1] and len(s.seeds) >= 3
    names = {r.row for r in runs}
    assert {"rei", "rei+aug-c4", "rei+eqreg-c4-auto", "rei+eqreg-d4-auto", "rei+pair-c4"} <= names
    assert {"rei+strict-c4", "rei+strict-d4"} <= names and {
        f"rei+eqreg-c4-{lam:g}" for lam in s.lambdas
    } <= names
    pair = next(r for r in runs if r.row == "rei+pair-c4")
    assert pair.group == "C4" and pair.mode == "pair"  # EQ-Reg's stacked step, no term


def test_a_gain_that_is_not_positive_is_refused():
    with pytest.raises(ValueError, match="Poisson gains > 0"):
        bench.BenchSettings(gains=[0.05, 0.0])


@pytest.mark.slow
def test_quick_sweep_end_to_end_and_resume(tmp_path, capsys):
    argv = ["--quick", "--seeds", "0", "--gains", "0.05", "--workers", "1", "--out-dir", str(tmp_path)]
    payload = bench.main(argv)
    runs = payload["runs"]
    assert len(runs) == len(bench.rows(bench.BenchSettings(quick=True)))
    assert all(math.isfinite(r["psnr"]) and r["train_time_s"] > 0 for r in runs.values())
    assert runs["0.05/rei+strict-c4/seed0"]["error"] < 1e-4  # exactly equivariant, measured under C4
    tables = (tmp_path / "selfsup_tables.md").read_text()
    assert "| rei+eqreg-c4-auto |" in tables and "γ = 0.05" in tables and "vs rei+pair-c4" in tables
    capsys.readouterr()
    again = bench.main(argv)  # resumed: nothing left to run
    assert {k: r["psnr"] for k, r in again["runs"].items()} == {k: r["psnr"] for k, r in runs.items()}
    assert "PSNR" not in capsys.readouterr().out.split("Machine:")[0]  # no run printed
    data = json.loads((tmp_path / "selfsup.json").read_text())
    data["meta"]["settings"]["max_steps"] = 999
    (tmp_path / "selfsup.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="other settings"):
        bench.main(argv)
