"""What an EQ-Reg training step costs next to a plain one: time and peak activation memory.

Steps are interleaved in one process (plain, EQ-Reg, plain, EQ-Reg, ...) so that machine noise hits
both alike, and ratios are medians over repeats. Memory: on CUDA the allocator's peak; on CPU the
bytes autograd saves for backward during the step (the activation memory a training step holds at
its peak, measured with ``torch.autograd.graph.saved_tensors_hooks``) plus EQ-Reg's captures.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import EqRegConfig
from .regularizer import EqReg

__all__ = ["StepCost", "measure_step_cost"]


@dataclass
class StepCost:
    label: str
    time_ratio: float
    memory_ratio: float
    plain_ms: float
    eqreg_ms: float
    plain_mem_mb: float
    eqreg_mem_mb: float

    def row(self) -> str:
        return (f"| {self.label} | {self.plain_ms:.1f} | {self.eqreg_ms:.1f} | {self.time_ratio:.2f}x | "
                f"{self.plain_mem_mb:.1f} | {self.eqreg_mem_mb:.1f} | {self.memory_ratio:.2f}x |")


class _SavedBytes:
    """Counts the bytes autograd saves for backward (distinct storages only)."""

    def __init__(self):
        self.bytes = 0
        self._seen: set[int] = set()

    def pack(self, t: torch.Tensor):
        try:
            key = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            key = id(t)
        if key not in self._seen:
            self._seen.add(key)
            self.bytes += t.untyped_storage().nbytes() if hasattr(t, "untyped_storage") else t.numel() * t.element_size()
        return t

    @staticmethod
    def unpack(t):
        return t


def _captured_bytes(reg: EqReg | None) -> int:
    if reg is None or reg._hooks is None:
        return 0
    total = 0
    for items in reg._hooks._captured.values():
        for _, t, _ in items:
            if reg._hooks.clone:
                total += t.numel() * t.element_size()
    return total


def measure_step_cost(
    model: nn.Module,
    make_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: EqRegConfig,
    *,
    repeats: int = 15,
    warmup: int = 3,
    label: str = "",
) -> StepCost:
    """Median time and peak memory of an EQ-Reg training step over a plain one (same batch, same model)."""
    device = next(model.parameters()).device
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()
    reg = EqReg(model, config)
    x, y = make_batch()
    x, y = x.to(device), y.to(device)
    cuda = device.type == "cuda"

    def step(use_reg: bool) -> tuple[float, int]:
        counter = _SavedBytes()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            if use_reg:
                out = model(reg.stack(x))
                loss = task_loss(out, reg.stack_targets(y))
                extra = _captured_bytes(reg)
                loss = loss + reg.loss()
            else:
                out = model(x)
                loss = task_loss(out, y)
                extra = 0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        mem = torch.cuda.max_memory_allocated() if cuda else counter.bytes + extra
        return elapsed, mem

    try:
        for _ in range(warmup):
            step(False)
            step(True)
        plain_t, eq_t, plain_m, eq_m = [], [], [], []
        for i in range(repeats):
            order = (False, True) if i % 2 == 0 else (True, False)
            for use in order:
                t, m = step(use)
                (eq_t if use else plain_t).append(t)
                (eq_m if use else plain_m).append(m)
    finally:
        reg.remove()
    ratios = [e / p for e, p in zip(eq_t, plain_t)]
    return StepCost(
        label=label,
        time_ratio=statistics.median(ratios),
        memory_ratio=max(eq_m) / max(plain_m),
        plain_ms=1e3 * statistics.median(plain_t),
        eqreg_ms=1e3 * statistics.median(eq_t),
        plain_mem_mb=max(plain_m) / 2**20,
        eqreg_mem_mb=max(eq_m) / 2**20,
    )
