"""Self-supervised inpainting (``--supervision self``): deepinv's physics and losses, measurement data that
never hold a clean image, bad input refused in one line before training, the loop, the Trainer, the CLI and
the Hub folder's card."""

from __future__ import annotations

import json
import math

import datasets
import deepinv  # noqa: F401  (a hard dependency: fail, not skip, when it is missing)
import numpy as np
import pytest
import torch

import eqreg_hf.tasks.engines as engines
from eqreg_hf import EqRegConfig
from eqreg_hf.cli import main
from eqreg_hf.data.restore import load_clean_images
from eqreg_hf.hub import load_folder
from eqreg_hf.tasks.restore.measurements import MeasurementCrops, MeasurementSet, simulate_measurements
from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments, train_restorer
from eqreg_hf.tasks.restore.selfsup import InpaintingMeasurements, SelfSupervisedLoss, pack, unpack

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SELF = dict(supervision="self", task="inpaint", quick=True, progress=False, max_steps=2)
EQREG = dict(layers="auto", weight=1e-3, distance="mse")


def _args(**kw) -> RestoreTrainingArguments:
    return RestoreTrainingArguments(**{**SELF, **kw})


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
    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(engines, "train_loop", refuse)


# ----------------------------------------------------------------------------------------- physics and losses
def test_measurements_mask_and_poisson_statistics():
    x = torch.full((1, 3, 64, 64), 0.4)
    g = torch.Generator().manual_seed(0)
    y, mask = InpaintingMeasurements(0.3, gain=0.05).measure(x, g)
    assert mask.shape == (1, 1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert abs(float(1 - mask.mean()) - 0.3) < 0.03  # the fraction missing
    seen = y[mask.expand_as(y) == 1]
    assert float((y * (1 - mask)).abs().max()) == 0.0  # nothing where the mask is 0
    assert abs(float(seen.mean()) - 0.4) < 0.01 and abs(float(seen.var()) - 0.05 * 0.4) < 0.003  # γx
    noise_free, m2 = InpaintingMeasurements(0.3).measure(x, torch.Generator().manual_seed(0))
    assert torch.equal(noise_free, x * m2)


def test_pack_unpack_round_trip():
    y, m = torch.rand(2, 3, 5, 7), (torch.rand(2, 1, 5, 7) > 0.5).float()
    back = unpack(pack(y, m))
    assert torch.equal(back[0], y) and torch.equal(back[1], m)


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.calls = torch.nn.Conv2d(3, 3, 3, padding=1), 0

    def forward(self, y):
        self.calls += 1
        return y + self.conv(y)


@pytest.mark.parametrize("loss,passes", [("mc", 0), ("ei", 1), ("rei", 2)])
def test_the_losses_call_the_model_again_and_replay_from_the_seed(loss, passes):
    net = _Counting()
    meas = InpaintingMeasurements(0.5, 0.05)
    y, mask = meas.measure(torch.rand(2, 3, 8, 8), torch.Generator().manual_seed(1))
    values = []
    for _ in range(2):
        fn = SelfSupervisedLoss(net, meas, loss=loss, ei_weight=1.0 if loss != "mc" else 0.0, seed=3)
        before = net.calls
        values.append(float(fn(net(y), pack(y, mask))))
        assert net.calls - before == 1 + passes
    assert values[0] == values[1] and math.isfinite(values[0])


def test_mc_of_a_consistent_reconstruction_is_zero_and_ei_is_not():
    meas = InpaintingMeasurements(0.5)  # noise-free
    y, mask = meas.measure(torch.rand(2, 3, 8, 8), torch.Generator().manual_seed(2))
    identity = torch.nn.Identity()
    assert float(SelfSupervisedLoss(identity, meas, loss="mc", ei_weight=0)(y, pack(y, mask))) == 0.0
    ei = SelfSupervisedLoss(identity, meas, loss="ei")
    values = [
        float(ei(y, pack(y, mask))) for _ in range(8)
    ]  # T = the identity now and then (deepinv draws it)
    assert max(values) > 0 and float(ei.last["fit"]) == 0.0  # a turned image's hidden pixels stay 0


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw,match",
    [
        ({"task": "sr"}, ["supervision='self'", "task='sr'", "--task inpaint"]),
        ({"task": "denoise"}, ["task='denoise'"]),
        ({"poisson_gain": 0.0}, ["poisson_gain=0.0", "> 0"]),
        ({"poisson_gain": -0.05}, ["poisson_gain=-0.05"]),
        ({"poisson_gain": float("nan")}, ["poisson_gain=nan"]),
        ({"selfsup_loss": "rei"}, ["'rei'", "--poisson-gain"]),
        ({"selfsup_loss": "sure"}, ["sure", "rei"]),
        ({"ei_group": "C8"}, ["ei_group='C8'", "45°", "commute"]),
        ({"ei_group": "C3"}, ["ei_group='C3'", "120°"]),
        ({"sigma": 0.1}, ["sigma=0.1", "--poisson-gain"]),
        ({"selfsup_loss": "mc", "ei_weight": 1.0}, ["'mc'", "ei_weight=1.0"]),
        ({"supervision": "weak"}, ["weak", "self"]),
        ({"supervision": "supervised", "poisson_gain": 0.1}, ["poisson_gain=0.1", "--supervision self"]),
    ],
    ids=lambda v: str(v)[:30] if isinstance(v, dict) else None,
)
def test_bad_settings_are_one_line_errors(kw, match):
    _one_line_error(lambda: _args(**kw), *match)


@pytest.mark.parametrize(
    "cfg",
    [EqRegConfig(group="C8", layers=["head"], weight=1e-3, fields="trivial"), EqRegConfig.pair("C8")],
    ids=["eqreg", "pair"],
)
def test_an_eqreg_group_that_resamples_measurements_is_refused_before_training(no_training, cfg):
    _one_line_error(lambda: train_restorer(_args(), cfg, save=False), "EQ-Reg's group='C8'", "commute")


def test_the_pair_control_stacks_turned_measurements_without_a_term():
    from eqreg_hf.tasks.restore.recipe import method_name

    args = _args(poisson_gain=0.05, selfsup_loss="rei")
    result = train_restorer(args, EqRegConfig.pair("D4"), save=False)
    assert all(row["eqreg_loss"] == 0 and math.isfinite(row["task_loss"]) for row in result.history.logs)
    assert method_name(args, EqRegConfig.pair("D4")) == "self-rei-C4+pair-D4"


def test_a_crop_larger_than_the_measurements_is_refused_before_training(no_training):
    data = simulate_measurements(load_clean_images("photos", "train", photo_size=8), InpaintingMeasurements())
    _one_line_error(
        lambda: train_restorer(_args(), None, train_dataset=data, save=False), "crop_size=16", "--crop-size 8"
    )


@pytest.mark.parametrize(
    "rows,match",
    [
        ([(torch.ones(3, 4, 4), torch.ones(1, 4, 5))], "same H, W"),
        ([(torch.ones(3, 4, 4), torch.full((1, 4, 4), 0.5))], "0 and 1"),
        ([(torch.full((3, 4, 4), math.nan), torch.ones(1, 4, 4))], "not finite"),
        ([(torch.ones(3, 4, 4), torch.zeros(1, 4, 4))], "non-zero where its mask is 0"),
    ],
    ids=["shape", "mask-values", "nan", "unmasked"],
)
def test_bad_measurements_are_refused(rows, match):
    _one_line_error(lambda: MeasurementSet([r[0] for r in rows], [r[1] for r in rows]), match)


# ------------------------------------------------------------------------- training never reads a clean image
def _measurement_dataset(clean_value: float | None) -> datasets.Dataset:
    data = simulate_measurements(
        load_clean_images("photos", "train", photo_size=32), InpaintingMeasurements(0.5, 0.05)
    )
    columns = {"measurement": [y.numpy() for y in data.measurements], "mask": [m.numpy() for m in data.masks]}
    if clean_value is not None:
        columns["image"] = [np.full((32, 32, 3), clean_value, np.float32) for _ in data.measurements]
    return datasets.Dataset.from_dict(columns)


@pytest.mark.parametrize("clean", [math.nan, None], ids=["nan-clean", "no-clean"])
def test_training_on_measurements_never_reads_the_clean_field(clean):
    ds = _measurement_dataset(clean)
    args = _args(poisson_gain=0.05, selfsup_loss="rei", max_steps=3)
    result = train_restorer(args, EqRegConfig(group="C4", **EQREG), train_dataset=ds, save=False)
    losses = result.history.series("task_loss") + result.history.series("eqreg_loss")
    assert losses and all(math.isfinite(v) for v in losses)
    assert all(bool(torch.isfinite(p).all()) for p in result.model.parameters())
    assert math.isfinite(result.metrics["psnr"]) and math.isnan(result.metrics["train_psnr"])


def test_clean_training_images_are_read_once_to_measure_them(monkeypatch):
    """From clean images: each is read exactly once, by the acquisition, and never during training."""
    photos = load_clean_images("photos", "train", photo_size=32)
    reads = []

    class Spy:
        column_names = photos.column_names

        def __len__(self):
            return len(photos)

        def __getitem__(self, i):
            reads.append(i)
            return photos[i]

    import eqreg_hf.data.restore as data_restore

    monkeypatch.setattr(data_restore, "select_training_set", lambda ds, size: ds)
    train_restorer(_args(max_steps=3), None, train_dataset=Spy(), save=False)
    assert sorted(reads) == list(range(len(photos)))


def test_training_items_are_crops_of_the_measurement_and_its_mask():
    data = simulate_measurements(
        load_clean_images("photos", "train", photo_size=16), InpaintingMeasurements(0.5)
    )
    item = MeasurementCrops(data, 8, seed=0, augment="D4")[0]
    y, mask = unpack(item["labels"])
    assert torch.equal(item["pixel_values"], y) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert float((y * (1 - mask)).abs().max()) == 0.0


# --------------------------------------------------------------------------------- engines, CLI, Hub folder
def test_strict_net_and_augmentation_train_with_the_same_losses():
    result = train_restorer(_args(model="strict-d4", augment="D4", ei_group="D4"), None, save=False)
    assert math.isfinite(result.metrics["psnr"]) and result.metrics["equivariance_error"] < 1e-4


def test_swin2sr_trains_self_supervised_through_the_trainer():
    result = train_restorer(
        _args(model="swin2sr", poisson_gain=0.1), EqRegConfig(group="C4", **EQREG), save=False
    )
    logs = [row for row in result.history.logs if "task_loss" in row]
    assert logs and all(math.isfinite(row["task_loss"]) and row["eqreg_loss"] > 0 for row in logs)


def test_quick_cli_saves_a_folder_whose_card_says_self_supervised(tmp_path, capsys):
    out = tmp_path / "hub"
    flags = ["--supervision", "self", "--task", "inpaint", "--poisson-gain", "0.05", "--selfsup-loss", "rei"]
    code = main(["train-restore", "--quick", *flags, "--eqreg.weight", "1e-3", "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "self-rei-C4+eqreg-C4" in printed and "Poisson γ=0.05" in printed
    assert "PSNR training images" not in printed  # there are none
    card = (out / "README.md").read_text()
    for words in ("**self-supervised**", "SurePoissonLoss(gain=0.05)", "EILoss(C4", "Poisson noise of gain"):
        assert words in card, words
    assert "| `supervision` | `self` |" in card and "final_train_psnr" not in card
    log = json.loads((out / "training_log.json").read_text())
    assert log["degradation"]["poisson_gain"] == 0.05
    model, cfg = load_folder(out)
    assert cfg.weight == 1e-3 and type(model).__name__ == "DnCNN"


def test_the_docs_python_example_runs():
    """docs/restoration.md, "Self-supervised inpainting": its Python block runs as written."""
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "restoration.md").read_text()
    section = text.split("## Self-supervised inpainting", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "docs/restoration.md", "exec"), scope)
    assert scope["result"].info["training"]["supervision"] == "self"
    assert math.isfinite(scope["result"].metrics["psnr"])


def test_a_local_image_folder_trains_self_supervised(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / split / f"{i}.png")
    result = train_restorer(_args(source=str(tmp_path), max_steps=1), None, save=False)
    assert math.isfinite(result.metrics["psnr"]) and math.isnan(result.metrics["train_psnr"])
