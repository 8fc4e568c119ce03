"""Issue 13, the command line: every user error is exit code 2 and one line on stderr, before any work.

Two parts: a fuzz over every typed flag of every command (a value of the wrong kind for its type), and
hand-written bad values whose type is right but whose meaning is not (a negative size, a folder without the
split, a corrupt image, an output directory that is a file, a non-JSON eqreg_config.json, ...).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

from eqreg_hf import EqRegConfig
from eqreg_hf.cli import build_parser, main
from eqreg_hf.cli.flags import _Switch
from eqreg_hf.hub import CardFacts, write_hub_folder
from eqreg_hf.tasks.derain.recipe import build_derainer

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors exit through SystemExit
        code = exit_.code
    return code, capsys.readouterr().err


def _assert_one_line(code: int, err: str, argv: list[str]) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("eqreg-hf"), (argv, err)
    assert "Traceback" not in err


# ----------------------------------------------------------------------------------- the fuzz over the flags


def _wrong_values(action: argparse.Action) -> list[str]:
    """Values no flag of this type accepts."""
    if isinstance(action, _Switch):
        return ["maybe"]
    name = getattr(action.type, "__name__", "")
    if name in ("int", "int or none", "positive int"):
        return ["abc", "1.5"] + (["0", "-2"] if name == "positive int" else [])
    if name in ("float", "float or none"):
        return ["abc", "nan", "inf", "-inf"]
    if name in ("parse_free", "_layers_arg"):
        return ['{"unclosed', "nan"] if name == "parse_free" else ['["unclosed']
    return []


def _flag_cases() -> list[tuple[str, str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cases = []
    for command, sp in sub.choices.items():
        for action in sp._actions:
            if action.option_strings and action.option_strings[0].startswith("--"):
                cases += [(command, action.option_strings[0], v) for v in _wrong_values(action)]
    return cases


FLAG_CASES = _flag_cases()


def test_the_fuzz_covers_every_command_and_type():
    commands = {c for c, _, _ in FLAG_CASES}
    assert {"demo", "train-derain", "train-classifier", "measure"} <= commands
    assert len(FLAG_CASES) > 150


@pytest.mark.parametrize("command, flag, value", FLAG_CASES, ids=[f"{c} {f} {v}" for c, f, v in FLAG_CASES])
def test_every_flag_refuses_a_value_of_the_wrong_kind(command, flag, value, capsys, tmp_path):
    positional = {"measure": ["fast"], "push": [str(tmp_path), "me/m"]}.get(command, [])
    argv = [
        command,
        *positional,
        flag,
        value,
        "--output-dir" if command != "measure" else "--json",
        str(tmp_path / "out"),
    ]
    if command == "push":
        argv = argv[:-2]
    code, err = _run(argv, capsys)
    _assert_one_line(code, err, argv)
    assert flag in err or "argument" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------- values that mean nothing


def _png(path, size=(16, 16), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")).save(path)
    return path


def _rain_folder(root, n=2):
    for i in range(1, n + 1):
        _png(root / f"rain-{i}.png", seed=i)
        _png(root / f"norain-{i}.png", seed=i + 10)
    return root


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def files(tmp_path):
    """Inputs for the bad cases: a plain file, a corrupt or a truncated image, rain folders, a bad Hub dir."""
    f = {"file": tmp_path / "a-file.txt", "garbage": tmp_path / "garbage.png"}
    f["file"].write_text("not a folder")
    f["garbage"].write_bytes(b"this is not an image")
    f["truncated"] = _truncate(_png(tmp_path / "cut.png", size=(64, 64)))
    f["only_train"] = _rain_folder(tmp_path / "only-train" / "train").parent
    both = tmp_path / "corrupt-rain"
    _rain_folder(both / "train")
    _rain_folder(both / "test")
    _truncate(both / "test" / "rain-2.png")
    f["corrupt_rain"] = both
    hub = write_hub_folder(
        build_derainer("fast", channels=4, num_blocks=1),
        tmp_path / "hub",
        CardFacts(task="derain", metrics={"psnr": 30.0}, dataset="synthetic"),
        eqreg_config=EqRegConfig(),
    )
    with open(os.path.join(hub, "eqreg_config.json"), "w") as fh:
        fh.write("weight: 0.1\n")  # YAML, not JSON
    f["bad_hub"] = hub
    f["dir"] = tmp_path / "a-dir"
    f["dir"].mkdir()
    return f


TINY = [
    "--channels",
    "4",
    "--num-blocks",
    "1",
    "--max-steps",
    "1",
    "--crop-size",
    "8",
    "--batch-size",
    "1",
    "--synthetic-size",
    "32",
    "--no-progress",
]
SEMANTIC_CASES = [
    # the examples
    (["train-derain", *TINY, "--output-dir", "{file}"], "is an existing file"),
    (["train-derain", *TINY, "--dataset", "{corrupt_rain}", "--output-dir", "{out}"], "cannot be read"),
    (["measure", "fast", "--size", "16", "--image", "{garbage}"], "cannot be read"),
    (["measure", "fast", "--size", "16", "--image", "{truncated}"], "truncated"),
    (["measure", "{bad_hub}"], "is not valid JSON"),
    (["push", "{bad_hub}", "me/m"], "does not parse"),
    (["measure", "test_vit", "--no-pretrained", "--size", "8"], "patch size"),
    # more of each kind
    (["train-derain", *TINY, "--dataset", "{only_train}", "--output-dir", "{out}"], "No 'test' split"),
    (["train-derain", *TINY, "--eval-split", "train", "--output-dir", "{out}"], "both 'train'"),
    (["train-derain", *TINY, "--channels", "0"], "channels=0"),
    (["train-derain", *TINY, "--num-stages", "-1"], "num_stages=-1"),
    (["train-derain", *TINY, "--eval-every", "0"], "eval_steps=0"),
    (["train-derain", *TINY, "--learning-rate", "-1"], "learning_rate=-1"),
    (["train-derain", *TINY, "--mixed-precision", "fp8"], "mixed_precision"),
    (["train-derain", *TINY, "--seed", "-1"], "seed=-1"),
    (["train-derain", *TINY, "--model", "unet"], "Unknown model"),
    (["train-derain", *TINY, "--eqreg.weight", "-1"], "weight=-1"),
    (["train-derain", *TINY, "--eqreg.weight", '"0.1"'], "weight='0.1'"),
    (["train-derain", *TINY, "--eqreg.rotated-fraction", "0"], "rotated_fraction=0"),
    (["train-derain", *TINY, "--eqreg.layer-weights", '{"body.0.conv1": -1}'], "layer_weights"),
    (
        ["train-derain", *TINY, "--eqreg.layer-weights", '{"nope.*": 2}', "--output-dir", "{out}"],
        "matches none",
    ),
    (["train-derain", *TINY, "--eqreg.layers", "nope"], "No module named 'nope'"),
    (["train-derain", *TINY, "--eqreg.fields", '{"body.0.conv1": "irregular"}'], "irregular"),
    (["train-derain", *TINY, "--eqreg.group-order", "0"], "group_order=0"),
    (["train-derain", *TINY, "--eqreg.seed", "-5"], "seed=-5"),
    (["train-classifier", "--output-dir", "{file}"], "is an existing file"),
    (["train-classifier", "--output-dir", "{file}/below"], "cannot be created"),
    (["train-classifier", "--dataset", "imagenet"], "Unknown dataset"),
    (["train-classifier", "--label", "medium"], "Unknown label"),
    (["train-classifier", "--batch-size", "0"], "batch_size=0"),
    (["train-classifier", "--shapes-train-angle", "200"], "shapes_train_angle=200"),
    (["train-classifier", "--model-kwargs", "3"], "model_kwargs=3"),
    (["train-classifier", "--seed", "-1"], "seed=-1"),
    (["train-classifier", "--model", "resnet_nope", "--output-dir", "{out}"], "Unknown timm model"),
    (
        [
            "train-classifier",
            "--model",
            "resnet18",
            "--no-pretrained",
            "--model-kwargs",
            '{"bogus_kw": 1}',
            "--output-dir",
            "{out}",
        ],
        "does not take these arguments",
    ),
    (["measure", "fast", "--output", "{dir}"], "is a folder"),
    (["measure", "fast", "--json", "{dir}"], "is a folder"),
    (["measure", "fast", "--image", "{out}.png"], "No image at"),
    (["measure", "resnet_nope"], "Unknown timm model"),
    (["measure", "fast", "--layers", "nope"], "No module named"),
    (["demo", "--quick", "--output-dir", "{file}"], "is an existing file"),
    (["push", "{out}", "me/m"], "No folder"),
    (["push", "{bad_hub}", "a/b/c"], "user/name"),
]


@pytest.mark.parametrize(
    "argv, needle", SEMANTIC_CASES, ids=[" ".join(a[:4]) + " " + n for a, n in SEMANTIC_CASES]
)
def test_bad_value_is_exit_2_and_one_line_before_any_work(argv, needle, files, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("EQREG_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory either
    names = {k: str(v) for k, v in files.items()} | {"out": str(tmp_path / "out")}
    for key, value in names.items():
        argv = [a.replace("{" + key + "}", value) for a in argv]
    before = set(os.listdir(tmp_path))
    code, err = _run(argv, capsys)
    _assert_one_line(code, err, argv)
    assert needle in err, err
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert set(os.listdir(tmp_path)) <= before | {"out"}


def test_debug_shows_the_traceback(files, monkeypatch, tmp_path):
    monkeypatch.setenv("EQREG_DEBUG", "1")
    with pytest.raises(ValueError, match="is an existing file"):
        main(["train-derain", *TINY, "--output-dir", str(files["file"])])


def test_measure_report_is_json_with_the_misaligned_taps(tmp_path, capsys):
    js = tmp_path / "r.json"
    assert (
        main(["measure", "test_resnet", "--no-pretrained", "--size", "32", "--no-output", "--json", str(js)])
        == 0
    )
    out = capsys.readouterr().out
    report = json.loads(js.read_text())
    assert report["misaligned"] and "warning: misaligned for input 32x32" in out
    assert all(f"{name}" in out for name in report["misaligned"])


def test_measure_timm_vit_at_another_size(capsys):
    # the example: `eqreg-hf measure <timm ViT> --size 64` ended in an AssertionError traceback
    assert main(["measure", "test_vit", "--no-pretrained", "--size", "64", "--no-output"]) == 0
    assert "input 64x64" in capsys.readouterr().out
