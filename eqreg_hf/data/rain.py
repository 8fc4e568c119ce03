"""Paired rain datasets (rainy image + clean target) as ``datasets.Dataset`` with Image columns "rainy", "clean".

Sources, in the order ``load_rain`` tries them:

1. ``"synthetic"``: the built-in offline benchmark (:func:`eqreg_hf.data.synthetic.make_synthetic_rain`).
2. An existing local folder (or the benchmark name Rain100L / Rain100H / Rain1400 / Rain12, or any
   folder name, found under ``data_dir=`` or the ``EQREG_DATA_DIR`` environment variable).
3. A Hugging Face Hub dataset id (``"user/name"``), loaded with ``datasets.load_dataset``.

Local layouts recognised (see ``LAYOUTS``; docs/data.md says how to get each benchmark into one):

- ``rain100``: one folder with ``rain-XXX.png`` and ``norain-XXX.png`` (Rain100L/H as distributed;
  extra ``rainregion-``/``rainstreak-`` files of the JORDER release are ignored).
- ``subfolders``: ``rainy/`` + ``norain/`` (also ``rain/``, ``input/`` | ``clean/``, ``gt/``,
  ``target/``), files paired by name or number (``rain-001.png`` <-> ``norain-001.png``, ``1.png`` <-> ``1.png``).
- ``rain1400``: ``rainy_image/N_M.jpg`` (14 rainy versions M per ``ground_truth/N.jpg``).
- ``rain12``: one folder with ``NNN_in.png`` and ``NNN_GT.png``.
- ``imagefolder``: a ``metadata.csv`` with columns ``rainy_file_name,clean_file_name`` (loaded with
  ``datasets.load_dataset("imagefolder", ...)``).

Splits: a folder with ``train/`` and ``test/`` subfolders (also ``training``/``testing`` or any one
subfolder whose name contains the split, e.g. ``rain_data_train_Light``), or a path that *is* one split.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

__all__ = ["load_rain", "find_pairs", "detect_layout", "LAYOUTS", "BENCHMARKS", "DATA_DIR_ENV"]

DATA_DIR_ENV = "EQREG_DATA_DIR"

LAYOUTS: dict[str, str] = {
    "rain100": "one folder with rain-XXX.png and norain-XXX.png (Rain100L / Rain100H)",
    "subfolders": "rainy/ and norain/ subfolders (or rain/, input/ | clean/, gt/, target/), files paired by name or number",
    "rain1400": "rainy_image/N_M.jpg with ground_truth/N.jpg (Rain1400: 14 rainy versions per clean image)",
    "rain12": "one folder with NNN_in.png and NNN_GT.png (Rain12)",
    "imagefolder": "metadata.csv with columns rainy_file_name,clean_file_name (datasets imagefolder)",
}

# canonical name -> folder names accepted under data_dir / EQREG_DATA_DIR (case-insensitive)
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "Rain100L": ("rain100l", "rain100_l", "rain100-l"),
    "Rain100H": ("rain100h", "rain100_h", "rain100-h"),
    "Rain1400": ("rain1400", "rainy_image_dataset", "ddn_data", "ddn"),
    "Rain12": ("rain12",),
}

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_RAINY_DIRS = ("rainy", "rain", "rainy_image", "rainy_images", "input", "inputs", "lq", "degraded")
_CLEAN_DIRS = ("norain", "no_rain", "clean", "gt", "ground_truth", "groundtruth", "target", "targets", "hq", "label")
_SPLIT_ALIASES = {
    "train": ("train", "training", "trainset", "train_set"),
    "test": ("test", "testing", "testset", "test_set"),
}
_RAIN100_RAINY = re.compile(r"^(?:rain|rainy)[-_](?P<key>.+)$", re.IGNORECASE)
_RAIN100_CLEAN = re.compile(r"^(?:norain|no_rain|no-rain|clean|gt)[-_](?P<key>.+)$", re.IGNORECASE)
_RAIN100_IGNORED = re.compile(r"^(?:rainregion|rainstreak|rain_region|rain_streak|streak|mask)", re.IGNORECASE)
_RAIN12_RAINY = re.compile(r"^(?P<key>.+?)[-_](?:in|input|rain|rainy)$", re.IGNORECASE)
_RAIN12_CLEAN = re.compile(r"^(?P<key>.+?)[-_](?:gt|clean|norain|target|groundtruth)$", re.IGNORECASE)
_PREFIXES = re.compile(r"^(?:norain|no_rain|no-rain|rainy|rain|clean|gt|input|target)[-_]", re.IGNORECASE)
_SUFFIXES = re.compile(r"[-_](?:in|input|rain|rainy|gt|clean|norain|target)$", re.IGNORECASE)
_VERSION = re.compile(r"^(?P<base>.+)[-_](?P<version>\d+)$")
_SCALE = re.compile(r"^(?P<base>.+?)x\d$")  # EDSR-style names (RCDNet's data): rain/norain-1x2.png

# Hub column names tried, in order, when a Hub dataset does not call its columns "rainy"/"clean"
_HUB_RAINY = ("rainy", "rain", "input", "inputs", "rainy_image", "image_rainy", "lq", "degraded", "image", "source")
_HUB_CLEAN = ("clean", "norain", "target", "gt", "ground_truth", "clean_image", "image_clean", "hq", "label_image", "label")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTS
                  and not p.name.startswith("."))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _norm_key(key: str) -> str:
    """Pairing key: lowercase; all-digit keys lose leading zeros so 001 matches 1."""
    key = key.lower()
    return str(int(key)) if key.isdigit() else key


def _natural(path: Path | str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path).lower())]


def _find_child(folder: Path, names: Sequence[str]) -> Path | None:
    lookup = {p.name.lower(): p for p in _subdirs(folder)}
    for n in names:
        if n in lookup:
            return lookup[n]
    return None


def _has_metadata(folder: Path) -> bool:
    return (folder / "metadata.csv").is_file() or (folder / "metadata.jsonl").is_file()


def detect_layout(folder: str | os.PathLike) -> str | None:
    """Name of the layout of ``folder`` (a key of ``LAYOUTS``), or None if none matches.

    Example:
        >>> detect_layout("/nonexistent") is None
        True
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if _has_metadata(folder):
        return "imagefolder"
    rainy_dir, clean_dir = _find_child(folder, _RAINY_DIRS), _find_child(folder, _CLEAN_DIRS)
    if rainy_dir is not None and clean_dir is not None:
        return "rain1400" if rainy_dir.name.lower() == "rainy_image" else "subfolders"
    stems = [p.stem for p in _images(folder)]
    if any(_RAIN100_RAINY.match(s) for s in stems) and any(_RAIN100_CLEAN.match(s) for s in stems):
        return "rain100"
    if any(_RAIN12_RAINY.match(s) for s in stems) and any(_RAIN12_CLEAN.match(s) for s in stems):
        return "rain12"
    return None


def _unknown_layout_error(folder: Path) -> ValueError:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    shown = ", ".join(entries[:8]) + (f", ... ({len(entries)} entries)" if len(entries) > 8 else "")
    known = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
    if not entries:
        return ValueError(f"Rain data folder {str(folder)!r} is empty. Put the benchmark's images there "
                          f"(see docs/data.md) or use load_rain('synthetic'). Recognised layouts: {known}.")
    return ValueError(f"Unknown rain data layout in {str(folder)!r} (found: {shown}). Recognised layouts: "
                      f"{known}. Rearrange the files into one of them (docs/data.md) or write a metadata.csv.")


def _match(regex: re.Pattern, files: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        m = regex.match(p.stem)
        if m:
            key = _norm_key(m.group("key"))
            if key in out:
                raise ValueError(f"Two files map to the same pair key {key!r}: {out[key]} and {p}; rename one.")
            out[key] = p
    return out


def _pair_flat(folder: Path, rainy_re: re.Pattern, clean_re: re.Pattern, strict: bool) -> list[tuple[Path, Path]]:
    files = _images(folder)
    rainy, clean = _match(rainy_re, files), _match(clean_re, files)
    used = set(rainy.values()) | set(clean.values())
    other = [p.name for p in files if p not in used and not _RAIN100_IGNORED.match(p.stem)]
    if other:
        warnings.warn(f"{len(other)} image(s) in {folder} match neither the rainy nor the clean naming and "
                      f"are ignored, e.g. {other[:3]}.", stacklevel=3)
    return _join(rainy, clean, folder, folder, strict, many_to_one=False)


def _dir_key(stem: str) -> str:
    stem = _SUFFIXES.sub("", _PREFIXES.sub("", stem))
    return _norm_key(stem)


def _keyed(folder: Path, role: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in _images(folder):
        key = _dir_key(p.stem)
        if key in out:
            raise ValueError(f"Two {role} files map to the same pair key {key!r}: {out[key]} and {p}; rename one.")
        out[key] = p
    return out


def _pair_dirs(rainy_dir: Path, clean_dir: Path, strict: bool) -> list[tuple[Path, Path]]:
    return _join(_keyed(rainy_dir, "rainy"), _keyed(clean_dir, "clean"), rainy_dir, clean_dir, strict,
                 many_to_one=True)


def _join(rainy: dict[str, Path], clean: dict[str, Path], rainy_dir: Path, clean_dir: Path,
          strict: bool, many_to_one: bool) -> list[tuple[Path, Path]]:
    pairs: list[tuple[Path, Path]] = []
    unpaired: list[Path] = []
    used_clean: set[str] = set()
    for key, r in rainy.items():
        c_key = key if key in clean else None
        if c_key is None and many_to_one:
            # Rain1400: rainy N_M.jpg (version M) belongs to clean N.jpg
            for pattern in (_VERSION, _SCALE):
                m = pattern.match(key)
                if m and _norm_key(m.group("base")) in clean:
                    c_key = _norm_key(m.group("base"))
                    break
        if c_key is None:
            unpaired.append(r)
            continue
        used_clean.add(c_key)
        pairs.append((r, clean[c_key]))
    unused = [clean[k] for k in clean if k not in used_clean]
    if strict and (unpaired or unused):
        what = unpaired[0] if unpaired else unused[0]
        role = "rainy" if unpaired else "clean"
        n = len(unpaired) + len(unused)
        raise ValueError(f"Unpaired {role} image {str(what)!r} has no partner ({n} unpaired file(s) in "
                         f"{rainy_dir}{'' if rainy_dir == clean_dir else ' / ' + str(clean_dir)}). Add or rename "
                         "its partner, or pass strict=False to skip unpaired files.")
    if unpaired or unused:
        warnings.warn(f"Skipping {len(unpaired) + len(unused)} unpaired image(s), e.g. "
                      f"{[p.name for p in (unpaired + unused)[:3]]}.", stacklevel=3)
    if not pairs:
        raise ValueError(f"No rainy/clean pairs found in {rainy_dir}"
                         f"{'' if rainy_dir == clean_dir else ' and ' + str(clean_dir)}; check the file names "
                         f"against the recognised layouts: {LAYOUTS}.")
    return sorted(pairs, key=lambda rc: _natural(rc[0].relative_to(rainy_dir)))


def _check_sizes(pairs: list[tuple[Path, Path]]) -> None:
    from PIL import Image

    clean_sizes: dict[Path, tuple[int, int]] = {}
    for r, c in pairs:
        if c not in clean_sizes:
            with Image.open(c) as im:  # reads the header only
                clean_sizes[c] = im.size
        with Image.open(r) as im:
            rs = im.size
        if rs != clean_sizes[c]:
            raise ValueError(f"Size mismatch in pair {str(r)!r} ({rs[0]}x{rs[1]}) and {str(c)!r} "
                             f"({clean_sizes[c][0]}x{clean_sizes[c][1]}) (width x height); a pair must be "
                             "pixel-aligned. Fix or remove this pair, or pass check_sizes=False.")


def find_pairs(folder: str | os.PathLike, strict: bool = True) -> tuple[str, list[tuple[Path, Path]]]:
    """Detect the layout of one split folder and list its (rainy, clean) file pairs.

    Args:
        folder: a folder in one of the ``LAYOUTS`` other than ``imagefolder``.
        strict: an unpaired file is an error (default) or is skipped with a warning.

    Returns:
        ``(layout_name, [(rainy_path, clean_path), ...])`` in natural order of the rainy names.

    Example:
        >>> # find_pairs("data/Rain100L/test") -> ("rain100", [(.../rain-1.png, .../norain-1.png), ...])
    """
    folder = Path(folder)
    layout = detect_layout(folder)
    if layout in ("subfolders", "rain1400"):
        return layout, _pair_dirs(_find_child(folder, _RAINY_DIRS), _find_child(folder, _CLEAN_DIRS), strict)
    if layout == "rain100":
        return layout, _pair_flat(folder, _RAIN100_RAINY, _RAIN100_CLEAN, strict)
    if layout == "rain12":
        return layout, _pair_flat(folder, _RAIN12_RAINY, _RAIN12_CLEAN, strict)
    if layout == "imagefolder":
        raise ValueError(f"{folder} is an imagefolder (metadata.csv); load it with load_rain({str(folder)!r}).")
    raise _unknown_layout_error(folder)


def _resolve_split(root: Path, split: str) -> Path:
    """The folder holding ``split`` under ``root``: a split subfolder, or ``root`` itself if it is one split."""
    subdirs = _subdirs(root)
    names = {p.name.lower(): p for p in subdirs}
    for alias in _SPLIT_ALIASES.get(split, (split.lower(),)):
        if alias in names:
            return names[alias]
    token = split.lower()
    fuzzy = [p for p in subdirs if token in p.name.lower()]
    if len(fuzzy) == 1:
        return fuzzy[0]
    if len(fuzzy) > 1:
        raise ValueError(f"Several folders in {str(root)!r} could hold split {split!r}: "
                         f"{[p.name for p in fuzzy]}. Pass the folder path of the split you want.")
    if detect_layout(root) is not None:
        return root  # an explicit path to one split
    # a wrapper folder (e.g. an unzipped archive) with a single child: look inside it
    if len(subdirs) == 1 and not _images(root):
        return _resolve_split(subdirs[0], split)
    other = [p.name for p in subdirs]
    if other and any(detect_layout(p) for p in subdirs):
        raise ValueError(f"No {split!r} split folder in {str(root)!r} (subfolders: {other}). Name the split "
                         f"folders {list(_SPLIT_ALIASES.get(split, (split,)))[:2]}, or pass the split's folder path.")
    raise _unknown_layout_error(root)


def load_imagefolder(folder: str | os.PathLike, cache_dir: str | None = None):
    """``datasets.load_dataset("imagefolder")`` over every image and metadata file under ``folder``, as one split.

    Files are passed explicitly (``data_files``) because imagefolder otherwise reads folder names such as
    ``train``/``test`` as splits -- wrong when they are class names (CIFAR-100 has a class "train").
    """
    import datasets

    folder = Path(folder)
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and (p.suffix.lower() in _IMAGE_EXTS or p.name in ("metadata.csv", "metadata.jsonl")))
    if not files:
        raise ValueError(f"Image folder {str(folder)!r} has no images.")
    return datasets.load_dataset("imagefolder", data_files={"train": files}, split="train", cache_dir=cache_dir)


def _load_local(root: Path, split: str, strict: bool, check_sizes: bool, cache_dir: str | None):
    import datasets

    folder = _resolve_split(root, split)
    layout = detect_layout(folder)
    if layout is None:
        raise _unknown_layout_error(folder)
    if layout == "imagefolder":
        ds = load_imagefolder(folder, cache_dir)
        missing = [c for c in ("rainy", "clean") if c not in ds.column_names]
        if missing:
            raise ValueError(f"{folder}/metadata.csv must have columns rainy_file_name and clean_file_name "
                             f"(giving Image columns 'rainy' and 'clean'); got columns {ds.column_names}.")
        ds = ds.select_columns(["rainy", "clean"])
        if len(ds) == 0:
            raise ValueError(f"metadata.csv in {folder} lists no images.")
        return ds
    _, pairs = find_pairs(folder, strict=strict)
    if check_sizes:
        _check_sizes(pairs)
    features = datasets.Features({"rainy": datasets.Image(), "clean": datasets.Image()})
    return datasets.Dataset.from_dict(
        {"rainy": [str(r) for r, _ in pairs], "clean": [str(c) for _, c in pairs]}, features=features)


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
        for child in _subdirs(base):
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
    if None in mapping.values() or mapping["rainy"] == mapping["clean"] or \
            any(v not in cols for v in mapping.values()):
        raise ValueError(f"Cannot tell the rainy and clean columns of Hub dataset {name!r} (columns: {cols}). "
                         "Pass columns={'rainy': '<rainy column>', 'clean': '<clean column>'}.")
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
            f"Offline or unknown id? Pass a local folder (load_rain('/path/to/Rain100L')), a benchmark name with "
            f"data_dir= or {DATA_DIR_ENV} set, or load_rain('synthetic') for the built-in offline benchmark."
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
        check_sizes: check that each pair has equal sizes (reads image headers only; default True).
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
        >>> # load_rain("Rain100L", split="test", data_dir="~/data")     # ~/data/Rain100L/test/rain-001.png ...
        >>> # load_rain("/data/Rain1400/testing")                        # rainy_image/ + ground_truth/
    """
    name = os.fspath(name_or_path)
    if name.lower() == "synthetic":
        from eqreg_hf.data.synthetic import make_synthetic_rain

        return make_synthetic_rain(split, cache_dir=cache_dir, **kwargs)

    path = Path(name).expanduser()
    local = path if path.is_dir() else _find_named(name, data_dir)
    if local is not None:
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for a local rain folder; they apply only to "
                            "'synthetic' (make_synthetic_rain options) or Hub ids (load_dataset options).")
        return _load_local(local, split, strict, check_sizes, cache_dir)

    if path.exists():
        raise ValueError(f"{name!r} is a file; pass the folder that holds the rainy/clean images.")
    canon = _benchmark_name(name)
    looked = [str(d) for d in _search_dirs(data_dir)] or [f"(no data_dir given and ${DATA_DIR_ENV} unset)"]
    if canon is not None:
        raise FileNotFoundError(
            f"{canon} was not found locally (looked in: {', '.join(looked)}). Download it (docs/data.md) and pass "
            f"data_dir='/folder/containing/{canon}' or set {DATA_DIR_ENV}, give the folder path itself, or pass a "
            "Hub dataset id ('user/name'); load_rain('synthetic') needs no download.")
    if name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1:
        raise FileNotFoundError(f"Rain data folder {name!r} does not exist. Pass an existing folder, a benchmark "
                                f"name ({list(BENCHMARKS)}) with data_dir=, a Hub id ('user/name'), or 'synthetic'.")
    return _load_hub(name, split, cache_dir, columns, **kwargs)
