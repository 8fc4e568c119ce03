"""Paired rain datasets: every local layout, split resolution, name lookup, Hub ids, and the errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from eqreg_hf.data import (
    PairedTransform,
    detect_layout,
    find_pairs,
    load_rain,
    paired_collate,
)

SIZE = (9, 13)  # (H, W): odd and non-square on purpose
OFFSET = 40  # every rainy image is its clean partner + OFFSET, so a mispairing is visible


def _clean_value(i: int) -> int:
    return 20 + 15 * i


def _save(path: Path, value: int, size=SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((*size, 3), value, dtype=np.uint8)
    arr[0, 0] = (value + 7) % 256  # not perfectly flat: keeps JPEG honest
    Image.fromarray(arr).save(path)


def _pair(rainy: Path, clean: Path, i: int) -> None:
    _save(clean, _clean_value(i))
    _save(rainy, _clean_value(i) + OFFSET)


# Each case: (name, function writing one split into a folder and returning the expected pair count)
def _rain100(d: Path) -> int:
    for i in (1, 2, 10):
        _pair(d / f"rain-{i:03d}.png", d / f"norain-{i:03d}.png", i)
    _save(d / "rainregion-001.png", 0)  # JORDER's extra masks are ignored
    return 3


def _rain100_subfolders(d: Path) -> int:
    for i in (1, 2, 3):
        _pair(d / "rainy" / f"rain-{i:03d}.png", d / "norain" / f"norain-{i:03d}.png", i)
    return 3


def _plain_subfolders(d: Path) -> int:
    for i in (1, 2):
        _pair(d / "input" / f"{i}.png", d / "gt" / f"{i}.png", i)
    return 2


def _edsr_style(d: Path) -> int:
    for i in (1, 2, 11):
        _pair(d / "rain" / f"norain-{i}x2.png", d / "norain" / f"norain-{i}.png", i)
    return 3


def _rain1400(d: Path) -> int:
    for n in (1, 2):
        _save(d / "ground_truth" / f"{n}.jpg", _clean_value(n))
        for m in (1, 2, 3):
            _save(d / "rainy_image" / f"{n}_{m}.jpg", _clean_value(n) + OFFSET)
    return 6


def _rain12(d: Path) -> int:
    for i in (1, 2, 12):
        _pair(d / f"{i:03d}_in.png", d / f"{i:03d}_GT.png", i)
    return 3


def _imagefolder(d: Path) -> int:
    rows = []
    for i in (1, 2):
        _pair(d / "r" / f"a{i}.png", d / "c" / f"b{i}.png", i)
        rows.append(f"r/a{i}.png,c/b{i}.png")
    (d / "metadata.csv").write_text("rainy_file_name,clean_file_name\n" + "\n".join(rows) + "\n")
    return 2


LAYOUT_CASES = [
    ("rain100", _rain100),
    ("subfolders", _rain100_subfolders),
    ("subfolders", _plain_subfolders),
    ("subfolders", _edsr_style),
    ("rain1400", _rain1400),
    ("rain12", _rain12),
    ("imagefolder", _imagefolder),
]
LAYOUT_IDS = [
    "rain100",
    "rain100-subfolders",
    "plain-subfolders",
    "edsr-style-subfolders",
    "rain1400",
    "rain12",
    "imagefolder",
]


def _assert_paired(ds, n: int) -> None:
    assert ds.column_names == ["rainy", "clean"]
    assert isinstance(ds.features["rainy"], datasets.Image) and isinstance(
        ds.features["clean"], datasets.Image
    )
    assert len(ds) == n
    for row in ds:
        r = np.asarray(row["rainy"].convert("RGB"), dtype=np.float64)
        c = np.asarray(row["clean"].convert("RGB"), dtype=np.float64)
        assert r.shape == c.shape == (*SIZE, 3)
        # rainy = its own clean + OFFSET (median ignores the marker pixel and JPEG ringing)
        assert abs(np.median(r) - np.median(c) - OFFSET) <= 3


@pytest.mark.parametrize("layout,writer", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_layout_with_split_folders(tmp_path, layout, writer):
    root = tmp_path / "bench"
    n_train = writer(root / "train")
    n_test = writer(root / "test")
    assert detect_layout(root / "train") == layout
    _assert_paired(load_rain(root, split="train"), n_train)
    _assert_paired(load_rain(str(root), split="test"), n_test)


@pytest.mark.parametrize("layout,writer", LAYOUT_CASES, ids=LAYOUT_IDS)
def test_layout_explicit_split_path(tmp_path, layout, writer):
    n = writer(tmp_path / "only")
    _assert_paired(load_rain(tmp_path / "only", split="test"), n)


def test_rain1400_many_to_one_pairs(tmp_path):
    _rain1400(tmp_path)
    layout, pairs = find_pairs(tmp_path)
    assert layout == "rain1400"
    assert [(r.name, c.name) for r, c in pairs] == [
        ("1_1.jpg", "1.jpg"),
        ("1_2.jpg", "1.jpg"),
        ("1_3.jpg", "1.jpg"),
        ("2_1.jpg", "2.jpg"),
        ("2_2.jpg", "2.jpg"),
        ("2_3.jpg", "2.jpg"),
    ]


def test_natural_order_and_zero_padding(tmp_path):
    for i in (10, 2, 1):
        _pair(tmp_path / f"rain-{i}.png", tmp_path / f"norain-{i:03d}.png", i)  # 1 pairs with 001
    _, pairs = find_pairs(tmp_path)
    assert [r.name for r, _ in pairs] == ["rain-1.png", "rain-2.png", "rain-10.png"]


@pytest.mark.parametrize("folder", ["rain_data_train_Light", "training", "Train"])
def test_split_folder_names(tmp_path, folder):
    _rain100(tmp_path / folder)
    _rain12(tmp_path / folder.replace("rain", "x").replace("Train", "test").replace("training", "testing"))
    assert len(load_rain(tmp_path, split="train")) == 3


def test_wrapper_folder_is_descended(tmp_path):
    _rain100(tmp_path / "Rain100L" / "Rain100L" / "test")
    assert len(load_rain(tmp_path / "Rain100L", split="test")) == 3


@pytest.mark.parametrize(
    "name,folder",
    [
        ("Rain100L", "Rain100L"),
        ("rain100h", "Rain100H"),
        ("Rain12", "rain12"),
        ("Rain1400", "rainy_image_dataset"),
    ],
)
def test_benchmark_name_via_env(tmp_path, monkeypatch, name, folder):
    _rain100(tmp_path / folder / "test")
    monkeypatch.setenv("EQREG_DATA_DIR", str(tmp_path))
    assert len(load_rain(name, split="test")) == 3


def test_benchmark_name_via_data_dir_argument(tmp_path, monkeypatch):
    monkeypatch.delenv("EQREG_DATA_DIR", raising=False)
    _rain12(tmp_path / "Rain12")
    assert len(load_rain("Rain12", split="test", data_dir=tmp_path)) == 3
    assert len(load_rain("Rain12", split="test", data_dir=tmp_path / "Rain12")) == 3


def test_missing_benchmark_says_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("EQREG_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Rain100H was not found.*EQREG_DATA_DIR.*synthetic"):
        load_rain("Rain100H", split="test")


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rain(str(tmp_path / "nope" / "deeper"), split="test")


# ---- errors -------------------------------------------------------------------------------------


def test_unpaired_file_is_named(tmp_path):
    _rain100(tmp_path)
    _save(tmp_path / "rain-077.png", 50)
    with pytest.raises(ValueError, match=r"rain-077\.png.*strict=False"):
        load_rain(tmp_path)
    with pytest.warns(UserWarning, match="unpaired"):
        ds = load_rain(tmp_path, strict=False)
    assert len(ds) == 3


def test_unpaired_clean_file_is_named(tmp_path):
    _rain1400(tmp_path)
    _save(tmp_path / "ground_truth" / "9.jpg", 50)
    with pytest.raises(ValueError, match=r"clean image .*9\.jpg"):
        load_rain(tmp_path)


def test_size_mismatch_names_the_pair(tmp_path):
    _rain12(tmp_path)
    _save(tmp_path / "012_in.png", 10, size=(SIZE[0], SIZE[1] + 1))
    with pytest.raises(ValueError, match=r"Size mismatch.*012_in\.png.*012_GT\.png"):
        load_rain(tmp_path)
    assert len(load_rain(tmp_path, check_sizes=False)) == 3


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_rain(tmp_path / "empty")


def test_unknown_layout_lists_known_layouts(tmp_path):
    _save(tmp_path / "photo1.png", 10)
    _save(tmp_path / "photo2.png", 10)
    with pytest.raises(
        ValueError, match=r"Unknown rain data layout.*photo1\.png.*rain100.*rain1400.*rain12.*imagefolder"
    ):
        load_rain(tmp_path)


def test_imagefolder_without_pair_columns(tmp_path):
    _save(tmp_path / "a.png", 10)
    (tmp_path / "metadata.csv").write_text("file_name,text\na.png,hello\n")
    with pytest.raises(ValueError, match="rainy_file_name"):
        load_rain(tmp_path)


def test_local_folder_rejects_synthetic_options(tmp_path):
    _rain12(tmp_path)
    with pytest.raises(TypeError, match="num_variants"):
        load_rain(tmp_path, num_variants=2)


# ---- Hub ids ------------------------------------------------------------------------------------


def test_hub_offline_error_is_one_clear_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError) as info:
        load_rain("someone/rain100l-mirror", split="test")
    msg = str(info.value)
    assert "\n" not in msg
    assert "someone/rain100l-mirror" in msg and "load_rain('synthetic')" in msg and "EQREG_DATA_DIR" in msg


def _fake_hub(columns: dict[str, str]):
    arr = np.zeros((5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    feats = datasets.Features(
        {c: datasets.Image() for c in columns.values()} | {"id": datasets.Value("int32")}
    )
    data = {c: [img, img] for c in columns.values()} | {"id": [0, 1]}
    return datasets.Dataset.from_dict(data, features=feats)


@pytest.mark.parametrize(
    "cols",
    [
        {"rainy": "input", "clean": "target"},
        {"rainy": "rain", "clean": "norain"},
        {"rainy": "rainy", "clean": "clean"},
    ],
)
def test_hub_columns_are_normalised(monkeypatch, cols):
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return _fake_hub(cols)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_rain("someone/rain-pairs", split="test")
    assert calls == [("someone/rain-pairs", "test")]
    assert ds.column_names == ["rainy", "clean"] and len(ds) == 2


def test_hub_unknown_columns_ask_for_mapping(monkeypatch):
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, split=None, **kw: _fake_hub({"a": "foo", "b": "bar"})
    )
    with pytest.raises(ValueError, match=r"columns=\{'rainy'"):
        load_rain("someone/odd", split="train")
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, split=None, **kw: _fake_hub({"a": "foo", "b": "bar"})
    )
    ds = load_rain("someone/odd", split="train", columns={"rainy": "foo", "clean": "bar"})
    assert ds.column_names == ["rainy", "clean"]


# ---- into a DataLoader --------------------------------------------------------------------------


def test_local_folder_through_transform_and_collate(tmp_path):
    import torch

    _rain100(tmp_path)
    ds = load_rain(tmp_path).with_transform(PairedTransform(crop_size=(5, 7), rot90=True, hflip=True, seed=0))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=paired_collate)
    rainy, clean = next(iter(loader))
    assert rainy.shape[0] == 3 and rainy.shape[1] == 3 and rainy.shape == clean.shape
    assert set(rainy.shape[-2:]) == {5, 7}
    # crops/rotations are shared: rainy - clean is the constant OFFSET everywhere but the marker pixel
    diff = (rainy - clean) * 255
    assert (diff.round() == OFFSET).float().mean() > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(rainy.min()) >= 0.0 and float(rainy.max()) <= 1.0


def test_rotation_order_two_draws_only_half_turns():
    import torch

    from eqreg_hf.data import load_rain
    from eqreg_hf.data.transforms import PairedTransform

    ds = load_rain("synthetic", split="test", size=40)
    plain = ds.with_transform(PairedTransform())[0]["rainy"]
    aug = ds.with_transform(PairedTransform(rot90=True, rotation_order=2, seed=0))
    seen = set()
    for _ in range(12):
        x = aug[0]["rainy"]
        if torch.equal(x, plain):
            seen.add(0)
        elif torch.equal(x, torch.rot90(plain, 2, (-2, -1))):
            seen.add(2)
        else:
            raise AssertionError("a rotation other than 0° / 180° was drawn")
    assert seen == {0, 2}
    with pytest.raises(ValueError, match="rotation_order"):
        PairedTransform(rotation_order=3)
