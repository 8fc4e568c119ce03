"""Self-supervised inpainting: learn from masked, Poisson-noisy measurements alone with deepinv's losses.

The paper's inpainting result (its Table 4) follows the equivariant-imaging framework: no clean image is ever
seen; each training image ``x_i`` exists only as its measurement ``y_i = M_i ⊙ γ·Poisson(x_i / γ)`` with a
random pixel mask ``M_i`` (deepinv's ``Inpainting`` and ``PoissonNoise``). The losses are deepinv's own:

* ``"mc"``: measurement consistency, ``MCLoss``: ``||M ⊙ f(y) - y||²``. Alone it cannot learn what the mask
  hides (any value there is consistent); it is the floor the others are read against.
* ``"ei"``: MC plus ``ei_weight ·`` ``EILoss`` (Chen, Tachella & Davies, ICCV 2021): with ``x̂ = f(y)`` and a
  random group element ``T``, ``||f(A(T x̂) + n) - T x̂||²`` — the network must also restore the turned image,
  whose missing pixels are different ones. This is the learning signal for the hidden pixels.
* ``"rei"``: the robust version (Chen et al., CVPR 2022): the MC term is replaced by ``SurePoissonLoss``, an
  unbiased estimate of the clean-measurement error under Poisson noise, plus the EI term.

Both extra terms call the network again (EI on the re-measured turned image, SURE on a perturbed
measurement). With EQ-Reg on, those passes go through the model while its taps are attached; the taps capture
only the stacked pass they armed, so the extra passes are not part of the EQ-Reg term.

The network sees the measurement ``y`` only (missing pixels are 0, as ``A^†y`` is for inpainting) through
:class:`MeasurementReconstructor`, deepinv's ``model(y, physics)`` interface. The training targets are the
measurement and its mask packed into one image (:func:`pack`): EQ-Reg's stacked batch and rotation
augmentation turn the mask with the measurement, so every row of the batch keeps its own forward model.

Example:
    >>> from eqreg_hf.tasks.restore.networks import DnCNN
    >>> net = DnCNN(channels=8, depth=3)
    >>> meas = InpaintingMeasurements(mask_ratio=0.5, gain=0.05)
    >>> y, mask = meas.measure(torch.rand(2, 3, 8, 8), torch.Generator().manual_seed(0))
    >>> loss = SelfSupervisedLoss(net, meas, loss="rei", group="D4")
    >>> bool(torch.isfinite(loss(net(y), pack(y, mask))))
    True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from eqreg_hf.tasks.restore.swin2sr import reconstruction

__all__ = [
    "SELFSUP_LOSSES",
    "PIXEL_GROUPS",
    "InpaintingMeasurements",
    "MeasurementReconstructor",
    "SelfSupervisedLoss",
    "check_pixel_group",
    "check_poisson_gain",
    "pack",
    "unpack",
    "describe_losses",
]

SELFSUP_LOSSES = ("mc", "ei", "rei")
# Groups that act on images by moving whole pixels (quarter turns, half turns, mirror images): an i.i.d. pixel
# mask and pixelwise noise are the same in law after them, so a turned measurement is a measurement of the
# turned image. Other rotations resample the image and blur the mask and the noise.
PIXEL_GROUPS = ("C2", "C4", "D2", "D4")


def check_pixel_group(group: str, what: str) -> None:
    """Refuse ``group`` for ``what`` unless it moves whole pixels (:data:`PIXEL_GROUPS`, plus the trivial C1).

    Example:
        >>> check_pixel_group("C8", "ei_group")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ei_group='C8' turns by 45°, which resamples the image: ... Use one of ('C2', ...).
    """
    from eqreg_hf.core.groups import as_group

    g = as_group(group)
    if g.t in (1, 2, 4):
        return
    raise ValueError(
        f"{what}={group!r} turns by {360 / g.t:g}°, which resamples the image: pixel masks, pixelwise noise "
        "and block downsampling do not commute with it (a turned measurement is no measurement of the turned "
        f"image). Use one of {PIXEL_GROUPS}."
    )


def pack(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The training target of a measurement: ``[y; mask]`` along the channels (``[B, C + 1, H, W]``)."""
    return torch.cat([y, mask.to(y.dtype)], dim=-3)


def unpack(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, mask)`` of a packed target (the last channel is the mask)."""
    return target[..., :-1, :, :], target[..., -1:, :, :]


def check_poisson_gain(gain: Any) -> float | None:
    """``gain`` as a float (None: noise-free); one line unless it is a finite number > 0."""
    if gain is None:
        return None
    ok = isinstance(gain, numbers.Real) and not isinstance(gain, bool) and math.isfinite(gain) and gain > 0
    if not ok:
        raise ValueError(
            f"poisson_gain={gain!r} is not valid: give the Poisson gain γ > 0 (y = γ·Poisson(x/γ); the paper "
            "uses 0.01, 0.05, 0.1), or leave it out for noise-free measurements."
        )
    return float(gain)


class InpaintingMeasurements:
    """The forward model of self-supervised inpainting: ``y = M ⊙ γ·Poisson(x / γ)``, a fresh mask per image.

    Args:
        mask_ratio: fraction of pixels MISSING, in [0, 1) (all channels of a pixel alike).
        gain: Poisson gain γ > 0 (``deepinv.physics.PoissonNoise(gain, normalize=True)``: mean x, variance
            γx), or None for noise-free measurements.

    Duck-types :class:`eqreg_hf.data.restore.Degradation` (``task``, ``__call__(clean, generator)``,
    ``to_dict``), so the held-out evaluation degrades its clean images the same way.
    """

    task = "inpaint"
    scale = 1
    sigma = 0.0

    def __init__(self, mask_ratio: float = 0.5, gain: float | None = None):
        ok = isinstance(mask_ratio, numbers.Real) and not isinstance(mask_ratio, bool)
        if not (ok and 0 <= mask_ratio < 1):
            raise ValueError(
                f"mask_ratio={mask_ratio!r} is not in [0, 1): give the fraction of missing pixels."
            )
        self.mask_ratio, self.gain = float(mask_ratio), check_poisson_gain(gain)

    def physics(self, mask: torch.Tensor, rng: torch.Generator | None = None) -> Any:
        """deepinv's ``Inpainting`` with this batch's masks ``[B, 1, H, W]`` and the Poisson noise (drawing
        from ``rng``); ``physics.A`` masks, ``physics(x)`` masks and adds noise."""
        from deepinv.physics import Inpainting, PoissonNoise

        noise = {}
        if self.gain is not None:
            noise["noise_model"] = PoissonNoise(gain=self.gain, clip_positive=True, rng=rng)
        return Inpainting(img_size=tuple(mask.shape[1:]), mask=mask, device=mask.device, **noise)

    def draw_mask(self, shape: torch.Size, generator: torch.Generator | None = None) -> torch.Tensor:
        """A Bernoulli keep-mask ``[B, 1, H, W]`` (1 = observed) for images of ``shape`` ``[B, C, H, W]``."""
        u = torch.rand((shape[0], 1, *shape[-2:]), generator=generator)
        return (u >= self.mask_ratio).float()

    def measure(
        self, clean: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, mask)`` of images ``[B, C, H, W]`` or ``[C, H, W]``; every draw from ``generator``."""
        single = clean.dim() == 3
        x = clean[None] if single else clean
        mask = self.draw_mask(x.shape, generator).to(x.device)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        y = self.physics(mask, torch.Generator(device=x.device).manual_seed(seed))(x)
        return (y[0], mask[0]) if single else (y, mask)

    def __call__(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The measurement ``y`` alone (what a held-out evaluation restores)."""
        return self.measure(clean, generator)[0]

    def check_size(self, h: int, w: int) -> None:
        if h < 1 or w < 1:
            raise ValueError(f"Image size {(h, w)} (H, W) is empty; pass images of at least 1 x 1 pixel.")

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        return (h, w)

    def to_dict(self) -> dict[str, Any]:
        """``{"task", "mask_ratio", "noise", "poisson_gain"}`` for model cards and JSON."""
        noise = "poisson" if self.gain is not None else "none"
        return {"task": self.task, "mask_ratio": self.mask_ratio, "noise": noise, "poisson_gain": self.gain}

    def __repr__(self) -> str:
        return f"InpaintingMeasurements(mask_ratio={self.mask_ratio}, gain={self.gain})"


class MeasurementReconstructor(nn.Module):
    """deepinv's reconstructor interface, ``model(y, physics)`` (``deepinv.models.Reconstructor``'s forward;
    a plain module so that importing this file does not import deepinv), around a restoration network that
    takes the measurement ``y`` alone.

    The physics is not needed: the network learns where pixels are missing from ``y`` (0 there). The
    output is the float32 image (a transformers ``ModelOutput``'s ``reconstruction``, for Swin2SR).
    """

    def __init__(self, network: Callable):
        super().__init__()
        self.network = network

    def forward(self, y: torch.Tensor, physics: Any = None, **kwargs: Any) -> torch.Tensor:
        return reconstruction(self.network(y)).float()


def _rng(store: dict, device: torch.device, seed: int) -> torch.Generator:
    """One seeded generator per device (deepinv draws its noise on the data's device)."""
    if device not in store:
        store[device] = torch.Generator(device=device).manual_seed(seed)
    return store[device]


class SelfSupervisedLoss:
    """``(outputs, packed measurements) -> loss``: deepinv's MC / EI / REI losses as a training task loss.

    Args:
        model: the restoration network ``f`` (called again by the EI and SURE terms, through
            :class:`MeasurementReconstructor`).
        measurements: the :class:`InpaintingMeasurements` of the data (mask ratio, Poisson gain).
        loss: ``"mc"``, ``"ei"`` (MC + EI) or ``"rei"`` (SURE-Poisson + EI; needs a Poisson gain).
        ei_weight: weight of the EI term (> 0 for ``"ei"`` / ``"rei"``).
        group: the EI transforms' group, one of :data:`PIXEL_GROUPS` (deepinv ``Rotate`` by multiples of
            90° or 180°, and ``Reflect`` of the width axis for D2 / D4).
        seed: seed of the transforms, the re-measurement noise and SURE's probe.
        sure_tau: SURE's finite-difference step τ.

    After a call, ``last`` holds the detached terms ``{"fit", "ei"}`` (fit: MC or SURE).
    """

    def __init__(
        self,
        model: Callable,
        measurements: InpaintingMeasurements,
        *,
        loss: str = "ei",
        ei_weight: float = 1.0,
        group: str = "C4",
        seed: int = 0,
        sure_tau: float = 1e-3,
    ):
        from deepinv.loss import EILoss, MCLoss

        from eqreg_hf.tasks.restore.baselines import ei_transform

        if loss not in SELFSUP_LOSSES:
            raise ValueError(f"Unknown selfsup_loss={loss!r}; choose one of {SELFSUP_LOSSES}.")
        if loss == "rei" and measurements.gain is None:
            raise ValueError(
                "selfsup_loss='rei' replaces MC by SURE for Poisson noise, but the measurements are "
                "noise-free: give poisson_gain > 0, or use selfsup_loss='ei'."
            )
        if loss != "mc" and not (isinstance(ei_weight, numbers.Real) and ei_weight > 0):
            raise ValueError(
                f"selfsup_loss={loss!r} with ei_weight={ei_weight!r}: the EI term needs a weight > 0 "
                "(e.g. 1.0); use selfsup_loss='mc' for measurement consistency alone."
            )
        self.model, self.measurements, self.loss = model, measurements, loss
        self.ei_weight, self.group, self.seed = float(ei_weight), group, int(seed)
        self.reconstructor = MeasurementReconstructor(model)
        self.mc = MCLoss()
        self.ei = EILoss(transform=ei_transform(group, seed), apply_noise=True) if loss != "mc" else None
        self.sure = None
        if loss == "rei":
            from deepinv.loss import SurePoissonLoss

            self.sure = SurePoissonLoss(gain=measurements.gain, tau=sure_tau)
        self._noise_rngs: dict = {}
        self._probe_rngs: dict = {}
        self.last: dict[str, torch.Tensor] = {}

    def __call__(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:
        x_hat = reconstruction(outputs).float()
        y, mask = unpack(target.float())
        if x_hat.shape != y.shape:
            raise ValueError(
                f"The model's output {tuple(x_hat.shape)} does not match the measurements {tuple(y.shape)}: "
                "self-supervised inpainting restores at the measurement's size."
            )
        device = y.device
        physics = self.measurements.physics(mask, _rng(self._noise_rngs, device, self.seed + 1))
        if self.sure is not None:
            self.sure.rng = _rng(self._probe_rngs, device, self.seed + 2)
            fit = self.sure(y=y, x_net=x_hat, physics=physics, model=self.reconstructor).mean()
        else:
            fit = self.mc(y=y, x_net=x_hat, physics=physics)
        if self.ei is None:
            self.last = {"fit": fit.detach(), "ei": torch.zeros_like(fit.detach())}
            return fit
        ei = self.ei(x_net=x_hat, physics=physics, model=self.reconstructor)
        self.last = {"fit": fit.detach(), "ei": ei.detach()}
        return fit + self.ei_weight * ei

    def describe(self) -> dict[str, Any]:
        """The losses by deepinv's class names, for cards and logs (:func:`describe_losses`)."""
        return describe_losses(self.loss, self.ei_weight, self.group, self.measurements.gain)

    def __repr__(self) -> str:
        return f"SelfSupervisedLoss({self.describe()})"


def describe_losses(loss: str, ei_weight: float, group: str, gain: float | None) -> dict[str, Any]:
    """``{"fit": "deepinv.loss.MCLoss" | "deepinv.loss.SurePoissonLoss", "equivariance": ..., ...}``.

    Example:
        >>> describe_losses("rei", 1.0, "C4", 0.05)["fit"]
        'deepinv.loss.SurePoissonLoss(gain=0.05)'
    """
    fit = f"deepinv.loss.SurePoissonLoss(gain={gain:g})" if loss == "rei" else "deepinv.loss.MCLoss"
    out: dict[str, Any] = {"selfsup_loss": loss, "fit": fit}
    if loss != "mc":
        out["equivariance"] = f"deepinv.loss.EILoss({group}, apply_noise=True)"
        out["ei_weight"] = ei_weight
    return out
