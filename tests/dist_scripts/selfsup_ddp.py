"""torchrun --standalone --nproc_per_node 2 selfsup_ddp.py: EQ-Reg + deepinv's REI losses under DDP (gloo).

Each rank trains on its own measurements through ``DistributedDataParallel``: one stacked forward through the
DDP model, then the self-supervised loss (deepinv's SurePoissonLoss + EILoss) runs the network twice more, as
the restore recipe does (on the inner module: SURE's perturbed measurement, EI's re-measured turned image),
uncaptured; backward all-reduces the gradient. Every rank then recomputes, without DDP and without hooks, the
two parts of every rank's micro-batch (the self-supervised loss on the stacked batch, with the same seeded
draws, and the EQ-Reg term alone) and checks that the all-reduced gradient is their mean. Prints
"selfsup composition OK" per rank.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from eqreg_hf import EqReg, EqRegConfig
from eqreg_hf.core.groups import rotate_image
from eqreg_hf.tasks.restore.networks import DnCNN
from eqreg_hf.tasks.restore.selfsup import InpaintingMeasurements, SelfSupervisedLoss, pack

GAIN, K = 0.05, 1
CFG = EqRegConfig(layers=["head", "body.0"], weight=0.3, distance="mse")


def batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    y, mask = InpaintingMeasurements(0.5, GAIN).measure(torch.rand(2, 3, 8, 8, generator=g), g)
    return y, pack(y, mask)


def loss_of(model: torch.nn.Module, rank: int) -> SelfSupervisedLoss:
    return SelfSupervisedLoss(model, InpaintingMeasurements(0.5, GAIN), loss="rei", seed=10 + rank)


def stacked(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, rotate_image(t, K, 4)])


def grads(model: torch.nn.Module, fn) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    fn().backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def apart(model: torch.nn.Module, selfsup, y: torch.Tensor, target: torch.Tensor):
    """The gradients of the self-supervised loss on the stacked batch and of the EQ-Reg term alone."""
    parts = grads(model, lambda: selfsup(model(stacked(y)), stacked(target)))
    with EqReg(model, CFG) as alone:
        return parts, grads(model, lambda: alone(y, k=K)[1])


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    net = DnCNN(channels=8, depth=3).train()
    start = copy.deepcopy(net)
    reg = EqReg(net, CFG)  # hooks on the inner modules, before DDP wraps the model
    ddp = DistributedDataParallel(net)
    y, target = batch(rank)
    selfsup = loss_of(net, rank)  # the recipe's loss holds the inner network
    out = ddp(reg.stack(y, k=K))
    loss = selfsup(out, reg.stack_targets(target)) + reg.loss()
    ddp.zero_grad(set_to_none=True)
    loss.backward()
    reduced = [p.grad.detach().clone() for p in net.parameters()]
    reg.remove()

    expected = [torch.zeros_like(p) for p in start.parameters()]
    for r in range(world):
        yr, tr = batch(r)
        plain = copy.deepcopy(start)
        selfsup_r = loss_of(plain, r)
        parts, term = apart(plain, selfsup_r, yr, tr)
        expected = [e + (a + b) / world for e, a, b in zip(expected, parts, term)]
    for got, want in zip(reduced, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    print(f"rank {rank}: selfsup composition OK", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
