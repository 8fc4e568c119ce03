"""Paired rain datasets (rainy image + clean target): a ``datasets.Dataset``, Image columns "rainy", "clean".

Sources, in the order ``load_rain`` tries them:

1. ``"synthetic"``: the built-in offline benchmark (:func:`eqreg_hf.data.synthetic.make_synthetic_rain`).
2. An existing local folder (or the benchmark name Rain100L / Rain100H / Rain1400 / Rain12, or any
   folder name, found under ``data_dir=`` or the ``EQREG_DATA_DIR`` environment variable).
3. A Hugging Face Hub dataset id (``"user/name"``), loaded with ``datasets.load_dataset``.

Local layouts: see :data:`eqreg_hf.data.rain_layouts.RAIN_LAYOUTS` (one folder of ``rain-XXX.png`` /
``norain-XXX.png``, ``rainy/`` + ``norain/`` subfolders, Rain1400's ``rainy_image/`` + ``ground_truth/``,
Rain12's ``NNN_in.png`` / ``NNN_GT.png``, or an imagefolder ``metadata.csv``); docs/data.md says how
to get each benchmark into one.

Splits: a folder with ``train/`` and ``test/`` subfolders (also ``training``/``testing`` or any one
subfolder whose name contains the split, e.g. ``rain_data_train_Light``), or a path that *is* one split.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eqreg_hf.data.rain_layouts import (
    IMAGE_EXTENSIONS,
    RAIN_LAYOUTS,
    check_image_file,
    check_pair_sizes,
    detect_layout,
    find_pairs,
    image_files,
    subfolders,
    unknown_layout_error,
)
from eqreg_hf.data.splits import split_aliases, split_of

__all__ = [
    "load_rain",
    "load_imagefolder",
    "find_pairs",
    "detect_layout",
    "RAIN_LAYOUTS",
    "BENCHMARKS",
    "DATA_DIR_ENV",
]

DATA_DIR_ENV = "EQREG_DATA_DIR"

# canonical name -> folder names accepted under data_dir / EQREG_DATA_DIR (case-insensitive)
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "Rain100L": ("rain100l", "rain100_l", "rain100-l"),
    "Rain100H": ("rain100h", "rain100_h", "rain100-h"),
    "Rain1400": ("rain1400", "rainy_image_dataset", "ddn_data", "ddn"),
    "Rain12": ("rain12",),
}

# Hub column names tried, in order, when a Hub dataset does not call its columns "rainy"/"clean"
_HUB_RAINY = (
    "rainy",
    "rain",
    "input",
    "inputs",
    "rainy_image",
    "image_rainy",
    "lq",
    "degraded",
    "image",
    "source",
)
_HUB_CLEAN = (
    "clean",
    "norain",
    "target",
    "gt",
    "ground_truth",
    "clean_image",
    "image_clean",
    "hq",
    "label_image",
    "label",
)


def _resolve_split(root: Path, split: str) -> Path:
    """The folder holding ``split`` under ``root``: a split subfolder, or ``root`` itself if it is one split.

    Never another split: a root whose subfolders are other splits (only ``train/`` when ``test`` is asked
    for), or a folder named after another split, is an error naming the folders found.
    """
    subdirs = subfolders(root)
    names = {p.name.lower(): p for p in subdirs}
    for alias in split_aliases(split):
        if alias in names:
            return names[alias]
    fuzzy = [p for p in subdirs if split_of(p.name) == split.lower() or split.lower() in p.name.lower()]
    if len(fuzzy) == 1:
        return fuzzy[0]
    if len(fuzzy) > 1:
        raise ValueError(
            f"Several folders in {str(root)!r} could hold split {split!r}: "
            f"{[p.name for p in fuzzy]}. Pass the folder path of the split you want."
        )
    others = [p.name for p in subdirs if split_of(p.name) is not None]
    if others:
        raise ValueError(
            f"No {split!r} split in {str(root)!r}: its split folders are {others}, and another split is "
            f"never used in its place (its pairs would be reported as {split!r} results). Add a folder named "
            f"{list(split_aliases(split))[:2]}, or ask for one of the splits there."
        )
    own = split_of(root.name, exact=True)  # a folder named train/, Testing/, ... (not test_run_3/)
    if own is not None and own != split_of(split):
        raise ValueError(
            f"{str(root)!r} is the {own!r} split (by its name), not {split!r}: pass the folder of the "
            f"{split!r} split (or its parent, which holds both), or split={own!r}."
        )
    if detect_layout(root) is not None:
        return root  # an explicit path to one split
    # a wrapper folder (e.g. an unzipped archive) with a single child: look inside it
    if len(subdirs) == 1 and not image_files(root):
        return _resolve_split(subdirs[0], split)
    other = [p.name for p in subdirs]
    if other and any(detect_layout(p) for p in subdirs):
        raise ValueError(
            f"No {split!r} split folder in {str(root)!r} (subfolders: {other}). Name the split "
            f"folders {list(split_aliases(split))[:2]}, or pass the split's folder path."
        )
    raise unknown_layout_error(root)


def load_imagefolder(folder: str | os.PathLike, cache_dir: str | None = None):
    """``datasets.load_dataset("imagefolder")`` over all the image and metadata files under ``folder``.

    Files are passed explicitly (``data_files``) because imagefolder otherwise reads folder names such as
    ``train``/``test`` as splits -- wrong when they are class names (CIFAR-100 has a class "train").
    """
    import datasets

    folder = Path(folder)
    files = sorted(
        str(p)
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix.lower() in IMAGE_EXTENSIONS or p.name in ("metadata.csv", "metadata.jsonl"))
    )
    if not files:
        raise ValueError(f"Image folder {str(folder)!r} has no images.")
    for f in files:
        if Path(f).suffix.lower() in IMAGE_EXTENSIONS:
            check_image_file(f)  # a corrupt or truncated file is named now, not mid-training
    return datasets.load_dataset(
        "imagefolder", data_files={"train": files}, split="train", cache_dir=cache_dir
    )


def _load_local(root: Path, split: str, strict: bool, check_sizes: bool, cache_dir: str | None):
    import datasets

    folder = _resolve_split(root, split)
    layout = detect_layout(folder)
    if layout is None:
        raise unknown_layout_error(folder)
    if layout == "imagefolder":
        ds = load_imagefolder(folder, cache_dir)
        missing = [c for c in ("rainy", "clean") if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"{folder}/metadata.csv must have columns rainy_file_name and clean_file_name "
                f"(giving Image columns 'rainy' and 'clean'); got columns {ds.column_names}."
            )
        ds = ds.select_columns(["rainy", "clean"])
        if len(ds) == 0:
            raise ValueError(f"metadata.csv in {folder} lists no images.")
        return ds
    _, pairs = find_pairs(folder, strict=strict)
    if check_sizes:
        check_pair_sizes(pairs)
    features = datasets.Features({"rainy": datasets.Image(), "clean": datasets.Image()})
    return datasets.Dataset.from_dict(
        {"rainy": [str(r) for r, _ in pairs], "clean": [str(c) for _, c in pairs]}, features=features
    )


def _benchmark_name(name: str) -> str | None:
    low = name.lower()
    for canon, aliases in BENCHMARKS.items():
        if low == canon.lower() or low in aliases:
            return canon
    return None


def _search_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser())
    return dirs


def _find_named(name: str, data_dir: str | os.PathLike | None) -> Path | None:
    canon = _benchmark_name(name)
    wanted = {name.lower()} | ({canon.lower(), *BENCHMARKS[canon]} if canon else set())
    for base in _search_dirs(data_dir):
        if not base.is_dir():
            continue
        if base.name.lower() in wanted:
            return base
        for child in subfolders(base):
            if child.name.lower() in wanted:
                return child
    return None


def _normalise_hub_columns(ds, name: str, columns: dict[str, str] | None):
    import datasets

    cols = ds.column_names
    if columns:
        mapping = {"rainy": columns.get("rainy", "rainy"), "clean": columns.get("clean", "clean")}
    else:
        low = {c.lower(): c for c in cols}
        pick = lambda cands: next((low[c] for c in cands if c in low), None)  # noqa: E731
        mapping = {"rainy": pick(_HUB_RAINY), "clean": pick(_HUB_CLEAN)}
    if (
        None in mapping.values()
        or mapping["rainy"] == mapping["clean"]
        or any(v not in cols for v in mapping.values())
    ):
        raise ValueError(
            f"Cannot tell the rainy and clean columns of Hub dataset {name!r} (columns: {cols}). "
            "Pass columns={'rainy': '<rainy column>', 'clean': '<clean column>'}."
        )
    ds = ds.select_columns([mapping["rainy"], mapping["clean"]])
    if mapping["rainy"] != "rainy" or mapping["clean"] != "clean":
        ds = ds.rename_columns({v: k for k, v in mapping.items() if v != k})
    for col in ("rainy", "clean"):
        if not isinstance(ds.features[col], datasets.Image):
            ds = ds.cast_column(col, datasets.Image())
    return ds


def _load_hub(name: str, split: str, cache_dir: str | None, columns: dict[str, str] | None, **kwargs):
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split, cache_dir=cache_dir, **kwargs)
    except (ConnectionError, OSError, ValueError) as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"Could not load rain dataset {name!r} (split {split!r}) from the Hugging Face Hub: {msg}. "
            "Offline or unknown id? Pass a local folder (load_rain('/path/to/Rain100L')), a benchmark name "
            f"with data_dir= or {DATA_DIR_ENV} set, or load_rain('synthetic') for the built-in offline "
            "benchmark."
        ) from err
    if isinstance(ds, datasets.DatasetDict):  # split=None style answers
        raise ValueError(f"Hub dataset {name!r} returned several splits {list(ds)}; pass split= one of them.")
    return _normalise_hub_columns(ds, name, columns)


def load_rain(
    name_or_path: str | os.PathLike,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    *,
    strict: bool = True,
    check_sizes: bool = True,
    cache_dir: str | None = None,
    columns: dict[str, str] | None = None,
    **kwargs: Any,
):
    """Load a paired deraining dataset as a ``datasets.Dataset`` with Image columns "rainy" and "clean".

    Args:
        name_or_path: ``"synthetic"`` (built-in, offline), a benchmark name (``"Rain100L"``,
            ``"Rain100H"``, ``"Rain1400"``, ``"Rain12"``) or other folder name looked up under ``data_dir``
            / ``$EQREG_DATA_DIR``, a local folder path, or a Hub dataset id (``"user/name"``).
        split: ``"train"`` or ``"test"`` (Hub datasets: any split name they have).
        data_dir: folder that contains the benchmark folders (default: ``$EQREG_DATA_DIR``).
        strict: an unpaired file is an error (default) or skipped with a warning.
        check_sizes: check that every image is readable and complete and each pair has equal sizes (PNG chunks
            verified, JPEG end markers read, no full decoding of those; default True).
        cache_dir: ``datasets`` cache for Hub / imagefolder loads; for ``"synthetic"``, an on-disk cache.
        columns: for Hub datasets whose columns are not recognised, ``{"rainy": ..., "clean": ...}``.
        **kwargs: for ``"synthetic"``, options of :func:`make_synthetic_rain` (``size``, ``num_variants``,
            ``seed``, rain parameters); for Hub ids, extra ``datasets.load_dataset`` arguments.

    Raises:
        ValueError: unknown layout, empty folder, unpaired file, size mismatch, or nothing local and the
            Hub unreachable -- each message says what to pass instead.

    Example:
        >>> ds = load_rain("synthetic", split="test", size=32, num_variants=1)
        >>> ds.features["rainy"].__class__.__name__, len(ds)
        ('Image', 4)
        >>> # load_rain("Rain100L", split="test", data_dir="~/data")  # ~/data/Rain100L/test/rain-001.png ...
        >>> # load_rain("/data/Rain1400/testing")                     # rainy_image/ + ground_truth/
    """
    name = os.fspath(name_or_path)
    if name.lower() == "synthetic":
        from eqreg_hf.data.synthetic import make_synthetic_rain

        return make_synthetic_rain(split, cache_dir=cache_dir, **kwargs)

    path = Path(name).expanduser()
    local = path if path.is_dir() else _find_named(name, data_dir)
    if local is not None:
        if kwargs:
            raise TypeError(
                f"Unexpected arguments {sorted(kwargs)} for a local rain folder; they apply only to "
                "'synthetic' (make_synthetic_rain options) or Hub ids (load_dataset options)."
            )
        return _load_local(local, split, strict, check_sizes, cache_dir)

    if path.exists():
        raise ValueError(f"{name!r} is a file; pass the folder that holds the rainy/clean images.")
    canon = _benchmark_name(name)
    looked = [str(d) for d in _search_dirs(data_dir)] or [f"(no data_dir given and ${DATA_DIR_ENV} unset)"]
    if canon is not None:
        raise FileNotFoundError(
            f"{canon} was not found locally (looked in: {', '.join(looked)}). Download it (docs/data.md) and "
            f"pass data_dir='/folder/containing/{canon}' or set {DATA_DIR_ENV}, give the folder path itself, "
            "or pass a Hub dataset id ('user/name'); load_rain('synthetic') needs no download."
        )
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise FileNotFoundError(
            f"Rain data folder {name!r} does not exist. Pass an existing folder, a benchmark "
            f"name ({list(BENCHMARKS)}) with data_dir=, a Hub id ('user/name'), or 'synthetic'."
        )
    return _load_hub(name, split, cache_dir, columns, **kwargs)
