"""Issue 13, the loaders: a split is never replaced by another, and an unreadable image is named before
training.

Before: a rain folder with only ``train/`` returned its training pairs for ``split="test"`` (and the run's
card reported them as test numbers); a CIFAR imagefolder with only ``train/`` returned the whole folder,
training images included, for "test"; a corrupt or truncated image surfaced mid-training as a PIL traceback.
"""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

from eqreg_hf.data import CIFAR100_FINE_NAMES, load_cifar100, load_rain
from eqreg_hf.data.splits import check_disjoint, split_of
from eqreg_hf.tasks.derain.recipe import DerainTrainingArguments, train_derainer


def _png(path, seed=0, size=(12, 12), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8")).save(path, fmt)
    return path


def _rain(folder, n=3, ext="png"):
    for i in range(1, n + 1):
        _png(folder / f"rain-{i}.{ext}", seed=i)
        _png(folder / f"norain-{i}.{ext}", seed=100 + i)
    return folder


# ------------------------------------------------------------------------------------------- rain folders


def test_only_train_folder_is_no_test_split(tmp_path):
    # the example: the training pairs came back for split="test"
    _rain(tmp_path / "bench" / "train")
    assert len(load_rain(tmp_path / "bench", split="train")) == 3
    with pytest.raises(ValueError, match=r"No 'test' split in .*bench.*split folders are \['train'\]"):
        load_rain(tmp_path / "bench", split="test")


@pytest.mark.parametrize("present", ["training", "Train", "rain_data_train_Light", "trainset"])
def test_other_spellings_of_the_other_split_are_not_used_either(tmp_path, present):
    _rain(tmp_path / "bench" / present)
    with pytest.raises(ValueError, match=rf"No 'test' split.*{present}"):
        load_rain(tmp_path / "bench", split="test")


def test_a_folder_named_after_a_split_serves_only_that_split(tmp_path):
    folder = _rain(tmp_path / "Rain100L" / "train")
    assert len(load_rain(folder, split="train")) == 3
    with pytest.raises(ValueError, match=r"is the 'train' split \(by its name\), not 'test'.*split='train'"):
        load_rain(folder, split="test")


def test_wrapper_descent_stops_at_a_split_folder(tmp_path):
    _rain(tmp_path / "Rain100L" / "Rain100L" / "train")  # an unzipped archive with one split inside
    with pytest.raises(ValueError, match="No 'test' split"):
        load_rain(tmp_path / "Rain100L", split="test")


def test_validation_split_and_a_neutral_folder(tmp_path):
    _rain(tmp_path / "bench" / "val", n=2)
    _rain(tmp_path / "bench" / "train")
    assert len(load_rain(tmp_path / "bench", split="validation")) == 2
    assert (
        len(load_rain(_rain(tmp_path / "only"), split="test")) == 3
    )  # an explicit one-split path still works


def test_split_of():
    assert [
        split_of(n) for n in ("train", "Testing", "rain_data_test_Heavy", "val", "Rain100L", "latest")
    ] == ["train", "test", "test", "validation", None, None]
    assert split_of("test_unpaired_0", exact=True) is None


@pytest.mark.parametrize("damage", ["garbage", "truncated-png", "truncated-jpg", "empty"])
def test_corrupt_or_truncated_image_is_named_at_load_time(tmp_path, damage):
    ext = "jpg" if damage == "truncated-jpg" else "png"
    folder = _rain(tmp_path / "bench" / "test", ext=ext)
    bad = folder / f"rain-2.{ext}"
    data = bad.read_bytes()
    bad.write_bytes({"garbage": b"not an image", "empty": b""}.get(damage, data[: len(data) // 2]))
    with pytest.raises(ValueError, match=rf"Image '.*rain-2.{ext}' cannot be read.*Replace or remove it"):
        load_rain(tmp_path / "bench", split="test")


# ------------------------------------------------------------------------------------------- CIFAR copies


def _class_folder(root, classes, n=2):
    for c in classes:
        for j in range(n):
            _png(root / CIFAR100_FINE_NAMES[c] / f"{j}.png", seed=c * 10 + j, size=(8, 8))


def test_cifar_imagefolder_with_only_train_has_no_test(tmp_path):
    _class_folder(tmp_path / "train", [0, 1])
    assert len(load_cifar100("train", path=tmp_path)) == 4
    with pytest.raises(ValueError, match=r"No 'test' split .*split folders are \['train'\]"):
        load_cifar100("test", path=tmp_path)  # before: the whole folder, training images included


def test_cifar_class_named_train_is_a_class_not_a_split(tmp_path):
    _class_folder(tmp_path, [90, 0])  # class 90 is "train"
    assert sorted(set(load_cifar100("test", path=tmp_path)["fine_label"])) == [0, 90]


def test_cifar_save_to_disk_of_another_split_is_refused(tmp_path):
    ds = load_cifar100("train", path=_class_folder(tmp_path / "imgs" / "train", [0, 1]) or tmp_path / "imgs")
    ds = datasets.Dataset.from_dict(ds.to_dict(), features=ds.features, split=datasets.Split.TRAIN)
    ds.save_to_disk(str(tmp_path / "saved"))
    assert len(load_cifar100("train", path=tmp_path / "saved")) == 4
    with pytest.raises(ValueError, match=r"holds the 'train' split, not 'test'"):
        load_cifar100("test", path=tmp_path / "saved")


def test_cifar_parquet_file_named_after_another_split_is_refused(tmp_path):
    ds = load_cifar100("train", path=_class_folder(tmp_path / "imgs" / "train", [0, 1]) or tmp_path / "imgs")
    ds.to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    with pytest.raises(ValueError, match=r"holds the 'train' split, not 'test'"):
        load_cifar100("test", path=tmp_path / "train-00000-of-00001.parquet")


# ------------------------------------------------------------------------------------------- the recipes


def test_check_disjoint_same_data_and_shared_files(tmp_path):
    a = load_rain(_rain(tmp_path / "only"), split="train")
    with pytest.raises(
        ValueError, match=r"'test' and 'train' splits of 'x' overlap \(they are the same data\)"
    ):
        check_disjoint(a, load_rain(tmp_path / "only", split="test"), "train", "test", "x")
    features = datasets.Features({"rainy": datasets.Image(), "clean": datasets.Image()})
    other = _rain(tmp_path / "other")
    mixed = datasets.Dataset.from_dict(
        {
            "rainy": [str(other / "rain-1.png"), str(tmp_path / "only" / "rain-2.png")],
            "clean": [str(other / "norain-1.png"), str(other / "norain-2.png")],
        },
        features=features,
    )
    with pytest.raises(
        ValueError, match=r"overlap \(1 image file\(s\) are in both, e.g. '.*only/rain-2.png'\)"
    ):
        check_disjoint(a, mixed, "train", "test", "x")
    check_disjoint(a, load_rain(other, split="test"), "train", "test", "x")


def test_train_derain_refuses_to_evaluate_on_its_training_folder(tmp_path):
    folder = _rain(tmp_path / "only")  # one split, no train/test: training and "test" would be the same pairs
    args = DerainTrainingArguments(
        dataset=str(folder),
        channels=4,
        num_blocks=1,
        max_steps=1,
        crop_size=8,
        batch_size=1,
        progress=False,
        output_dir=str(tmp_path / "out"),
    )
    with pytest.raises(ValueError, match="overlap.*would measure training data"):
        train_derainer(args)
    assert not (tmp_path / "out").exists()
