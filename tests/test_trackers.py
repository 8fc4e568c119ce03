"""Trackers (--report-to) as a registry: names are checked against it, and each tracker logs images and
finishes its own way (fakes stand in for the tracker clients; test_hf_conventions.py runs them for real)."""

from __future__ import annotations

import sys
import types
from unittest import mock

import numpy as np
import pytest

from eqreg_hf.tasks import conventions
from eqreg_hf.tasks.trackers import (
    REPORT_TO,
    TRACKERS,
    check_report_to,
    finish_trainer_trackers,
    log_loop_images,
    log_trainer_images,
    loop_trackers,
)

GOOD = [
    ("none", []),
    ("tensorboard", ["tensorboard"]),
    ("TensorBoard, trackio", ["tensorboard", "trackio"]),
    ("wandb,trackio", ["wandb", "trackio"]),
]
BAD = ["mlflow", "", "none,tensorboard", "tensorboard,comet"]


@pytest.mark.parametrize("value,names", GOOD)
def test_report_to_names_registered_trackers(value, names):
    assert check_report_to(value) == names


@pytest.mark.parametrize("value", BAD)
def test_unknown_tracker_is_refused_naming_the_registered_ones(value):
    with pytest.raises(ValueError, match=r"report_to=.*\['none', 'tensorboard', 'trackio', 'wandb'\]"):
        check_report_to(value)


def test_unknown_tracker_is_refused_when_the_arguments_are_built():
    from eqreg_hf.tasks.derain.arguments import DerainTrainingArguments

    with pytest.raises(ValueError, match="report_to='mlflow'.*'wandb'"):
        DerainTrainingArguments(report_to="mlflow")


def test_unknown_tracker_no_longer_falls_through_to_wandb():
    with pytest.raises(ValueError, match="report_to='mlflow'"):
        loop_trackers(types.SimpleNamespace(report_to="mlflow"), "run", "t1")


def test_registry_names_packages_and_trainer_callbacks_that_exist():
    import transformers.integrations as integrations

    assert REPORT_TO == ("none", *TRACKERS)
    for name, tracker in TRACKERS.items():
        assert tracker.name == name and tracker.package
        assert hasattr(integrations, tracker.callback), tracker.callback
    assert conventions.REPORT_TO is REPORT_TO  # the old import path still works
    assert conventions._PACKAGES == {name: t.package for name, t in TRACKERS.items()}


@pytest.fixture
def fake_wandb(monkeypatch):
    fake = mock.MagicMock(name="wandb")
    fake.Image = lambda array: ("wandb.Image", array.shape)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_loop_images_go_to_each_tracker_in_its_own_form(fake_wandb):
    image = np.zeros((5, 7, 3), dtype=np.uint8)
    trackers = [mock.MagicMock(name=n) for n in ("tensorboard", "trackio", "wandb", "comet")]
    for tracker, name in zip(trackers, ("tensorboard", "trackio", "wandb", "comet")):
        tracker.name = name
    log_loop_images(types.SimpleNamespace(trackers=trackers), {"eval/plot": image}, step=3)
    tensorboard, trackio, wandb, other = trackers
    (images,), kwargs = tensorboard.log_images.call_args
    assert images["eval/plot"].shape == (1, 5, 7, 3) and kwargs == {"step": 3, "dataformats": "NHWC"}
    assert type(trackio.log.call_args.args[0]["eval/plot"]).__name__ == "TrackioImage"
    assert wandb.log.call_args == mock.call({"eval/plot": ("wandb.Image", (5, 7, 3))}, step=3)
    assert not other.method_calls  # a tracker that is not registered gets no images


def _callback(kind: str, **attrs):
    """An object whose class has the name of a Trainer reporting callback."""
    return type(kind, (), attrs)()


def test_trainer_images_and_finish_go_through_each_callback():
    tb = _callback("TensorBoardCallback", tb_writer=mock.MagicMock())
    tio = _callback("TrackioCallback", _initialized=True, _trackio=mock.MagicMock())
    wb = _callback("WandbCallback", _initialized=True, _wandb=mock.MagicMock())
    closed = _callback("TrackioCallback", _initialized=False, _trackio=mock.MagicMock())
    other = _callback("PrinterCallback")
    trainer = types.SimpleNamespace(
        state=types.SimpleNamespace(global_step=9),
        callback_handler=types.SimpleNamespace(callbacks=[tb, tio, wb, closed, other]),
    )
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    log_trainer_images(trainer, {"eval/plot": image})
    writer = tb.tb_writer
    assert writer.add_image.call_args == mock.call("eval/plot", image, 9, dataformats="HWC")
    assert "eval/plot" in tio._trackio.log.call_args.args[0]
    assert wb._wandb.log.call_args.args[0]["train/global_step"] == 9
    assert not closed._trackio.method_calls

    finish_trainer_trackers(trainer)
    writer.close.assert_called_once()
    assert tb.tb_writer is None and tio._initialized is False
    tio._trackio.finish.assert_called_once()
    wb._wandb.finish.assert_called_once()
    assert not closed._trackio.method_calls
