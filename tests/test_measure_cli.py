"""eqreg-hf measure: timm names, saved folders and derainers; table, PNG plot and JSON report."""

from __future__ import annotations

import json

import pytest

from eqreg_hf.cli import main

timm = pytest.importorskip("timm", reason="the measure command builds timm models by name")


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(printed: str) -> dict[str, float]:
    rows = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            try:
                rows[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return rows


CASES = [
    # (argv after "measure", expected rows besides "mean")
    (
        ["test_resnet", "--no-pretrained", "--size", "33"],
        ["act1", "layer1", "layer2", "layer3", "layer4", "output"],
    ),
    (
        [
            "test_convnext",
            "--no-pretrained",
            "--size",
            "32",
            "--layers",
            "stages.1,stages.3",
            "--group-order",
            "2",
        ],
        ["stages.1", "stages.3", "output"],
    ),
    (
        ["test_vit", "--no-pretrained", "--layers", "blocks.?", "--no-output"],
        [f"blocks.{i}" for i in range(6)],
    ),
    (
        ["fast", "--size", "21", "--group-order", "4"],
        [f"body.{i}.conv{j}" for i in range(6) for j in (1, 2)] + ["output"],
    ),
]


@pytest.mark.parametrize("argv, rows", CASES, ids=["resnet", "convnext-C2-list", "vit-glob", "derainer"])
def test_measure_prints_table_and_writes_plot(tmp_path, capsys, argv, rows):
    png, js = tmp_path / "plot" / "eq.png", tmp_path / "eq.json"
    assert main(["measure", *argv, "--output", str(png), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    table = _rows(printed)
    assert sorted(k for k in table if k != "mean") == sorted(rows)
    assert all(0.0 <= v < 3.0 for v in table.values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    report = json.loads(js.read_text())
    assert sorted(report["errors"]) == sorted(rows)
    assert (
        report["group_order"] == int(argv[argv.index("--group-order") + 1]) if "--group-order" in argv else 4
    )
    assert not list(tmp_path.rglob("*.tmp*"))  # nothing half-written left behind


def test_measure_default_size_is_aligned(capsys):
    assert main(["measure", "resnet18", "--no-pretrained", "--no-output", "--group-order", "2"]) == 0
    assert "input 225x225" in capsys.readouterr().out  # timm's 224, moved to the aligned 32 m + 1


def test_measure_saved_folder_and_image_path(tmp_path, capsys):
    from PIL import Image

    from eqreg_hf import EqRegConfig
    from eqreg_hf.hub import save_folder

    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    folder = save_folder(model, tmp_path / "model", eqreg_config=EqRegConfig(weight=0.0))
    img = tmp_path / "img.png"
    Image.new("RGB", (40, 24), (200, 30, 60)).save(img)
    assert main(["measure", str(folder), "--image", str(img), "--size", "33"]) == 0
    table = _rows(capsys.readouterr().out)
    assert {"blocks.0", "blocks.4", "output"} <= set(table)


@pytest.mark.slow
def test_strictly_equivariant_derainer_measures_zero(capsys):
    pytest.importorskip("e2cnn", reason="the strict C4 derainer is built with e2cnn")
    assert main(["measure", "strict-c4", "--size", "17"]) == 0
    table = _rows(capsys.readouterr().out)
    assert table and max(table.values()) < 1e-4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resnet_18", "--no-pretrained"], "Did you mean"),
        (["test_resnet", "--no-pretrained", "--image", "/nonexistent/x.png"], "No image at"),
    ],
)
def test_bad_input_is_named(capsys, argv, message):
    assert main(["measure", *argv]) == 2
    out, err = capsys.readouterr()
    assert message in err and err.startswith("eqreg-hf measure: error:") and not out


def test_group_flag_measures_flips_too(capsys):
    """--group D4 measures every rotation and mirror image; a net whose fields are C4 fields is refused
    under D4."""
    pytest.importorskip("e2cnn", reason="the strict C4 derainer is built with e2cnn")
    assert main(["measure", "strict-c4", "--size", "17", "--group", "C4", "--no-output"]) == 0
    assert max(_rows(capsys.readouterr().out).values()) < 1e-4
    assert main(["measure", "fast", "--size", "17", "--group", "D4", "--no-output"]) == 0
    out = capsys.readouterr().out
    assert "(D4" in out and "s·r1" in out and min(_rows(out).values()) > 0.05
    assert main(["measure", "strict-c4", "--size", "17", "--group", "D4", "--no-output"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "C4 regular fields" in err[0] and "'C4'" in err[0]


def test_unknown_group_is_one_line(capsys):
    assert main(["measure", "fast", "--size", "17", "--group", "X4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'C<t>'" in err[0]


@pytest.mark.parametrize(
    "cfg, flags, group",
    [
        ({"group": "D4", "weight": 0.1}, [], "D4"),  # the folder's own group, not the flag's default C4
        ({"group": "D2", "weight": "auto"}, [], "D2"),
        ({"group": "D4", "weight": 0.1}, ["--group-order", "2"], "C2"),  # a flag given wins
    ],
)
def test_a_saved_folder_is_measured_on_its_own_taps_and_group(tmp_path, capsys, cfg, flags, group):
    """A restorer's folder: its EqRegConfig's group and taps, read as an image model (no ImageNet
    normalisation, the derainers' size)."""
    from eqreg_hf import EqRegConfig
    from eqreg_hf.hub import CardFacts, write_hub_folder
    from eqreg_hf.tasks.restore.networks import DnCNN

    net = DnCNN(channels=8, depth=4)
    config = EqRegConfig(layers=["body.0", "body.1"], distance="mse", **cfg)
    facts = CardFacts(task="denoise", metrics={"psnr": 20.0}, dataset="photos", degradation={"sigma": 0.1})
    folder = write_hub_folder(net, tmp_path / "model", facts, eqreg_config=config)
    js = tmp_path / "eq.json"
    assert main(["measure", folder, "--no-output", "--json", str(js), *flags]) == 0
    report = json.loads(js.read_text())
    assert report["group"] == group and sorted(report["errors"]) == ["body.0", "body.1"]
    assert f"Equivariance error ({group}, input 128x128" in capsys.readouterr().out
