"""eqreg-hf train-classifier end to end on tiny local data; the generated --eqreg.* flags; model helpers."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from eqreg_hf import EqRegConfig
from eqreg_hf.cli.eqreg_args import add_eqreg_arguments, eqreg_config_from_args

pytest.importorskip("timm", reason="the classification command builds timm models")
pytest.importorskip("transformers", reason="the classification command trains with transformers.Trainer")


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------- --eqreg.* flags

FLAG_CASES = [
    ([], {}),
    (["--eqreg.weight", "0.5", "--eqreg.group-order", "2"], {"weight": 0.5, "group_order": 2}),
    (["--eqreg.group_order", "8", "--eqreg.distance", "fro"], {"group_order": 8, "distance": "fro"}),
    (["--eqreg.layers", "layer1,layer3"], {"layers": ["layer1", "layer3"]}),
    (["--eqreg.layers", '["stages.*"]'], {"layers": ["stages.*"]}),
    (["--eqreg.layers", "body.*.conv"], {"layers": "body.*.conv"}),
    (
        ["--eqreg.layer-weights", '{"layer1": 2.0}', "--eqreg.prefix-tokens", "2"],
        {"layer_weights": {"layer1": 2.0}, "prefix_tokens": 2},
    ),
    (
        ["--eqreg.fields", '{"layer4": "trivial"}', "--eqreg.include-identity", "--no-eqreg.rotate-targets"],
        {"fields": {"layer4": "trivial"}, "include_identity": True, "rotate_targets": False},
    ),
]


@pytest.mark.parametrize("argv, expected", FLAG_CASES)
def test_eqreg_flags_build_the_config(argv, expected):
    parser = argparse.ArgumentParser()
    add_eqreg_arguments(parser)
    cfg = eqreg_config_from_args(parser.parse_args(argv))
    assert cfg == EqRegConfig(**expected)


def test_every_config_field_has_a_flag_with_its_help():
    import dataclasses

    parser = argparse.ArgumentParser()
    add_eqreg_arguments(parser, defaults={"weight": 0.25})
    help_text = " ".join(parser.format_help().split())
    for f in dataclasses.fields(EqRegConfig):
        assert f"--eqreg.{f.name.replace('_', '-')}" in help_text
    assert eqreg_config_from_args(parser.parse_args([])).weight == 0.25


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--eqreg.distance", "l2"], "Unknown distance 'l2'"),
        (["--eqreg.group-order", "0"], "group_order=0"),
    ],
)
def test_bad_eqreg_values_are_named(argv, message):
    parser = argparse.ArgumentParser()
    add_eqreg_arguments(parser)
    with pytest.raises(ValueError, match=message):
        eqreg_config_from_args(parser.parse_args(argv))


def test_bad_json_flag_is_an_argparse_error(capsys):
    parser = argparse.ArgumentParser()
    add_eqreg_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--eqreg.layer-weights", "{layer1: 2}"])
    assert "not valid JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- model helpers


def test_unknown_timm_model_names_close_matches():
    from eqreg_hf.tasks.classify.networks import create_classifier

    with pytest.raises(ValueError, match="resnet18"):
        create_classifier("resnet_18", 3, pretrained=False)


def test_offline_pretrained_falls_back_to_random_with_one_message(monkeypatch, caplog):
    from eqreg_hf.tasks.classify import networks as classification

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(classification, "_cached_timm_weights", lambda name: None)
    with caplog.at_level("WARNING"):
        model = classification.create_classifier("resnet18", 7, pretrained=True)
    assert model.num_classes == 7
    lines = [r.getMessage() for r in caplog.records if "random initialisation" in r.getMessage()]
    assert len(lines) == 1 and "resnet18" in lines[0]


def test_transformers_classifier_from_config_json(tmp_path):
    from transformers import ConvNextConfig

    from eqreg_hf.tasks.classify.networks import create_classifier

    ConvNextConfig(hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1]).save_pretrained(tmp_path)
    model = create_classifier(f"hf:{tmp_path}", 4, pretrained=True)
    assert model.config.num_labels == 4
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 4)


@pytest.mark.parametrize(
    "name, size, expected", [("resnet18", 32, 33), ("test_convnext", 33, 32), ("resnet18", 64, 65)]
)
def test_aligned_input_size(name, size, expected):
    import timm

    from eqreg_hf.tasks.classify.recipe import aligned_input_size

    model = timm.create_model(name, pretrained=False)
    assert aligned_input_size(model, size, EqRegConfig()) == expected
    assert model.training  # restored


def test_random_rot90_rotates_images_by_multiples_of_90():
    from eqreg_hf.tasks.classify.recipe import RandomRot90

    img = torch.arange(9.0).view(1, 3, 3)
    aug = RandomRot90(lambda b: {"pixel_values": [img] * 16, "labels": [0] * 16}, seed=0)
    out = aug({})["pixel_values"]
    turns = {next(k for k in range(4) if torch.equal(torch.rot90(img, k, (-2, -1)), o)) for o in out}
    assert len(turns) > 1 and turns <= {0, 1, 2, 3}


# ------------------------------------------------------------------------------------- end to end


def _tiny_cifar(path):
    """A 100-class dataset with the Hub schema, saved with save_to_disk (train + test)."""
    import datasets
    import numpy as np
    from PIL import Image

    from eqreg_hf.data import CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES

    rng = np.random.default_rng(0)
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=list(CIFAR100_FINE_NAMES)),
            "coarse_label": datasets.ClassLabel(names=list(CIFAR100_COARSE_NAMES)),
        }
    )

    def split(n):
        return datasets.Dataset.from_dict(
            {
                "img": [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)],
                "fine_label": [int(i) % 100 for i in range(n)],
                "coarse_label": [int(i) % 20 for i in range(n)],
            },
            features=features,
        )

    datasets.DatasetDict({"train": split(16), "test": split(8)}).save_to_disk(str(path))
    return str(path)


E2E_CASES = [
    # (cli flags, eqreg active)
    (["--model", "test_resnet", "--dataset", "shapes", "--eqreg.weight", "0.1"], True),
    (["--model", "test_resnet", "--dataset", "shapes", "--eqreg.weight", "0", "--rotation-augment"], False),
    (
        [
            "--model",
            "test_convnext",
            "--dataset",
            "cifar100",
            "--label",
            "coarse",
            "--image-size",
            "32",
            "--eqreg.group-order",
            "2",
            "--eqreg.layers",
            "stages.1,stages.3",
        ],
        True,
    ),
    (["--model", "hf:{convnext_config}", "--dataset", "shapes", "--image-size", "32"], True),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, active", E2E_CASES, ids=["shapes-eqreg", "shapes-rotaug", "cifar-local", "transformers-convnext"]
)
def test_train_classifier_end_to_end(tmp_path, capsys, flags, active):
    from eqreg_hf.cli import main
    from eqreg_hf.hub import load_folder

    out = tmp_path / "run"
    if "cifar100" in flags:
        flags = flags + ["--data-path", _tiny_cifar(tmp_path / "cifar")]
    if "hf:{convnext_config}" in flags:
        from transformers import ConvNextConfig

        ConvNextConfig(hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1]).save_pretrained(tmp_path / "cfg")
        flags = [f.format(convnext_config=tmp_path / "cfg") for f in flags]
    argv = [
        "train-classifier",
        *flags,
        "--no-pretrained",
        "--train-samples",
        "16",
        "--eval-samples",
        "8",
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--equiv-eval-batches",
        "1",
        "--no-progress",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "top-1 accuracy" in printed and "equivariance error" in printed

    result = json.loads((out / "results.json").read_text())
    m = result["metrics"]
    assert 0.0 <= m["eval_accuracy"] <= 1.0
    per_tap = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("eval_equiv_error/")}
    assert "output" in per_tap  # invariance of the logits
    taps = [k for k in per_tap if k != "output"]
    assert taps and abs(m["eval_equiv_error"] - sum(per_tap[t] for t in taps) / len(taps)) < 1e-9
    assert bool(result["taps"]) == active
    if active:
        assert sorted(result["taps"]) == sorted(taps)
    if "stages.1,stages.3" in flags:
        assert sorted(taps) == ["stages.1", "stages.3"]
    # The loss was logged with its EQ-Reg part when active.
    logged = [e for e in result["log_history"] if "train_loss" in e or "eqreg_loss" in e]
    assert logged

    # The checkpoint reloads (timm folder + eqreg_config.json) and predicts like the trained model.
    model, cfg = load_folder(result["model_dir"])
    assert cfg == EqRegConfig.from_dict(result["eqreg"])
    assert cfg.active == active
    n_classes = 20 if "coarse" in flags else 10
    size = result["image_size"]
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert getattr(out, "logits", out).shape == (2, n_classes)
    assert os.path.isfile(os.path.join(result["model_dir"], "README.md"))


def test_bad_dataset_is_refused_with_choices(tmp_path, capsys):
    from eqreg_hf.cli import main

    assert main(["train-classifier", "--dataset", "imagenet", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eqreg-hf train-classifier: error:")
    assert "Unknown dataset 'imagenet'" in err and "shapes" in err and "cifar100" in err
    assert not (tmp_path / "x").exists()  # nothing written for a refused run


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dataset="imagenet"), r"Unknown dataset 'imagenet'. Choose between \['shapes', 'cifar100'\]"),
        (dict(label="medium"), r"Unknown label 'medium'. Choose between \['fine', 'coarse'\]"),
        (dict(batch_size=0), "batch_size=0 is not valid: use a positive integer"),
        (dict(logging_steps=0), "logging_steps=0"),
        (dict(train_samples=0), "train_samples=0 .* or None for the default"),
        (dict(learning_rate=-1e-3), "learning_rate=-0.001 is not valid: use a number >= 0"),
        (dict(max_steps=-1, epochs=0), "Nothing to train"),
    ],
)
def test_classifier_args_are_checked_on_construction(kwargs, match):
    from eqreg_hf.tasks.classify.recipe import ClassifierArgs

    with pytest.raises(ValueError, match=match):
        ClassifierArgs(**kwargs)


def test_classifier_and_derain_arguments_share_the_trainer_names():
    """Fields that mean the same as in transformers.TrainingArguments carry its names in both run classes."""
    import dataclasses

    from transformers import TrainingArguments

    from eqreg_hf.tasks.classify.recipe import ClassifierArgs
    from eqreg_hf.tasks.derain.recipe import DerainTrainingArguments

    shared = {"max_steps", "learning_rate", "logging_steps", "output_dir", "seed"}
    trainer = {f.name for f in dataclasses.fields(TrainingArguments)}
    for cls in (ClassifierArgs, DerainTrainingArguments):
        assert shared <= {f.name for f in dataclasses.fields(cls)} and shared <= trainer, cls.__name__


@pytest.mark.parametrize("group", ["D1", "D4", "C1"])
def test_aligned_input_size_works_for_every_group(group):
    import timm

    from eqreg_hf.tasks.classify.recipe import aligned_input_size

    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    size = aligned_input_size(model, 32, EqRegConfig(group=group, weight=0.1))
    assert size is not None and abs(size - 32) <= 8
