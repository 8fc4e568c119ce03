"""CIFAR-100 from the Hugging Face Hub or a local copy, and timm-derived classification transforms.

Schema (the Hub dataset ``uoft-cs/cifar100``): ``img`` (Image, 32x32 RGB), ``fine_label`` (ClassLabel,
100 classes), ``coarse_label`` (ClassLabel, 20 superclasses); 50,000 train / 10,000 test images.

Local copies accepted by ``load_cifar100(path=...)``:

- a parquet file, or a folder of parquet files (e.g. the Hub repo's ``cifar100/train-*.parquet``;
  the split is picked by its name in the file or folder names);
- a ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` folder;
- an imagefolder: ``<path>/<split>/<class_name>/*.png`` (class folders named as CIFAR-100's fine
  classes, so fine and coarse labels can both be derived), or one with a ``metadata.csv`` that has
  ``file_name,fine_label,coarse_label``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CIFAR100_HUB_ID",
    "CIFAR100_FINE_NAMES",
    "CIFAR100_COARSE_NAMES",
    "CIFAR100_FINE_TO_COARSE",
    "load_cifar100",
    "classification_transform",
    "cifar_transform",
    "ClassificationTransform",
    "num_classes",
]

CIFAR100_HUB_ID = "uoft-cs/cifar100"

# superclass -> its five classes (Krizhevsky 2009); both lists are in the Hub's (alphabetical) index order
_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_COARSE_NAMES: tuple[str, ...] = tuple(sorted(_SUPERCLASSES))
CIFAR100_FINE_NAMES: tuple[str, ...] = tuple(sorted(n for names in _SUPERCLASSES.values() for n in names))
CIFAR100_FINE_TO_COARSE: tuple[int, ...] = tuple(
    next(CIFAR100_COARSE_NAMES.index(s) for s, names in _SUPERCLASSES.items() if fine in names)
    for fine in CIFAR100_FINE_NAMES
)
# The Hub copy spells class 26 "cra"; accept both when mapping class-folder names.
_FINE_ALIASES = {"cra": "crab"}

_LABELS = ("fine", "coarse")
_SPLIT_TOKENS = {"train": ("train",), "test": ("test",), "validation": ("validation", "valid", "val")}


def _offline_error(split: str, err: Exception) -> ValueError:
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ValueError(
        f"Could not load CIFAR-100 ({CIFAR100_HUB_ID}, split {split!r}) from the Hugging Face Hub: {msg}. "
        "Offline? Pass path= a local copy (a parquet file or folder, a save_to_disk folder, or an "
        "imagefolder; see docs/data.md), or use eqreg_hf.data.load_shapes() for an offline classification "
        "dataset."
    )


def _split_files(files: list[Path], root: Path, split: str) -> list[Path]:
    tokens = _SPLIT_TOKENS.get(split, (split.lower(),))

    def has(p: Path, toks: Sequence[str]) -> bool:
        parts = [q.lower() for q in p.relative_to(root).parts]
        return any(t in part for part in parts for t in toks)

    chosen = [f for f in files if has(f, tokens)]
    if chosen:
        return chosen
    any_split = [f for f in files if has(f, [t for ts in _SPLIT_TOKENS.values() for t in ts])]
    if not any_split:
        return files  # an unsplit folder: the path *is* the split
    raise ValueError(
        f"No parquet file for split {split!r} under {root} (found {[f.name for f in files][:6]}). "
        "Name files or folders after the split (train-*.parquet, test/...), or pass the file path."
    )


def _check_named_split(path: Path, split: str, recorded: Any = None) -> None:
    """Refuse a file or ``save_to_disk`` folder of another split (by name, or the split ``datasets`` kept)."""
    from eqreg_hf.data.splits import split_of

    own = split_of(str(recorded), exact=True) if recorded is not None else split_of(path.stem)
    if own is not None and own != split_of(split, exact=True):
        raise ValueError(
            f"{str(path)!r} holds the {own!r} split, not {split!r}: pass the copy of the {split!r} split "
            f"(another split is never used in its place), or split={own!r}."
        )


def _imagefolder_split(root: Path, split: str) -> Path:
    """The imagefolder of ``split``: ``root/<split>`` (or an alias, e.g. ``testing``), or ``root`` itself when
    it is not divided into splits. A split folder holds class folders or a metadata file; a folder of images
    directly is a class (CIFAR-100 has a class named "train")."""
    from eqreg_hf.data.splits import split_aliases, split_of

    def is_split_dir(d: Path) -> bool:
        return split_of(d.name, exact=True) is not None and (
            any(c.is_dir() for c in d.iterdir())
            or (d / "metadata.csv").is_file()
            or (d / "metadata.jsonl").is_file()
        )

    splits = {d.name.lower(): d for d in root.iterdir() if d.is_dir() and is_split_dir(d)}
    for alias in split_aliases(split):
        if alias in splits:
            return splits[alias]
    if splits:
        raise ValueError(
            f"No {split!r} split in {str(root)!r}: its split folders are "
            f"{sorted(d.name for d in splits.values())}, and another split is never used in its place. Add "
            f"{root / split_aliases(split)[0]}/ with class folders, or ask for one of the splits there."
        )
    return root


def _from_imagefolder(folder: Path, cache_dir: str | None):
    import datasets

    from eqreg_hf.data.rain import load_imagefolder

    ds = load_imagefolder(folder, cache_dir)
    if "image" in ds.column_names and "img" not in ds.column_names:
        ds = ds.rename_column("image", "img")
    if "label" in ds.column_names and "fine_label" not in ds.column_names:
        names = [_FINE_ALIASES.get(n, n) for n in ds.features["label"].names]
        fine_feat = datasets.ClassLabel(names=list(CIFAR100_FINE_NAMES))
        if all(n in CIFAR100_FINE_NAMES for n in names):
            fine_idx = [CIFAR100_FINE_NAMES.index(n) for n in names]
            ds = ds.map(
                lambda b: {
                    "fine_label": [fine_idx[i] for i in b["label"]],
                    "coarse_label": [CIFAR100_FINE_TO_COARSE[fine_idx[i]] for i in b["label"]],
                },
                batched=True,
                remove_columns=["label"],
                desc="CIFAR-100 labels",
                features=datasets.Features(
                    {
                        **{k: v for k, v in ds.features.items() if k != "label"},
                        "fine_label": fine_feat,
                        "coarse_label": datasets.ClassLabel(names=list(CIFAR100_COARSE_NAMES)),
                    }
                ),
            )
        else:
            # class folders that are not CIFAR-100 names: keep their own indices as fine labels, no coarse
            ds = ds.rename_column("label", "fine_label")
    return ds


def _load_local_copy(p: Path, split: str, cache_dir: str | None):
    """``split`` of a local CIFAR-100 copy: parquet file or folder, ``save_to_disk`` folder or imagefolder."""
    import datasets

    if not p.exists():
        raise FileNotFoundError(
            f"CIFAR-100 copy {str(p)!r} does not exist. Pass a parquet file or folder, "
            "a save_to_disk folder or an imagefolder, or path=None to use the Hub."
        )
    if p.is_file():
        if p.suffix.lower() != ".parquet":
            raise ValueError(f"{str(p)!r} is not a parquet file; pass a .parquet file or a folder.")
        _check_named_split(p, split)
        return datasets.load_dataset("parquet", data_files=str(p), split="train", cache_dir=cache_dir)
    if (p / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(p))
        if split not in dd:
            raise ValueError(f"Split {split!r} is not in {str(p)!r}; it has {list(dd)}.")
        return dd[split]
    if (p / "state.json").is_file():
        ds = datasets.load_from_disk(str(p))
        _check_named_split(p, split, getattr(ds, "split", None))
        return ds
    if (p / split / "state.json").is_file():
        return datasets.load_from_disk(str(p / split))
    parquet = sorted(p.rglob("*.parquet"))
    if parquet:
        files = _split_files(parquet, p, split)
        return datasets.load_dataset(
            "parquet", data_files=[str(f) for f in files], split="train", cache_dir=cache_dir
        )
    return _from_imagefolder(_imagefolder_split(p, split), cache_dir)


def load_cifar100(
    split: str = "train",
    path: str | os.PathLike | None = None,
    label: str = "fine",
    cache_dir: str | None = None,
    hub_id: str = CIFAR100_HUB_ID,
):
    """CIFAR-100 as a ``datasets.Dataset``: columns ``img``, ``fine_label``, ``coarse_label`` (Hub schema).

    Args:
        split: "train" or "test".
        path: a local copy (parquet file / folder, ``save_to_disk`` folder, imagefolder); None loads
            ``hub_id`` from the Hub (or the local ``datasets`` cache).
        label: "fine" (100 classes) or "coarse" (20); checked to exist. The transform picks the column:
            ``classification_transform(..., label=label)``.
        cache_dir: ``datasets`` cache folder.
        hub_id: Hub dataset id (default ``uoft-cs/cifar100``).

    Raises:
        ValueError: offline with no local copy, a path in no recognised format, or a missing label column.

    Example:
        >>> # ds = load_cifar100("test")                               # from the Hub
        >>> # ds = load_cifar100("test", path="data/cifar100-parquet")  # local copy
        >>> # ds = ds.with_transform(classification_transform(timm_model, train=False))
    """
    import datasets

    if label not in _LABELS:
        raise ValueError(
            f"Unknown label={label!r}. Choose between {list(_LABELS)} (fine: 100 classes, coarse: 20)."
        )
    if path is None:
        try:
            ds = datasets.load_dataset(hub_id, split=split, cache_dir=cache_dir)
        except (ConnectionError, OSError, ValueError) as err:
            raise _offline_error(split, err) from err
    else:
        ds = _load_local_copy(Path(path).expanduser(), split, cache_dir)
    if isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"Expected one split, got {list(ds)}; pass split= one of them.")
    if "image" in ds.column_names and "img" not in ds.column_names:
        ds = ds.rename_column("image", "img")
    need = ["img", f"{label}_label"]
    missing = [c for c in need if c not in ds.column_names]
    if missing:
        hint = (
            " An imagefolder whose class folders are not CIFAR-100 names has fine labels only."
            if label == "coarse"
            else ""
        )
        raise ValueError(
            f"CIFAR-100 data lacks column(s) {missing} (columns: {ds.column_names}); expected the Hub "
            f"schema img, fine_label, coarse_label.{hint}"
        )
    return ds


def num_classes(ds, label: str = "fine") -> int:
    """Number of classes of the ``{label}_label`` column (ClassLabel size, else max label + 1)."""
    col = f"{label}_label"
    feat = ds.features.get(col)
    if feat is not None and hasattr(feat, "num_classes"):
        return int(feat.num_classes)
    return int(max(ds[col])) + 1


def _data_config(
    model: Any,
    data_config: dict | None,
    input_size: int | Sequence[int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> dict:
    from timm.data import resolve_data_config

    cfg = getattr(model, "config", None)
    # a transformers folder saved by eqreg_hf.hub carries the preprocessing it was trained with
    saved = getattr(cfg, "eqreg_preprocessing", None) if not hasattr(model, "pretrained_cfg") else None
    args: dict[str, Any] = {**(saved if isinstance(saved, dict) else {}), **dict(data_config or {})}
    if (
        model is not None
        and not hasattr(model, "pretrained_cfg")
        and cfg is not None
        and getattr(cfg, "image_size", None)
        and "input_size" not in args
    ):
        # a transformers vision model: its config knows the input size, not timm
        s = cfg.image_size
        args["input_size"] = (getattr(cfg, "num_channels", 3), *((s, s) if isinstance(s, int) else tuple(s)))
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)[-2:]
        args["input_size"] = (3, *size)
    if mean is not None:
        args["mean"] = tuple(mean)
    if std is not None:
        args["std"] = tuple(std)
    timm_model = model if hasattr(model, "pretrained_cfg") or hasattr(model, "default_cfg") else None
    return resolve_data_config(args=args, model=timm_model)


def classification_transform(
    model: Any = None,
    *,
    train: bool,
    label: str = "fine",
    data_config: dict | None = None,
    input_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    image_key: str = "img",
    label_key: str | None = None,
    **create_kwargs: Any,
) -> Callable[[dict], dict]:
    """``with_transform`` callable: ``{"img", "<label>_label"}`` batches -> ``{"pixel_values", "labels"}``.

    The preprocessing is timm's: ``timm.data.resolve_data_config`` on ``model`` (its pretrained
    input size, interpolation, crop_pct, mean/std), then ``timm.data.create_transform(is_training=train)``
    (random-resized-crop + flip + colour jitter when training; resize + centre crop when not).

    Args:
        model: a timm model (data config from its ``pretrained_cfg``), a transformers vision model
            (input size from ``config.image_size``), or None (timm defaults: 224, ImageNet mean/std).
        train: training (augmented) or evaluation transform.
        label: "fine" or "coarse": which CIFAR label becomes ``labels``.
        data_config: explicit entries for ``resolve_data_config`` (e.g. ``{"crop_pct": 1.0}``).
        input_size: override the size: int or ``(h, w)`` (e.g. 32 to stay at CIFAR's resolution).
        mean, std: override normalisation.
        image_key: image column (default "img").
        label_key: label column (default ``f"{label}_label"``).
        **create_kwargs: more ``timm.data.create_transform`` options (``hflip=0.0``, ``scale=(0.5, 1)``...).

    Example:
        >>> t = classification_transform(None, train=False, input_size=32)
        >>> from PIL import Image
        >>> out = t({"img": [Image.new("RGB", (32, 32))], "fine_label": [3]})
        >>> tuple(out["pixel_values"][0].shape), out["labels"]
        ((3, 32, 32), [3])
    """
    from timm.data import create_transform

    if label not in _LABELS:
        raise ValueError(f"Unknown label={label!r}. Choose between {list(_LABELS)}.")
    config = _data_config(model, data_config, input_size, mean, std)
    tf = create_transform(**config, is_training=train, **create_kwargs)
    return ClassificationTransform(tf, config, image_key, label_key or f"{label}_label")


class ClassificationTransform:
    """Picklable batch transform made by :func:`classification_transform` (works with DataLoader workers)."""

    def __init__(self, transform: Callable, data_config: dict, image_key: str, label_key: str):
        self.transform = transform
        self.data_config = data_config  # visible for logging / model cards
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, batch: dict) -> dict:
        if self.image_key not in batch or self.label_key not in batch:
            raise KeyError(
                f"classification_transform needs columns {self.image_key!r} and {self.label_key!r}; "
                f"the batch has {sorted(batch)}. Pass image_key=/label_key= for other schemas."
            )
        pixels = [
            self.transform(img.convert("RGB") if hasattr(img, "convert") else img)
            for img in batch[self.image_key]
        ]
        return {"pixel_values": pixels, "labels": [int(y) for y in batch[self.label_key]]}

    def __repr__(self) -> str:
        return f"ClassificationTransform(data_config={self.data_config}, label_key={self.label_key!r})"


cifar_transform = classification_transform
