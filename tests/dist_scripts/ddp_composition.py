"""torchrun --standalone --nproc_per_node 2 ddp_composition.py: EQ-Reg + an EI-style loss under DDP (gloo).

Each rank trains on its own micro-batch through ``DistributedDataParallel``: one stacked forward, then the
EI-style loss calls the wrapped model a second time (uncaptured), and backward all-reduces the gradient.
Every rank then recomputes, without DDP, the two parts of every rank's micro-batch (task + EI loss, and the
EQ-Reg term alone) and checks that the all-reduced gradient is their mean. Prints "composition OK" per rank.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from eqreg_hf import EqReg, EqRegConfig

LAYERS = ["0", "2"]


def net() -> nn.Module:
    """A plain conv net without BatchNorm (so a split batch gives the same gradients)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1)
    )


def ei_loss(model: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """An equivariant-imaging style loss: the model again on the rotated reconstruction (pure torch)."""
    turned = torch.rot90(out, 1, (-2, -1))
    return F.mse_loss(model(turned), turned)


def grads(model: nn.Module, loss_fn) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def stacked(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``[x; rot90(x, k)]``, built by hand."""
    return torch.cat([x, torch.rot90(x, k, (-2, -1))])


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(7)
    data = [(torch.rand(2, 3, 9, 9, generator=g), torch.rand(2, 3, 9, 9, generator=g)) for _ in range(world)]
    cfg = EqRegConfig(layers=LAYERS, weight=0.4)
    start = net().train()

    model = copy.deepcopy(start)
    reg = EqReg(model, cfg)  # on the inner module, before DDP wraps it
    ddp = DistributedDataParallel(model)
    y, t = data[rank]
    out = ddp(reg.stack(y, k=1))
    loss = F.mse_loss(out, reg.stack_targets(t)) + ei_loss(ddp, out)
    calls = {name: len(items) for name, items in reg._hooks._captured.items()}
    assert calls == {"0": 1, "2": 1}, calls
    ddp.zero_grad(set_to_none=True)
    (loss + reg.loss()).backward()
    reduced = [p.grad.detach().clone() for p in model.parameters()]
    reg.remove()

    expected = None
    for y, t in data:
        plain = copy.deepcopy(start)

        def task_and_ei(plain=plain, y=y, t=t):
            out = plain(stacked(y))
            return F.mse_loss(out, stacked(t)) + ei_loss(plain, out)

        parts = grads(plain, task_and_ei)
        alone = copy.deepcopy(start)
        term_reg = EqReg(alone, cfg)
        term = grads(alone, lambda term_reg=term_reg, y=y: term_reg(y, k=1)[1])
        term_reg.remove()
        total = [(a + b) / world for a, b in zip(parts, term)]
        expected = total if expected is None else [e + s for e, s in zip(expected, total)]
    for r, e in zip(reduced, expected):
        torch.testing.assert_close(r, e, rtol=1e-5, atol=1e-7)
    print(f"rank {rank}: composition OK", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
