"""Which files of a rain benchmark folder pair up: layout detection and (rainy, clean) pairing.

Layouts recognised (``RAIN_LAYOUTS``; docs/data.md says how to get each benchmark into one):

- ``rain100``: one folder with ``rain-XXX.png`` and ``norain-XXX.png`` (Rain100L/H as distributed;
  extra ``rainregion-``/``rainstreak-`` files of the JORDER release are ignored).
- ``subfolders``: ``rainy/`` + ``norain/`` (also ``rain/``, ``input/`` | ``clean/``, ``gt/``,
  ``target/``), files paired by name or number (``rain-001.png`` <-> ``norain-001.png``, ``1.png`` <->
  ``1.png``).
- ``rain1400``: ``rainy_image/N_M.jpg`` (14 rainy versions M per ``ground_truth/N.jpg``).
- ``rain12``: one folder with ``NNN_in.png`` and ``NNN_GT.png``.
- ``imagefolder``: a ``metadata.csv`` with columns ``rainy_file_name,clean_file_name`` (loaded with
  ``datasets.load_dataset("imagefolder", ...)``).

Loading them as datasets (splits, benchmark names, the Hub) is :mod:`eqreg_hf.data.rain`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "RAIN_LAYOUTS",
    "detect_layout",
    "find_pairs",
    "check_pair_sizes",
    "check_image_file",
    "unknown_layout_error",
    "image_files",
    "subfolders",
    "IMAGE_EXTENSIONS",
]

RAIN_LAYOUTS: dict[str, str] = {
    "rain100": "one folder with rain-XXX.png and norain-XXX.png (Rain100L / Rain100H)",
    "subfolders": (
        "rainy/ and norain/ subfolders (or rain/, input/ | clean/, gt/, target/), "
        "files paired by name or number"
    ),
    "rain1400": "rainy_image/N_M.jpg with ground_truth/N.jpg (Rain1400: 14 rainy versions per clean image)",
    "rain12": "one folder with NNN_in.png and NNN_GT.png (Rain12)",
    "imagefolder": "metadata.csv with columns rainy_file_name,clean_file_name (datasets imagefolder)",
}

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_RAINY_DIRS = ("rainy", "rain", "rainy_image", "rainy_images", "input", "inputs", "lq", "degraded")
_CLEAN_DIRS = (
    "norain",
    "no_rain",
    "clean",
    "gt",
    "ground_truth",
    "groundtruth",
    "target",
    "targets",
    "hq",
    "label",
)
_RAIN100_RAINY = re.compile(r"^(?:rain|rainy)[-_](?P<key>.+)$", re.IGNORECASE)
_RAIN100_CLEAN = re.compile(r"^(?:norain|no_rain|no-rain|clean|gt)[-_](?P<key>.+)$", re.IGNORECASE)
_RAIN100_IGNORED = re.compile(
    r"^(?:rainregion|rainstreak|rain_region|rain_streak|streak|mask)", re.IGNORECASE
)
_RAIN12_RAINY = re.compile(r"^(?P<key>.+?)[-_](?:in|input|rain|rainy)$", re.IGNORECASE)
_RAIN12_CLEAN = re.compile(r"^(?P<key>.+?)[-_](?:gt|clean|norain|target|groundtruth)$", re.IGNORECASE)
_PREFIXES = re.compile(r"^(?:norain|no_rain|no-rain|rainy|rain|clean|gt|input|target)[-_]", re.IGNORECASE)
_SUFFIXES = re.compile(r"[-_](?:in|input|rain|rainy|gt|clean|norain|target)$", re.IGNORECASE)
_VERSION = re.compile(r"^(?P<base>.+)[-_](?P<version>\d+)$")
_SCALE = re.compile(r"^(?P<base>.+?)x\d$")  # EDSR-style names (RCDNet's data): rain/norain-1x2.png


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (hidden ones left out), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def subfolders(folder: Path) -> list[Path]:
    """The folders directly in ``folder`` (hidden ones left out), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _norm_key(key: str) -> str:
    """Pairing key: lowercase; all-digit keys lose leading zeros so 001 matches 1."""
    key = key.lower()
    return str(int(key)) if key.isdigit() else key


def _natural(path: Path | str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path).lower())]


def _find_child(folder: Path, names: Sequence[str]) -> Path | None:
    lookup = {p.name.lower(): p for p in subfolders(folder)}
    for n in names:
        if n in lookup:
            return lookup[n]
    return None


def _has_metadata(folder: Path) -> bool:
    return (folder / "metadata.csv").is_file() or (folder / "metadata.jsonl").is_file()


def detect_layout(folder: str | os.PathLike) -> str | None:
    """Name of the layout of ``folder`` (a key of ``RAIN_LAYOUTS``), or None if none matches.

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
    stems = [p.stem for p in image_files(folder)]
    if any(_RAIN100_RAINY.match(s) for s in stems) and any(_RAIN100_CLEAN.match(s) for s in stems):
        return "rain100"
    if any(_RAIN12_RAINY.match(s) for s in stems) and any(_RAIN12_CLEAN.match(s) for s in stems):
        return "rain12"
    return None


def unknown_layout_error(folder: Path) -> ValueError:
    """The error for a folder in none of the ``RAIN_LAYOUTS``: what it holds, the layouts, the fix."""
    entries = sorted(
        p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith(".")
    )
    shown = ", ".join(entries[:8]) + (f", ... ({len(entries)} entries)" if len(entries) > 8 else "")
    known = "; ".join(f"{k}: {v}" for k, v in RAIN_LAYOUTS.items())
    if not entries:
        return ValueError(
            f"Rain data folder {str(folder)!r} is empty. Put the benchmark's images there "
            f"(see docs/data.md) or use load_rain('synthetic'). Recognised layouts: {known}."
        )
    return ValueError(
        f"Unknown rain data layout in {str(folder)!r} (found: {shown}). Recognised layouts: "
        f"{known}. Rearrange the files into one of them (docs/data.md) or write a metadata.csv."
    )


def _match(regex: re.Pattern, files: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        m = regex.match(p.stem)
        if m:
            key = _norm_key(m.group("key"))
            if key in out:
                raise ValueError(
                    f"Two files map to the same pair key {key!r}: {out[key]} and {p}; rename one."
                )
            out[key] = p
    return out


def _pair_flat(
    folder: Path, rainy_re: re.Pattern, clean_re: re.Pattern, strict: bool
) -> list[tuple[Path, Path]]:
    files = image_files(folder)
    rainy, clean = _match(rainy_re, files), _match(clean_re, files)
    used = set(rainy.values()) | set(clean.values())
    other = [p.name for p in files if p not in used and not _RAIN100_IGNORED.match(p.stem)]
    if other:
        warnings.warn(
            f"{len(other)} image(s) in {folder} match neither the rainy nor the clean naming and "
            f"are ignored, e.g. {other[:3]}.",
            stacklevel=3,
        )
    return _join(rainy, clean, folder, folder, strict, many_to_one=False)


def _dir_key(stem: str) -> str:
    stem = _SUFFIXES.sub("", _PREFIXES.sub("", stem))
    return _norm_key(stem)


def _keyed(folder: Path, role: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in image_files(folder):
        key = _dir_key(p.stem)
        if key in out:
            raise ValueError(
                f"Two {role} files map to the same pair key {key!r}: {out[key]} and {p}; rename one."
            )
        out[key] = p
    return out


def _pair_dirs(rainy_dir: Path, clean_dir: Path, strict: bool) -> list[tuple[Path, Path]]:
    return _join(
        _keyed(rainy_dir, "rainy"), _keyed(clean_dir, "clean"), rainy_dir, clean_dir, strict, many_to_one=True
    )


def _join(
    rainy: dict[str, Path],
    clean: dict[str, Path],
    rainy_dir: Path,
    clean_dir: Path,
    strict: bool,
    many_to_one: bool,
) -> list[tuple[Path, Path]]:
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
        raise ValueError(
            f"Unpaired {role} image {str(what)!r} has no partner ({n} unpaired file(s) in "
            f"{rainy_dir}{'' if rainy_dir == clean_dir else ' / ' + str(clean_dir)}). Add or rename "
            "its partner, or pass strict=False to skip unpaired files."
        )
    if unpaired or unused:
        warnings.warn(
            f"Skipping {len(unpaired) + len(unused)} unpaired image(s), e.g. "
            f"{[p.name for p in (unpaired + unused)[:3]]}.",
            stacklevel=3,
        )
    if not pairs:
        raise ValueError(
            f"No rainy/clean pairs found in {rainy_dir}"
            f"{'' if rainy_dir == clean_dir else ' and ' + str(clean_dir)}; check the file names "
            f"against the recognised layouts: {RAIN_LAYOUTS}."
        )
    return sorted(pairs, key=lambda rc: _natural(rc[0].relative_to(rainy_dir)))


def _complete_jpeg(path: Path) -> bool:
    """A JPEG ends with its end-of-image marker (trailing padding aside); a cut-off download does not."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 4096))
        return fh.read().rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def check_image_file(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file that opens and is complete; else a ``ValueError`` naming it.

    Cheap where it can be: a PNG is verified chunk by chunk (CRCs, no decoding), a JPEG must end with its
    end-of-image marker (else it is decoded to be sure), other formats are decoded once.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
            if fmt == "PNG":
                im.verify()
            elif fmt != "JPEG" or not _complete_jpeg(path):
                im.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"Image {str(path)!r} cannot be read ({type(err).__name__}: {err}): it is corrupt, truncated or "
            "not an image. Replace or remove it (and its partner)."
        ) from None
    return size


def check_pair_sizes(pairs: list[tuple[Path, Path]]) -> None:
    """Refuse an unreadable or truncated image (:func:`check_image_file`) and a pair of different sizes."""
    clean_sizes: dict[Path, tuple[int, int]] = {}
    for r, c in pairs:
        if c not in clean_sizes:
            clean_sizes[c] = check_image_file(c)
        rs = check_image_file(r)
        if rs != clean_sizes[c]:
            raise ValueError(
                f"Size mismatch in pair {str(r)!r} ({rs[0]}x{rs[1]}) and {str(c)!r} "
                f"({clean_sizes[c][0]}x{clean_sizes[c][1]}) (width x height); a pair must be "
                "pixel-aligned. Fix or remove this pair, or pass check_sizes=False."
            )


def find_pairs(folder: str | os.PathLike, strict: bool = True) -> tuple[str, list[tuple[Path, Path]]]:
    """Detect the layout of one split folder and list its (rainy, clean) file pairs.

    Args:
        folder: a folder in one of the ``RAIN_LAYOUTS`` other than ``imagefolder``.
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
        raise ValueError(
            f"{folder} is an imagefolder (metadata.csv); load it with load_rain({str(folder)!r})."
        )
    raise unknown_layout_error(folder)
