"""Paired image transforms for restoration data (rainy / clean pairs).

The same random crop, rotation and flips are applied to the rainy image and its clean target, so the
pair stays aligned. Randomness comes from an explicit ``torch.Generator`` (seeded from the run's
seed), so every epoch can be replayed.

Typical use with ``datasets``::

    ds = load_rain("synthetic", split="train").with_transform(
        PairedTransform(crop_size=64, rot90=False, hflip=True, seed=0))
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=paired_collate)
    for rainy, clean in loader: ...

Note that a random 90-degree rotation (``rot90=True``) *is* the "rotation augmentation" baseline that
EQ-Reg is compared with: keep it off when training with EQ-Reg unless you want both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "RandomRot90",
    "to_tensor",
    "paired_random_crop",
    "paired_random_rot_flip",
    "PairedTransform",
    "paired_collate",
]


def to_tensor(image: Any) -> torch.Tensor:
    """Image -> float tensor ``[C, H, W]`` in [0, 1] (RGB; greyscale and RGBA become RGB).

    Accepts a PIL image, a ``uint8`` / float ``[H, W(, C)]`` numpy array, or a tensor that is already
    ``[C, H, W]`` (returned as float).

    Example:
        >>> from PIL import Image
        >>> to_tensor(Image.new("L", (5, 3))).shape
        torch.Size([3, 3, 5])
    """
    if isinstance(image, torch.Tensor):
        t = image.float()
        return t / 255.0 if image.dtype == torch.uint8 else t
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3:
        raise ValueError(
            f"to_tensor expects an image [H, W] or [H, W, C], got an array of shape {arr.shape}."
        )
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    t = torch.from_numpy(np.array(arr, copy=True, order="C")).permute(2, 0, 1)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    if t.dtype == torch.bool:
        return t.float()
    return t.float()


def _check_pair(rainy: torch.Tensor, clean: torch.Tensor) -> None:
    if rainy.shape[-2:] != clean.shape[-2:]:
        raise ValueError(
            f"rainy and clean images differ in size: {tuple(rainy.shape[-2:])} vs "
            f"{tuple(clean.shape[-2:])} (H, W); a pair must be pixel-aligned."
        )


def paired_random_crop(
    rainy: torch.Tensor,
    clean: torch.Tensor,
    size: int | Sequence[int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop the same random window out of both images of a pair.

    Args:
        rainy, clean: tensors ``[..., H, W]`` of equal spatial size.
        size: crop size, an int (square) or ``(h, w)``.
        generator: source of randomness (default: torch's global generator).

    Example:
        >>> a, b = torch.rand(3, 20, 30), torch.rand(3, 20, 30)
        >>> ca, cb = paired_random_crop(a, b, (8, 9), torch.Generator().manual_seed(0))
        >>> ca.shape
        torch.Size([3, 8, 9])
    """
    _check_pair(rainy, clean)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    H, W = rainy.shape[-2:]
    if h > H or w > W or h < 1 or w < 1:
        raise ValueError(
            f"Crop size {(h, w)} does not fit an image of size {(H, W)} (H, W); "
            "use a smaller crop_size or larger images (e.g. make_synthetic_rain(size=...))."
        )
    top = int(torch.randint(0, H - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, W - w + 1, (1,), generator=generator))
    return rainy[..., top : top + h, left : left + w], clean[..., top : top + h, left : left + w]


def paired_random_rot_flip(
    rainy: torch.Tensor,
    clean: torch.Tensor,
    generator: torch.Generator | None = None,
    rot90: bool = True,
    hflip: bool = True,
    vflip: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the same random multiple-of-90-degree rotation and flips to both images.

    Args:
        rainy, clean: tensors ``[..., H, W]``.
        generator: source of randomness (default: torch's global generator).
        rot90: rotate by k * 90 degrees, k uniform in {0, 1, 2, 3} (default True).
        hflip: flip left-right with probability 1/2 (default True).
        vflip: flip top-bottom with probability 1/2 (default False).

    Example:
        >>> a = torch.rand(3, 4, 6)
        >>> ra, rb = paired_random_rot_flip(a, a.clone(), torch.Generator().manual_seed(1))
        >>> torch.equal(ra, rb)
        True
    """
    _check_pair(rainy, clean)
    k, do_h, do_v = _draw_rot_flip(generator)
    return _rot_flip(rainy, clean, k if rot90 else 0, hflip and do_h, vflip and do_v)


def _draw_rot_flip(generator: torch.Generator | None) -> tuple[int, bool, bool]:
    # Every number is drawn whether or not it is used, so toggling one option keeps the others' draws.
    k, h, v = torch.randint(0, 4, (3,), generator=generator).tolist()
    return k, h % 2 == 1, v % 2 == 1


def _rot_flip(rainy: torch.Tensor, clean: torch.Tensor, k: int, hflip: bool, vflip: bool):
    if hflip:
        rainy, clean = rainy.flip(-1), clean.flip(-1)
    if vflip:
        rainy, clean = rainy.flip(-2), clean.flip(-2)
    if k % 4:
        rainy, clean = torch.rot90(rainy, k, dims=(-2, -1)), torch.rot90(clean, k, dims=(-2, -1))
    return rainy, clean


class PairedTransform:
    """``Dataset.with_transform``-ready transform: PIL pairs -> ``{"rainy": tensor, "clean": tensor}``.

    Applies, in order: to-tensor in [0, 1], paired random crop (if ``crop_size``), paired random
    rotation / flips. Outputs always have the size ``crop_size`` (a non-square crop that gets a
    90-degree turn is cut transposed first), so they batch with :func:`paired_collate`. Works on ``datasets``
    batches (dicts of lists), which is what ``with_transform`` passes, also for single-item access.

    Reproducibility: with ``seed`` set, the transform owns a ``torch.Generator`` seeded with it. In a
    ``DataLoader`` with ``num_workers > 0`` each worker re-seeds its copy with ``seed + worker_id``
    (otherwise all workers would draw the same crops). With ``seed=None`` torch's global generator is
    used.

    Args:
        crop_size: int or ``(h, w)`` random crop; None keeps the full image (default None).
        rot90: random k * 90-degree rotations (the rotation-augmentation baseline; default False).
        rotation_order: the group the random rotations come from: 4 (multiples of 90°, default) or 2
            (0° / 180° only, e.g. for rain streaks that are near vertical).
        hflip: random left-right flips (default False).
        vflip: random top-bottom flips (default False).
        seed: seed of the transform's own generator (default None: global RNG).
        rainy_key, clean_key: column names (default "rainy", "clean").

    Example:
        >>> from eqreg_hf.data import load_rain
        >>> ds = load_rain("synthetic", split="test", size=40)
        >>> ds = ds.with_transform(PairedTransform(crop_size=32, seed=0))
        >>> ds[0]["rainy"].shape
        torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        crop_size: int | Sequence[int] | None = None,
        rot90: bool = False,
        hflip: bool = False,
        vflip: bool = False,
        seed: int | None = None,
        rainy_key: str = "rainy",
        clean_key: str = "clean",
        rotation_order: int = 4,
    ):
        if rotation_order not in (1, 2, 4):
            raise ValueError(
                f"rotation_order={rotation_order!r}: choose 1, 2 or 4 (rotations by multiples of "
                "360°/order that are exact on the pixel grid)."
            )
        self.crop_size = crop_size
        self.rotation_order = rotation_order
        self.rot90 = rot90
        self.hflip = hflip
        self.vflip = vflip
        self.seed = seed
        self.rainy_key = rainy_key
        self.clean_key = clean_key
        self.generator: torch.Generator | None = None
        self._worker_id: int | None = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(int(seed))

    def _rng(self) -> torch.Generator | None:
        if self.generator is None:
            return None
        info = torch.utils.data.get_worker_info()
        wid = None if info is None else info.id
        if wid is not None and wid != self._worker_id:
            self.generator = torch.Generator().manual_seed(int(self.seed) + 1 + wid)
            self._worker_id = wid
        return self.generator

    def apply(self, rainy: Any, clean: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one pair (PIL / array / tensor) into aligned float tensors ``[3, h, w]``."""
        r, c = to_tensor(rainy), to_tensor(clean)
        _check_pair(r, c)
        g = self._rng()
        k, do_h, do_v = _draw_rot_flip(g) if (self.rot90 or self.hflip or self.vflip) else (0, False, False)
        k = (k % self.rotation_order) * (4 // self.rotation_order) if self.rot90 else 0
        if self.crop_size is not None:
            size = (
                (self.crop_size, self.crop_size) if isinstance(self.crop_size, int) else tuple(self.crop_size)
            )
            # a non-square crop that will be turned by 90 degrees is cut transposed, so every output
            # has the same (h, w) and batches stack
            r, c = paired_random_crop(r, c, size[::-1] if k % 2 else size, g)
        r, c = _rot_flip(r, c, k, self.hflip and do_h, self.vflip and do_v)
        return r.contiguous(), c.contiguous()

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        for key in (self.rainy_key, self.clean_key):
            if key not in batch:
                raise KeyError(
                    f"PairedTransform needs a column {key!r}; the batch has {sorted(batch)}. "
                    "Load data with eqreg_hf.data.load_rain or pass rainy_key=/clean_key=."
                )
        out_r, out_c = [], []
        for rainy, clean in zip(batch[self.rainy_key], batch[self.clean_key]):
            r, c = self.apply(rainy, clean)
            out_r.append(r)
            out_c.append(c)
        return {"rainy": out_r, "clean": out_c}

    def __repr__(self) -> str:
        return (
            f"PairedTransform(crop_size={self.crop_size}, rot90={self.rot90}, hflip={self.hflip}, "
            f"vflip={self.vflip}, seed={self.seed})"
        )


def paired_collate(batch: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``DataLoader`` collate: list of ``{"rainy", "clean"}`` items -> ``(rainy [B,C,H,W], clean [B,C,H,W])``.

    All items must share one size (use ``crop_size`` for training; evaluate full images with batch size 1
    or on a dataset made with one ``size``).

    Example:
        >>> items = [{"rainy": torch.zeros(3, 4, 5), "clean": torch.ones(3, 4, 5)}] * 2
        >>> [t.shape for t in paired_collate(items)]
        [torch.Size([2, 3, 4, 5]), torch.Size([2, 3, 4, 5])]
    """
    if not batch:
        raise ValueError("paired_collate got an empty batch.")
    sizes = {tuple(item["rainy"].shape) for item in batch}
    if len(sizes) > 1:
        raise ValueError(
            f"Cannot batch images of different sizes {sorted(sizes)}; set crop_size= in "
            "PairedTransform or use batch_size=1 for full-size evaluation."
        )
    rainy = torch.stack([item["rainy"] for item in batch])
    clean = torch.stack([item["clean"] for item in batch])
    return rainy, clean


class RandomRot90:
    """Batch transform wrapper: rotate each ``pixel_values`` image by a random multiple of 90°.

    The rotation-augmentation baseline of the comparison (the group C4 seen through the data only).

    Args:
        transform: the ``with_transform`` callable producing ``{"pixel_values": [...], "labels": [...]}``.
        seed: seed of its own ``torch.Generator`` (replayable runs).
    """

    def __init__(self, transform: Any, seed: int = 0):
        self.transform = transform
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, batch: dict) -> dict:
        out = self.transform(batch)
        ks = torch.randint(4, (len(out["pixel_values"]),), generator=self.generator).tolist()
        out["pixel_values"] = [torch.rot90(x, k, dims=(-2, -1)) for x, k in zip(out["pixel_values"], ks)]
        return out
