"""scripts/bench_quality.py: the --quick path end to end, resume, settings guard."""

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
        "bench_quality_script", os.path.join(ROOT, "scripts", "bench_quality.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench_quality = _script()
RESULT_KEYS, QualitySettings, plan_runs = (
    bench_quality.RESULT_KEYS,
    bench_quality.QualitySettings,
    bench_quality.plan_runs,
)


PLAN_CASES = [
    # (settings kwargs, expected config ids for one seed)
    ({"lambdas": {"fro": [1e-6]}, "groups": [4]}, ["plain", "rot-aug", "strict-c4", "eqreg-c4-fro-1e-06"]),
    (
        {"lambdas": {"relative": [1e-4, 1e-3]}, "groups": [4, 2], "strict": False},
        [
            "plain",
            "rot-aug",
            "rot-aug-c2",
            "eqreg-c4-relative-0.0001",
            "eqreg-c4-relative-0.001",
            "eqreg-c2-relative-0.0001",
            "eqreg-c2-relative-0.001",
        ],
    ),
]


PLAN_CASES.append(
    (
        {"lambdas": {"relative": [1e-3]}, "groups": [2], "strict": False, "auto": {"relative": [0.05, 0.2]}},
        [
            "plain",
            "rot-aug",
            "rot-aug-c2",
            "eqreg-c2-relative-0.001",
            "eqreg-c2-relative-auto-share0.05",
            "eqreg-c2-relative-auto-share0.2",
        ],
    )
)


@pytest.mark.parametrize("kwargs,expected", PLAN_CASES)
def test_plan_is_seed_major(kwargs, expected):
    runs = plan_runs(QualitySettings(seeds=[3, 1], **kwargs))
    assert [r.run_id for r in runs] == [f"{c}/seed3" for c in expected] + [f"{c}/seed1" for c in expected]


@pytest.mark.parametrize(
    "kwargs,match",
    [({"lambdas": {"l1": [1.0]}}, "l1"), ({"lambdas": {"fro": [0.0]}}, "> 0"), ({"groups": [3]}, "groups")],
)
def test_bad_settings_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QualitySettings(**kwargs)


@pytest.mark.slow  # ~10 s CPU (3 tiny training runs + plots); longer on a loaded machine
def test_quick_end_to_end_then_resume_skips(tmp_path, monkeypatch):
    script = _script()
    argv = [
        "--quick",
        "--steps",
        "1",
        "--seeds",
        "0",
        "--lambdas",
        "fro=1e-3",
        "--groups",
        "4",
        "--no-strict",
        "--equiv-images",
        "1",
        "--out-dir",
        str(tmp_path),
        "--no-progress",
    ]
    payload = script.main(argv)

    path = tmp_path / "quality.json"
    data = json.loads(path.read_text())
    assert set(data) == {"meta", "runs", "summary"}
    assert sorted(data["runs"]) == ["eqreg-c4-fro-0.001/seed0", "plain/seed0", "rot-aug/seed0"]
    for rec in data["runs"].values():
        assert set(RESULT_KEYS) <= set(rec)
        assert math.isfinite(rec["psnr_y"]) and 0 <= rec["ssim_y"] <= 1
        assert sorted(rec["layer_errors_c4"]) == ["body.0.conv1", "body.0.conv2"]
    eq = data["runs"]["eqreg-c4-fro-0.001/seed0"]
    assert eq["final_eqreg_loss"] > 0 and data["runs"]["plain/seed0"]["final_eqreg_loss"] == 0
    assert data["summary"]["plain"]["n_seeds"] == 1
    assert data["meta"]["invocations"][0]["command"].startswith("python scripts/bench_quality.py --quick")
    for name in ("quality_table.md", "quality_psnr_vs_lambda.png", "quality_layers_c4.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| plain |" in (tmp_path / "quality_table.md").read_text()
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave nothing behind

    # Resume: the same command trains nothing and keeps the records.
    def no_training(*args, **kwargs):
        raise AssertionError("resume retrained a finished run")

    monkeypatch.setattr(bench_quality, "_train_one", no_training)
    again = script.main(argv)
    assert again["runs"] == payload["runs"] == data["runs"]

    # Other settings must not be mixed into the same file.
    with pytest.raises(ValueError, match="steps"):
        script.main([a if a != "1" else "2" for a in argv])


def test_d4_plan_adds_the_d4_augmentation_and_d4_runs():
    runs = plan_runs(QualitySettings(seeds=[0], lambdas={"relative": [1e-3]}, groups=[4, "d4"], strict=False))
    assert [r.config_id for r in runs] == [
        "plain",
        "rot-aug",
        "rot-aug-d4",
        "eqreg-c4-relative-0.001",
        "eqreg-d4-relative-0.001",
    ]
    assert [r.group for r in runs] == [None, None, None, "C4", "D4"]
    assert QualitySettings(groups=["C2", "4", "D4"]).groups == [2, 4, "D4"]
    with pytest.raises(ValueError, match="groups: 'D8' is unsupported"):
        QualitySettings(groups=["D8"])


@pytest.mark.slow  # ~15 s CPU: 5 tiny training runs, each measured under C4, C2 and D4
def test_quick_d4_sweep(tmp_path):
    script = _script()
    payload = script.main(
        [
            "--quick",
            "--steps",
            "1",
            "--seeds",
            "0",
            "--lambdas",
            "relative=1e-3",
            "--groups",
            "D4",
            "--equiv-images",
            "1",
            "--out-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    runs = payload["runs"]
    assert sorted(runs) == [
        "eqreg-d4-relative-0.001/seed0",
        "plain/seed0",
        "rot-aug-d4/seed0",
        "rot-aug/seed0",
        "strict-c4/seed0",
    ]
    for rec in runs.values():
        assert set(RESULT_KEYS) <= set(rec) and sorted(rec["layer_errors_d4"]) == sorted(
            rec["layer_errors_c4"]
        )
    assert runs["eqreg-d4-relative-0.001/seed0"]["group"] == "D4" and runs["plain/seed0"]["group"] is None
    assert runs["eqreg-d4-relative-0.001/seed0"]["final_eqreg_loss"] > 0
    # the strict C4 network: exact under C4, but not under the flips of D4 (its kernels are not
    # mirror-symmetric)
    strict = runs["strict-c4/seed0"]
    assert strict["equivariance_error_c4"] < 1e-4 and strict["equivariance_error_d4"] > 0.1
    table = (tmp_path / "quality_table.md").read_text()
    assert "equiv. err. D4 (taps)" in table and "| rot-aug-d4 |" in table and "| eqreg | D4 |" in table
    assert (tmp_path / "quality_layers_d4.png").stat().st_size > 0
