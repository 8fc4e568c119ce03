"""The cost benchmark's measurement (tiny network, a few repeats: what is measured, not how fast)."""

import torch
import torch.nn.functional as F
from torch import nn

from eqreg_hf import EqRegConfig
from eqreg_hf.train.cost import StepCost, measure_step_cost


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


def _batch():
    return torch.rand(4, 3, 12, 12), torch.rand(4, 3, 12, 12)


def test_step_cost_measures_plain_floor_and_eqreg(one_thread):
    torch.manual_seed(0)
    cost = measure_step_cost(
        _net(), _batch, F.mse_loss, EqRegConfig(layers=["0"], weight=0.1), repeats=3, warmup=1, label="tiny"
    )
    assert cost.label == "tiny" and cost.plain_ms > 0 and cost.floor_ms > 0 and cost.eqreg_ms > 0
    # the stacked batch holds twice the images, so twice the saved activations, and EQ-Reg at least that
    assert cost.floor_mem_mb > 1.9 * cost.plain_mem_mb
    assert cost.eqreg_mem_mb >= cost.floor_mem_mb
    assert cost.memory_ratio == cost.eqreg_mem_mb / cost.plain_mem_mb
    row = cost.row()
    assert row.startswith("| tiny |") and row.count("|") == StepCost.HEADER.splitlines()[0].count("|")


def test_weight_zero_steps_are_plain_steps(one_thread):
    cost = measure_step_cost(
        _net(), _batch, F.mse_loss, EqRegConfig(layers=["0"], weight=0.0), repeats=2, warmup=1
    )
    assert cost.eqreg_mem_mb == cost.plain_mem_mb  # no stacking, no captures
    assert cost.floor_mem_mb == cost.plain_mem_mb  # and the floor batch is the plain batch


def test_fraction_sets_the_floor_batch(one_thread):
    cost = measure_step_cost(
        _net(),
        _batch,
        F.mse_loss,
        EqRegConfig(layers=["0"], weight=0.1, rotated_fraction=0.25),
        repeats=2,
        warmup=1,
    )
    # b = 4, m = 1: the floor batch holds 5 images
    assert 1.2 < cost.floor_mem_mb / cost.plain_mem_mb < 1.3


def test_bench_overhead_script_prints_one_row_per_setting(one_thread, capsys):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_overhead.py"
    argv = sys.argv
    sys.argv = [str(script), "--repeats", "1", "--size", "16", "--batch", "2", "--models", "fastderainer"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| FastDerainer 16x16")]
    assert [r.split(",")[1].split("|")[0].strip() for r in rows] == [
        "full (fraction 1.0)",
        "full",
        "fraction 0.5",
        "fraction 0.25",
        "weight 0",
    ]
    # FastDerainer's 12 taps of 32 channels, 16x16, 2 + 2 rows, float32
    assert f"FastDerainer 16x16: taps hold {12 * 4 * 32 * 16 * 16 * 4 / 2**20:.0f} MB" in out


def test_tap_bytes_counts_both_halves_of_each_tapped_map():
    from eqreg_hf.train.cost import memory_bandwidth_gbs, tap_bytes

    net = _net()
    x = torch.rand(4, 3, 12, 12)
    assert (
        tap_bytes(net, EqRegConfig(layers=["0", "2"], weight=0.1), x) == 8 * (8 + 3) * 12 * 12 * 4
    )  # 8 rows (4 + 4 rotated), 8 + 3 channels
    assert (
        tap_bytes(net, EqRegConfig(layers=["0"], weight=0.1, rotated_fraction=0.5), x) == 4 * 8 * 12 * 12 * 4
    )
    assert not any(m._forward_hooks for m in net.modules())  # hooks are gone afterwards
    assert memory_bandwidth_gbs(mb=4, repeats=2) > 0
