"""Built-in offline deraining benchmark: synthetic rain streaks on the photographs shipped in scikit-image.

Rain model (the additive model used to make Rain100L/H, Rain1400): ``O = clip(B + a * S, 0, 1)``,
with ``B`` the clean photo, ``S`` in [0, 1] a streak layer and ``a`` the intensity (``blend="screen"``
uses ``1 - (1 - B)(1 - a S)`` instead, which never saturates highlights as hard).

The streak layer is built like the classic "photoshop rain": sparse random seeds (a fraction
``density`` of the pixels, random brightness) convolved with a motion-blur kernel, i.e. an
anti-aliased line of length ``length`` pixels at angle ``theta`` from vertical, thickened by a Gaussian
of full width at half maximum ``width`` pixels. Each image gets a dominant angle drawn uniformly from
``angle_range`` and ``num_layers`` streak layers whose angles deviate from it by at most
``angle_jitter`` degrees and whose lengths are drawn from ``length``.

Symmetry, and what it means for EQ-Reg: a straight streak is unchanged by a 180-degree rotation, so
this rain is *exactly* C2-symmetric in distribution for any ``angle_range`` -- the reason the EQ-Reg
paper uses t = 2 for deraining. A 90-degree rotation turns near-vertical streaks into near-horizontal
ones, which the training data does not contain unless ``angle_range`` covers them: with the default
``(-30, 30)`` (moderately wide, around vertical) the *photos* are roughly C4-symmetric but the rain
is not, so a C4 constraint is a soft, partly wrong prior that EQ-Reg's weight lets the network trade
off; ``angle_range=(-90, 90)`` makes the rain distribution C4-symmetric too.

Split: the train and test photos are disjoint and fixed (see ``TRAIN_PHOTOS`` and ``TEST_PHOTOS``),
so test PSNR/SSIM measure generalisation to unseen photos as well as unseen rain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from eqreg_hf.data.rain_settings import DEFAULT_RAIN, RainSettings, check_blend

__all__ = [
    "TRAIN_PHOTOS",
    "TEST_PHOTOS",
    "DEFAULT_RAIN",
    "RainSettings",
    "rain_streaks",
    "add_rain",
    "load_photo",
    "make_synthetic_rain",
]

# Fixed split of scikit-image's bundled photographs (no download needed). Greyscale ones become RGB.
TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "motorcycle",
    "camera",
    "immunohistochemistry",
    "hubble_deep_field",
    "brick",
    "grass",
    "gravel",
    "moon",
)
TEST_PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "clock", "coins")

_SPLIT_IDS = {"train": 1, "test": 2}
_DEFAULT_VARIANTS = {"train": 4, "test": 2}
_MEMORY_CACHE: dict[str, object] = {}


def _sample(rng: np.random.Generator, value: float | Sequence[float], name: str) -> float:
    """A float as is, or a uniform draw from a ``(low, high)`` range."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}.") from None
    if low > high:
        raise ValueError(f"{name}={value!r}: low must be <= high, e.g. {(high, low)!r}.")
    return float(rng.uniform(low, high))


def _line_kernel(length: float, angle_deg: float, width: float) -> np.ndarray:
    """Motion-blur kernel: an anti-aliased segment (angle from vertical, clockwise) thickened by a
    Gaussian."""
    sigma = max(width, 0.3) / 2.355  # FWHM -> sigma
    half = int(math.ceil(length / 2 + 3 * sigma)) + 1
    size = 2 * half + 1
    theta = math.radians(angle_deg)
    # direction of the streak in (row, col): vertical is (1, 0); positive angles lean the top to the right
    dr, dc = math.cos(theta), -math.sin(theta)
    n = max(int(math.ceil(length * 4)), 2)
    t = np.linspace(-length / 2, length / 2, n)
    rows, cols = half + t * dr, half + t * dc
    # Gaussian splat of each sample point gives both anti-aliasing and thickness in one step
    # exp(-(dy^2 + dx^2)) = exp(-dy^2) exp(-dx^2): one small outer product per sample point
    grid = np.arange(size, dtype=np.float64)
    gy = np.exp(-((grid[None, :] - rows[:, None]) ** 2) / (2 * sigma**2))  # [n, size]
    gx = np.exp(-((grid[None, :] - cols[:, None]) ** 2) / (2 * sigma**2))
    kernel = gy.T @ gx
    return kernel / kernel.max()


def rain_streaks(
    height: int,
    width_px: int,
    *,
    density: float | Sequence[float] = DEFAULT_RAIN["density"],
    length: float | Sequence[float] = DEFAULT_RAIN["length"],
    angle_range: Sequence[float] = DEFAULT_RAIN["angle_range"],
    angle_jitter: float = DEFAULT_RAIN["angle_jitter"],
    width: float | Sequence[float] = DEFAULT_RAIN["width"],
    num_layers: int = DEFAULT_RAIN["num_layers"],
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """A rain-streak layer ``S`` of shape ``[height, width_px]`` with values in [0, 1].

    Sparse seeds (fraction ``density`` of pixels, brightness uniform in [0.5, 1]) convolved with a
    line kernel per layer (see the module docstring). Drawn on a padded canvas so streaks enter from
    outside the frame instead of stopping at the border.

    Args:
        height, width_px: output size in pixels.
        density: fraction of pixels that start a streak, or a ``(low, high)`` range per image.
        length: streak length in pixels, or a range (drawn per layer).
        angle_range: ``(low, high)`` degrees from vertical for the image's dominant angle.
        angle_jitter: each layer's angle deviates from the dominant one by at most this (degrees).
        width: streak thickness (FWHM, pixels), or a range (drawn per layer).
        num_layers: streak layers with their own length/angle/width (default 3).
        seed: int seed or ``numpy.random.Generator``.

    Example:
        >>> s = rain_streaks(32, 48, seed=0)
        >>> s.shape, float(s.min()) >= 0.0, float(s.max()) <= 1.0
        ((32, 48), True, True)
    """
    from scipy.signal import fftconvolve

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}.")
    dens = _sample(rng, density, "density")
    if not 0.0 <= dens <= 1.0:
        raise ValueError(f"density must lie in [0, 1] (fraction of pixels starting a streak), got {dens}.")
    base_angle = _sample(rng, tuple(angle_range), "angle_range")
    lengths = [_sample(rng, length, "length") for _ in range(num_layers)]
    widths = [_sample(rng, width, "width") for _ in range(num_layers)]
    angles = [base_angle + float(rng.uniform(-angle_jitter, angle_jitter)) for _ in range(num_layers)]
    pad = int(math.ceil(max(lengths))) + 4
    H, W = height + 2 * pad, width_px + 2 * pad
    out = np.zeros((H, W), dtype=np.float64)
    for L, a, w in zip(lengths, angles, widths):
        seeds = (rng.random((H, W)) < dens / num_layers) * rng.uniform(0.5, 1.0, size=(H, W))
        out += fftconvolve(seeds, _line_kernel(L, a, w), mode="same")
    return np.clip(out[pad : pad + height, pad : pad + width_px], 0.0, 1.0).astype(np.float32)


def add_rain(
    image: np.ndarray,
    *,
    intensity: float | Sequence[float] = DEFAULT_RAIN["intensity"],
    blend: str = DEFAULT_RAIN["blend"],
    seed: int | np.random.Generator | None = 0,
    **streak_kwargs,
) -> np.ndarray:
    """Add synthetic rain to a float RGB image ``[H, W, 3]`` in [0, 1]; returns the rainy image in [0, 1].

    ``O = clip(B + a S, 0, 1)`` (``blend="add"``) or ``O = 1 - (1 - B)(1 - a S)`` (``"screen"``), with
    ``S = rain_streaks(...)`` (extra keyword arguments go there) and ``a`` the intensity.

    Example:
        >>> b = np.full((20, 30, 3), 0.2, dtype=np.float32)
        >>> o = add_rain(b, seed=1)
        >>> bool((o >= b - 1e-6).all()), o.shape
        (True, (20, 30, 3))
    """
    check_blend(blend)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"add_rain expects an RGB image [H, W, 3] in [0, 1], got shape {image.shape}.")
    a = _sample(rng, intensity, "intensity")
    s = a * rain_streaks(image.shape[0], image.shape[1], seed=rng, **streak_kwargs)[:, :, None]
    if blend == "add":
        out = image + s
    else:
        out = 1.0 - (1.0 - image) * (1.0 - s)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _raw_photo(name: str) -> np.ndarray:
    from skimage import data

    if name == "motorcycle":
        return data.stereo_motorcycle()[0]
    fn = getattr(data, name, None)
    if fn is None:
        raise ValueError(
            f"Unknown scikit-image photo {name!r}. Choose among "
            f"{sorted(set(TRAIN_PHOTOS + TEST_PHOTOS))} or other skimage.data names."
        )
    return fn()


@lru_cache(maxsize=64)
def _photo_cached(name: str, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    arr = np.asarray(_raw_photo(name))
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float64) / max(arr.max(), 1e-8), 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr)
    if size is not None:
        h, w = size
        # resize so the photo covers (h, w), then centre-crop: the whole scene stays visible
        scale = max(h / img.height, w / img.width)
        nh, nw = max(h, round(img.height * scale)), max(w, round(img.width * scale))
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
        top, left = (nh - h) // 2, (nw - w) // 2
        img = img.crop((left, top, left + w, top + h))
    out = np.asarray(img, dtype=np.float32) / 255.0
    out.setflags(write=False)
    return out


def load_photo(name: str, size: int | Sequence[int] | None = None) -> np.ndarray:
    """A scikit-image photo as float RGB ``[H, W, 3]`` in [0, 1], optionally resized and centre-cropped.

    Args:
        name: a ``skimage.data`` name (``"motorcycle"`` is the left stereo_motorcycle view).
        size: int (square) or ``(h, w)``; None keeps the original size.

    Example:
        >>> load_photo("chelsea", size=(24, 40)).shape
        (24, 40, 3)
    """
    return _photo_cached(name, _norm_size(size))


def _norm_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(v) for v in size)
    if h < 4 or w < 4:
        raise ValueError(f"size={size!r} is too small; use at least 4 pixels per side (e.g. size=64).")
    return h, w


def make_synthetic_rain(
    split: str = "train",
    *,
    size: int | Sequence[int] | None = 128,
    num_variants: int | None = None,
    photos: Sequence[str] | None = None,
    seed: int = 0,
    rain: RainSettings | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
):
    """The built-in synthetic deraining benchmark as a ``datasets.Dataset`` (Image columns "rainy", "clean").

    Each photo of the split (``TRAIN_PHOTOS`` or ``TEST_PHOTOS``, disjoint) is resized to ``size``
    and gets ``num_variants`` independent rain layers (see :func:`add_rain`); row order is photo-major.
    Reproducible: the same arguments give byte-identical images. Built in about a second at the default
    size and kept in memory (and, with ``cache_dir``, on disk) for reuse.

    Args:
        split: "train" or "test".
        size: int or ``(h, w)`` output size; None keeps each photo's own size (default 128).
        num_variants: rain versions per photo (default 4 for train, 2 for test).
        photos: override the split's photo list (``skimage.data`` names).
        seed: base seed; train and test draw from different streams of it (default 0).
        rain: how the rain is drawn (:class:`RainSettings`; default ``RainSettings()``, the
            built-in benchmark's rain).
        cache_dir: folder for an on-disk copy (``save_to_disk``), reused when the arguments match.
        progress: show a tqdm bar.

    Example:
        >>> ds = make_synthetic_rain("test", size=32, num_variants=1)
        >>> ds.column_names, len(ds)
        (['rainy', 'clean'], 4)
        >>> wide = RainSettings(angle_range=(-90, 90))  # near-horizontal streaks too: C4-symmetric rain
        >>> len(make_synthetic_rain("test", size=32, num_variants=1, rain=wide))
        4
    """
    rain = RainSettings() if rain is None else rain
    params = _benchmark_params(split, size, num_variants, photos, seed, rain)
    key = hashlib.sha1(json.dumps(params, sort_keys=True, default=list).encode()).hexdigest()[:16]
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]

    import datasets

    disk = None
    if cache_dir is not None:
        disk = os.path.join(os.fspath(cache_dir), f"synthetic-rain-{split}-{key}")
        if os.path.isdir(disk):
            ds = datasets.load_from_disk(disk)
            _MEMORY_CACHE[key] = ds
            return ds
    rainy, clean = _render(params, rain, progress)
    features = datasets.Features({"rainy": datasets.Image(), "clean": datasets.Image()})
    ds = datasets.Dataset.from_dict({"rainy": rainy, "clean": clean}, features=features)
    if disk is not None:
        ds = _save_to_disk(ds, disk)
    _MEMORY_CACHE[key] = ds
    return ds


def _benchmark_params(
    split: str,
    size: int | Sequence[int] | None,
    num_variants: int | None,
    photos: Sequence[str] | None,
    seed: int,
    rain: RainSettings,
) -> dict:
    """Check the arguments of :func:`make_synthetic_rain`; the JSON-able dict that identifies the
    benchmark."""
    if split not in _SPLIT_IDS:
        raise ValueError(
            f"Unknown split={split!r} for the synthetic benchmark. Choose between {list(_SPLIT_IDS)}."
        )
    if not isinstance(rain, RainSettings):
        raise TypeError(
            f"rain={rain!r} is not a RainSettings; pass e.g. rain=RainSettings(angle_range=(-90, 90)) "
            "(RainSettings(**fields) reads a dict of its fields)."
        )
    n_var = _DEFAULT_VARIANTS[split] if num_variants is None else int(num_variants)
    if n_var < 1:
        raise ValueError(f"num_variants must be >= 1, got {num_variants}.")
    photo_list = tuple(photos) if photos is not None else (TRAIN_PHOTOS if split == "train" else TEST_PHOTOS)
    if not photo_list:
        raise ValueError("photos is empty; pass at least one skimage.data name, e.g. photos=['astronaut'].")
    return {
        "version": 1,
        "split": split,
        "size": _norm_size(size),
        "num_variants": n_var,
        "photos": photo_list,
        "seed": int(seed),
        **dataclasses.asdict(rain),
        "angle_range": tuple(rain.angle_range),
    }


def _png(arr: np.ndarray) -> dict:
    """A float image in [0, 1] as a datasets Image value (PNG bytes)."""
    from PIL import Image

    # fast lossless encoding: PNG at zlib level 1 is ~5x quicker than datasets' default and exact
    buf = io.BytesIO()
    Image.fromarray((arr * 255.0).round().astype(np.uint8)).save(buf, format="PNG", compress_level=1)
    return {"bytes": buf.getvalue(), "path": None}


def _render(params: dict, rain: RainSettings, progress: bool) -> tuple[list[dict], list[dict]]:
    """The rainy and clean PNGs of every (photo, variant), photo-major; each clean photo encoded once."""
    from tqdm.auto import tqdm

    split, photo_list, size_t = params["split"], params["photos"], params["size"]
    streaks = rain.streak_kwargs()
    rainy, clean = [], []
    clean_png: dict[int, dict] = {}
    jobs = [(p, v) for p in range(len(photo_list)) for v in range(params["num_variants"])]
    for p, v in tqdm(jobs, desc=f"synthetic rain ({split})", disable=not progress):
        photo = load_photo(photo_list[p], size_t)
        if p not in clean_png:
            clean_png[p] = _png(photo)
        # one independent stream per (seed, split, photo, variant): adding photos or variants never
        # changes the rain of existing ones
        rng = np.random.default_rng(np.random.SeedSequence([params["seed"], _SPLIT_IDS[split], p, v]))
        o = add_rain(photo, intensity=rain.intensity, blend=rain.blend, seed=rng, **streaks)
        rainy.append(_png(o))
        clean.append(clean_png[p])
    return rainy, clean


def _save_to_disk(ds, disk: str):
    """Write ``ds`` to ``disk`` through a temporary folder; the on-disk copy (or ``ds`` if it could not be
    written)."""
    import datasets

    os.makedirs(os.path.dirname(disk) or ".", exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=os.path.dirname(disk) or ".")
    try:
        ds.save_to_disk(tmp)
        os.replace(tmp, disk)
    except OSError:
        # another process finished first (target exists) or the disk is read-only: memory copy is fine
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(disk) if os.path.isdir(disk) else ds
