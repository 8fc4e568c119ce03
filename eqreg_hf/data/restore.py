"""Clean images and their degradations for restoration: denoising, inpainting and super-resolution.

The forward models are deepinv's physics operators (``deepinv.physics.Denoising`` with ``GaussianNoise``,
``Inpainting`` with a fresh Bernoulli pixel mask per image, ``Downsampling`` for ×2/×3/×4 SR), applied on
the fly in a ``datasets`` pipeline (``with_transform``). Every random draw comes from an explicit
``torch.Generator``, so a training run replays and the held-out set is fixed. The clean images come from
:mod:`eqreg_hf.data.clean_images` (``load_clean_images``, ``select_training_set``, re-exported here).

Symmetry: white noise and an i.i.d. pixel mask are exactly rotation/flip symmetric in distribution, so
``A(R x)`` and ``R A(x)`` have the same law for every 90° turn and mirror image ``R``. Downsampling is
exactly equivariant, ``A(R x) = R A(x)``, only when each low-resolution pixel sits at a point of the grid
that the group maps onto itself. deepinv's stock filters do not all do that on sizes divisible by the
scale (the case SR needs; relative error ``||A(R x) - R A(x)|| / ||R A(x)||`` on 48 x 48 images, circular
padding): ``"bicubic"`` ~1e-7 at ×2 but 8e-2 at ×3 and 9e-2 at ×4; ``"gaussian"`` (odd length, centred on
the sampled pixel) 2-3e-2 at every scale; no filter 0.7. Our filters are centred on the scale x scale
block each low-resolution pixel summarises (the convention of MATLAB's ``imresize`` and PIL), which makes
``A`` exactly D4-equivariant (to float precision) on every size divisible by the scale:
``"bicubic"`` (default: Keys' cubic, a = -0.5, stretched by the scale for anti-aliasing; at ×2 and ×4 the
same taps as deepinv's) or ``"box"`` (the block mean).

Typical use::

    deg = Degradation("denoise", sigma=25 / 255)
    train = select_training_set(load_clean_images("photos", "train"), "region96")
    ds = train.with_transform(RestoreTransform(deg, crop_size=48, seed=0, augment="C4"))
    pairs = held_out_pairs(load_clean_images("photos", "test"), deg, seed=0)   # [(degraded, clean), ...]
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Any

import numpy as np
import torch

from eqreg_hf.data.clean_images import _require_images, load_clean_images, select_training_set
from eqreg_hf.data.transforms import to_tensor

__all__ = [
    "RESTORE_TASKS",
    "DEFAULT_SIGMA",
    "DEFAULT_MASK_RATIO",
    "DEFAULT_SCALE",
    "SCALES",
    "SR_FILTERS",
    "RESTORE_AUGMENTS",
    "Degradation",
    "sr_filter",
    "load_clean_images",
    "select_training_set",
    "RestoreTransform",
    "restore_collate",
    "held_out_pairs",
]

RESTORE_TASKS = ("denoise", "inpaint", "sr")
DEFAULT_SIGMA = 25 / 255
DEFAULT_MASK_RATIO = 0.5
DEFAULT_SCALE = 2
SCALES = (2, 3, 4)
SR_FILTERS = ("bicubic", "box")
# random element of this group applied to each clean training crop (None / "none": no augmentation)
RESTORE_AUGMENTS = (None, "C2", "C4", "D4")


def _real(name: str, value: Any, low: float, high: float, fix: str, high_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value < high if high_open else value <= high)
    if not ok:
        bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{name}={value!r} is not a finite number in {bound}; {fix}")
    return float(value)


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def sr_filter(scale: int, name: str = "bicubic") -> torch.Tensor:
    """The low-pass filter ``[1, 1, L, L]`` of the SR forward model, for ``deepinv.physics.Downsampling``.

    Low-resolution pixel ``i`` summarises the high-resolution block ``[s i, s i + s - 1]`` and is centred on
    it, so the operator is exactly D4-equivariant on sizes divisible by ``s`` (see the module docstring).

    Example:
        >>> sr_filter(2, "box").sum().item()
        1.0
    """
    if name not in SR_FILTERS:
        raise ValueError(
            f"Unknown sr_filter={name!r}; choose one of {SR_FILTERS} (both exactly rotation-equivariant)."
        )
    centre = (scale - 1) / 2  # offset of the block centre from the sampled pixel s*i
    reach = int(math.ceil(centre + 2 * scale))
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)  # p: weight of x[s*i + p]
    d = offsets - centre
    w = _keys_cubic(d / scale) if name == "bicubic" else (np.abs(d) < scale / 2).astype(np.float64)
    w = w / w.sum()
    keep = np.abs(offsets) <= np.abs(offsets[w != 0]).max()  # drop the all-zero rim (a symmetric trim)
    w = w[keep]
    # deepinv convolves (out[n] = sum_k h[k] x[n - k + L // 2]), so the taps are stored reversed
    taps = torch.from_numpy(w[::-1].copy()).float()
    return torch.outer(taps, taps)[None, None]


class Degradation:
    """The forward model ``y = A(x) + sigma * n`` of a restoration task, on deepinv physics operators.

    Args:
        task: ``"denoise"`` (``A`` = identity), ``"inpaint"`` (``A`` keeps each pixel with probability
            ``1 - mask_ratio``, a fresh mask per image, all channels alike) or ``"sr"`` (filter, then keep
            every ``scale``-th pixel).
        sigma: noise standard deviation on the [0, 1] scale (default ``DEFAULT_SIGMA`` = 25/255 for denoising,
            0 for inpainting and SR). For inpainting the noise falls on the observed pixels only.
        mask_ratio: fraction of pixels MISSING, in [0, 1) (inpainting).
        scale: SR factor, one of ``SCALES``.
        sr_filter: ``"bicubic"`` (default) or ``"box"``; both exactly C4/D4-equivariant (module docstring).

    Attributes:
        physics: the deepinv operator (built on first use): ``Denoising``, ``Inpainting`` or ``Downsampling``.

    Example:
        >>> deg = Degradation("sr", scale=2)
        >>> deg(torch.rand(3, 8, 12), torch.Generator().manual_seed(0)).shape
        torch.Size([3, 4, 6])
    """

    def __init__(
        self,
        task: str = "denoise",
        *,
        sigma: float | None = None,
        mask_ratio: float = DEFAULT_MASK_RATIO,
        scale: int = DEFAULT_SCALE,
        sr_filter: str = "bicubic",
    ):
        if task not in RESTORE_TASKS:
            raise ValueError(f"Unknown task={task!r}; choose one of {RESTORE_TASKS}, e.g. task='denoise'.")
        if sigma is None:
            sigma = DEFAULT_SIGMA if task == "denoise" else 0.0
        self.task = task
        self.sigma = _real(
            "sigma",
            sigma,
            0.0,
            math.inf,
            "pass the noise level on the [0, 1] scale, e.g. sigma=25/255 (0 for noise-free).",
        )
        self.mask_ratio = _real(
            "mask_ratio",
            mask_ratio,
            0.0,
            1.0,
            "it is the fraction of pixels missing, e.g. mask_ratio=0.5.",
            high_open=True,
        )
        if isinstance(scale, bool) or scale not in SCALES:
            raise ValueError(
                f"scale={scale!r} is not a supported SR factor; choose one of {SCALES}, e.g. scale=2."
            )
        if sr_filter not in SR_FILTERS:
            raise ValueError(
                f"Unknown sr_filter={sr_filter!r}; choose one of {SR_FILTERS}, e.g. sr_filter='bicubic'."
            )
        self.scale = int(scale)
        self.sr_filter = sr_filter
        self._physics = None

    @property
    def physics(self):
        if self._physics is None:
            from deepinv.physics import Denoising, Downsampling, GaussianNoise, Inpainting

            noise = GaussianNoise(sigma=self.sigma, rng=torch.Generator())
            if self.task == "denoise":
                self._physics = Denoising(noise_model=noise)
            elif (
                self.task == "inpaint"
            ):  # the mask is drawn per call (img_size only matters for a float mask)
                self._physics = Inpainting(img_size=(1, 1, 1), mask=None, noise_model=noise)
            else:
                self._physics = Downsampling(
                    filter=sr_filter(self.scale, self.sr_filter),
                    factor=self.scale,
                    padding="circular",
                    noise_model=noise,
                )
        return self._physics

    def __getstate__(self) -> dict:  # picklable (spawned DataLoader workers): the operator is rebuilt there
        return {**self.__dict__, "_physics": None}

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """Spatial size of ``A(x)`` for an image ``h x w``."""
        return (h // self.scale, w // self.scale) if self.task == "sr" else (h, w)

    def check_size(self, h: int, w: int) -> None:
        """One-line ValueError when the forward model cannot take an image ``h x w``."""
        if h < 1 or w < 1:
            raise ValueError(f"Image size {(h, w)} (H, W) is empty; pass images of at least 1 x 1 pixel.")
        if self.task == "sr" and (h % self.scale or w % self.scale):
            raise ValueError(
                f"Image size {(h, w)} (H, W) is not divisible by the SR scale {self.scale}; crop it to "
                f"{(h - h % self.scale, w - w % self.scale)} (crop_size a multiple of {self.scale})."
            )

    def to_dict(self) -> dict:
        """``{"task", "sigma", "mask_ratio", "scale", "sr_filter"}`` for model cards and JSON."""
        return {
            "task": self.task,
            "sigma": self.sigma,
            "mask_ratio": self.mask_ratio,
            "scale": self.scale,
            "sr_filter": self.sr_filter,
        }

    def __repr__(self) -> str:
        return "Degradation(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def A(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise-free forward model of images ``[B, C, H, W]`` (or ``[C, H, W]``); inpainting draws a fresh
        mask per image from ``generator`` (default: torch's global generator)."""
        x, single = _batched(x)
        self.check_size(*x.shape[-2:])
        physics = self.physics
        if self.task == "inpaint":
            device = generator.device if generator is not None else x.device
            u = torch.rand((x.shape[0], 1, *x.shape[-2:]), generator=generator, device=device).to(x.device)
            y = physics.A(x, mask=(u >= self.mask_ratio).to(x.dtype))
        elif self.task == "sr":
            if physics.filter.device != x.device or physics.filter.dtype != x.dtype:
                physics.to(device=x.device, dtype=x.dtype)
            y = physics.A(x)
        else:
            y = physics.A(x)
        return y[0] if single else y

    def __call__(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``y = A(x) + sigma * n`` with every draw (mask, noise) from ``generator`` (default: global RNG)."""
        x, single = _batched(clean)
        y = self.A(x, generator)
        if self.sigma > 0:
            device = generator.device if generator is not None else torch.device("cpu")
            seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
            noise_model = (
                self.physics.noise_model
            )  # deepinv's own generator, reseeded from ours on every call
            if noise_model.rng.device != y.device:  # deepinv cannot carry a CPU generator's state to a GPU
                noise_model.rng = torch.Generator(device=y.device)
            y = self.physics.noise(y, seed=seed)
        return y[0] if single else y


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"Degradation expects an image tensor [C, H, W] or a batch [B, C, H, W], got {shape}; "
            "convert with eqreg_hf.data.to_tensor."
        )
    return (x[None], True) if x.dim() == 3 else (x, False)


def _seeded(*parts: Any) -> torch.Generator:
    """A generator whose seed is a hash of ``parts`` (distinct tuples give unrelated streams)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _fit_scale(x: torch.Tensor, degradation: Degradation) -> torch.Tensor:
    """Centre-crop a whole image to multiples of the SR scale (other tasks: unchanged)."""
    if degradation.task != "sr":
        return x
    h, w = x.shape[-2:]
    dh, dw = h % degradation.scale, w % degradation.scale
    return x[..., dh // 2 : h - (dh - dh // 2), dw // 2 : w - (dw - dw // 2)]


def _group_element(augment: str | None, g: torch.Generator) -> tuple[bool, int]:
    """(flip the width axis?, quarter turns) of a random group element; both numbers are always drawn."""
    flip, k = torch.randint(0, 4, (2,), generator=g).tolist()
    if augment is None:
        return False, 0
    return (augment == "D4" and flip % 2 == 1), ((k % 2) * 2 if augment == "C2" else k)


class RestoreTransform:
    """``Dataset.with_transform``-ready: clean images -> ``{"pixel_values": degraded, "labels": clean}``.

    Args:
        degradation: the :class:`Degradation`.
        crop_size: side of the random square training crop (a multiple of the scale for SR); ignored when
            ``train=False``.
        seed: seed of the transform's own ``torch.Generator`` (a DataLoader worker uses ``seed + 1 + id``).
        augment: ``None``/``"none"``, ``"C2"``, ``"C4"`` or ``"D4"``: a random element of that group
            applied to the clean crop (eqreg_hf.core.groups' convention: flip the width axis first, then rot90
            counter-clockwise), before the degradation.
        train: True: random crop + augmentation + fresh degradation each call (replayable from ``seed``).
            False: the whole image (centre-cropped to multiples of the SR scale), degraded with a generator
            seeded from ``(seed, the image's content)``, so every epoch sees the same degraded image.

    Example:
        >>> tf = RestoreTransform(Degradation("denoise"), crop_size=16, seed=0, augment="C4")
        >>> out = load_clean_images("photos", photo_size=32).with_transform(tf)[0]
        >>> out["pixel_values"].shape, out["labels"].shape
        (torch.Size([3, 16, 16]), torch.Size([3, 16, 16]))
    """

    def __init__(
        self,
        degradation: Degradation,
        crop_size: int | None,
        *,
        seed: int = 0,
        augment: str | None = None,
        train: bool = True,
    ):
        if not isinstance(degradation, Degradation):
            raise ValueError(
                f"degradation={degradation!r} is not a Degradation; build one, e.g. Degradation('denoise')."
            )
        augment = None if augment in (None, "none") else augment
        if augment not in RESTORE_AUGMENTS:
            raise ValueError(f"Unknown augment={augment!r}; choose one of ('none', 'C2', 'C4', 'D4').")
        if train:
            if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
                raise ValueError(
                    f"crop_size={crop_size!r} must be a positive integer for training, e.g. crop_size=48."
                )
            if degradation.task == "sr" and crop_size % degradation.scale:
                raise ValueError(
                    f"crop_size={crop_size} is not divisible by the SR scale {degradation.scale}; use "
                    f"crop_size={crop_size - crop_size % degradation.scale or degradation.scale}."
                )
        self.degradation, self.crop_size, self.seed = degradation, crop_size, int(seed)
        self.augment, self.train = augment, bool(train)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._worker_id: int | None = None

    def _rng(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id != self._worker_id:
            self.generator = torch.Generator().manual_seed(self.seed + 1 + info.id)
            self._worker_id = info.id
        return self.generator

    def check_images(self, ds: Any, max_images: int | None = None) -> None:
        """Raise now (one line) when a training crop does not fit an image of ``ds``; cheap on small sets."""
        _require_images(ds, "RestoreTransform")
        if not self.train:
            return
        for i in range(len(ds) if max_images is None else min(len(ds), max_images)):
            self._check_fit(to_tensor(ds[i]["image"]))

    def _check_fit(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if self.crop_size > min(h, w):
            raise ValueError(
                f"crop_size={self.crop_size} is larger than an image of {h} x {w}; use crop_size <= "
                f"{min(h, w)} or larger images (photo_size=, a larger region)."
            )

    def apply(self, image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """One image (PIL / array / tensor) -> ``(degraded, clean)`` tensors."""
        x = to_tensor(image)
        if not self.train:
            x = _fit_scale(x, self.degradation).contiguous()
            digest = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
            return self.degradation(x, _seeded(self.seed, digest)), x
        self._check_fit(x)
        g = self._rng()
        h, w, c = x.shape[-2], x.shape[-1], self.crop_size
        top = int(torch.randint(0, h - c + 1, (1,), generator=g))
        left = int(torch.randint(0, w - c + 1, (1,), generator=g))
        x = x[:, top : top + c, left : left + c]
        flip, k = _group_element(self.augment, g)
        x = torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1)).contiguous()
        return self.degradation(x, g), x

    def __call__(self, batch: dict[str, list]) -> dict[str, list[torch.Tensor]]:
        if "image" not in batch:
            raise ValueError(
                f"RestoreTransform needs an 'image' column, the batch has {sorted(batch)}; load the data "
                "with load_clean_images(..., image_column=...)."
            )
        pairs = [self.apply(image) for image in batch["image"]]
        return {"pixel_values": [p[0] for p in pairs], "labels": [p[1] for p in pairs]}


def restore_collate(batch: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``DataLoader`` collate: ``[{"pixel_values", "labels"}, ...]`` -> ``(pixel_values, labels)``, each
    ``[B, ...]``.

    Example:
        >>> item = {"pixel_values": torch.zeros(3, 4, 4), "labels": torch.ones(3, 8, 8)}
        >>> [t.shape for t in restore_collate([item, item])]
        [torch.Size([2, 3, 4, 4]), torch.Size([2, 3, 8, 8])]
    """
    if not batch:
        raise ValueError("restore_collate got an empty batch; check the dataset is not empty.")
    out = []
    for key in ("pixel_values", "labels"):
        sizes = sorted({tuple(item[key].shape) for item in batch})
        if len(sizes) > 1:
            raise ValueError(
                f"Cannot batch {key} of different sizes {sizes}; train on crops (crop_size=) or "
                "evaluate whole images with batch size 1."
            )
        out.append(torch.stack([item[key] for item in batch]))
    return out[0], out[1]


def held_out_pairs(
    ds: Any, degradation: Degradation, *, seed: int = 0, max_images: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed ``(degraded [C, h, w], clean [C, H, W])`` pairs: image ``i`` (whole, centre-cropped to multiples
    of the SR scale) degraded with a generator seeded from ``(seed, i)``; the same tensors on every call.

    Example:
        >>> pairs = held_out_pairs(load_clean_images("photos", "test", photo_size=16), Degradation("inpaint"))
        >>> len(pairs), pairs[0][0].shape
        (4, torch.Size([3, 16, 16]))
    """
    _require_images(ds, "held_out_pairs")
    n = len(ds) if max_images is None else min(len(ds), int(max_images))
    pairs = []
    for i in range(n):
        x = _fit_scale(to_tensor(ds[i]["image"]), degradation).contiguous()
        pairs.append((degradation(x, _seeded("held-out", seed, i)), x))
    return pairs
