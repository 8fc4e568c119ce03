"""Clean images for the restoration tasks: the built-in photos, a local image folder, or a Hub dataset, and
the choice of the training set (all images, the first N, or one region: the data-scarce regime).

Each loader answers a ``datasets.Dataset`` with one Image column ``"image"``; :mod:`eqreg_hf.data.restore`
degrades them (and re-exports these names).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eqreg_hf.data.splits import split_aliases, split_of
from eqreg_hf.data.transforms import to_tensor

__all__ = ["load_clean_images", "select_training_set"]


def _image_dataset(images: list[torch.Tensor]):
    """Tensors [3, H, W] in [0, 1] -> a ``datasets.Dataset`` with one Image column "image" (uint8 PNG)."""
    import datasets
    from PIL import Image

    pil = [
        Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        for x in images
    ]
    return datasets.Dataset.from_dict({"image": pil}, features=datasets.Features({"image": datasets.Image()}))


_PHOTO_CACHE: dict[tuple, Any] = {}


def _photos(split: str, photo_size: Any):
    from eqreg_hf.data.synthetic import TEST_PHOTOS, TRAIN_PHOTOS, load_photo

    if split not in ("train", "test"):
        raise ValueError(
            f"Unknown split={split!r} for the built-in photos; choose 'train' or 'test' (disjoint)."
        )
    key = (split, photo_size)
    if key not in _PHOTO_CACHE:
        names = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
        _PHOTO_CACHE[key] = _image_dataset(
            [torch.from_numpy(np.array(load_photo(n, photo_size))).permute(2, 0, 1) for n in names]
        )
    return _PHOTO_CACHE[key]


def _split_folder(root: Path, split: str) -> Path:
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for alias in split_aliases(split):
        if alias in subdirs:
            return subdirs[alias]
    others = sorted(p.name for p in subdirs.values() if split_of(p.name, exact=True))
    if others:
        raise ValueError(
            f"No {split!r} split in {str(root)!r}: its split folders are {others}; add a folder "
            f"named {split!r} or ask for one of those splits."
        )
    own = split_of(root.name, exact=True)
    if own is not None and own != split_of(split):
        raise ValueError(
            f"{str(root)!r} is the {own!r} split (by its name), not {split!r}; pass the folder of the "
            f"{split!r} split or its parent holding both."
        )
    if own is None and split_of(split) != "train":
        raise ValueError(
            f"{str(root)!r} has no split folders, so it is the training set only; for a {split!r} split "
            f"add {str(root / split)!r} (and move training images to {str(root / 'train')!r})."
        )
    return root


def _load_hub(name: str, split: str, image_column: str, cache_dir: str | None):
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split, cache_dir=cache_dir)
    except (ConnectionError, OSError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"Could not load clean images {name!r} (split {split!r}) with datasets.load_dataset: {msg}. "
            "Offline or unknown id? Pass a local image folder or source='photos' (built in)."
        ) from err
    if image_column not in ds.column_names:
        raise ValueError(
            f"Dataset {name!r} has no image column {image_column!r} (columns: {ds.column_names}); "
            "pass image_column='<the column holding the images>'."
        )
    ds = ds.select_columns([image_column])
    if image_column != "image":
        ds = ds.rename_column(image_column, "image")
    if not isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image())
    return ds


def load_clean_images(
    source: str | os.PathLike = "photos",
    split: str = "train",
    *,
    photo_size: Any = 128,
    data_dir: str | os.PathLike | None = None,
    image_column: str = "image",
    cache_dir: str | None = None,
):
    """Clean images as a ``datasets.Dataset`` with one Image column ``"image"`` (RGB once transformed).

    Args:
        source: ``"photos"``: the built-in scikit-image photos (``TRAIN_PHOTOS`` / ``TEST_PHOTOS`` of
            :mod:`eqreg_hf.data.synthetic`, disjoint) at ``photo_size`` (resized, centre-cropped); a local
            folder of images, or its name under ``data_dir`` (its ``train/`` / ``test/`` subfolders when
            present, else the whole folder is the training set); else
            ``datasets.load_dataset(source, split=split)``: a Hub dataset id or a local copy of a Hub dataset
            repo (parquet files), ``image_column`` renamed "image".
        cache_dir: ``datasets`` cache for folder and Hub loads.

    Example:
        >>> ds = load_clean_images("photos", "test", photo_size=32)
        >>> ds.column_names, len(ds)
        (['image'], 4)
    """
    name = os.fspath(source)
    if name == "photos":
        return _photos(split, photo_size)
    path = Path(name).expanduser()
    if not path.is_dir() and data_dir is not None and (Path(data_dir).expanduser() / name).is_dir():
        path = Path(data_dir).expanduser() / name
    if path.is_dir():
        from eqreg_hf.data.rain import load_imagefolder
        from eqreg_hf.data.rain_layouts import IMAGE_EXTENSIONS

        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*") if p.is_file()):
            return _load_hub(str(path), split, image_column, cache_dir)  # a local copy of a Hub dataset repo
        return load_imagefolder(_split_folder(path, split), cache_dir).select_columns(["image"])
    if path.exists():
        raise ValueError(
            f"source={name!r} is a file; pass the folder that holds the images, a Hub id or 'photos'."
        )
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(
            f"Image folder {name!r} does not exist; pass an existing folder, a Hub dataset id "
            "('user/name') or source='photos'."
        )
    return _load_hub(name, split, image_column, cache_dir)


def _require_images(ds: Any, who: str) -> None:
    names = getattr(ds, "column_names", None)
    if names is None or "image" not in names:
        raise ValueError(
            f"{who} needs a dataset with an 'image' column, got columns {names}; load it with "
            "load_clean_images(..., image_column='<your image column>')."
        )


def select_training_set(ds: Any, size: Any = "all"):
    """The training images: ``"all"``; ``"N"`` (the first N images, N >= 1); ``"regionS"`` (one S x S region
    from the centre of the first image, e.g. ``"region96"``: the data-scarce end of the sweep).

    Example:
        >>> ds = select_training_set(load_clean_images("photos", photo_size=32), "region16")
        >>> len(ds), ds[0]["image"].size
        (1, (16, 16))
    """
    _require_images(ds, "select_training_set")
    spec = str(size).strip().lower()
    if spec == "all":
        return ds
    if spec.isdigit():
        n = int(spec)
        if not 1 <= n <= len(ds):
            raise ValueError(
                f"Training-set size {size!r} is not between 1 and the {len(ds)} images available; "
                f"pass a number in [1, {len(ds)}] or 'all'."
            )
        return ds.select(range(n))
    match = re.fullmatch(r"region(\d+)", spec)
    if match is None:
        raise ValueError(
            f"Unknown training-set size {size!r}; use 'all', a number of images such as '3', or "
            "'region96' (one 96 x 96 region from the centre of the first image)."
        )
    s = int(match.group(1))
    x = to_tensor(ds[0]["image"])
    h, w = x.shape[-2:]
    if not 1 <= s <= min(h, w):
        raise ValueError(
            f"Region size {s} ({size!r}) does not fit the first image ({h} x {w}); use a region of "
            f"at most {min(h, w)} pixels (e.g. 'region{min(h, w) // 2}') or larger images."
        )
    top, left = (h - s) // 2, (w - s) // 2
    return _image_dataset([x[:, top : top + s, left : left + s]])
