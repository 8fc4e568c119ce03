"""Hub formats and loadable model classes as registries: unknown names are refused, and a folder from the
internet cannot choose what code is imported."""

from __future__ import annotations

import importlib
import json
import os
import sys

import pytest
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.hub import (
    FORMATS,
    MODEL_CLASSES,
    CardFacts,
    HubFolderError,
    HubFormat,
    load_folder,
    make_model_card,
    register_model_class,
    save_folder,
)
from eqreg_hf.hub.formats import format_of_config
from eqreg_hf.hub.layout import MODEL_INFO_NAME


class GuardNet(nn.Module, PyTorchModelHubMixin):
    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _facts():
    return CardFacts(task="derain", model_name="m", metrics={"psnr": 30.0}, dataset="Rain100L")


# Every place a format is named: an unknown one is refused, naming the registered ones.
UNKNOWN_KIND = [
    ("save_folder", lambda tmp: save_folder(GuardNet(), tmp / "hub", kind="onnx")),
    ("load_folder", lambda tmp: load_folder(save_folder(GuardNet(), tmp / "hub"), kind="onnx")),
    ("make_model_card", lambda tmp: make_model_card(_facts(), eqreg_config=None, kind="onnx")),
]


@pytest.mark.parametrize("where,call", UNKNOWN_KIND, ids=[c[0] for c in UNKNOWN_KIND])
def test_unknown_kind_names_the_registered_formats(tmp_path, where, call):
    with pytest.raises(
        ValueError, match=r"Unknown kind 'onnx'\. Choose between \['auto', 'mixin', 'timm', 'transformers'\]"
    ):
        call(tmp_path)


@pytest.mark.parametrize(
    "config, kind",
    [
        ({"architecture": "resnet18", "pretrained_cfg": {}, "num_classes": 3}, "timm"),
        ({"model_type": "convnext", "architectures": ["ConvNextModel"]}, "transformers"),
        ({"channels": 4}, "mixin"),
    ],
)
def test_folder_format_is_detected_from_config(config, kind):
    assert format_of_config(config).name == kind


def test_every_registered_format_is_a_hub_format_under_its_name():
    assert FORMATS and all(isinstance(f, HubFormat) and FORMATS[name] is f for name, f in FORMATS.items())
    assert list(FORMATS)[-1] == "mixin"  # the catch-all folder format is tried last


def _folder_naming(tmp_path, class_path):
    folder = save_folder(GuardNet(), tmp_path / "hub", eqreg_config=EqRegConfig())
    info_path = os.path.join(folder, MODEL_INFO_NAME)
    info = json.load(open(info_path))
    info["class"] = class_path
    json.dump(info, open(info_path, "w"))
    return folder


HOSTILE = [
    "eqreg_hf.__main__:main",  # runs the command line with the caller's arguments, then exits
    "os:system",
    "builtins:eval",
    "eqreg_hf.cli:main",
    "eqreg_hf.tasks.derain.networks:MODELS",  # inside eqreg_hf, but not a registered class
    "eqreg_hf.tasks.derain.networks:FastDerainer.__init__",
    ["not", "a", "string"],
]


@pytest.mark.parametrize("class_path", HOSTILE, ids=[str(h) for h in HOSTILE])
def test_folder_naming_an_unregistered_class_is_refused_before_any_import(tmp_path, monkeypatch, class_path):
    folder = _folder_naming(tmp_path, class_path)
    imported, ran = [], []
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: imported.append(name))
    monkeypatch.setattr(os, "system", lambda *a: ran.append(a))
    monkeypatch.delitem(sys.modules, "eqreg_hf.__main__", raising=False)
    with pytest.raises(HubFolderError) as err:
        load_folder(folder)
    message = str(err.value)
    assert "\n" not in message and repr(class_path) in message
    assert "eqreg_hf.tasks.derain.networks:FastDerainer" in message  # names the registered classes
    assert "model_cls=" in message  # and the fix
    assert imported == [] and ran == [] and "eqreg_hf.__main__" not in sys.modules


def test_web_demo_and_measure_load_through_the_same_guard(tmp_path, monkeypatch, capsys):
    from eqreg_hf.app.restore import load_app_model
    from eqreg_hf.cli import main

    folder = _folder_naming(tmp_path, "eqreg_hf.__main__:main")
    monkeypatch.delitem(sys.modules, "eqreg_hf.__main__", raising=False)
    with pytest.raises(HubFolderError, match="not a registered model class"):
        load_app_model(folder)
    assert main(["measure", folder]) == 2
    assert "not a registered model class" in capsys.readouterr().err
    assert "eqreg_hf.__main__" not in sys.modules


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_every_registered_library_class_loads_and_is_a_mixin(name):
    from eqreg_hf.hub.model_classes import model_class

    cls = model_class(name)
    assert issubclass(cls, PyTorchModelHubMixin) and f"{cls.__module__}:{cls.__qualname__}" == name


def test_registered_class_loads_without_model_cls(tmp_path, monkeypatch):
    monkeypatch.setattr("eqreg_hf.hub.model_classes.MODEL_CLASSES", dict(MODEL_CLASSES))
    model = GuardNet(channels=5).eval()
    folder = save_folder(model, tmp_path / "hub")
    with pytest.raises(HubFolderError, match="GuardNet"):
        load_folder(folder)
    register_model_class(GuardNet)
    loaded, _ = load_folder(folder)
    x = torch.rand(1, 3, 9, 7)
    assert type(loaded) is GuardNet and torch.equal(loaded(x), model(x))


def test_only_mixin_classes_can_be_registered():
    with pytest.raises(TypeError, match="PyTorchModelHubMixin"):
        register_model_class(nn.Conv2d)
