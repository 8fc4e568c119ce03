"""`eqreg-hf demo --quick`: runs end to end and writes every promised file."""

from __future__ import annotations

import json

import pytest

from eqreg_hf.cli import main
from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.tasks.derain.demo import (
    DEMO_DISTANCE,
    DEMO_GROUP_ORDER,
    DEMO_METHODS,
    DEMO_WEIGHT,
    format_results_table,
)


@pytest.mark.slow
def test_demo_quick_writes_table_checkpoint_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for method in DEMO_METHODS:
        assert f"| {method} |" in printed
    assert "PSNR-Y" in printed and "rainy input" in printed
    for name in ("results.md", "results.json", "equivariance_per_layer.png", "derain_examples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "derain_examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = out / "model"
    for name in ("config.json", "model.safetensors", "eqreg_config.json", "README.md"):
        assert (model / name).is_file(), name
    cfg = EqRegConfig.from_pretrained(model)
    assert (cfg.weight, cfg.distance, cfg.group_order) == (DEMO_WEIGHT, DEMO_DISTANCE, DEMO_GROUP_ORDER)
    results = json.loads((out / "results.json").read_text())["results"]
    assert sorted(results) == sorted(DEMO_METHODS)
    for metrics in results.values():
        assert 0 < metrics["ssim_y"] <= 1 and metrics["psnr_y"] > 5 and metrics["equivariance_error"] > 0
    assert not any(p.name.endswith(".tmp") or ".tmp-" in p.name for p in out.rglob("*"))


def test_results_table_has_one_row_per_run():
    m = {
        "psnr_y": 30.0,
        "ssim_y": 0.9,
        "psnr_rgb": 28.0,
        "ssim_rgb": 0.88,
        "equivariance_error": 0.5,
        "output_equivariance_error": 0.01,
        "train_time_s": 12.0,
    }
    table = format_results_table({"plain": m, "EQ-Reg": dict(m, psnr_y=31.0)}, rainy_psnr=20.0)
    lines = table.splitlines()
    assert len(lines) == 5 and "| EQ-Reg | 31.00 |" in table and "| rainy input | 20.00 |" in table


def test_bad_steps_is_refused(capsys):
    assert main(["demo", "--steps", "0"]) == 2  # a user error: exit code 2 and one line (it was 1)
    err = capsys.readouterr().err
    assert "--steps 0" in err and len(err.strip().splitlines()) == 1
