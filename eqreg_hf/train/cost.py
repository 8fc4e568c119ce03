"""What an EQ-Reg training step costs next to a plain one: time and peak activation memory.

Steps are interleaved in one process (plain, EQ-Reg, plain, EQ-Reg, ...) so that machine noise hits
both alike, and ratios are medians over repeats. Memory: on CUDA the allocator's peak; on CPU the
bytes autograd saves for backward during the step (the activation memory a training step holds at
its peak, measured with ``torch.autograd.graph.saved_tensors_hooks``) plus EQ-Reg's captures.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.regularizer import EqReg
from eqreg_hf.core.unwrap import model_device
from eqreg_hf.train.step import EqRegStep

__all__ = ["StepCost", "measure_step_cost"]


@dataclass
class StepCost:
    """Medians of one interleaved run. ``floor_*``: a plain step on the stacked batch ``[x; x[:m]]``
    (the b + m images an EQ-Reg step pushes through the network), so ``eqreg / floor`` is what EQ-Reg
    itself adds (rotating, the hooks, the distances) beyond the bigger batch it asks for."""

    label: str
    time_ratio: float
    memory_ratio: float
    plain_ms: float
    eqreg_ms: float
    plain_mem_mb: float
    eqreg_mem_mb: float
    floor_ms: float = float("nan")
    floor_time_ratio: float = float("nan")
    floor_mem_mb: float = float("nan")

    HEADER = (
        "| model / setting | plain ms | stacked-batch floor | EQ-Reg ms | time ratio | EQ-Reg / floor | "
        "plain MB | EQ-Reg MB | memory ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )

    def row(self) -> str:
        return (
            f"| {self.label} | {self.plain_ms:.1f} | {self.floor_time_ratio:.2f}x | {self.eqreg_ms:.1f} | "
            f"{self.time_ratio:.2f}x | {self.eqreg_ms / self.floor_ms:.2f}x | "
            f"{self.plain_mem_mb:.1f} | {self.eqreg_mem_mb:.1f} | {self.memory_ratio:.2f}x |"
        )


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
            self.bytes += (
                t.untyped_storage().nbytes()
                if hasattr(t, "untyped_storage")
                else t.numel() * t.element_size()
            )
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
    device = model_device(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()
    reg = EqReg(model, config)
    eq_step = EqRegStep(reg, rotate_targets=True)
    x, y = make_batch()
    x, y = x.to(device), y.to(device)
    cuda = device.type == "cuda"

    m = max(1, math.ceil(config.rotated_fraction * x.shape[0])) if reg.active else 0
    x_floor, y_floor = torch.cat([x, x[:m]]), torch.cat([y, y[:m]])

    def step(kind: str) -> tuple[float, int]:
        counter = _SavedBytes()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            extra = 0
            if kind == "eqreg":  # the training step the Trainer and the loop run
                out = model(eq_step.stack(x))
                extra = _captured_bytes(reg)
                task, eq = eq_step.losses(task_loss, out, y)
                loss = task + eq
            elif kind == "floor":
                loss = task_loss(model(x_floor), y_floor)
            else:
                loss = task_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        mem = torch.cuda.max_memory_allocated() if cuda else counter.bytes + extra
        return elapsed, mem

    kinds = ("plain", "floor", "eqreg")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    mems: dict[str, list[int]] = {k: [] for k in kinds}
    try:
        for _ in range(warmup):
            for kind in kinds:
                step(kind)
        for i in range(repeats):
            order = kinds[i % 3 :] + kinds[: i % 3]  # rotate the order so no kind always runs first
            for kind in order:
                t, mem = step(kind)
                times[kind].append(t)
                mems[kind].append(mem)
    finally:
        reg.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    return StepCost(
        label=label,
        time_ratio=statistics.median([e / p for e, p in zip(times["eqreg"], times["plain"])]),
        memory_ratio=max(mems["eqreg"]) / max(mems["plain"]),
        plain_ms=1e3 * med["plain"],
        eqreg_ms=1e3 * med["eqreg"],
        plain_mem_mb=max(mems["plain"]) / 2**20,
        eqreg_mem_mb=max(mems["eqreg"]) / 2**20,
        floor_ms=1e3 * med["floor"],
        floor_time_ratio=statistics.median([f / p for f, p in zip(times["floor"], times["plain"])]),
        floor_mem_mb=max(mems["floor"]) / 2**20,
    )


def memory_bandwidth_gbs(mb: int = 64, repeats: int = 7, device: str | torch.device = "cpu") -> float:
    """Effective bandwidth of an elementwise op here (``z = x + y`` on ``mb``-MB float32 tensors), in GB/s."""
    n = mb * 2**20 // 4
    x, y, z = (torch.rand(n, device=device) for _ in range(3))
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        torch.add(x, y, out=z)
        sync()
        times.append(time.perf_counter() - start)
    return 3 * n * 4 / statistics.median(times) / 1e9


def tap_bytes(model: nn.Module, config: EqRegConfig, x: torch.Tensor) -> int:
    """Bytes of the two halves (original and rotated rows) of every tapped map in one EQ-Reg step, as
    float32."""
    reg = EqReg(model, config)
    sizes: list[int] = []
    try:
        model.train()
        out = model(reg.stack(x))
        rows = 2 * reg.last_rotated
        for items in reg._hooks.take().values():
            for _, t in items:
                sizes.append(t[:1].numel() * rows * 4)
        del out
    finally:
        reg.discard()
        reg.remove()
    return sum(sizes)


# Passes over the two halves of a tapped map that any exact implementation of the distance makes,
# however fused: forward reads them (1); backward reads them (1) and writes their gradient (1), which
# autograd adds to the gradient arriving from the rest of the network (reads 2, writes 1).
MIN_PASSES = 6
