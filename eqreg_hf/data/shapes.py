"""A small offline, rotation-sensitive classification dataset: coloured shapes at random orientations.

Each image shows one filled shape (a class, defined by its shape only) at a random orientation, scale,
position and colour, on a smooth random-colour texture with pixel noise. Because the class never depends
on orientation, rotation invariance of the classifier (equivariance of its features) is the right prior,
while an ordinary CNN has to learn every orientation from data. The schema is CIFAR-100's (``img``,
``fine_label``, ``coarse_label``) so the classification command treats both alike.

Fine classes (``SHAPE_NAMES``), coarse classes (``SHAPE_COARSE_NAMES``)::

    polygon: triangle, square, pentagon, hexagon
    star:    star, cross
    glyph:   arrow, L, T, chevron

``max_angle`` controls the orientations: uniform in [-max_angle, max_angle] degrees (180 = all
orientations). ``load_shapes("train", max_angle=0)`` with ``load_shapes("test", max_angle=180)`` is a
rotation-generalisation test: upright training shapes, test shapes at every angle.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SHAPE_NAMES",
    "SHAPE_COARSE_NAMES",
    "SHAPE_TO_COARSE",
    "shape_polygon",
    "render_shape",
    "load_shapes",
]

SHAPE_NAMES: tuple[str, ...] = (
    "triangle",
    "square",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "arrow",
    "L",
    "T",
    "chevron",
)
SHAPE_COARSE_NAMES: tuple[str, ...] = ("polygon", "star", "glyph")
SHAPE_TO_COARSE: tuple[int, ...] = (0, 0, 0, 0, 1, 1, 2, 2, 2, 2)

_SPLIT_IDS = {"train": 1, "test": 2, "validation": 3}
_DEFAULT_SAMPLES = {"train": 2000, "test": 500, "validation": 500}
_MEMORY_CACHE: dict[tuple, object] = {}


def _regular(n: int, r: float = 1.0, phase: float = math.pi / 2) -> list[tuple[float, float]]:
    return [
        (r * math.cos(phase + 2 * math.pi * i / n), r * math.sin(phase + 2 * math.pi * i / n))
        for i in range(n)
    ]


def shape_polygon(name: str) -> np.ndarray:
    """Vertices ``[N, 2]`` (x, y; y up) of a shape in the unit disk, upright, centred at its bounding box.

    Example:
        >>> shape_polygon("square").shape
        (4, 2)
    """
    if name == "triangle":
        pts = _regular(3)
    elif name == "square":
        pts = _regular(4, phase=math.pi / 4)
    elif name == "pentagon":
        pts = _regular(5)
    elif name == "hexagon":
        pts = _regular(6)
    elif name == "star":
        outer, inner = _regular(5), _regular(5, r=0.42, phase=math.pi / 2 + math.pi / 5)
        pts = [p for pair in zip(outer, inner) for p in pair]
    elif name == "cross":
        a, b = 0.3, 0.9
        pts = [
            (-a, b),
            (a, b),
            (a, a),
            (b, a),
            (b, -a),
            (a, -a),
            (a, -b),
            (-a, -b),
            (-a, -a),
            (-b, -a),
            (-b, a),
            (-a, a),
        ]
    elif name == "arrow":
        pts = [(0.0, 0.95), (0.6, 0.3), (0.22, 0.3), (0.22, -0.9), (-0.22, -0.9), (-0.22, 0.3), (-0.6, 0.3)]
    elif name == "L":
        pts = [(-0.55, 0.9), (-0.15, 0.9), (-0.15, -0.5), (0.6, -0.5), (0.6, -0.9), (-0.55, -0.9)]
    elif name == "T":
        pts = [
            (-0.8, 0.9),
            (0.8, 0.9),
            (0.8, 0.5),
            (0.2, 0.5),
            (0.2, -0.9),
            (-0.2, -0.9),
            (-0.2, 0.5),
            (-0.8, 0.5),
        ]
    elif name == "chevron":
        pts = [(-0.85, -0.2), (0.0, 0.75), (0.85, -0.2), (0.85, -0.75), (0.0, 0.2), (-0.85, -0.75)]
    else:
        raise ValueError(f"Unknown shape {name!r}. Choose among {list(SHAPE_NAMES)}.")
    arr = np.asarray(pts, dtype=np.float64)
    arr -= (arr.max(0) + arr.min(0)) / 2
    return arr / np.linalg.norm(arr, axis=1).max()


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth random-colour texture with fine noise, float [H, W, 3]."""
    from PIL import Image

    h, w = size
    coarse = rng.uniform(0.0, 1.0, size=(rng.integers(2, 5), rng.integers(2, 5), 3))
    base = rng.uniform(0.15, 0.85, size=3)
    coarse = 0.5 * coarse + 0.5 * base  # keep textures muted so shapes stay distinguishable
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    out = np.asarray(img, dtype=np.float32) / 255.0
    return out + rng.normal(0.0, 0.04, size=out.shape).astype(np.float32)


def render_shape(
    name: str,
    size: int | tuple[int, int] = 32,
    angle: float = 0.0,
    rng: np.random.Generator | int | None = 0,
    supersample: int = 4,
) -> np.ndarray:
    """Render one sample: ``name`` rotated by ``angle`` degrees (counter-clockwise) on a random texture.

    Scale (40-85 % of the short side), centre jitter and colours come from ``rng``.

    Args:
        name: a ``SHAPE_NAMES`` entry.
        size: int or ``(h, w)``.
        angle: rotation in degrees, counter-clockwise.
        rng: numpy Generator or seed.
        supersample: anti-aliasing factor (drawn this much larger, then downsampled).

    Returns:
        uint8 ``[H, W, 3]``.

    Example:
        >>> render_shape("star", size=(24, 30), angle=45.0).shape
        (24, 30, 3)
    """
    from PIL import Image, ImageDraw

    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    h, w = (size, size) if isinstance(size, int) else size
    bg = _background(rng, (h, w))
    H, W = h * supersample, w * supersample
    radius = 0.5 * min(H, W) * rng.uniform(0.4, 0.85)
    cx = W / 2 + rng.uniform(-1, 1) * (W / 2 - radius) * 0.5
    cy = H / 2 + rng.uniform(-1, 1) * (H / 2 - radius) * 0.5
    t = math.radians(angle)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    pts = shape_polygon(name) @ rot.T * radius
    # image rows grow downwards: flip y so positive angles turn counter-clockwise on screen
    xy = [(cx + x, cy - y) for x, y in pts]
    mask_img = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask_img).polygon(xy, fill=255)
    mask = np.asarray(mask_img.resize((w, h), Image.Resampling.BOX), dtype=np.float32)[:, :, None] / 255.0
    # a colour far enough from the local background mean to stay visible
    bg_mean = bg.reshape(-1, 3).mean(0)
    colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
    if np.abs(colour - bg_mean).max() < 0.35:
        colour = np.where(bg_mean > 0.5, colour * 0.3, 0.7 + colour * 0.3).astype(np.float32)
    out = bg * (1.0 - mask) + colour * mask
    return (np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def load_shapes(
    split: str = "train",
    num_samples: int | None = None,
    size: int | tuple[int, int] = 32,
    seed: int = 0,
    max_angle: float = 180.0,
    classes: tuple[str, ...] | None = None,
    progress: bool = False,
):
    """Generated shape classification data as a ``datasets.Dataset`` with CIFAR's schema.

    Columns: ``img`` (Image), ``fine_label`` (ClassLabel over ``SHAPE_NAMES``), ``coarse_label``
    (ClassLabel over ``SHAPE_COARSE_NAMES``). Classes are balanced (round-robin); everything else is
    drawn from ``numpy.random.default_rng([seed, split])``, so the same arguments give the same data and
    train / test differ. About 1 ms per 32x32 image; results are kept in memory.

    Args:
        split: "train", "test" or "validation".
        num_samples: number of images (default 2000 train, 500 test / validation).
        size: int or ``(h, w)`` (default 32, CIFAR's size).
        seed: base seed (default 0).
        max_angle: orientations uniform in [-max_angle, max_angle] degrees (default 180: all).
        classes: subset of ``SHAPE_NAMES`` to use (labels keep their ``SHAPE_NAMES`` indices).
        progress: show a tqdm bar.

    Example:
        >>> ds = load_shapes("test", num_samples=20, size=24)
        >>> ds.column_names, ds.features["fine_label"].num_classes
        (['img', 'fine_label', 'coarse_label'], 10)
    """
    if split not in _SPLIT_IDS:
        raise ValueError(f"Unknown split={split!r}. Choose between {list(_SPLIT_IDS)}.")
    n = _DEFAULT_SAMPLES[split] if num_samples is None else int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    hw = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if min(hw) < 8:
        raise ValueError(
            f"size={size!r} is too small to draw a recognisable shape; use at least 8 (e.g. 32)."
        )
    names = tuple(classes) if classes is not None else SHAPE_NAMES
    bad = [c for c in names if c not in SHAPE_NAMES]
    if bad or not names:
        raise ValueError(f"Unknown shape class(es) {bad or names!r}. Choose among {list(SHAPE_NAMES)}.")
    key = (split, n, hw, int(seed), float(max_angle), names)
    if key in _MEMORY_CACHE:
        return _MEMORY_CACHE[key]

    import datasets
    from PIL import Image
    from tqdm.auto import tqdm

    rng = np.random.default_rng([int(seed), _SPLIT_IDS[split]])
    imgs, fine, coarse = [], [], []
    order = rng.permutation(n)  # shuffle the class sequence so consecutive rows mix classes
    for i in tqdm(range(n), desc=f"shapes ({split})", disable=not progress):
        cls = SHAPE_NAMES.index(names[int(order[i]) % len(names)])
        angle = float(rng.uniform(-max_angle, max_angle))
        imgs.append(Image.fromarray(render_shape(SHAPE_NAMES[cls], hw, angle, rng)))
        fine.append(cls)
        coarse.append(SHAPE_TO_COARSE[cls])
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=list(SHAPE_NAMES)),
            "coarse_label": datasets.ClassLabel(names=list(SHAPE_COARSE_NAMES)),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"img": imgs, "fine_label": fine, "coarse_label": coarse}, features=features
    )
    _MEMORY_CACHE[key] = ds
    return ds
