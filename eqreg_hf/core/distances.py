"""The registry of distances d between ``a = T_k F(x)`` and ``b = F(R_k x)``: one class per distance.

A distance is written once, from three reductions of the pair that every code path computes anyway:
``sq = Σ (a - b)²`` (the squared difference, masked positions excluded), ``n`` (the number of compared
elements) and ``norms = ||a||² + ||b||²`` (only when the class sets ``needs_norms``). The plain autograd
path, the batched path and the exact path with its hand-written backward (``core/distance.py``) all
call :meth:`Distance.value`; the exact path also calls :meth:`Distance.factors`, the two coefficients of
its gradient ``∂d/∂a = α a - β T_k^{-1} b`` (``T_k`` is a permutation).

Adding a distance is one class and one line: subclass :class:`Distance`, set ``name``, write
``value`` (and ``factors`` for the exact path), then ``register_distance(MyDistance())``; the squared
Frobenius norm, for instance, is ``value = sq`` and ``factors = (2 grad, 2 grad)``.

:class:`~eqreg_hf.EqRegConfig` stores the name (JSON); :func:`get_distance` looks the object up.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from eqreg_hf.core.registry import add_unique

__all__ = ["Distance", "DISTANCES", "register_distance", "get_distance"]


class Distance:
    """One distance d(a, b) over a whole batch. Subclass it, set ``name``, write :meth:`value` and
    :meth:`factors`, and register an instance with :func:`register_distance`."""

    name: ClassVar[str] = ""
    needs_norms: ClassVar[bool] = False  # True: value() and factors() get norms = ||a||² + ||b||²

    def value(self, sq: torch.Tensor, n: float, norms: torch.Tensor | None, eps: float) -> torch.Tensor:
        """d from ``sq = Σ (a - b)²``, the count ``n`` of compared elements and ``norms`` (or None)."""
        raise NotImplementedError

    def factors(
        self, grad: torch.Tensor, value: torch.Tensor, n: float, norms: torch.Tensor | None, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α, β)`` with ``grad · ∂d/∂a = α a - β T_k^{-1} b`` (and alike for b), ``grad`` from upstream."""
        raise NotImplementedError

    def of_diff(
        self, diff: torch.Tensor, n: float | None, norms: torch.Tensor | None, eps: float
    ) -> torch.Tensor:
        """d from the difference ``diff`` (reduced over its last axis); ``n`` None means ``diff``'s length."""
        count = diff.shape[-1] if n is None else n
        return self.value(diff.square().sum(-1), count, norms, eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Frobenius(Distance):
    """``||a - b||_F``, not squared, over every element of the batch: the paper's loss."""

    name = "fro"

    def value(self, sq, n, norms, eps):
        return sq.sqrt()

    def factors(self, grad, value, n, norms, eps):
        alpha = torch.where(value > 0, grad / value.clamp_min(torch.finfo(value.dtype).tiny), 0.0)
        return alpha, alpha

    def of_diff(self, diff, n, norms, eps):
        return torch.linalg.vector_norm(diff, dim=-1)


class MeanSquared(Distance):
    """The mean of ``(a - b)²`` over the compared elements."""

    name = "mse"

    def value(self, sq, n, norms, eps):
        return sq / n

    def factors(self, grad, value, n, norms, eps):
        alpha = grad * (2.0 / n)
        return alpha, alpha

    def of_diff(self, diff, n, norms, eps):
        return diff.square().mean(-1) if n is None else diff.square().sum(-1) / n


class Relative(Distance):
    """``||a - b||² / (||a||² + ||b||² + eps)``: scale-free, in [0, 2] (the default)."""

    name = "relative"
    needs_norms = True

    def value(self, sq, n, norms, eps):
        return sq / (norms + eps)

    def factors(self, grad, value, n, norms, eps):
        beta = grad * 2.0 / (norms + eps)
        return beta * (1.0 - value), beta


DISTANCES: dict[str, Distance] = {}


def register_distance(distance: Distance) -> Distance:
    """Add ``distance`` (an instance) under its ``name``; returns it. A name can be registered once."""
    if not isinstance(distance, Distance) or not distance.name:
        raise TypeError(f"{distance!r} is not a Distance instance with a name: subclass Distance, set name.")
    return add_unique(DISTANCES, distance.name, distance, "Distance", "DISTANCES")


def get_distance(name: str | Distance) -> Distance:
    """The registered distance called ``name`` (a :class:`Distance` is returned as it is)."""
    if isinstance(name, Distance):
        return name
    found = DISTANCES.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(
            f"Unknown distance {name!r}. Choose between {list(DISTANCES)}, or register one with "
            "eqreg_hf.core.distances.register_distance."
        )
    return found


register_distance(Frobenius())
register_distance(MeanSquared())
register_distance(Relative())
