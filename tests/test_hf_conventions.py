"""The training commands' Hugging Face conventions (issue 14, item 1): --config, --report-to, --push-to-hub,
--save-steps / --resume-from-checkpoint, for train-derain (the Accelerate loop) and train-classifier (the
Trainer).

TensorBoard and trackio are tested for real (their files are read back); W&B with its client mocked.
"""

from __future__ import annotations

import glob
import importlib.machinery
import json
import os
import subprocess
import sys
import types
from unittest import mock

import pytest
import torch

from eqreg_hf.cli import build_parser, main
from eqreg_hf.cli.flags import parse_args_with_config

TINY_DERAIN = [
    "train-derain",
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
    "4",
    "--logging-steps",
    "1",
    "--equiv-images",
    "1",
    "--eval-max-images",
    "2",
    "--progress",
    "false",
    "--eqreg.weight",
    "1e-3",
    "--eqreg.group-order",
    "2",
]
TINY_CLASSIFIER = [
    "train-classifier",
    "--model",
    "test_resnet",
    "--dataset",
    "shapes",
    "--no-pretrained",
    "--train-samples",
    "16",
    "--eval-samples",
    "8",
    "--batch-size",
    "8",
    "--equiv-eval-batches",
    "1",
    "--no-progress",
    "--logging-steps",
    "1",
    "--eqreg.weight",
    "0.1",
]
DERAIN_TAPS = ["body.0.conv1", "body.0.conv2"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _tensorboard(folder) -> tuple[dict[str, list[float]], set[str]]:
    """{scalar tag: values} and the image tags of every event file under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[float]] = {}
    images: set[str] = set()
    files = glob.glob(os.path.join(folder, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no TensorBoard event file under {folder}"
    for path in files:
        acc = EventAccumulator(path, size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
        images.update(acc.Tags()["images"])
    return scalars, images


# ---------------------------------------------------------------------------- --config FILE
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_holds_any_flag_and_the_command_line_wins(tmp_path, suffix):
    values = {
        "max_steps": 7,
        "learning-rate": 0.002,
        "progress": False,
        "eqreg": {
            "weight": 0.05,
            "group_order": 2,
            "layers": ["body.0.conv1"],
            "fields": {"body.0.conv1": "regular"},
        },
        "--logging-steps": 3,
    }
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        import yaml

        path.write_text(yaml.safe_dump(values))
    args = parse_args_with_config(build_parser(), ["train-derain", "--config", str(path), "--max-steps", "9"])
    assert args.max_steps == 9  # the command line wins
    assert args.learning_rate == 0.002 and args.progress is False and args.logging_steps == 3
    assert getattr(args, "eqreg.weight") == 0.05 and getattr(args, "eqreg.group_order") == 2
    assert getattr(args, "eqreg.layers") == ["body.0.conv1"]
    assert getattr(args, "eqreg.fields") == {"body.0.conv1": "regular"}
    # the flag order does not matter: the file is read first wherever --config stands
    later = parse_args_with_config(
        build_parser(), ["train-derain", "--max-steps", "9", "--config", str(path)]
    )
    assert later.max_steps == 9
    plain = parse_args_with_config(build_parser(), ["train-derain", "--config", str(path)])
    assert plain.max_steps == 7


def test_every_command_takes_a_config_file(tmp_path):
    cfg = tmp_path / "push.yaml"
    cfg.write_text("private: true\ncommit_message: from the file\n")
    args = parse_args_with_config(build_parser(), ["push", "--config", str(cfg), "some/folder", "me/model"])
    assert args.private is True and args.commit_message == "from the file" and args.repo_id == "me/model"
    for command in ("demo", "train-derain", "train-classifier", "measure", "push"):
        assert "--config" in build_parser()._subparsers._group_actions[0].choices[command].format_help()


def test_yaml_scientific_notation_and_switches(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eqreg:\n  weight: 1e-3\nhflip: true\nrot_aug: false\n")  # YAML reads 1e-3 as a string
    args = parse_args_with_config(build_parser(), ["train-derain", "--config", str(cfg), "--rot-aug"])
    assert getattr(args, "eqreg.weight") == 1e-3 and args.hflip is True and args.rot_aug is True


@pytest.mark.parametrize(
    "text, name, match",
    [
        ("bogus: 1\n", "c.yaml", "unknown key 'bogus'.*max_steps"),
        ("max_steps: [1\n", "c.yaml", "does not parse"),
        ("- 1\n- 2\n", "c.yaml", "not a mapping"),
        ('{"max_steps": }', "c.json", "does not parse"),
        ("max_steps: many\n", "c.yaml", "max.steps.*many"),
        ("no_progress: true\n", "c.yaml", "unknown key 'no_progress'"),
        (None, "missing.yaml", "no such file"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, name, match):
    import re

    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["train-derain", "--config", str(path), "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = _one_line_error(capsys)
    assert err.startswith("eqreg-hf train-derain: error:") and re.search(match, err), err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- flag checks before any work
@pytest.mark.parametrize(
    "flags, match",
    [
        (["--report-to", "mlflow"], "report_to='mlflow'.*tensorboard"),
        (["--report-to", "none,tensorboard"], "report_to"),
        (["--push-to-hub"], "hub_model_id is not set"),
        (["--hub-model-id", "me/m"], "push_to_hub is off"),
        (["--hub-private"], "push_to_hub is off"),
        (["--push-to-hub", "--hub-model-id", "a/b/c"], "'a/b/c' is not valid"),
        (["--save-steps", "0"], "save_steps=0"),
        (["--resume-from-checkpoint", "latest"], "found no checkpoint-<step>"),
        (["--resume-from-checkpoint", "no/such/folder"], "is not a (Trainer )?checkpoint"),
    ],
)
@pytest.mark.parametrize("command", ["train-derain", "train-classifier"])
def test_bad_convention_flags_stop_before_training(tmp_path, capsys, monkeypatch, command, flags, match):
    import re

    def no_data(*a, **k):  # the data is never loaded: the error comes first
        raise AssertionError("loaded data before the flags were checked")

    monkeypatch.setattr("eqreg_hf.data.rain.load_rain", no_data)
    monkeypatch.setattr("eqreg_hf.data.shapes.load_shapes", no_data)
    base = TINY_DERAIN if command == "train-derain" else TINY_CLASSIFIER
    assert main([*base, "--output-dir", str(tmp_path / "out"), *flags]) == 2
    err = _one_line_error(capsys)
    assert re.search(match, err), err


def test_tracker_that_is_not_installed_is_named(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    assert main([*TINY_DERAIN, "--output-dir", str(tmp_path / "out"), "--report-to", "wandb"]) == 2
    assert "pip install wandb" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------- TensorBoard and trackio, for real
TRACKIO_READ = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
print(json.dumps(SQLiteStorage.get_logs(sys.argv[1], sys.argv[2]), default=str))
"""


def _run_with_trackers(tmp_path, argv):
    """Run the command with --report-to tensorboard,trackio in a fresh process whose trackio writes under
    tmp_path (trackio reads its folder when imported); return trackio's logged rows."""
    env = dict(os.environ, TRACKIO_DIR=str(tmp_path / "trackio"), GRADIO_ANALYTICS_ENABLED="False")
    run = subprocess.run(
        [sys.executable, "-m", "eqreg_hf", *argv, "--report-to", "tensorboard,trackio", "--run-name", "t1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert os.path.isfile(tmp_path / "trackio" / "eqreg-hf.db")
    read = subprocess.run(
        [sys.executable, "-c", TRACKIO_READ, "eqreg-hf", "t1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr[-2000:]
    return json.loads(read.stdout)


def test_derain_tensorboard_and_trackio(tmp_path):
    out = tmp_path / "model"
    rows = _run_with_trackers(tmp_path, [*TINY_DERAIN, "--output-dir", str(out), "--eval-every", "2"])
    # TensorBoard: event files beside the Hub folder (<output_dir>-run/runs/<run name>)
    scalars, images = _tensorboard(tmp_path / "model-run" / "runs" / "t1")
    assert len(scalars["train/eqreg_loss"]) == 4 and all(v > 0 for v in scalars["train/eqreg_loss"])
    for tag in ("train/task_loss", "eval/psnr_y", "eval/equivariance_error"):
        assert tag in scalars, sorted(scalars)
    for tap in DERAIN_TAPS:  # the per-layer error at each evaluation (steps 2 and 4)
        assert len(scalars[f"eval/equiv_error/{tap}"]) == 2
    assert scalars["train/eqreg_weight"] == pytest.approx([1e-3] * 4)
    assert images == {"eval/examples", "eval/equivariance_per_layer"}
    assert not [
        p for p in os.listdir(out) if p.startswith(("runs", "checkpoint"))
    ]  # the Hub folder stays clean
    # trackio: the local run holds the same values and the images as files
    keys = {k for row in rows for k in row}
    assert len([r for r in rows if "train/eqreg_loss" in r]) == 4 and "train/eqreg_weight" in keys
    assert {f"eval/equiv_error/{tap}" for tap in DERAIN_TAPS} <= keys
    picture = next(r["eval/examples"] for r in rows if "eval/examples" in r)
    assert picture["_type"] == "trackio.image"
    assert os.path.isfile(tmp_path / "trackio" / "media" / picture["file_path"])


@pytest.mark.slow
def test_classifier_tensorboard_and_trackio(tmp_path):
    out = tmp_path / "run"
    rows = _run_with_trackers(
        tmp_path, [*TINY_CLASSIFIER, "--max-steps", "2", "--eval-steps", "1", "--output-dir", str(out)]
    )
    scalars, images = _tensorboard(out / "runs")
    assert (
        len(scalars["train/eqreg_loss"]) == 2
        and "train/task_loss" in scalars
        and "train/eqreg_weight" in scalars
    )
    taps = json.loads((out / "results.json").read_text())["taps"]
    # at each evaluation: steps 1 and 2 during training, then the final one
    assert taps and all(len(scalars[f"eval/equiv_error/{tap}"]) == 3 for tap in taps)
    assert "eval/equiv_error" in scalars and "eval/accuracy" in scalars
    assert images == {"eval/equivariance_per_layer"}
    keys = {k for row in rows for k in row}
    assert {"train/eqreg_loss", "train/task_loss", "eval/equiv_error", "eval/equivariance_per_layer"} <= keys
    assert {f"eval/equiv_error/{tap}" for tap in taps} <= keys


# ---------------------------------------------------------------------------- W&B, client mocked
@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` module that records every call (nothing is sent anywhere)."""
    fake = mock.MagicMock(name="wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.__version__ = "0.31.0"
    fake.run = None

    def init(**kwargs):  # like wandb.init: the run becomes wandb.run
        fake.run = mock.MagicMock(name="run")
        return fake.init.return_value

    fake.init.side_effect = init
    fake.Image = lambda array, **kw: types.SimpleNamespace(
        kind="wandb.Image", shape=getattr(array, "shape", None)
    )
    config_util = types.ModuleType("wandb.sdk.lib.config_util")
    config_util.ConfigError = type("ConfigError", (Exception,), {})
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for name in ("wandb.sdk", "wandb.sdk.lib"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "wandb.sdk.lib.config_util", config_util)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_WATCH", "false")
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "is_wandb_available", lambda: True)
    return fake


def test_derain_wandb(tmp_path, fake_wandb):
    assert (
        main(
            [
                *TINY_DERAIN,
                "--output-dir",
                str(tmp_path / "model"),
                "--report-to",
                "wandb",
                "--run-name",
                "w1",
            ]
        )
        == 0
    )
    init = fake_wandb.init.call_args
    assert init.kwargs["project"] == "eqreg-hf" and init.kwargs["name"] == "w1"
    run = fake_wandb.init.return_value
    logged = [c.args[0] for c in run.log.call_args_list]
    assert sum("train/eqreg_loss" in d for d in logged) == 4
    final = {k: v for d in logged for k, v in d.items()}
    assert {f"eval/equiv_error/{tap}" for tap in DERAIN_TAPS} <= set(final)
    assert (
        final["eval/examples"].kind == "wandb.Image"
        and final["eval/equivariance_per_layer"].kind == "wandb.Image"
    )
    fake_wandb.config.update.assert_called()  # the run's settings
    run.finish.assert_called_once()


# ---------------------------------------------------------------------------- --push-to-hub, HTTP mocked
@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Every HfApi call that would reach the Hub is recorded; nothing leaves the machine."""
    import huggingface_hub
    from huggingface_hub import HfApi

    calls = []

    def record(name, result=None):
        def fn(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return result

        return fn

    commit = types.SimpleNamespace(commit_url="https://huggingface.co/me/derain/commit/abc")
    for name in ("create_repo", "create_branch", "upload_folder", "upload_file"):
        monkeypatch.setattr(HfApi, name, record(name))
    monkeypatch.setattr(HfApi, "create_commit", record("create_commit", commit))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    return calls


@pytest.mark.parametrize("private", [False, True])
def test_derain_push_to_hub_one_commit(tmp_path, hub, capsys, private):
    out = tmp_path / "model"
    flags = ["--push-to-hub", "--hub-model-id", "me/derain"] + (["--hub-private"] if private else [])
    assert main([*TINY_DERAIN, "--output-dir", str(out), *flags]) == 0
    assert [c[0] for c in hub] == ["create_repo", "create_commit"]
    assert hub[0][1] == ("me/derain",) and hub[0][2]["private"] is private
    commit = hub[1][2]
    assert commit["repo_id"] == "me/derain"
    assert {op.path_in_repo for op in commit["operations"]} == set(os.listdir(out))
    assert "pushed to https://huggingface.co/me/derain" in capsys.readouterr().out


@pytest.mark.slow
def test_classifier_wandb_and_push_to_hub(tmp_path, hub, fake_wandb):
    out = tmp_path / "run"
    assert (
        main(
            [
                *TINY_CLASSIFIER,
                "--max-steps",
                "2",
                "--output-dir",
                str(out),
                "--report-to",
                "wandb",
                "--push-to-hub",
                "--hub-model-id",
                "me/clf",
            ]
        )
        == 0
    )
    logged = [c.args[0] for c in fake_wandb.log.call_args_list]
    keys = {k for d in logged for k in d}
    assert {"train/eqreg_loss", "train/task_loss", "eval/equiv_error", "eval/equivariance_per_layer"} <= keys
    assert [c[0] for c in hub] == ["create_repo", "create_commit"] and hub[1][2]["repo_id"] == "me/clf"
    assert {op.path_in_repo for op in hub[1][2]["operations"]} == set(os.listdir(out / "model"))
    assert json.loads((out / "results.json").read_text())["hub_url"].endswith("/commit/abc")


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
def test_nothing_is_pushed_when_training_fails(tmp_path, hub, monkeypatch, failure):
    import eqreg_hf.tasks.engines as engines

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(engines, "train_loop", broken)
    with pytest.raises(type(failure)):
        main(
            [
                *TINY_DERAIN,
                "--output-dir",
                str(tmp_path / "model"),
                "--push-to-hub",
                "--hub-model-id",
                "me/derain",
            ]
        )
    assert hub == []
    assert not (tmp_path / "model").exists()


def test_nothing_is_trained_without_a_token(tmp_path, hub, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert (
        main(
            [
                *TINY_DERAIN,
                "--output-dir",
                str(tmp_path / "model"),
                "--push-to-hub",
                "--hub-model-id",
                "me/derain",
            ]
        )
        == 2
    )
    err = _one_line_error(capsys)
    assert "--push-to-hub" in err and "hf auth login" in err
    assert hub == [] and not (tmp_path / "model").exists()


def test_offline_push_is_refused_before_training(tmp_path, hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (
        main(
            [
                *TINY_DERAIN,
                "--output-dir",
                str(tmp_path / "model"),
                "--push-to-hub",
                "--hub-model-id",
                "me/derain",
            ]
        )
        == 2
    )
    assert "HF_HUB_OFFLINE" in _one_line_error(capsys)
    assert hub == [] and not (tmp_path / "model").exists()


def test_hub_refusal_after_training_is_exit_1_and_the_model_stays(tmp_path, hub, capsys, monkeypatch):
    from huggingface_hub import HfApi

    def refuse(self, *args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    out = tmp_path / "model"
    assert main([*TINY_DERAIN, "--output-dir", str(out), "--push-to-hub", "--hub-model-id", "me/derain"]) == 1
    err = _one_line_error(capsys)
    assert "Could not reach the Hub" in err and f"eqreg-hf push {out} me/derain" in err
    assert (out / "model.safetensors").is_file()


# ------------------------------------------------------------------ --save-steps / --resume-from-checkpoint
def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_derain_resume_repeats_the_uninterrupted_run(tmp_path, capsys):
    import shutil

    out = tmp_path / "model"
    assert main([*TINY_DERAIN, "--output-dir", str(out), "--save-steps", "2"]) == 0
    run_dir = tmp_path / "model-run"
    assert sorted(os.listdir(run_dir)) == ["checkpoint-2", "checkpoint-4"]
    uninterrupted = _weights(out / "model.safetensors")
    shutil.rmtree(run_dir / "checkpoint-4")  # as if the run had stopped after step 3
    capsys.readouterr()
    assert main([*TINY_DERAIN, "--output-dir", str(out), "--resume-from-checkpoint", "latest"]) == 0
    resumed = _weights(out / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    log = json.loads((out / "training_log.json").read_text())["logs"]
    assert [entry["step"] for entry in log] == [3, 4]  # only the steps after the checkpoint were trained


def test_derain_resume_past_the_end_is_refused(tmp_path, capsys):
    out = tmp_path / "model"
    assert main([*TINY_DERAIN, "--max-steps", "2", "--output-dir", str(out), "--save-steps", "2"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                *TINY_DERAIN,
                "--max-steps",
                "2",
                "--output-dir",
                str(out),
                "--resume-from-checkpoint",
                str(tmp_path / "model-run" / "checkpoint-2"),
            ]
        )
        == 2
    )
    assert "raise max_steps" in _one_line_error(capsys)


@pytest.mark.slow
def test_classifier_resume_repeats_the_uninterrupted_run(tmp_path):
    import shutil

    out = tmp_path / "run"
    assert main([*TINY_CLASSIFIER, "--max-steps", "4", "--output-dir", str(out), "--save-steps", "2"]) == 0
    uninterrupted = _weights(out / "model" / "model.safetensors")
    shutil.rmtree(out / "checkpoint-4")
    assert (
        main(
            [
                *TINY_CLASSIFIER,
                "--max-steps",
                "4",
                "--output-dir",
                str(out),
                "--resume-from-checkpoint",
                "latest",
            ]
        )
        == 0
    )
    resumed = _weights(out / "model" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys() and all(
        torch.equal(resumed[k], uninterrupted[k]) for k in resumed
    )
    history = json.loads((out / "results.json").read_text())[
        "log_history"
    ]  # the checkpoint's, then steps 3 and 4
    assert [e["step"] for e in history if "eqreg_loss" in e] == [1, 2, 3, 4]
