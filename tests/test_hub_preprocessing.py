"""Issue 13, the ecosystem: a saved folder carries the preprocessing it was trained with, and a card has a
name.

Before: a timm folder kept the ImageNet data config it was created with (here test_resnet's 160 px,
crop 0.95), so timm's standard ``resolve_data_config`` / ``create_transform`` fed the saved model other
inputs than the training pipeline did (a different accuracy), and every classifier's card was named "model".
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")
pytest.importorskip("transformers")

from timm.data import create_transform, resolve_data_config  # noqa: E402

from eqreg_hf import EqRegConfig  # noqa: E402
from eqreg_hf.data import classification_transform, load_shapes  # noqa: E402
from eqreg_hf.hub import CardFacts, load_folder, write_hub_folder  # noqa: E402
from eqreg_hf.hub.arguments import default_model_name  # noqa: E402
from eqreg_hf.tasks.classify.recipe import ClassifierArgs, train_classifier  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _accuracy(model, pixels: torch.Tensor, labels: list[int]) -> float:
    with torch.no_grad():
        out = model(pixels)
    logits = getattr(out, "logits", out)
    return float((logits.argmax(-1) == torch.tensor(labels)).float().mean())


def test_saved_timm_classifier_gives_the_same_accuracy_through_timm_and_the_library(tmp_path):
    args = ClassifierArgs(
        model="test_resnet",
        dataset="shapes",
        image_size=33,
        train_samples=16,
        eval_samples=24,
        max_steps=2,
        batch_size=8,
        equiv_eval_batches=1,
        pretrained=False,
        progress=False,
        output_dir=str(tmp_path / "run"),
    )
    result = train_classifier(args, EqRegConfig(weight=0.1))
    folder = result.output_dir

    # timm's own reading of the folder: the size, crop and normalisation of training (not 160 px, crop 0.95)
    model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
    cfg = resolve_data_config({}, model=model)
    assert tuple(cfg["input_size"]) == (3, 33, 33) and cfg["crop_pct"] == 1.0
    timm_tf = create_transform(**cfg)
    library_tf = classification_transform(model, train=False)  # the library's loader, no overrides

    test = load_shapes("test", num_samples=24, size=33, seed=0, max_angle=180.0, progress=False)
    images, labels = [img.convert("RGB") for img in test["img"]], list(test["fine_label"])
    via_timm = torch.stack([timm_tf(img) for img in images])
    via_library = torch.stack(library_tf({"img": images, "fine_label": labels})["pixel_values"])
    assert torch.equal(via_timm, via_library)
    accuracy = _accuracy(model, via_timm, labels)
    assert accuracy == _accuracy(model, via_library, labels)
    assert accuracy == pytest.approx(result.metrics["eval_accuracy"])  # what training measured

    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    assert "name: test-resnet-classifier-eqreg-hf-shapes-eqreg" in card
    assert "name: model\n" not in card


def test_saved_transformers_classifier_carries_its_preprocessing(tmp_path):
    from transformers import AutoImageProcessor, ConvNextConfig

    from eqreg_hf.tasks.classify.networks import create_classifier

    ConvNextConfig(hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1]).save_pretrained(tmp_path / "cfg")
    model = create_classifier(f"hf:{tmp_path / 'cfg'}", 5, pretrained=False, image_size=33).eval()
    trained_with = classification_transform(model, train=False, input_size=33, data_config={"crop_pct": 1.0})
    facts = CardFacts(task="classification", metrics={"accuracy": 0.5}, dataset={"name": "shapes"})
    folder = write_hub_folder(
        model,
        tmp_path / "out" / "model",
        facts,
        eqreg_config=EqRegConfig(),
        preprocessing=trained_with.data_config,
    )
    assert not hasattr(model.config, "eqreg_preprocessing")  # the caller's model is left as it was
    loaded, _ = load_folder(folder)
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((48, 48, 3)) * 255).astype("uint8")) for _ in range(4)]
    expected = torch.stack(trained_with({"img": images, "fine_label": [0] * 4})["pixel_values"])
    library = torch.stack(
        classification_transform(loaded, train=False)({"img": images, "fine_label": [0] * 4})["pixel_values"]
    )
    assert torch.equal(library, expected)
    pil = AutoImageProcessor.from_pretrained(folder, backend="pil")(images, return_tensors="pt")[
        "pixel_values"
    ]
    torch.testing.assert_close(pil, expected, atol=1e-5, rtol=0)  # the same resize, crop and normalisation
    # the default (torchvision) backend resamples with its own kernels: the same settings, a hair apart
    default = AutoImageProcessor.from_pretrained(folder)(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(default, expected, atol=0.05, rtol=0)
    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    assert "name: convnext-classifier-shapes-eqreg" in card  # the folder is named "model": the card is not


@pytest.mark.parametrize(
    "kind, task, dataset, cfg, expected",
    [
        (
            "timm",
            "classification",
            {"name": "CIFAR-100", "id": "uoft-cs/cifar100"},
            {"weight": 0.1},
            "resnet18-classifier-cifar100-eqreg",
        ),
        ("timm", "derain", "Rain100L", {"weight": 0.0}, "resnet18-derainer-rain100l-baseline"),
        ("timm", "classification", None, None, "resnet18-classifier-baseline"),
    ],
)
def test_default_model_name_comes_from_model_and_task(kind, task, dataset, cfg, expected):
    model = timm.create_model("resnet18", pretrained=False)
    assert default_model_name(model, kind, task, dataset, cfg) == expected


def test_bad_preprocessing_is_refused(tmp_path):
    model = timm.create_model("test_resnet", pretrained=False)
    with pytest.raises(ValueError, match=r"input_size=\(33, 33\) must be \(channels, height, width\)"):
        write_hub_folder(
            model,
            tmp_path / "m",
            CardFacts(task="classification", metrics={"accuracy": 0.5}, dataset="x"),
            eqreg_config=EqRegConfig(),
            preprocessing={"input_size": (33, 33)},
        )
    assert not (tmp_path / "m").exists()
