"""THE EQ-Reg training step, written once: stack → targets → task loss + EQ-Reg term.

    total = task_loss(model([x; R_k x]), [y; R_k y or y]) + λ Σ_l w_l d(T_k F_l(x), F_l(R_k x))

The Trainer mixin (:mod:`eqreg_hf.train.trainer`), the Accelerate loop (:mod:`eqreg_hf.train.loop`)
and the cost benchmark (:mod:`eqreg_hf.train.cost`) all run a micro-batch through
:class:`EqRegStep`, so the stacking, the targets of the rotated half, the split of the stacked output
and the float32 task loss exist in one place.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.regularizer import EqReg

__all__ = ["EqRegStep", "to_float32", "accepts_keyword"]


def to_float32(outputs: Any) -> Any:
    """A floating-point tensor output in float32 (bf16/fp16 autocast outputs), anything else as it is."""
    if torch.is_tensor(outputs) and outputs.is_floating_point() and outputs.dtype != torch.float32:
        return outputs.float()
    return outputs


def accepts_keyword(module: nn.Module, key: str) -> bool:
    """True when ``module.forward`` takes ``key`` as a keyword (or ``**kwargs``); plain nets are then called
    positionally with the image."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return True
    return key in params or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())


class EqRegStep:
    """One micro-batch of EQ-Reg training around an :class:`~eqreg_hf.EqReg` (or ``None``: plain training).

    Args:
        reg: the regulariser attached to the (unwrapped) model, or None for a plain step.
        rotate_targets: apply the task loss to the rotated half too (image targets rotated with the same
            k, labels copied: the paper's choice); False: the task loss sees the original rows only.

    Example:
        >>> from eqreg_hf import EqRegConfig
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
        >>> step = EqRegStep(EqReg(net, EqRegConfig(layers=["0"], weight=0.1)))
        >>> x, y = torch.rand(2, 3, 9, 9), torch.rand(2, 3, 9, 9)
        >>> out = net(step.stack(x, k=1))
        >>> task, eq = step.losses(torch.nn.functional.mse_loss, out, y)
        >>> out.shape[0], task.dim(), eq.item() > 0
        (4, 0, True)
    """

    def __init__(self, reg: EqReg | None, rotate_targets: bool = True, max_steps: int | None = None):
        self.reg = reg
        self.rotate_targets = bool(rotate_targets)
        self.max_steps = max_steps  # for a weight="auto" warm-up given as a fraction of the run
        self._batch = 0
        self._stacked = False
        self._k_cache: tuple[int, tuple[int, int], int] | None = None
        self._open_step: int | None = None  # weight="auto": the optimizer step whose statistics are collected

    @property
    def stacked(self) -> bool:
        """True when the last :meth:`stack` added rotated rows (EQ-Reg did something this micro-batch)."""
        return self._stacked

    def stack(self, x: torch.Tensor, k: int | None = None, optimizer_step: int | None = None) -> torch.Tensor:
        """``[x; R_k x[:m]]`` with the taps armed, or ``x`` itself when EQ-Reg is off (or k = 0).

        ``k=None`` draws k from the regulariser's seeded sampler; with ``optimizer_step`` given, one k is
        drawn per optimizer step (and input size) and reused by its micro-batches, so gradient accumulation
        and data parallelism see the same rotation as one big batch would.
        """
        self._batch = x.shape[0]
        auto = self.reg is not None and self.reg.auto is not None and self.reg.model.training
        if auto and (optimizer_step is None or optimizer_step != self._open_step):
            self.end_optimizer_step()  # a new optimizer step: λ from the statistics of the steps before it
            self._open_step = optimizer_step
        if k is None and optimizer_step is not None and self.reg is not None and self.reg.active:
            k = self._k_for(int(optimizer_step), tuple(x.shape[-2:]))
        xs = self.reg.stack(x, k) if self.reg is not None else x
        self._stacked = xs.shape[0] != x.shape[0]
        return xs

    def _k_for(self, optimizer_step: int, hw: tuple[int, int]) -> int:
        cache = self._k_cache
        if cache is None or cache[0] != optimizer_step or cache[1] != hw:
            self._k_cache = cache = (optimizer_step, hw, self.reg.sample_k(hw))
        return cache[2]

    def reset(self) -> None:
        """Forget the k drawn for the current optimizer step (e.g. after the sampler state was restored)."""
        self._k_cache = None
        self._open_step = None

    def end_optimizer_step(self) -> None:
        """``weight="auto"``: fold the closing step's statistics in and set the live λ for the next one.

        Called by the loop after each optimizer step, by the Trainer before a checkpoint, and by :meth:`stack`
        when it sees a new optimizer step; a step with nothing observed changes nothing, so extra calls are
        safe. Under ``torch.distributed`` every process must call it alike (it averages across processes).
        """
        if self.reg is not None and self.reg.auto is not None:
            self.reg.weight = self.reg.auto.step(self.max_steps)

    def observe(self, task: torch.Tensor) -> None:
        """``weight="auto"``: record this micro-batch's task loss and unweighted EQ-Reg term (no gradient)."""
        if self.reg is not None and self.reg.auto is not None and self.reg.model.training:
            self.reg.auto.observe(task, self.reg.last_unweighted if self._stacked else None)

    def targets(self, y: Any) -> Any:
        """The targets the task loss compares with: stacked (rotated images / copied labels) or ``y``."""
        if self._stacked and self.rotate_targets:
            return self.reg.stack_targets(y)
        return y

    def task_outputs(self, outputs: Any) -> Any:
        """The outputs the task loss sees: all rows, or the original rows only (``rotate_targets=False``)."""
        if self._stacked and not self.rotate_targets:
            return self.reg.split(outputs)[0]
        return outputs

    def task_loss(self, loss_fn: Callable[[Any, Any], torch.Tensor], outputs: Any, y: Any) -> torch.Tensor:
        """``loss_fn(outputs, targets)`` on the right rows, in float32."""
        return loss_fn(to_float32(self.task_outputs(outputs)), self.targets(y))

    def eq_loss(self, device: torch.device | None = None) -> torch.Tensor:
        """``λ Σ_l w_l d_l`` from the captured maps (a float32 zero when nothing was stacked)."""
        if self.reg is not None:
            return self.reg.loss()
        return torch.zeros((), device=device)

    def losses(
        self, loss_fn: Callable[[Any, Any], torch.Tensor], outputs: Any, y: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(task, eq)`` of the micro-batch; backward ``task + eq``. On an error the captures are dropped."""
        try:
            task = self.task_loss(loss_fn, outputs, y)
        except BaseException:
            self.discard()
            raise
        eq = self.eq_loss(task.device)
        self.observe(task)
        return task, eq

    def discard(self) -> None:
        """Drop the captures without a loss (an error path), so the real error is the one that surfaces."""
        if self.reg is not None:
            self.reg.discard()
