"""The training data of self-supervised inpainting: measurements and their masks, never a clean image.

A self-supervised run trains on a :class:`MeasurementSet`: one measurement ``y_i`` (masked, noisy) and its
mask ``M_i`` per training image. It comes either from the user (any dataset whose rows have ``"measurement"``
``[C, H, W]`` and ``"mask"`` ``[1, H, W]``: real acquisitions, or a ``datasets.Dataset`` of them; other
columns, a clean image included, are never read) or from clean images acquired once
(:func:`simulate_measurements`: the synthetic benchmark's setting, one fixed measurement per image, as a
real acquisition would give; the clean images are not kept). :class:`MeasurementCrops` turns it into
training items: a random crop of the measurement and the same crop of its mask, optionally turned or mirrored
together (rotation augmentation), as ``{"pixel_values": y, "labels": pack(y, mask)}``.

Example:
    >>> from eqreg_hf.data.restore import load_clean_images
    >>> from eqreg_hf.tasks.restore.selfsup import InpaintingMeasurements
    >>> data = simulate_measurements(load_clean_images("photos", photo_size=16), InpaintingMeasurements(0.5))
    >>> item = MeasurementCrops(data, crop_size=8)[0]
    >>> item["pixel_values"].shape, item["labels"].shape
    (torch.Size([3, 8, 8]), torch.Size([4, 8, 8]))
"""

from __future__ import annotations

from typing import Any

import torch

from eqreg_hf.tasks.restore.selfsup import pack

__all__ = [
    "MEASUREMENT_COLUMNS",
    "MeasurementSet",
    "MeasurementCrops",
    "is_measurement_data",
    "simulate_measurements",
]

MEASUREMENT_COLUMNS = ("measurement", "mask")
_AUGMENTS = (None, "none", "C2", "C4", "D4")


def is_measurement_data(ds: Any) -> bool:
    """Whether ``ds`` holds measurements: a :class:`MeasurementSet`, or ``measurement`` + ``mask`` columns."""
    if isinstance(ds, MeasurementSet):
        return True
    columns = getattr(ds, "column_names", None)
    return columns is not None and set(MEASUREMENT_COLUMNS) <= set(columns)


class MeasurementSet(torch.utils.data.Dataset):
    """Measurements ``y_i`` ``[C, H, W]`` and keep-masks ``M_i`` ``[1, H, W]`` (1 = observed): a training set.

    Refused in one line: different counts, a mask of another size or with values other than 0 / 1, and a
    measurement that is not finite or is non-zero where its mask is 0.
    """

    def __init__(self, measurements: list[torch.Tensor], masks: list[torch.Tensor]):
        if len(measurements) != len(masks) or not measurements:
            raise ValueError(
                f"MeasurementSet needs one mask per measurement and at least one of each (got "
                f"{len(measurements)} measurements, {len(masks)} masks)."
            )
        self.measurements = [torch.as_tensor(y, dtype=torch.float32) for y in measurements]
        self.masks = [torch.as_tensor(m, dtype=torch.float32) for m in masks]
        for i, (y, m) in enumerate(zip(self.measurements, self.masks)):
            _check_row(i, y, m)

    @classmethod
    def from_dataset(cls, ds: Any) -> MeasurementSet:
        """Read the ``measurement`` and ``mask`` columns only (a ``datasets.Dataset`` or a list of dicts)."""
        if isinstance(ds, MeasurementSet):
            return ds
        if hasattr(ds, "select_columns"):  # datasets: the other columns (a clean image, say) are not read
            ds = ds.select_columns(list(MEASUREMENT_COLUMNS)).with_format("torch")
        rows = [ds[i] for i in range(len(ds))]
        missing = [c for c in MEASUREMENT_COLUMNS if rows and c not in rows[0]]
        if missing:
            raise ValueError(
                f"Measurement rows need the fields {MEASUREMENT_COLUMNS}; missing {missing}. Give each row "
                "its measurement [C, H, W] and its mask [1, H, W] (1 = observed)."
            )
        return cls([r["measurement"] for r in rows], [r["mask"] for r in rows])

    def __len__(self) -> int:
        return len(self.measurements)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"measurement": self.measurements[i], "mask": self.masks[i]}

    def head(self, n: int) -> MeasurementSet:
        """The first ``n`` measurements."""
        return MeasurementSet(self.measurements[:n], self.masks[:n])

    @property
    def smallest_side(self) -> int:
        return min(min(y.shape[-2:]) for y in self.measurements)


def _check_row(i: int, y: torch.Tensor, m: torch.Tensor) -> None:
    if y.dim() != 3 or m.dim() != 3 or m.shape[0] != 1 or m.shape[-2:] != y.shape[-2:]:
        raise ValueError(
            f"Measurement {i}: shapes {tuple(y.shape)} and mask {tuple(m.shape)}; give y as [C, H, W] and "
            "its mask as [1, H, W] of the same H, W."
        )
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError(f"Measurement {i}: the mask holds values other than 0 and 1; give a 0/1 keep-mask.")
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"Measurement {i} is not finite (NaN or inf); drop or repair it before training.")
    if bool((y * (1 - m)).abs().gt(0).any()):
        raise ValueError(
            f"Measurement {i} is non-zero where its mask is 0: the mask must mark the observed pixels "
            "(1 = observed), and the missing ones must be 0."
        )


def simulate_measurements(clean: Any, measurements: Any, seed: int = 0) -> MeasurementSet:
    """Acquire each clean image of ``clean`` (a dataset with an ``image`` column) once: image ``i`` measured
    with a generator seeded from ``(seed, i)``. The result holds no clean image."""
    from eqreg_hf.data.transforms import to_tensor

    ys, masks = [], []
    for i in range(len(clean)):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
        y, m = measurements.measure(to_tensor(clean[i]["image"]), g)
        ys.append(y)
        masks.append(m)
    return MeasurementSet(ys, masks)


class MeasurementCrops(torch.utils.data.Dataset):
    """Training items of a :class:`MeasurementSet`: crops ``{"pixel_values": y, "labels": pack(y, M)}``.

    Args:
        data: the measurements.
        crop_size: side of the square crop (at most the smallest measurement's side).
        seed: seed of the crops and group elements (a DataLoader worker uses ``seed + 1 + id``).
        augment: None / ``"none"``, or ``"C2"``, ``"C4"``, ``"D4"``: a random element applied to the crop and
            its mask alike (flip the width axis, then turn counter-clockwise; eqreg_hf's convention).
    """

    def __init__(self, data: MeasurementSet, crop_size: int, *, seed: int = 0, augment: str | None = None):
        if augment not in _AUGMENTS:
            raise ValueError(f"Unknown augment={augment!r}; choose one of ('none', 'C2', 'C4', 'D4').")
        if crop_size > data.smallest_side:
            raise ValueError(
                f"crop_size={crop_size} is larger than the smallest measurement ({data.smallest_side} px a "
                f"side); use --crop-size {data.smallest_side} or less."
            )
        self.data, self.crop_size, self.seed = data, int(crop_size), int(seed)
        self.augment = None if augment == "none" else augment
        self.generator = torch.Generator().manual_seed(self.seed)
        self._worker: int | None = None

    def __len__(self) -> int:
        return len(self.data)

    def _rng(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id != self._worker:
            self.generator, self._worker = torch.Generator().manual_seed(self.seed + 1 + info.id), info.id
        return self.generator

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row, g, c = self.data[i], self._rng(), self.crop_size
        both = pack(row["measurement"], row["mask"])
        h, w = both.shape[-2:]
        top = int(torch.randint(0, h - c + 1, (1,), generator=g))
        left = int(torch.randint(0, w - c + 1, (1,), generator=g))
        both = both[:, top : top + c, left : left + c]
        flip, k = torch.randint(0, 4, (2,), generator=g).tolist()
        if self.augment is not None:
            k = (k % 2) * 2 if self.augment == "C2" else k
            flip = self.augment == "D4" and flip % 2 == 1
            both = torch.rot90(both.flip(-1) if flip else both, k, dims=(-2, -1))
        both = both.contiguous()
        return {"pixel_values": both[:-1], "labels": both}
