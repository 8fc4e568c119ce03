"""Restoration data: deepinv forward models (their symmetry, checked numerically), clean-image sources,
training-set selection, the seeded transform and the fixed held-out pairs."""

from __future__ import annotations

import doctest
import importlib
import math
import pickle

import datasets  # hard dependencies (pyproject): a missing one must fail here, not skip
import deepinv  # noqa: F401
import numpy as np
import pytest
import skimage  # noqa: F401
import torch
import torch.nn.functional as F

from eqreg_hf.data.restore import (
    DEFAULT_SIGMA,
    SCALES,
    SR_FILTERS,
    Degradation,
    RestoreTransform,
    held_out_pairs,
    load_clean_images,
    restore_collate,
    select_training_set,
    sr_filter,
)

PHOTO = 32  # photo side in these tests


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _d4(x):
    """The 8 elements of D4 as (name, function), convention of eqreg_hf.core.groups (flip W, then rot90)."""
    return [
        (f"f{f}k{k}", lambda t, f=f, k=k: torch.rot90(t.flip(-1) if f else t, k, (-2, -1)))
        for f in (0, 1)
        for k in range(4)
    ]


@pytest.fixture(scope="module")
def photos():
    return load_clean_images("photos", "train", photo_size=PHOTO)


# ---- the forward models -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SR_FILTERS)
@pytest.mark.parametrize("scale", SCALES)
def test_sr_forward_model_is_exactly_d4_equivariant(name, scale):
    deg = Degradation("sr", scale=scale, sr_filter=name)
    x = torch.rand(2, 3, 8 * scale, 10 * scale, generator=_gen())  # non-square too: rot90 swaps H and W
    for label, g in _d4(x):
        assert _rel(deg.A(g(x)), g(deg.A(x))) < 1e-6, (name, scale, label)


def test_default_sr_filter_is_bicubic_and_box_is_the_block_mean():
    assert Degradation("sr").sr_filter == "bicubic"
    x = torch.rand(1, 3, 24, 24, generator=_gen())
    for s in SCALES:
        assert torch.allclose(Degradation("sr", scale=s, sr_filter="box").A(x), F.avg_pool2d(x, s), atol=1e-6)
    # at x2 and x4 the bicubic taps are deepinv's own, only re-centred on the block
    from deepinv.physics.functional import bicubic_filter

    for s in (2, 4):
        mine = sr_filter(s)[0, 0]
        mine = mine[mine.abs().sum(1) > 0][:, mine.abs().sum(0) > 0]
        assert torch.allclose(mine, bicubic_filter(s)[0, 0], atol=1e-7)


def test_deepinv_stock_filters_are_not_equivariant_at_x3():
    """Why we centre our own filter: deepinv's bicubic (even taps, centred half a pixel off) at x3 on
    48 x 48."""
    import warnings

    from deepinv.physics import Downsampling

    x = torch.rand(1, 3, 48, 48, generator=_gen())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = Downsampling(filter="bicubic", factor=3, padding="circular")
    rot = lambda t: torch.rot90(t, 1, (-2, -1))  # noqa: E731
    assert _rel(stock.A(rot(x)), rot(stock.A(x))) > 1e-2
    assert _rel(Degradation("sr", scale=3).A(rot(x)), rot(Degradation("sr", scale=3).A(x))) < 1e-6


def test_noise_and_masks_commute_with_d4_in_distribution():
    """Same generator state: the draw for R x is the draw for x (white noise, i.i.d. mask), so
    D(R x) - R x and R(D(x) - x) are two samples of one symmetric law; check its moments and that
    the mask statistics do not depend on position or orientation."""
    x = torch.rand(64, 3, 16, 16, generator=_gen())
    deg = Degradation("denoise", sigma=0.1)
    for _, g in _d4(x):
        n = deg(g(x), _gen(1)) - g(x)
        assert abs(float(n.std()) - 0.1) < 3e-3 and abs(float(n.mean())) < 3e-3
    inp = Degradation("inpaint", mask_ratio=0.3)
    kept = (inp.A(torch.ones(400, 1, 16, 16), _gen(2)) > 0).float().mean(0)[0]  # [16, 16] keep rate per pixel
    assert abs(float(kept.mean()) - 0.7) < 0.01
    assert float((kept - torch.rot90(kept)).abs().max()) < 0.12  # ~4.5 standard errors of a 400-image rate


def test_inpainting_mask_is_fresh_per_image_shared_by_channels_and_noise_only_where_observed():
    deg = Degradation("inpaint", mask_ratio=0.5, sigma=0.05)
    y = deg(torch.ones(2, 3, 16, 16), _gen())
    missing = y == 0
    assert torch.equal(missing[:, 0], missing[:, 1]) and torch.equal(missing[:, 0], missing[:, 2])
    assert not torch.equal(missing[0], missing[1])
    assert 0.35 < float(missing.float().mean()) < 0.65
    assert float((y[~missing] - 1).abs().max()) > 0  # observed pixels are noisy


def test_degradation_defaults_shapes_and_dict():
    assert Degradation().sigma == DEFAULT_SIGMA and Degradation("inpaint").sigma == 0.0
    assert Degradation("sr", scale=3).output_size(12, 9) == (4, 3) and Degradation().output_size(5, 7) == (
        5,
        7,
    )
    d = Degradation("sr", scale=4, sigma=0.01).to_dict()
    assert d == {"task": "sr", "sigma": 0.01, "mask_ratio": 0.5, "scale": 4, "sr_filter": "bicubic"}
    assert Degradation(**d).to_dict() == d
    clean = torch.rand(3, 8, 8)
    assert torch.equal(Degradation(sigma=0.0)(clean), clean)  # noise-free denoising is the identity
    assert Degradation("sr")(torch.rand(2, 3, 8, 6)).shape == (2, 3, 4, 3)
    assert type(Degradation("sr").physics).__name__ == "Downsampling"
    assert type(Degradation("inpaint").physics).__name__ == "Inpainting"
    used = Degradation("inpaint", sigma=0.1)
    used(
        clean
    )  # builds its deepinv operator, which does not pickle; the Degradation still does (spawned workers)
    copy = pickle.loads(pickle.dumps(used))
    assert copy.to_dict() == used.to_dict() and torch.equal(copy(clean, _gen()), used(clean, _gen()))


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(task="deblur"), ["deblur", "denoise", "inpaint", "sr"]),
        (dict(sigma=-0.1), ["sigma=-0.1", "25/255"]),
        (dict(sigma=float("nan")), ["sigma=nan"]),
        (dict(sigma="0.1"), ["sigma='0.1'"]),
        (dict(task="inpaint", mask_ratio=1.0), ["mask_ratio=1.0", "[0.0, 1.0)", "missing"]),
        (dict(task="inpaint", mask_ratio=-0.2), ["mask_ratio=-0.2"]),
        (dict(task="sr", scale=8), ["scale=8", "(2, 3, 4)"]),
        (dict(task="sr", scale=True), ["scale=True"]),
        (dict(task="sr", sr_filter="gaussian"), ["gaussian", "bicubic", "box"]),
    ],
)
def test_bad_degradation_parameters_are_one_line_errors(kwargs, words):
    with pytest.raises(ValueError) as err:
        Degradation(**kwargs)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match=r"\(9, 8\).*divisible by the SR scale 2.*\(8, 8\)"):
        Degradation("sr").A(torch.rand(1, 3, 9, 8))
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        Degradation()(torch.rand(8, 8))


# ---- clean images -----------------------------------------------------------------------------


def test_photos_are_disjoint_sized_and_cached(photos):
    test = load_clean_images("photos", "test", photo_size=PHOTO)
    assert photos.column_names == ["image"] and len(photos) == 10 and len(test) == 4
    assert photos[0]["image"].size == (PHOTO, PHOTO)
    train_px = {np.asarray(im).tobytes() for im in photos["image"]}
    assert not train_px & {np.asarray(im).tobytes() for im in test["image"]}
    assert load_clean_images("photos", "train", photo_size=PHOTO) is photos
    with pytest.raises(ValueError, match="split='val'.*'train' or 'test'"):
        load_clean_images("photos", "val")


def _write_images(folder, n, size=(20, 24), seed=0):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_local_image_folder_with_and_without_splits(tmp_path):
    _write_images(tmp_path / "split" / "train", 3)
    _write_images(tmp_path / "split" / "test", 2, seed=1)
    assert len(load_clean_images(tmp_path / "split", "train")) == 3
    ds = load_clean_images("split", "test", data_dir=tmp_path)
    assert ds.column_names == ["image"] and len(ds) == 2
    _write_images(tmp_path / "plain", 2)
    assert len(load_clean_images(str(tmp_path / "plain"))) == 2
    with pytest.raises(ValueError, match="training set only.*test"):  # never evaluate on the training images
        load_clean_images(str(tmp_path / "plain"), "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clean_images(str(tmp_path / "missing"))


def test_hub_layout_parquet_repo_renames_the_image_column(tmp_path):
    """The Hub path (datasets.load_dataset(source, split=...)) on a local copy of a parquet dataset repo."""
    from PIL import Image

    feats = datasets.Features({"img": datasets.Image(), "caption": datasets.Value("string")})
    (tmp_path / "repo" / "data").mkdir(parents=True)
    for split, n in (("train", 3), ("test", 2)):
        rows = {"img": [Image.new("RGB", (12, 10), (i * 40, 0, 0)) for i in range(n)], "caption": ["x"] * n}
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(
            str(tmp_path / "repo" / "data" / f"{split}-00000-of-00001.parquet")
        )
    ds = load_clean_images(
        str(tmp_path / "repo"), "test", image_column="img", cache_dir=str(tmp_path / "cache")
    )
    assert ds.column_names == ["image"] and len(ds) == 2 and ds[1]["image"].size == (12, 10)
    with pytest.raises(ValueError, match=r"no image column 'image'.*\['img', 'caption'\].*image_column="):
        load_clean_images(str(tmp_path / "repo"), "train", cache_dir=str(tmp_path / "cache"))


def test_unreachable_hub_id_is_a_one_line_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub\nmore lines")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match=r"'user/clean'.*Couldn't reach the Hub\. Offline") as err:
        load_clean_images("user/clean")
    assert "\n" not in str(err.value)


# ---- training-set selection -------------------------------------------------------------------


def test_select_training_set(photos):
    assert select_training_set(photos) is photos and len(select_training_set(photos, 3)) == 3
    one = select_training_set(photos, "1")
    assert np.array_equal(np.asarray(one[0]["image"]), np.asarray(photos[0]["image"]))
    region = select_training_set(photos, "region10")
    full = np.asarray(photos[0]["image"])
    assert len(region) == 1 and np.array_equal(np.asarray(region[0]["image"]), full[11:21, 11:21])


@pytest.mark.parametrize(
    "size,match",
    [
        ("some", r"'some'.*'all'.*'region96'"),
        (0, "between 1 and the 10"),
        ("11", "between 1 and the 10"),
        ("region33", r"Region size 33.*32 x 32.*at most 32"),
        ("region0", "Region size 0"),
    ],
)
def test_bad_training_set_sizes(photos, size, match):
    with pytest.raises(ValueError, match=match):
        select_training_set(photos, size)


def test_missing_image_column_is_named():
    ds = datasets.Dataset.from_dict({"picture": [1]})
    for call in (
        lambda: select_training_set(ds),
        lambda: held_out_pairs(ds, Degradation()),
        lambda: RestoreTransform(Degradation(), 8).check_images(ds),
    ):
        with pytest.raises(ValueError, match=r"'image' column.*\['picture'\].*image_column="):
            call()
    with pytest.raises(ValueError, match="'image' column.*'picture'"):
        RestoreTransform(Degradation(), 8)({"picture": [1]})


# ---- the transform and the held-out pairs -----------------------------------------------------


def test_training_transform_is_fresh_each_call_and_replays_from_the_seed(photos):
    deg = Degradation("denoise")
    ds = photos.select(range(2)).with_transform(RestoreTransform(deg, 16, seed=3, augment="D4"))
    first, second = ds[0], ds[0]
    assert first["pixel_values"].shape == first["labels"].shape == (3, 16, 16)
    assert not torch.equal(first["pixel_values"], second["pixel_values"])
    again = photos.select(range(2)).with_transform(RestoreTransform(deg, 16, seed=3, augment="D4"))
    replay = again[0]
    assert torch.equal(replay["pixel_values"], first["pixel_values"]) and torch.equal(
        replay["labels"], first["labels"]
    )
    assert abs(float((first["pixel_values"] - first["labels"]).std()) - DEFAULT_SIGMA) < 0.02


@pytest.mark.parametrize(
    "augment,expected",
    [
        (None, {"f0k0"}),
        ("C2", {"f0k0", "f0k2"}),
        ("C4", {f"f0k{k}" for k in range(4)}),
        ("D4", {f"f{f}k{k}" for f in (0, 1) for k in range(4)}),
    ],
)
def test_augmentation_draws_exactly_its_group(augment, expected):
    image = torch.rand(3, 8, 8, generator=_gen())
    elements = dict((name, g(image)) for name, g in _d4(image))
    tf = RestoreTransform(Degradation(sigma=0.0), 8, seed=0, augment=augment)
    seen = set()
    for _ in range(64):
        label = tf.apply(image)[1]
        seen |= {name for name, t in elements.items() if torch.equal(t, label)}
    assert seen == expected


def test_sr_transform_and_collate(photos):
    deg = Degradation("sr", scale=4)
    items = [photos.with_transform(RestoreTransform(deg, 16, seed=0))[i] for i in range(3)]
    lr, hr = restore_collate(items)
    assert lr.shape == (3, 3, 4, 4) and hr.shape == (3, 3, 16, 16)
    whole = photos.with_transform(RestoreTransform(Degradation("sr", scale=3), None, train=False))[0]
    assert whole["labels"].shape == (3, 30, 30) and whole["pixel_values"].shape == (3, 10, 10)
    with pytest.raises(ValueError, match="different sizes"):
        restore_collate([items[0], {"pixel_values": torch.zeros(3, 2, 2), "labels": torch.zeros(3, 8, 8)}])


def test_eval_transform_is_fixed_per_image(photos):
    tf = RestoreTransform(Degradation("inpaint"), None, seed=0, train=False)
    ds = photos.with_transform(tf)
    a, b, c = ds[0], ds[0], ds[1]
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and a["labels"].shape == (3, PHOTO, PHOTO)
    assert not torch.equal((a["pixel_values"] == 0), (c["pixel_values"] == 0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(crop_size=0), "crop_size=0 must be a positive integer"),
        (dict(crop_size=2.5), "crop_size=2.5"),
        (dict(crop_size=16, augment="C8"), r"augment='C8'.*'none', 'C2', 'C4', 'D4'"),
        (dict(crop_size=15, deg=Degradation("sr", scale=2)), r"crop_size=15.*scale 2.*crop_size=14"),
        (dict(crop_size=2, deg=Degradation("sr", scale=3)), r"crop_size=2.*scale 3.*crop_size=3"),
    ],
)
def test_bad_transform_arguments_fail_at_construction(kwargs, match):
    deg = kwargs.pop("deg", Degradation())
    with pytest.raises(ValueError, match=match):
        RestoreTransform(deg, **kwargs)


def test_crop_larger_than_the_images_is_named(photos):
    region = select_training_set(photos, "region12")
    tf = RestoreTransform(Degradation(), 16)
    with pytest.raises(ValueError, match=r"crop_size=16 is larger than an image of 12 x 12.*<= 12"):
        tf.check_images(region)
    with pytest.raises(ValueError, match="crop_size=16 is larger"):
        region.with_transform(tf)[0]


def test_held_out_pairs_are_fixed_and_differ_across_images():
    test = load_clean_images("photos", "test", photo_size=PHOTO)
    for deg in (Degradation(), Degradation("inpaint", sigma=0.02), Degradation("sr", scale=3, sigma=0.01)):
        one, two = held_out_pairs(test, deg, seed=0), held_out_pairs(test, deg, seed=0)
        assert len(one) == 4 and all(
            torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two)
        )
        residuals = [y - (x if deg.task != "sr" else deg.A(x)) for y, x in one]
        assert not torch.equal(residuals[0], residuals[1])
        other = held_out_pairs(test, deg, seed=1, max_images=2)
        assert len(other) == 2 and not torch.equal(other[0][0], one[0][0])
    assert one[0][1].shape == (3, 30, 30) and one[0][0].shape == (3, 10, 10)


def test_docstring_examples():
    module = importlib.import_module("eqreg_hf.data.restore")
    result = doctest.testmod(module, extraglobs={"torch": torch})
    assert result.failed == 0 and result.attempted > 0
    assert math.isclose(float(sr_filter(3, "bicubic").sum()), 1.0, rel_tol=1e-6)
