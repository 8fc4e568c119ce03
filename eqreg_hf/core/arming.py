"""Which forward EQ-Reg captures: exactly the pass of the stacked batch that ``stack`` armed, nothing else.

:meth:`EqReg.stack <eqreg_hf.EqReg.stack>` hands its stacked batch ``[x; R_g x]`` to a :class:`StackedPass`.
A forward pre-hook on the model recognises the forward that receives that very tensor and arms the taps
for it; a forward hook disarms them when that forward ends. Every other forward of the model (the extra
passes of an equivariant-imaging or SURE loss, an EMA or teacher pass, a second view, evaluation) runs
uncaptured, so EQ-Reg composes with any loss that calls the model again; ``with reg.paused():`` makes a
forward uncaptured explicitly, even one of the stacked tensor itself.

The life of one term, and what each misuse gets (one line that names it and the fix, never a silent 0)::

    stack(x) -> pending --forward(stacked batch)--> captured --loss()--> read
                  |                                             (a second loss() of it: refused)
                  +-- stack() again / loss() before the stacked forward: refused

    loss() in training with no stack() before it: refused
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.taps import FeatureTaps

__all__ = ["StackedPass", "attached_pass", "replace_attached"]

IDLE, SKIPPED, PENDING, LIVE, CAPTURED, READ, FAILED = (
    "idle",
    "skipped",
    "pending",
    "live",
    "captured",
    "read",
    "failed",
)
_RAW_LOOP = "out = model(reg.stack(x)); term = reg.loss()"


def _tensors(args: tuple, kwargs: dict) -> Iterator[torch.Tensor]:
    """The tensors a forward received: positional and keyword, one level into tuples / lists / dicts."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            yield from (v for v in value if isinstance(v, torch.Tensor))
        elif isinstance(value, dict):
            yield from (v for v in value.values() if isinstance(v, torch.Tensor))


def attached_pass(model: nn.Module) -> StackedPass | None:
    """The :class:`StackedPass` of a regulariser attached to ``model`` (its hooks still on it), or None."""
    for hook in model._forward_pre_hooks.values():
        found = getattr(hook, "eqreg_pass", None)
        if isinstance(found, StackedPass) and found.model is model:
            return found
    return None


class StackedPass:
    """Arms ``taps`` for the one forward of ``model`` whose input is the batch given to :meth:`expect`.

    The pass is recognised by identity (the tensor ``stack`` returned, as DDP, Accelerate and the Trainer
    hand it on); a copy of it (the same shape after ``.to(device)`` or a cast) is taken too, with a warning
    once. ``owner`` is the regulariser (what :func:`attached_pass` finds on the model).

    Args:
        model: the module the regulariser is attached to (the pre-hook goes on it).
        taps: the :class:`~eqreg_hf.core.taps.FeatureTaps` it arms.
        owner: the regulariser object.
        on_start: called with the forward's (args, kwargs) when the stacked pass starts.
    """

    def __init__(self, model: nn.Module, taps: FeatureTaps, owner: Any, on_start=None):
        self.model, self.taps, self.owner, self.on_start = model, taps, owner, on_start
        self.state = IDLE
        self._batch: torch.Tensor | None = None
        self._pass_index = 0
        self._paused = 0
        self._depth = 0
        self._warned_copy = self._warned_eval = self.removed = False

        # plain functions, not bound methods: a deep copy of the hooked model (an EMA or teacher copy) then
        # shares them instead of copying the regulariser, and they ignore any module but this model
        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if module is self.model:
                self._pre_hook(args, kwargs)

        def post_hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if module is self.model:
                self._post_hook(output)

        pre_hook.eqreg_pass = self  # what attached_pass looks for
        self._handles = [
            model.register_forward_pre_hook(pre_hook, with_kwargs=True),
            model.register_forward_hook(post_hook, with_kwargs=True, always_call=True),
        ]

    # ------------------------------------------------------------------ the hooks
    @torch.compiler.disable
    def _pre_hook(self, args: tuple, kwargs: dict) -> None:
        if self.state == LIVE:
            self._depth += 1  # the model called inside its own stacked forward: still that pass
            return
        if self.state != PENDING or self._paused or not self._is_stacked(args, kwargs):
            return  # a foreign forward: not captured
        self.state, self._depth = LIVE, 1
        self.taps.arm(clear=self._pass_index == 0)
        self.taps.pass_index = self._pass_index
        if self.on_start is not None:
            self.on_start()

    @torch.compiler.disable
    def _post_hook(self, output: Any) -> None:
        if self.state != LIVE:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        self.taps.disarm()
        self._batch = None
        if output is None and sys.exc_info()[0] is not None:  # always_call: the forward raised
            self.taps.clear()
            self.state = FAILED
            return
        self.state = CAPTURED

    def _is_stacked(self, args: tuple, kwargs: dict) -> bool:
        batch = self._batch
        found = list(_tensors(args, kwargs))
        if any(t is batch for t in found):
            return True
        if not any(t.shape == batch.shape for t in found):
            return False
        if not self._warned_copy:
            self._warned_copy = True
            warnings.warn(
                f"EQ-Reg: {type(self.model).__name__} received a copy of the stacked batch (shape "
                f"{tuple(batch.shape)}, not the tensor reg.stack() returned, e.g. after .to() or a cast), "
                "and EQ-Reg captures it as the stacked pass. Move or cast x before reg.stack(x) to make this "
                "exact.",
                UserWarning,
                stacklevel=4,
            )
        return True

    # ------------------------------------------------------------------ the states
    def expect(self, batch: torch.Tensor, pass_index: int = 0) -> None:
        """Arm the taps for the forward that receives ``batch`` (``pass_index`` 1: the second pass of a
        two-pass call, added to the first one's captures)."""
        if pass_index == 0:
            self.check_can_stack()
        self._batch, self._pass_index, self.state = batch, pass_index, PENDING

    def skip(self) -> None:
        """``stack`` added no rotated rows (EQ-Reg off, or the identity drawn): the term is 0."""
        self.check_can_stack()
        self.state = SKIPPED
        if not self.model.training and torch.is_grad_enabled() and not self._warned_eval:
            self._warned_eval = True
            warnings.warn(
                "EQ-Reg: reg.stack() with the model in eval mode adds no rotated copy (EQ-Reg is off in eval "
                "mode, its term is 0). Call model.train() before training steps; evaluate under "
                "torch.no_grad() to silence this.",
                UserWarning,
                stacklevel=4,
            )

    def check_attached(self) -> None:
        if self.removed:
            raise RuntimeError(
                "This EqReg was removed (reg.remove(), or a newer EqReg on the same model replaced it): its "
                "hooks are gone and it would compute nothing. Create a new EqReg(model, config)."
            )

    def check_can_stack(self) -> None:
        self.check_attached()
        if self.state == PENDING:
            raise RuntimeError(
                "reg.stack() was called again before the stacked batch of the previous call went through "
                f"the model, so that term would be lost. Run {_RAW_LOOP} for each stack, or call "
                "reg.discard() to drop a stacked batch you will not use."
            )
        if self.state == CAPTURED:
            raise RuntimeError(
                "reg.stack() was called again, but the EQ-Reg term of the previous stacked forward was never "
                f"read, so that step trained without it. Run {_RAW_LOOP} for each stack (the training step "
                "EqRegStep does), or call reg.discard() to drop a term you will not use."
            )

    def take_term(self, active: bool) -> bool:
        """Before a term is computed: True when captures are there to compare, False when the term is
        legitimately 0 (nothing stacked by an inactive regulariser); a misuse raises."""
        self.check_attached()
        state = self.state
        if state == CAPTURED:
            self.state = READ
            return True
        if state == SKIPPED or (state in (IDLE, READ) and not active):
            self.state = READ if state == SKIPPED else state
            return False
        if state == READ:
            raise RuntimeError(
                "reg.loss() was already read for this stacked batch: each reg.stack() gives one term. Keep "
                "the tensor the first call returned (reg.last_terms holds its per-layer values), or stack "
                f"the next batch first ({_RAW_LOOP})."
            )
        if state == PENDING:
            self.reset()
            raise RuntimeError(
                "reg.loss() came before the stacked batch went through the model: the model was not called "
                "with the tensor reg.stack() returned (a forward of another batch, e.g. model(x), is never "
                f"captured). Call the model EQ-Reg is attached to with it: {_RAW_LOOP}."
            )
        if state == FAILED:
            self.reset()
            raise RuntimeError(
                "reg.loss() after a stacked forward that raised an error: there is no term. Stack the next "
                "batch and run it again."
            )
        if state == LIVE:
            raise RuntimeError(
                "reg.loss() was called inside the stacked forward; read the term after the model returns."
            )
        raise RuntimeError(
            "reg.loss() found no stacked batch: the model is training and EQ-Reg is on, but reg.stack() was "
            f"not called before this forward, so there is no term (it would silently be 0). Use {_RAW_LOOP}, "
            "or out, term = reg(x)."
        )

    def reset(self, dropped: bool = False) -> None:
        """Forget the stacked batch and any captures; ``dropped`` (``reg.discard()``): the user dropped this
        term, so a ``loss()`` read after it is 0."""
        self.taps.clear()
        self.taps.disarm()
        self._batch, self._depth, self.state = None, 0, (SKIPPED if dropped else IDLE)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Forwards inside the block are never captured (also one of the stacked tensor itself)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.reset()
        self.removed = True


def replace_attached(model: nn.Module) -> None:
    """One regulariser per model: a new one removes the one still attached (which then refuses to run),
    with a warning that names it."""
    old = attached_pass(model)
    if old is None:
        return
    warnings.warn(
        f"EQ-Reg: {type(model).__name__} already had an EqReg attached (taps {old.taps.names}); it is "
        "removed and the new one replaces it (one stacked pass, one regulariser). Call .remove() on the old "
        "one (or use `with EqReg(model, config) as reg:`) to silence this.",
        UserWarning,
        stacklevel=3,
    )
    old.owner.remove()
