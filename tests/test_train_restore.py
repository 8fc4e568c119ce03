"""`eqreg-hf train-restore` and eqreg_hf.tasks.restore.recipe: tiny runs of every method, the curves, bad
input refused before training, the Hub folder and its card."""

from __future__ import annotations

import json
import math

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

import eqreg_hf.tasks.engines as engines
from eqreg_hf import EqRegConfig
from eqreg_hf.cli import main
from eqreg_hf.hub import load_folder
from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments, train_restorer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TINY = dict(quick=True, progress=False, max_steps=2)
EQREG = dict(layers="auto", weight=1e-3, distance="mse")


def _args(**kw) -> RestoreTrainingArguments:
    return RestoreTrainingArguments(**{**TINY, **kw})


def _one_line_error(fn, *match: str) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text, text
    for m in match:
        assert m in text, text
    return text


@pytest.fixture
def no_training(monkeypatch):
    """Training would fail the test: the errors must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(engines, "train_loop", refuse)


@pytest.mark.parametrize(
    "kw,cfg",
    [
        ({}, EqRegConfig(group="C4", **EQREG)),
        ({}, EqRegConfig(group="D4", **EQREG)),
        ({"augment": "D4", "task": "inpaint"}, None),
        ({"task": "sr", "scale": 2, "train_size": "region16"}, EqRegConfig(group="C4", **EQREG)),
        ({"model": "strict-c4", "curve_errors": True}, None),
    ],
    ids=["eqreg-c4", "eqreg-d4", "augment-inpaint", "eqreg-sr-region", "strict-c4"],
)
def test_methods_train_and_record_both_curves(kw, cfg):
    result = train_restorer(_args(eval_steps=1, **kw), cfg)
    steps, train = result.curve("train_psnr")
    assert steps == [1, 2] and len(result.curve("eval_psnr")[1]) == 2 and all(math.isfinite(v) for v in train)
    for key in (
        "psnr",
        "ssim",
        "train_psnr",
        "degraded_psnr",
        "equivariance_error",
        "train_time_s",
        "time_per_step_s",
    ):
        assert math.isfinite(result.metrics[key]), key
    assert result.history.steps == 2 and result.history.logs
    first, last = result.history.evals[0], result.history.evals[-1]
    assert "equivariance_error" in last and ("equivariance_error" in first) == kw.get("curve_errors", False)
    if cfg is not None:
        assert result.eqreg_config.layers == result.model.eqreg_layers(
            cfg.group_spec.size
        )  # "auto", written out
        assert result.history.logs[-1]["eqreg_loss"] > 0 and result.eval_group == cfg.group_spec.name
    if kw.get("model") == "strict-c4":
        assert result.metrics["equivariance_error"] < 1e-4  # exact by construction, measured the same way


def test_region_training_set_is_the_region_itself():
    result = train_restorer(_args(train_size="region16", eval_steps=1), None)
    assert result.metrics["train_psnr"] == pytest.approx(result.history.evals[-1]["train_psnr"])


def test_ei_baseline_trains_the_same_model(monkeypatch):
    seen = {}
    from eqreg_hf.tasks.restore import baselines

    original = baselines.EquivariantImagingLoss.__init__

    def spy(self, model, *a, **k):
        seen["model"] = model
        original(self, model, *a, **k)

    monkeypatch.setattr(baselines.EquivariantImagingLoss, "__init__", spy)
    result = train_restorer(_args(ei_weight=0.5), None)
    assert seen["model"] is result.model and math.isfinite(result.metrics["psnr"])
    # with EQ-Reg too (the EI pass is not captured: tests/test_selfsup_composition.py checks the gradient)
    both = train_restorer(_args(ei_weight=0.5), EqRegConfig(group="C4", **EQREG))
    assert all(row["eqreg_loss"] > 0 and math.isfinite(row["task_loss"]) for row in both.history.logs)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"task": "deblur"}, ["deblur", "denoise"]),
        ({"sigma": -0.1}, ["sigma=-0.1"]),
        ({"mask_ratio": 1.0, "task": "inpaint"}, ["mask_ratio=1.0", "[0, 1)"]),
        ({"mask_ratio": -0.2}, ["mask_ratio=-0.2"]),
        ({"task": "sr", "scale": 5}, ["scale", "5", "--scale"]),
        (
            {"task": "sr", "scale": 3, "crop_size": 16, "quick": False},
            ["crop_size=16", "scale=3", "--crop-size 15"],
        ),
        ({"model": "unet"}, ["unet", "dncnn"]),
        ({"augment": "C8"}, ["C8", "D4"]),
        ({"ei_weight": -1.0}, ["ei_weight=-1.0"]),
        ({"train_size": "half"}, ["half", "region"]),
    ],
    ids=[
        "task",
        "sigma",
        "mask-ratio-1",
        "mask-ratio-neg",
        "scale",
        "crop-scale",
        "model",
        "augment",
        "ei",
        "train-size",
    ],
)
def test_bad_arguments_are_one_line_errors(kw, match):
    _one_line_error(lambda: _args(**kw), *match)


def test_output_size_mismatch_is_refused_before_training(no_training):
    from eqreg_hf.tasks.restore.networks import build_restorer

    wrong = build_restorer("dncnn", task="sr", scale=2, channels=8, depth=3)  # upsamples a denoising input
    _one_line_error(lambda: train_restorer(_args(), None, model=wrong), "(32, 32)", "(16, 16)", "scale")


def test_group_that_does_not_divide_the_taps_is_refused_before_training(no_training):
    _one_line_error(
        lambda: train_restorer(_args(model_kwargs={"channels": 12}), EqRegConfig(group="D4", **EQREG)),
        "12",
        "8",
    )


def test_quick_cli_writes_a_loadable_folder_with_its_card(tmp_path, capsys):
    out = tmp_path / "hub"
    code = main(
        [
            "train-restore",
            "--quick",
            "--task",
            "denoise",
            "--progress",
            "false",
            "--eqreg.weight",
            "1e-3",
            "--output-dir",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "PSNR held out" in printed and "saved to" in printed
    model, cfg = load_folder(out)
    assert cfg.weight == 1e-3 and cfg.layers == ["head", "body.0"]
    meta = ModelCard.load(out / "README.md", ignore_metadata_errors=False).data.to_dict()
    assert meta["pipeline_tag"] == "image-to-image" and "image-denoising" in meta["tags"]
    _, results = model_index_to_eval_results(meta["model-index"])
    kinds = {r.metric_type: r for r in results}
    assert {"psnr", "ssim", "equivariance_error"} <= set(kinds)
    assert (
        kinds["psnr"].task_name == "Image Denoising"
        and "(C4, relative)" in kinds["equivariance_error"].metric_name
    )
    text = (out / "README.md").read_text()
    assert "25/255" in text and "## Degradation" in text and "## Limitations" in text
    log = json.loads((out / "training_log.json").read_text())
    assert log["metrics"]["psnr"] == pytest.approx(kinds["psnr"].metric_value, rel=1e-5)


def test_saved_folder_gives_the_same_outputs(tmp_path):
    result = train_restorer(_args(task="sr", scale=2, output_dir=str(tmp_path / "sr")), None)
    loaded, cfg = load_folder(result.output_dir)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
    assert cfg.weight == 0.0  # a run without EQ-Reg still writes a (pushable) weight-0 config
    card = (tmp_path / "sr" / "README.md").read_text()
    assert "×2 downsampling" in card and "Image Super-Resolution" in card


def test_swin2sr_trains_through_the_trainer_and_saves_in_transformers_format(tmp_path):
    result = train_restorer(
        _args(model="swin2sr", eval_steps=1, output_dir=str(tmp_path / "swin")),
        EqRegConfig(group="C4", **EQREG),
    )
    assert [row["step"] for row in result.history.evals] == [1, 2] and result.history.logs
    assert result.eqreg_config.layers == "auto" and len(result.report) > 0
    loaded, _ = load_folder(result.output_dir)
    assert type(loaded).__name__ == "Swin2SRForImageSuperResolution"
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x).reconstruction, result.model.eval()(x).reconstruction, atol=1e-6)
    meta = ModelCard.load(tmp_path / "swin" / "README.md").data.to_dict()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-to-image"


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    code = main(
        ["train-restore", "--quick", "--task", "sr", "--scale", "7", "--output-dir", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert (
        code == 2 and err.startswith("eqreg-hf train-restore: error:") and len(err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "o").exists()
