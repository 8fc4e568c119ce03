"""`eqreg-hf train-derain` and eqreg_hf.tasks.derain.recipe: flags generated from the dataclasses, a tiny run,
saving."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from eqreg_hf import EqRegConfig
from eqreg_hf.cli import build_parser, main
from eqreg_hf.cli.flags import add_dataclass_arguments, dataclass_from_args
from eqreg_hf.cli.flags import parse_free as _parse_any
from eqreg_hf.tasks.derain.recipe import (
    DEFAULT_DISTANCE,
    DEFAULT_WEIGHT,
    DerainTrainingArguments,
    build_derainer,
    evaluate_derainer,
    resolve_layers,
    train_derainer,
)

TINY_FLAGS = [
    "--channels",
    "8",
    "--num-blocks",
    "1",
    "--synthetic-size",
    "24",
    "--crop-size",
    "12",
    "--batch-size",
    "2",
    "--max-steps",
    "2",
    "--logging-steps",
    "1",
    "--equiv-images",
    "1",
    "--progress",
    "false",
]

EQREG_PREFIX = "eqreg."


def _parse(argv):
    return build_parser().parse_args(["train-derain", *argv])


def test_every_eqreg_field_is_a_flag():
    """The --eqreg.* flags are generated from EqRegConfig, so a new field shows up by itself."""
    args = _parse([])
    for f in dataclasses.fields(EqRegConfig):
        assert hasattr(args, EQREG_PREFIX + f.name), f.name
    for f in dataclasses.fields(DerainTrainingArguments):
        assert hasattr(args, f.name), f.name
    cfg = dataclass_from_args(EqRegConfig, args, EQREG_PREFIX)
    assert (cfg.weight, cfg.distance, cfg.layers) == (DEFAULT_WEIGHT, DEFAULT_DISTANCE, "auto")


@pytest.mark.parametrize(
    "argv,field,expected",
    [
        (["--eqreg.group-order", "2"], "group_order", 2),
        (["--eqreg.weight", "1e-3"], "weight", 1e-3),
        (["--eqreg.layers", "body.0.conv1,body.*.conv2"], "layers", ["body.0.conv1", "body.*.conv2"]),
        (["--eqreg.layers", '["a"]'], "layers", ["a"]),
        (["--eqreg.fields", '{"body.0.*": "trivial"}'], "fields", {"body.0.*": "trivial"}),
        (["--eqreg.include-identity"], "include_identity", True),
        (["--eqreg.rotate-targets", "false"], "rotate_targets", False),
        (["--eqreg.prefix-tokens", "none"], "prefix_tokens", None),
    ],
)
def test_eqreg_flags_parse(argv, field, expected):
    cfg = dataclass_from_args(EqRegConfig, _parse(argv), EQREG_PREFIX)
    assert getattr(cfg, field) == expected


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--eqreg.distance", "l3"], "l3"),
        (["--model", "unet"], "unet"),
    ],
)
def test_bad_values_name_the_choices(argv, match):
    args = _parse(argv)
    with pytest.raises(ValueError, match=match):
        dataclass_from_args(EqRegConfig, args, EQREG_PREFIX)
        dataclass_from_args(DerainTrainingArguments, args)


def test_bad_boolean_is_refused(capsys):
    with pytest.raises(SystemExit):
        _parse(["--rot-aug", "maybe"])
    assert "maybe" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,value", [("3", 3), ("0.5", 0.5), ("null", None), ("a,b", ["a", "b"]), ("auto", "auto")]
)
def test_parse_any(text, value):
    assert _parse_any(text) == value


def test_add_dataclass_arguments_with_prefix_and_defaults():
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, EqRegConfig, "x.", defaults={"weight": 0.5})
    ns = p.parse_args(["--x.distance", "fro"])
    assert getattr(ns, "x.weight") == 0.5 and getattr(ns, "x.distance") == "fro"


@pytest.mark.parametrize(
    "model,kwargs,t,n_taps",
    [
        ("fast", dict(channels=8, num_blocks=2), 4, 4),
        ("rcdnet", dict(num_stages=2, num_maps=4, kernel_size=3, num_features=1, num_resblocks=1), 2, 4),
    ],
)
def test_layers_auto_resolves_to_default_taps(model, kwargs, t, n_taps):
    net = build_derainer(model, **kwargs)
    cfg = resolve_layers(net, EqRegConfig(layers="auto", group_order=t))
    assert cfg.layers == net.eqreg_layers(t) and len(cfg.layers) == n_taps


def test_old_layers_model_means_auto_with_a_future_warning():
    net = build_derainer("fast", channels=8, num_blocks=2)
    with pytest.warns(FutureWarning, match='layers="auto"'):
        cfg = resolve_layers(net, EqRegConfig(layers="model", group_order=2))
    assert cfg.layers == resolve_layers(net, EqRegConfig(layers="auto", group_order=2)).layers


def test_auto_gives_the_demo_its_twelve_taps():
    """The FastDerainer's default taps at C2 (the demo's setting): both convs of its 6 blocks."""
    from eqreg_hf.tasks.derain.demo import demo_eqreg_config

    net = build_derainer("fast", **DerainTrainingArguments().model_kwargs())
    cfg = resolve_layers(net, demo_eqreg_config())
    assert cfg.layers == [f"body.{i}.conv{j}" for i in range(6) for j in (1, 2)]


def test_a_network_without_own_taps_keeps_auto():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    assert resolve_layers(net, EqRegConfig(layers="auto")).layers == "auto"


@pytest.mark.parametrize(
    "old,new,field,value",
    [
        ("--steps", "--max-steps", "max_steps", 7),
        ("--lr", "--learning-rate", "learning_rate", 0.5),
        ("--log-every", "--logging-steps", "logging_steps", 3),
    ],
)
def test_old_flags_still_parse_and_are_named_in_help(old, new, field, value):
    assert getattr(_parse([old, str(value)]), field) == value == getattr(_parse([new, str(value)]), field)
    from eqreg_hf.cli.train_derain import register

    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    help_text = " ".join(sub.choices["train-derain"].format_help().split())
    assert f"Old spelling: {old}." in help_text and f"{old} " not in help_text.split("options:")[0]


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="Choose between"):
        build_derainer("unet")


def test_evaluate_reports_y_and_rgb_metrics():
    torch.manual_seed(0)
    net = build_derainer("fast", channels=8, num_blocks=1)
    clean = torch.rand(3, 15, 18)
    pairs = [((clean + 0.1).clamp(0, 1), clean), (clean.flip(-1), clean.flip(-1))]
    metrics, report = evaluate_derainer(net, pairs, equiv_images=1)
    assert set(metrics) >= {
        "psnr_y",
        "ssim_y",
        "psnr_rgb",
        "ssim_rgb",
        "equivariance_error",
        "output_equivariance_error",
        "rainy_psnr_y",
    }
    assert metrics["rainy_psnr_y"] == float("inf")  # the second "rainy" image is its clean target
    assert sorted(report) == sorted(net.eqreg_layers(4)) and metrics["equivariance_error"] == pytest.approx(
        report.mean
    )
    assert net.training  # restored


@pytest.mark.slow
def test_train_derain_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train-derain",
            *TINY_FLAGS,
            "--output-dir",
            str(out),
            "--eqreg.weight",
            "0.1",
            "--eqreg.group-order",
            "2",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PSNR-Y" in printed and "equivariance error" in printed
    for name in ("config.json", "model.safetensors", "eqreg_config.json", "README.md", "training_log.json"):
        assert (out / name).is_file(), name
    cfg = EqRegConfig.from_pretrained(out)
    assert cfg.group_order == 2 and cfg.weight == 0.1 and cfg.layers == ["body.0.conv1", "body.0.conv2"]
    log = json.loads((out / "training_log.json").read_text())
    assert len(log["logs"]) == 2 and log["logs"][-1]["eqreg_loss"] > 0
    from eqreg_hf.tasks.derain.networks import FastDerainer

    net = FastDerainer.from_pretrained(out)
    assert net.channels == 8
    card = (out / "README.md").read_text()
    assert "PSNR" in card and "`max_steps`" in card and "`learning_rate`" in card


def test_train_derainer_plain_and_eqreg_share_the_evaluation_taps():
    args = DerainTrainingArguments(
        channels=8,
        num_blocks=1,
        synthetic_size=24,
        crop_size=12,
        batch_size=2,
        max_steps=1,
        equiv_images=1,
        progress=False,
    )
    plain = train_derainer(args, None)
    eq = train_derainer(args, EqRegConfig(layers="auto", weight=0.1, distance="mse"))
    assert sorted(plain.report) == sorted(eq.report) == ["body.0.conv1", "body.0.conv2"]
    assert plain.history.logs[-1]["eqreg_loss"] == 0 and eq.history.logs[-1]["eqreg_loss"] > 0
    assert plain.output_dir is None


def test_default_blocks_give_the_strict_and_plain_networks_the_same_budget():
    from eqreg_hf.tasks.derain.recipe import DerainTrainingArguments, build_derainer

    sizes = {}
    for model in ("fast", "strict-c4"):
        args = DerainTrainingArguments(model=model)
        net = build_derainer(model, **args.model_kwargs())
        sizes[model] = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert sizes["fast"] == 112_739
    assert abs(sizes["strict-c4"] - sizes["fast"]) / sizes["fast"] < 0.02
    assert build_derainer("fast", **DerainTrainingArguments(num_blocks=2).model_kwargs()).body.__len__() == 2


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], False),
        (["--rot-aug"], True),
        (["--rot-aug", "yes"], True),
        (["--rot-aug", "false"], False),
        (["--no-rot-aug"], False),
        (["--rot-aug", "--no-rot-aug"], False),
    ],
)
def test_switches_have_one_spelling_in_every_command(argv, expected):
    # train-derain, train-classifier and the --eqreg.* flags share one flag generator
    from eqreg_hf.cli.train_classifier import register as register_classifier

    assert _parse(argv).rot_aug is expected
    sub = argparse.ArgumentParser().add_subparsers()
    classifier = register_classifier(sub)
    flag = [a.replace("rot-aug", "rotation-augment") for a in argv]
    assert classifier.parse_args(flag).rotation_augment is expected
    eq = [a.replace("rot-aug", "eqreg.include-identity") for a in argv]
    assert getattr(_parse(eq), "eqreg.include_identity") is expected


def test_negated_switch_takes_no_value(capsys):
    with pytest.raises(SystemExit):
        _parse(["--no-rot-aug", "true"])
    assert "takes no value" in capsys.readouterr().err


@pytest.mark.parametrize("weight", [0.0, 0.1])
def test_rcdnet_trains_with_its_stage_loss(tmp_path, weight, one_thread):
    rcd = [
        "--model",
        "rcdnet",
        "--num-stages",
        "2",
        "--num-maps",
        "4",
        "--kernel-size",
        "3",
        "--num-features",
        "1",
        "--num-resblocks",
        "1",
        "--synthetic-size",
        "24",
        "--crop-size",
        "12",
        "--batch-size",
        "2",
        "--max-steps",
        "2",
        "--logging-steps",
        "1",
        "--equiv-images",
        "1",
        "--no-progress",
        "--eqreg.group-order",
        "2",
        "--eqreg.weight",
        str(weight),
    ]
    logs = {}
    for stage in (False, True):
        out = tmp_path / f"stage{stage}"
        assert main(["train-derain", *rcd, "--stage-loss", str(stage).lower(), "--output-dir", str(out)]) == 0
        logs[stage] = json.loads((out / "training_log.json").read_text())["logs"]
        from eqreg_hf.tasks.derain.networks import RCDNet

        assert RCDNet.from_pretrained(out).stage_outputs is False  # not saved as a training switch
    # same seed, same first batch: the stage loss adds the intermediate stages and the rain layers
    assert logs[True][0]["task_loss"] > logs[False][0]["task_loss"]
    assert (logs[True][-1]["eqreg_loss"] > 0) is (weight > 0)


def test_stage_loss_needs_rcdnet():
    with pytest.raises(ValueError, match="model='rcdnet'"):
        DerainTrainingArguments(model="fast", stage_loss=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(max_steps=0), "max_steps=0 is not valid: use a positive integer"),
        (dict(logging_steps=-1), "logging_steps=-1"),
        (dict(num_blocks=0), "num_blocks=0 .* or None for the default"),
        (dict(rot_aug_order=3), r"Unknown rot_aug_order 3. Choose between \[2, 4\]"),
        (dict(model="unet"), r"Unknown model 'unet'. Choose between \['fast', 'rcdnet', 'strict-c4'\]"),
    ],
)
def test_bad_arguments_are_refused_on_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DerainTrainingArguments(**kwargs)


@pytest.mark.parametrize(
    "name", ["eqreg_hf.tasks.runner", "eqreg_hf.tasks.derain.evaluate", "eqreg_hf.tasks.validation"]
)
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch})
    assert result.failed == 0 and result.attempted > 0


def test_train_derain_with_the_automatic_weight(tmp_path, capsys):
    out = tmp_path / "auto"
    rc = main(
        [
            "train-derain",
            *TINY_FLAGS,
            "--output-dir",
            str(out),
            "--eqreg.weight",
            "auto",
            "--eqreg.target-share",
            "0.1",
            "--eqreg.auto-warmup",
            "0",
        ]
    )
    assert rc == 0
    cfg = EqRegConfig.from_pretrained(out)
    assert cfg.weight == "auto" and cfg.target_share == 0.1
    log = json.loads((out / "training_log.json").read_text())
    final = log["logs"][-1]["eqreg_weight"]
    assert log["logs"][0]["eqreg_weight"] == 0.0 and final > 0
    card = (out / "README.md").read_text()
    assert "auto (share 0.1)" in card and "final_eqreg_weight" in card and f"{final:.4g}"[:4] in card


def test_a_dihedral_run_is_evaluated_under_its_group():
    """A D4 run's held-out equivariance error covers the mirror images too (the report names D4)."""
    args = DerainTrainingArguments(
        channels=8,
        num_blocks=1,
        synthetic_size=24,
        crop_size=12,
        batch_size=2,
        max_steps=1,
        equiv_images=1,
        progress=False,
    )
    result = train_derainer(args, EqRegConfig(layers="auto", group="D4", weight=0.1, distance="mse"))
    assert result.report.group == "D4" and len(result.report.ks) == 7
    assert sorted(result.report) == ["body.0.conv1", "body.0.conv2"]
    plain = train_derainer(args, None)
    assert plain.report.group == "C4"
