"""torchrun --standalone --nproc_per_node 2 fsdp_loop.py OUT_DIR

(a) FSDP2 (``torch.distributed.fsdp.fully_shard``, gloo, CPU): EQ-Reg hooks registered on the inner
modules before sharding see the full activations (the loss and per-tap terms equal those of an
unsharded copy with the same weights), and training runs. (b) ``eqreg_hf.train.loop.train_loop`` (the
Accelerate loop) under torchrun: identical parameters and logs on both ranks. Rank 0 writes
OUT_DIR/fsdp_loop.pt.
"""

import copy
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from common import TINY_DERAIN_LAYERS, TinyDerainer, flat_params
from torch.utils.data import DataLoader, TensorDataset

from eqreg_hf import EqReg, EqRegConfig


def gathered(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return out


def fsdp_part(results: dict) -> None:
    from torch.distributed.fsdp import fully_shard

    rank = dist.get_rank()
    torch.manual_seed(0)
    model = TinyDerainer(channels=8)
    reference = copy.deepcopy(model)  # unsharded, same weights
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=1.0, distance="mse")
    reg = EqReg(model, cfg)  # hooks before sharding, on the inner modules
    for name in ("head", "body", "tail"):
        fully_shard(getattr(model, name))
    fully_shard(model)
    local = model.head.weight.to_local()
    assert local.shape[0] < 8, f"head.weight not sharded: local shape {tuple(local.shape)}"

    g = torch.Generator().manual_seed(10 + rank)  # different data per rank
    x = torch.rand(2, 3, 9, 9, generator=g)
    y = torch.rand(2, 3, 9, 9, generator=g)
    shapes = {}
    handles = [
        dict(model.named_modules())[n].register_forward_hook(
            lambda m, a, o, n=n: shapes.__setitem__(n, tuple(o.shape))
        )
        for n in TINY_DERAIN_LAYERS
    ]
    out = model(reg.stack(x, k=1))
    for h in handles:
        h.remove()
    eq = reg.loss()
    terms = reg.last_terms
    assert all(s == (4, 8, 9, 9) for s in shapes.values()), f"taps saw partial activations: {shapes}"
    with EqReg(reference, cfg) as ref_reg:
        ref_out, ref_eq = ref_reg(x, k=1)
        ref_terms = ref_reg.last_terms
    assert torch.allclose(out, ref_out, atol=1e-5), "sharded forward differs from the unsharded one"
    assert torch.allclose(eq, ref_eq, rtol=1e-5), (eq.item(), ref_eq.item())
    assert all(abs(terms[n] - ref_terms[n]) <= 1e-5 * max(1.0, abs(ref_terms[n])) for n in terms), (
        terms,
        ref_terms,
    )

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = torch.cat([p.full_tensor().reshape(-1) for p in model.parameters()])
    losses = []
    for _ in range(2):
        xs = reg.stack(x)
        out = model(xs)
        loss = F.l1_loss(out, reg.stack_targets(y)) + reg.loss()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    after = torch.cat([p.full_tensor().reshape(-1) for p in model.parameters()])
    assert all(map(lambda v: v == v and abs(v) < 1e6, losses)), losses
    assert not torch.equal(before, after), "FSDP2 training did not change the parameters"
    a, b = gathered(after)
    assert torch.equal(a, b), "full parameters differ between ranks"
    reg.remove()
    results["fsdp_eq"] = eq.item()
    results["fsdp_losses"] = losses


def loop_part(results: dict, out_dir: str) -> None:
    from eqreg_hf.train.loop import train_loop

    torch.manual_seed(0)
    model = TinyDerainer(channels=8)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(8, 3, 9, 9, generator=g), torch.rand(8, 3, 9, 9, generator=g))
    loader = DataLoader(data, batch_size=2, shuffle=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.5, distance="mse")
    hist = train_loop(
        model,
        loader,
        opt,
        F.l1_loss,
        cfg,
        max_steps=2,
        log_every=1,
        progress=False,
        gradient_accumulation_steps=1,
    )
    assert hist.steps == 2
    a, b = gathered(flat_params(model))
    assert torch.equal(a, b), "train_loop: parameters differ between ranks"
    logs = torch.tensor([[h["task_loss"], h["eqreg_loss"]] for h in hist.logs], dtype=torch.float64)
    la, lb = gathered(logs)
    assert torch.equal(la, lb) and float(la[:, 1].min()) > 0, (la, lb)
    results["loop_logs"] = logs
    results["loop_hooks_left"] = sum(len(m._forward_hooks) for m in model.modules())
    assert results["loop_hooks_left"] == 0

    # weight="auto": each rank sees other data, but the statistics are averaged across ranks, so λ is the same
    torch.manual_seed(0)
    model = TinyDerainer(channels=8)
    cfg = EqRegConfig(
        layers=TINY_DERAIN_LAYERS, weight="auto", target_share=0.1, auto_warmup=0, distance="mse"
    )
    hist = train_loop(
        model,
        loader,
        torch.optim.SGD(model.parameters(), lr=0.05),
        F.l1_loss,
        cfg,
        max_steps=3,
        log_every=1,
        progress=False,
    )
    weights = torch.tensor(hist.series("eqreg_weight"), dtype=torch.float64)
    wa, wb = gathered(weights)
    assert torch.equal(wa, wb) and float(wa[-1]) > 0, (wa, wb)
    results["auto_weights"] = weights

    # D4 (rotations and mirror images) under DDP: one element per optimizer step on both ranks, and the
    # ranks stay identical
    torch.manual_seed(0)
    model = TinyDerainer(channels=8)
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, group="D4", weight=0.5, distance="mse")
    hist = train_loop(
        model,
        loader,
        torch.optim.SGD(model.parameters(), lr=0.05),
        F.l1_loss,
        cfg,
        max_steps=2,
        log_every=1,
        progress=False,
    )
    a, b = gathered(flat_params(model))
    assert torch.equal(a, b), "train_loop with D4: parameters differ between ranks"
    results["d4_eqreg_loss"] = hist.series("eqreg_loss")


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    assert dist.get_world_size() == 2
    results = {}
    fsdp_part(results)
    loop_part(results, out_dir)
    if dist.get_rank() == 0:
        tmp = os.path.join(out_dir, "fsdp_loop.pt.tmp")
        torch.save(results, tmp)
        os.replace(tmp, os.path.join(out_dir, "fsdp_loop.pt"))
    print(f"rank {dist.get_rank()} OK", flush=True)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
