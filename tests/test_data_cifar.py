"""CIFAR-100 loading from local copies in every supported format, timm-derived transforms, and the shapes
dataset."""

from __future__ import annotations

import collections
import doctest
import importlib

import datasets
import numpy as np
import pytest
import timm
import torch
from PIL import Image

from eqreg_hf.data import (
    CIFAR100_COARSE_NAMES,
    CIFAR100_FINE_NAMES,
    CIFAR100_FINE_TO_COARSE,
    SHAPE_COARSE_NAMES,
    SHAPE_NAMES,
    classification_transform,
    load_cifar100,
    load_shapes,
    num_classes,
    render_shape,
)

TRAIN_FINE = [19, 29, 0, 11, 86, 90]
TEST_FINE = [28, 23, 97, 26]


def _tiny(fine: list[int]):
    feats = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=list(CIFAR100_FINE_NAMES)),
            "coarse_label": datasets.ClassLabel(names=list(CIFAR100_COARSE_NAMES)),
        }
    )
    imgs = [Image.fromarray(np.full((32, 32, 3), 2 * i, dtype=np.uint8)) for i in fine]
    return datasets.Dataset.from_dict(
        {"img": imgs, "fine_label": fine, "coarse_label": [CIFAR100_FINE_TO_COARSE[i] for i in fine]},
        features=feats,
    )


def _parquet_file(root, split):
    path = root / f"{split}.parquet"
    _tiny(TRAIN_FINE if split == "train" else TEST_FINE).to_parquet(str(path))
    return path


def _parquet_hub_folder(root, split):
    for s, fine in (("train", TRAIN_FINE), ("test", TEST_FINE)):
        (root / "cifar100").mkdir(exist_ok=True)
        _tiny(fine).to_parquet(str(root / "cifar100" / f"{s}-00000-of-00001.parquet"))
    return root


def _save_to_disk_dict(root, split):
    datasets.DatasetDict({"train": _tiny(TRAIN_FINE), "test": _tiny(TEST_FINE)}).save_to_disk(
        str(root / "dd")
    )
    return root / "dd"


def _save_to_disk_split_folders(root, split):
    _tiny(TRAIN_FINE).save_to_disk(str(root / "train"))
    _tiny(TEST_FINE).save_to_disk(str(root / "test"))
    return root


def _imagefolder(root, split):  # note: CIFAR-100 has a class named "train"
    for s, fine in (("train", TRAIN_FINE), ("test", TEST_FINE)):
        for j, i in enumerate(fine):
            d = root / s / CIFAR100_FINE_NAMES[i]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 2 * i, dtype=np.uint8)).save(d / f"{j}.png")
    return root


FORMATS = [_parquet_file, _parquet_hub_folder, _save_to_disk_dict, _save_to_disk_split_folders, _imagefolder]


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.__name__.strip("_"))
def test_local_copies_have_the_hub_schema(tmp_path, fmt, split):
    path = fmt(tmp_path, split)
    ds = load_cifar100(split, path=path)
    fine = TRAIN_FINE if split == "train" else TEST_FINE
    assert {"img", "fine_label", "coarse_label"} <= set(ds.column_names)
    assert sorted(ds["fine_label"]) == sorted(fine)
    assert sorted(ds["coarse_label"]) == sorted(CIFAR100_FINE_TO_COARSE[i] for i in fine)
    assert num_classes(ds, "fine") == 100 and num_classes(ds, "coarse") == 20
    row = ds[0]
    assert row["img"].size == (32, 32)
    # the image belongs to its label (pixel value 2 * fine label)
    assert np.asarray(row["img"])[0, 0, 0] == 2 * row["fine_label"]


def test_class_names_follow_the_hub_card():
    # spot checks against uoft-cs/cifar100 (index -> coarse index)
    assert len(CIFAR100_FINE_NAMES) == 100 and len(CIFAR100_COARSE_NAMES) == 20
    for fine, name, coarse in [
        (0, "apple", 4),
        (19, "cattle", 11),
        (29, "dinosaur", 15),
        (90, "train", 18),
        (81, "streetcar", 19),
        (64, "possum", 12),
        (26, "crab", 13),
    ]:
        assert CIFAR100_FINE_NAMES[fine] == name and CIFAR100_FINE_TO_COARSE[fine] == coarse
    assert collections.Counter(CIFAR100_FINE_TO_COARSE) == {c: 5 for c in range(20)}


def test_offline_without_local_copy_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"uoft-cs/cifar100.*path=.*load_shapes"):
        load_cifar100("test")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"Choose between \['fine', 'coarse'\]"):
        load_cifar100("test", path=tmp_path, label="medium")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar100("test", path=tmp_path / "missing")
    _parquet_hub_folder(tmp_path, "train")
    with pytest.raises(ValueError, match="No parquet file for split 'validation'"):
        load_cifar100("validation", path=tmp_path)


def test_imagefolder_with_other_class_names_has_no_coarse_labels(tmp_path):
    for name in ("blob", "zig"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "0.png")
    ds = load_cifar100("train", path=tmp_path)
    assert sorted(ds["fine_label"]) == [0, 1]
    with pytest.raises(ValueError, match="coarse_label"):
        load_cifar100("train", path=tmp_path, label="coarse")


# ---- transforms ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_timm_model():
    return timm.create_model(
        "resnet10t",
        pretrained=False,
        num_classes=4,
        pretrained_cfg_overlay=dict(
            input_size=(3, 40, 36), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0
        ),
    )


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("label", ["fine", "coarse"])
def test_transform_from_timm_data_config(tiny_timm_model, train, label):
    tf = classification_transform(tiny_timm_model, train=train, label=label)
    assert tf.data_config["input_size"] == (3, 40, 36) and tf.data_config["mean"] == (0.5, 0.5, 0.5)
    ds = _tiny(TRAIN_FINE).with_transform(tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (3, 3, 40, 36)
    expected = TRAIN_FINE[:3] if label == "fine" else [CIFAR100_FINE_TO_COARSE[i] for i in TRAIN_FINE[:3]]
    assert batch["labels"].tolist() == expected
    if not train:  # a flat image normalises to (v - mean) / std exactly
        v = 2 * TRAIN_FINE[0] / 255.0
        assert torch.allclose(batch["pixel_values"][0], torch.full((3, 40, 36), (v - 0.5) / 0.25), atol=1e-2)


def test_transform_overrides_and_bad_keys():
    tf = classification_transform(None, train=False, input_size=(20, 24), mean=(0, 0, 0), std=(1, 1, 1))
    out = tf({"img": [Image.new("RGB", (32, 32), (255, 255, 255))], "fine_label": [5]})
    assert out["pixel_values"][0].shape == (3, 20, 24) and out["labels"] == [5]
    assert torch.allclose(out["pixel_values"][0], torch.ones(3, 20, 24), atol=1e-2)
    with pytest.raises(KeyError, match="image_key="):
        tf({"image": [None], "label": [0]})


# ---- the shapes dataset -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, (24, 29)])
def test_shapes_schema_balance_and_determinism(size):
    ds = load_shapes("train", num_samples=40, size=size, seed=1)
    assert ds.column_names == ["img", "fine_label", "coarse_label"]
    assert ds.features["fine_label"].names == list(SHAPE_NAMES)
    assert ds.features["coarse_label"].names == list(SHAPE_COARSE_NAMES)
    assert collections.Counter(ds["fine_label"]) == {c: 4 for c in range(len(SHAPE_NAMES))}
    h, w = (size, size) if isinstance(size, int) else size
    assert ds[0]["img"].size == (w, h)
    again = load_shapes.__globals__["_MEMORY_CACHE"].clear() or load_shapes(
        "train", num_samples=40, size=size, seed=1
    )
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ds["img"][:5], again["img"][:5]))
    test = load_shapes("test", num_samples=40, size=size, seed=1)
    assert not np.array_equal(np.asarray(ds[0]["img"]), np.asarray(test[0]["img"]))


def test_shapes_orientation_changes_the_image_not_the_rest():
    a = render_shape("arrow", 32, angle=0.0, rng=3)
    b = render_shape("arrow", 32, angle=90.0, rng=3)
    assert not np.array_equal(a, b)
    assert np.array_equal(a[0, 0], b[0, 0])  # same background and placement draws


def test_shapes_classes_render_differently():
    imgs = [render_shape(name, 48, 0.0, rng=0).astype(np.int16) for name in SHAPE_NAMES]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i] - imgs[j]).sum() > 0


def test_shapes_work_with_the_classification_transform():
    ds = load_shapes("test", num_samples=6, size=16).with_transform(
        classification_transform(None, train=True, input_size=16, label="coarse")
    )
    item = ds[0]
    assert item["pixel_values"].shape == (3, 16, 16) and 0 <= item["labels"] < len(SHAPE_COARSE_NAMES)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(split="dev"), "Choose between"),
        (dict(size=4), "too small"),
        (dict(classes=("circle",)), "Unknown shape"),
    ],
)
def test_shapes_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_shapes(**{"split": "test", "num_samples": 2, **kwargs})


@pytest.mark.parametrize("name", ["eqreg_hf.data.cifar", "eqreg_hf.data.shapes"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
