"""Built-in synthetic rain benchmark and the paired transforms."""

from __future__ import annotations

import dataclasses
import doctest
import hashlib
import importlib
import json

import datasets
import numpy as np
import pytest
import skimage  # noqa: F401  (a hard dependency: fail here, not in the middle of a test)
import torch

from eqreg_hf.data import (
    DEFAULT_RAIN,
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    PairedTransform,
    RainSettings,
    add_rain,
    load_photo,
    load_rain,
    make_synthetic_rain,
    paired_collate,
    paired_random_crop,
    paired_random_rot_flip,
    rain_streaks,
    to_tensor,
)

TINY = dict(size=(20, 27), num_variants=1)  # odd, non-square


def _arrays(ds, col):
    return [np.asarray(ds[i][col], dtype=np.int16) for i in range(len(ds))]


# ---- the benchmark ------------------------------------------------------------------------------


@pytest.mark.parametrize("split,photos", [("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS)])
@pytest.mark.parametrize("size,variants", [((20, 27), 1), (17, 2)])
def test_schema_sizes_and_counts(split, photos, size, variants):
    ds = make_synthetic_rain(split, size=size, num_variants=variants)
    assert ds.column_names == ["rainy", "clean"]
    assert all(isinstance(ds.features[c], datasets.Image) for c in ds.column_names)
    assert len(ds) == len(photos) * variants
    h, w = (size, size) if isinstance(size, int) else size
    row = ds[0]
    assert row["rainy"].size == row["clean"].size == (w, h) and row["rainy"].mode == "RGB"


def test_default_variants_per_split():
    assert len(make_synthetic_rain("train", size=16)) == 4 * len(TRAIN_PHOTOS)
    assert len(make_synthetic_rain("test", size=16)) == 2 * len(TEST_PHOTOS)


def test_train_and_test_photos_are_disjoint():
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    train = {a.tobytes() for a in _arrays(make_synthetic_rain("train", **TINY), "clean")}
    test = {a.tobytes() for a in _arrays(make_synthetic_rain("test", **TINY), "clean")}
    assert len(train) == len(TRAIN_PHOTOS) and len(test) == len(TEST_PHOTOS) and not train & test


def test_reproducible_and_seed_dependent():
    make = lambda seed: make_synthetic_rain("test", seed=seed, **TINY)  # noqa: E731
    a = _arrays(make(3), "rainy")
    make_synthetic_rain.__globals__["_MEMORY_CACHE"].clear()  # rebuild from scratch, not from the cache
    b = _arrays(make(3), "rainy")
    c = _arrays(make(4), "rainy")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c))


def test_variants_differ_but_share_the_clean_photo():
    ds = make_synthetic_rain("train", size=24, num_variants=3, photos=["astronaut"])
    clean, rainy = _arrays(ds, "clean"), _arrays(ds, "rainy")
    assert all(np.array_equal(clean[0], c) for c in clean)
    assert not np.array_equal(rainy[0], rainy[1]) and not np.array_equal(rainy[1], rainy[2])


def test_additive_rain_only_brightens_and_is_visible():
    ds = make_synthetic_rain("test", size=48, num_variants=1)
    for r, c in zip(_arrays(ds, "rainy"), _arrays(ds, "clean")):
        assert (r >= c - 1).all()  # O = clip(B + aS) >= B, up to 8-bit rounding
        assert (r - c).mean() > 1.0  # and there is rain


def test_load_rain_synthetic_passes_options_and_caches():
    a = load_rain("synthetic", split="test", size=(20, 27), num_variants=1)
    b = load_rain("SYNTHETIC", split="test", size=(20, 27), num_variants=1)
    assert a is b and len(a) == len(TEST_PHOTOS)


def test_disk_cache_round_trip(tmp_path):
    a = make_synthetic_rain("test", size=12, num_variants=1, seed=11, cache_dir=tmp_path)
    saved = [p for p in tmp_path.iterdir() if p.name.startswith("synthetic-rain-test-")]
    assert len(saved) == 1 and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    make_synthetic_rain.__globals__["_MEMORY_CACHE"].clear()
    b = make_synthetic_rain("test", size=12, num_variants=1, seed=11, cache_dir=tmp_path)
    assert all(np.array_equal(x, y) for x, y in zip(_arrays(a, "rainy"), _arrays(b, "rainy")))


# ---- the rain model -----------------------------------------------------------------------------


def _orientation(s: np.ndarray) -> float:
    """> 0: intensity varies across columns (vertical streaks); < 0: across rows (horizontal)."""
    gx, gy = np.abs(np.diff(s, axis=1)).mean(), np.abs(np.diff(s, axis=0)).mean()
    return float((gx - gy) / (gx + gy))


@pytest.mark.parametrize("angle,sign", [(0.0, 1), (90.0, -1), (-90.0, -1)])
def test_streak_angle_sets_orientation(angle, sign):
    s = rain_streaks(41, 57, angle_range=(angle, angle), angle_jitter=0.0, length=15.0, density=0.01, seed=2)
    assert np.sign(_orientation(s)) == sign and abs(_orientation(s)) > 0.3


def test_density_and_intensity_scale_the_rain():
    photo = load_photo("coffee", size=(32, 45))
    none = add_rain(photo, density=0.0, seed=0)
    assert np.allclose(none, photo)
    assert np.allclose(add_rain(photo, intensity=0.0, seed=0), photo)
    light = (add_rain(photo, density=0.002, intensity=0.6, seed=0) - photo).mean()
    heavy = (add_rain(photo, density=0.02, intensity=0.6, seed=0) - photo).mean()
    assert 0 < light < heavy


@pytest.mark.parametrize("blend", ["add", "screen"])
def test_blends_stay_in_range(blend):
    photo = load_photo("chelsea", size=(16, 23))
    out = add_rain(photo, blend=blend, density=0.05, intensity=1.0, seed=5)
    assert out.shape == photo.shape and out.min() >= 0.0 and out.max() <= 1.0 and (out >= photo - 1e-6).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(split="val"), "Choose between"),
        (dict(num_variants=0), "num_variants"),
        (dict(size=2), "too small"),
        (dict(rain=RainSettings(density=(0.5, 0.1))), "low must be <= high"),
        (dict(photos=["not_a_photo"]), "Unknown scikit-image photo"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"split": "test", "size": 8, "num_variants": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_synthetic_rain(**kwargs)


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(blend="multiply"), r"Unknown blend='multiply'. Choose between \['add', 'screen'\]"),
        (dict(num_layers=0), "num_layers must be >= 1"),
    ],
)
def test_bad_rain_settings(fields, match):
    with pytest.raises(ValueError, match=match):
        RainSettings(**fields)


def test_rain_must_be_rain_settings():
    with pytest.raises(
        TypeError, match=r"rain=\{'blend': 'add'\} is not a RainSettings.*RainSettings\(\*\*fields\)"
    ):
        make_synthetic_rain("test", size=8, num_variants=1, rain={"blend": "add"})


# ---- RainSettings: the same rain as the former flat keyword arguments ---------------------------

# make_synthetic_rain's keyword defaults before RainSettings grouped them
_OLD_DEFAULTS = {
    "density": (0.002, 0.006),
    "length": (8.0, 24.0),
    "angle_range": (-30.0, 30.0),
    "angle_jitter": 5.0,
    "width": (0.8, 1.6),
    "intensity": (0.4, 0.8),
    "num_layers": 3,
    "blend": "add",
}
_NON_DEFAULT = dict(angle_range=(-90, 90), num_layers=2, intensity=0.5, blend="screen", density=0.01)


def test_rain_settings_defaults_are_the_former_defaults():
    assert dataclasses.asdict(RainSettings()) == DEFAULT_RAIN == _OLD_DEFAULTS
    fields = dataclasses.asdict(RainSettings(**_NON_DEFAULT))
    assert RainSettings(**json.loads(json.dumps(fields))) == RainSettings(**_NON_DEFAULT)


def _digest(ds) -> str:
    h = hashlib.sha1()
    for i in range(len(ds)):
        h.update(np.asarray(ds[i]["rainy"]).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize(
    "fields,digest",
    [
        # digests of the rainy images that make_synthetic_rain(..., **fields) gave before RainSettings
        ({}, "1c9850b4555b6142"),
        (_NON_DEFAULT, "492d18b87a34c1c2"),
    ],
)
def test_same_rain_as_the_flat_keyword_arguments(fields, digest):
    make_synthetic_rain.__globals__["_MEMORY_CACHE"].clear()
    ds = make_synthetic_rain("test", size=(20, 27), num_variants=1, seed=7, rain=RainSettings(**fields))
    assert _digest(ds) == digest
    # and the same as add_rain with the flat keyword arguments, on the benchmark's per-image stream
    rng = np.random.default_rng(
        np.random.SeedSequence([7, 2, 0, 0])
    )  # seed, split "test", photo 0, variant 0
    want = add_rain(load_photo(TEST_PHOTOS[0], (20, 27)), seed=rng, **{**_OLD_DEFAULTS, **fields})
    assert np.array_equal(np.asarray(ds[0]["rainy"]), (want * 255.0).round().astype(np.uint8))


def test_disk_cache_keeps_its_former_name(tmp_path):
    """An on-disk copy written before RainSettings is still found: the folder's key did not change."""
    make_synthetic_rain.__globals__["_MEMORY_CACHE"].clear()
    make_synthetic_rain("test", size=12, num_variants=1, seed=11, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic-rain-test-cd6b8865a23ceaca"]


# ---- paired transforms --------------------------------------------------------------------------


def _pair(h=11, w=16):
    clean = torch.rand(3, h, w)
    return clean + 1.0, clean  # rainy = clean + 1 everywhere: any misalignment shows up


@pytest.mark.parametrize("size", [5, (4, 7), (11, 16)])
def test_paired_crop_is_aligned(size):
    r, c = _pair()
    cr, cc = paired_random_crop(r, c, size, torch.Generator().manual_seed(0))
    hw = (size, size) if isinstance(size, int) else size
    assert cr.shape[-2:] == cc.shape[-2:] == torch.Size(hw)
    assert torch.allclose(cr - cc, torch.ones_like(cc))


def test_paired_crop_too_large():
    r, c = _pair()
    with pytest.raises(ValueError, match=r"\(12, 4\) does not fit.*\(11, 16\)"):
        paired_random_crop(r, c, (12, 4))


@pytest.mark.parametrize(
    "opts",
    [
        dict(rot90=True, hflip=False),
        dict(rot90=False, hflip=True, vflip=True),
        dict(rot90=True, hflip=True, vflip=True),
    ],
)
def test_paired_rot_flip_is_aligned_and_covers_the_group(opts):
    r, c = _pair(5, 8)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        rr, rc = paired_random_rot_flip(r, c, g, **opts)
        assert torch.allclose(rr - rc, torch.ones_like(rc))
        seen.add(rc.numpy().tobytes())
    expected = (
        (4 if opts.get("rot90") else 1) * (2 if opts.get("hflip") else 1) * (2 if opts.get("vflip") else 1)
    )
    if opts.get("rot90") and opts.get("hflip") and opts.get("vflip"):
        expected = 8  # the dihedral group D4 has 8 elements
    assert len(seen) == expected


@pytest.mark.parametrize("crop", [(6, 9), 7])
def test_paired_transform_batches_and_replays(crop):
    ds = make_synthetic_rain("test", **TINY)
    t1 = PairedTransform(crop_size=crop, rot90=True, hflip=True, seed=123)
    t2 = PairedTransform(crop_size=crop, rot90=True, hflip=True, seed=123)
    loader1 = torch.utils.data.DataLoader(ds.with_transform(t1), batch_size=4, collate_fn=paired_collate)
    loader2 = torch.utils.data.DataLoader(ds.with_transform(t2), batch_size=4, collate_fn=paired_collate)
    (r1, c1), (r2, c2) = next(iter(loader1)), next(iter(loader2))
    hw = (crop, crop) if isinstance(crop, int) else crop
    assert r1.shape == c1.shape == (4, 3, *hw)  # 90-degree turns of non-square crops still stack
    assert torch.equal(r1, r2) and torch.equal(c1, c2)
    assert r1.dtype == torch.float32 and 0.0 <= float(r1.min()) and float(r1.max()) <= 1.0


def test_paired_transform_single_item_and_bad_keys():
    ds = make_synthetic_rain("test", **TINY).with_transform(PairedTransform())
    item = ds[0]
    assert item["rainy"].shape == item["clean"].shape == (3, 20, 27)
    with pytest.raises(KeyError, match="'rainy'"):
        PairedTransform()({"image": [None]})


def test_collate_refuses_mixed_sizes():
    with pytest.raises(ValueError, match="crop_size"):
        paired_collate(
            [
                {"rainy": torch.zeros(3, 4, 5), "clean": torch.zeros(3, 4, 5)},
                {"rainy": torch.zeros(3, 5, 4), "clean": torch.zeros(3, 5, 4)},
            ]
        )


@pytest.mark.parametrize(
    "image,shape",
    [
        (np.zeros((4, 6), dtype=np.uint8), (3, 4, 6)),
        (np.zeros((4, 6, 4), dtype=np.uint8), (3, 4, 6)),
        (np.full((4, 6, 3), 255, dtype=np.uint8), (3, 4, 6)),
    ],
)
def test_to_tensor_shapes_and_range(image, shape):
    t = to_tensor(image)
    assert t.shape == shape and t.dtype == torch.float32
    assert float(t.max()) == (1.0 if image.max() == 255 else 0.0)


@pytest.mark.parametrize(
    "name",
    [
        "eqreg_hf.data.synthetic",
        "eqreg_hf.data.rain_settings",
        "eqreg_hf.data.transforms",
        "eqreg_hf.data.rain",
        "eqreg_hf.data.rain_layouts",
    ],
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch, "np": np})
    assert result.failed == 0 and result.attempted > 0


def _doc_blocks():
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(_doc_blocks())))
def test_docs_data_python_blocks_run(index, capsys):
    """docs/data.md: blocks marked `python` run offline as written (`py` blocks need downloaded data)."""
    exec(compile(_doc_blocks()[index], f"docs/data.md block {index}", "exec"), {"__name__": "__docs__"})
