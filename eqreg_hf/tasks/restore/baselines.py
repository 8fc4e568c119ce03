"""The nearest peer of EQ-Reg: deepinv's equivariant-imaging (EI) loss, an output-level equivariance term.

EQ-Reg asks the network's hidden features to turn with its input. The EI loss (Chen, Tachella & Davies,
ICCV 2021; ``deepinv.loss.EILoss``) asks only the whole reconstruction map to commute with the group: with
``x_hat = f(y)`` and a random group element ``T``, it measures ``|| f(A(T x_hat) + n) - T x_hat ||^2``.
Here it is added to the supervised loss, as a regulariser next to MSE: what reaching inside the network
buys over constraining its output is the comparison this baseline is for.

The group acts through deepinv's own transforms: ``deepinv.transform.Rotate`` restricted to multiples of
90° (``positive=True``: 0°, 90°, 180°, 270°) with ``constant_shape=False``, plus ``Reflect`` of the width axis
for ``"D4"``. Checked in tests/test_restore_baselines.py: these are exactly ``torch.rot90``
(counter-clockwise, the convention of ``eqreg_hf.core.groups``) and ``flip(-1)``, on square and non-square
images, odd or even sides (with the default ``constant_shape=True`` a quarter turn of a non-square image is
cropped and padded back to the input shape, which is not a group action). Every forward model of
:class:`eqreg_hf.data.restore.Degradation` is exactly equivariant in law under these (noise, i.i.d. masks) or
exactly (downsampling with its block-centred filters, on sizes divisible by the scale), so the loss asks
nothing of the network that the data do not justify.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from eqreg_hf.data.restore import Degradation
from eqreg_hf.tasks.restore.swin2sr import reconstruction

__all__ = ["EI_GROUPS", "EquivariantImagingLoss", "ei_transform"]

EI_GROUPS = ("C2", "C4", "D2", "D4")


def ei_transform(group: str = "C4", seed: int = 0):
    """deepinv transform: one uniform random element of ``group`` per call, from its own seeded generator.

    C2 / C4: ``Rotate`` by multiples of 180° / 90°; D2 / D4 add ``Reflect`` of the width axis."""
    from deepinv.transform import Reflect, Rotate

    if group not in EI_GROUPS:
        raise ValueError(
            f"Unknown EI group={group!r}; choose one of {EI_GROUPS} (exact half / quarter turns, D2 / D4 add "
            "mirror images), e.g. group='C4'."
        )
    rng = torch.Generator().manual_seed(int(seed))
    turn = 180.0 if group[1] == "2" else 90.0
    rotate = Rotate(multiples=turn, positive=True, n_trans=1, constant_shape=False, rng=rng)
    return rotate * Reflect(dim=[-1], n_trans=1, rng=rng) if group[0] == "D" else rotate


class EquivariantImagingLoss:
    """Supervised MSE plus ``weight`` times deepinv's EI loss: train_loop's ``task_loss_fn(outputs, clean)``.

    Args:
        model: the restorer ``f`` (``f(degraded)`` -> image, or a ModelOutput with ``reconstruction``); the EI
            term runs it a second time, on the re-degraded transformed reconstruction.
        degradation: the forward model (``A`` and its noise), a :class:`eqreg_hf.data.restore.Degradation`.
        group: ``"C4"`` (quarter turns) or ``"D4"`` (and mirror images).
        weight: weight of the EI term (>= 0; 0 gives plain MSE and skips the second forward).
        seed: seed of the transforms' generator (the degradation inside the EI term draws from torch's global
            generator, like any training-time noise).
        apply_noise: re-degrade with noise (deepinv's default) or with the noise-free ``A``.

    After a call, ``last`` holds the detached ``{"mse", "ei"}`` terms for logging.

    Example:
        >>> loss = EquivariantImagingLoss(torch.nn.Identity(), Degradation("denoise", sigma=0.0))
        >>> x = torch.rand(2, 3, 8, 8)
        >>> float(loss(x, x))
        0.0
    """

    def __init__(
        self,
        model: Callable,
        degradation: Degradation,
        *,
        group: str = "C4",
        weight: float = 1.0,
        seed: int = 0,
        apply_noise: bool = True,
    ):
        if not callable(model):
            raise ValueError(f"model={model!r} is not callable; pass the restoration network (an nn.Module).")
        if not isinstance(degradation, Degradation):
            raise ValueError(
                f"degradation={degradation!r} is not a Degradation; build it with "
                "eqreg_hf.data.restore.Degradation(task, ...), the forward model of the training data."
            )
        ok = (
            isinstance(weight, numbers.Real)
            and not isinstance(weight, bool)
            and math.isfinite(weight)
            and weight >= 0
        )
        if not ok:
            raise ValueError(
                f"EI weight={weight!r} is not a finite number >= 0; pass e.g. weight=1.0 (0 turns it off)."
            )
        from deepinv.loss import EILoss

        self.model, self.degradation, self.group, self.weight = model, degradation, group, float(weight)
        self.ei = EILoss(transform=ei_transform(group, seed), apply_noise=apply_noise)
        self.last: dict[str, torch.Tensor] = {}

    def _restore(self, y: torch.Tensor, physics: Any = None) -> torch.Tensor:
        return reconstruction(self.model(y))

    def __call__(self, outputs: Any, clean: torch.Tensor) -> torch.Tensor:
        x_hat = reconstruction(outputs)
        if x_hat.shape != clean.shape:
            raise ValueError(
                f"The model's output {tuple(x_hat.shape)} does not match the clean target "
                f"{tuple(clean.shape)}; for sr the network must upsample by the degradation's scale "
                f"({self.degradation.scale})."
            )
        mse = F.mse_loss(x_hat, clean)
        if self.weight == 0:
            self.last = {"mse": mse.detach(), "ei": torch.zeros_like(mse)}
            return mse
        ei = self.ei(x_net=x_hat, physics=self.degradation, model=self._restore)
        self.last = {"mse": mse.detach(), "ei": ei.detach()}
        return mse + self.weight * ei

    def __repr__(self) -> str:
        return (
            f"EquivariantImagingLoss(group={self.group!r}, weight={self.weight}, "
            f"degradation={self.degradation!r})"
        )
