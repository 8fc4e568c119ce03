"""EQ-Reg composes exactly with deepinv's self-supervised losses (EI / REI), which call the network again.

With EQ-Reg and the EI (or REI) loss together, the gradient is the gradient of the self-supervised loss on the
stacked batch plus the gradient of the EQ-Reg term, each computed on its own: the taps capture only the
stacked pass, never the EI pass on the re-measured turned image nor SURE's pass on the perturbed
measurement. Checked on one micro-batch, through the library's loop under gradient accumulation, and
(dist_scripts/selfsup_ddp.py) under 2-process DDP.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys

import deepinv  # noqa: F401  (a hard dependency: fail, not skip, when it is missing)
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from eqreg_hf import EqReg, EqRegConfig
from eqreg_hf.tasks.restore.networks import DnCNN
from eqreg_hf.tasks.restore.selfsup import InpaintingMeasurements, SelfSupervisedLoss, pack
from eqreg_hf.train.arguments import LoopArguments
from eqreg_hf.train.loop import train_loop

HERE = os.path.dirname(os.path.abspath(__file__))
LAYERS = ["head", "body.0"]
CASES = [("ei", None, "C4", "C4"), ("rei", 0.05, "D4", "C4"), ("rei", 0.1, "C4", "D4")]


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return DnCNN(channels=8, depth=3).train()


def _batch(gain, n: int = 2, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y, mask = InpaintingMeasurements(0.5, gain).measure(torch.rand(n, 3, 8, 8, generator=g), g)
    return y, pack(y, mask)


def _grads(model: torch.nn.Module, loss_fn) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _counting(net: torch.nn.Module) -> list[int]:
    """How many forwards of ``net`` ran (the stacked one plus the losses' own)."""
    calls = [0]
    net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _stacked(t: torch.Tensor, k) -> torch.Tensor:
    from eqreg_hf.core.groups import rotate_image

    return torch.cat([t, rotate_image(t, k, 4)])


def _parts(model, selfsup, cfg, y, target, k) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Gradients of the self-supervised loss on the stacked batch (no hooks) and of the EQ-Reg term alone."""
    parts = _grads(model, lambda: selfsup(model(_stacked(y, k)), _stacked(target, k)))
    with EqReg(model, cfg) as alone:
        return parts, _grads(model, lambda: alone(y, k=k)[1])


@pytest.mark.parametrize("loss,gain,ei_group,eq_group", CASES)
def test_gradient_is_selfsup_plus_eqreg_term_computed_apart(loss, gain, ei_group, eq_group):
    y, target = _batch(gain)
    meas = InpaintingMeasurements(0.5, gain)
    cfg = EqRegConfig(layers=LAYERS, group=eq_group, weight=0.3, distance="mse")
    k = (1, 1) if eq_group == "D4" else 1
    net = _net()
    calls = _counting(net)
    reg = EqReg(net, cfg)
    selfsup = SelfSupervisedLoss(net, meas, loss=loss, group=ei_group, seed=5)

    def combined():
        out = net(reg.stack(y, k=k))
        return selfsup(out, reg.stack_targets(target)) + reg.loss()

    together = _grads(net, combined)
    assert calls[0] == {"ei": 2, "rei": 3}[loss]  # the losses' own passes really ran
    terms = dict(reg.last_terms)
    reg.remove()

    plain = copy.deepcopy(net)
    selfsup_alone = SelfSupervisedLoss(plain, meas, loss=loss, group=ei_group, seed=5)  # the same draws
    parts = _grads(plain, lambda: selfsup_alone(plain(_stacked(y, k)), _stacked(target, k)))
    assert float(selfsup_alone.last["ei"]) == pytest.approx(float(selfsup.last["ei"]), rel=1e-6)
    alone = EqReg(net, cfg)
    term = _grads(net, lambda: alone(y, k=k)[1])
    assert alone.last_terms == pytest.approx(terms, rel=1e-6)
    for g, a, b in zip(together, parts, term):
        torch.testing.assert_close(g, a + b, rtol=1e-5, atol=1e-7)
    assert any(b.abs().max() > 0 for b in term)  # the term has a gradient of its own


def test_loop_with_gradient_accumulation_is_the_sum_of_the_parts():
    """train_loop, GA = 2, SGD lr 1: the step is −½ Σ_micro-batches (∇ selfsup + ∇ λ·EQ-Reg), each apart."""
    y, target = _batch(0.05, n=4, seed=7)
    meas, cfg = (
        InpaintingMeasurements(0.5, 0.05),
        EqRegConfig(layers=LAYERS, weight=0.3, distance="mse", seed=1),
    )
    net = _net()
    start = copy.deepcopy(net)
    k = EqReg(copy.deepcopy(net), cfg).sample_k((8, 8))  # the loop's one k for its first optimizer step
    loader = DataLoader(TensorDataset(y, target), batch_size=2)
    args = LoopArguments(max_steps=1, gradient_accumulation_steps=2, progress=False, seed=0)
    selfsup = SelfSupervisedLoss(net, meas, loss="rei", seed=5)
    train_loop(net, loader, torch.optim.SGD(net.parameters(), lr=1.0), selfsup, cfg, args)

    plain = copy.deepcopy(start)
    selfsup_alone = SelfSupervisedLoss(plain, meas, loss="rei", seed=5)
    expected = [torch.zeros_like(p) for p in plain.parameters()]
    for i in (0, 2):
        yb, tb = y[i : i + 2], target[i : i + 2]
        parts, term = _parts(plain, selfsup_alone, cfg, yb, tb, k)
        expected = [e + (a + b) / 2 for e, a, b in zip(expected, parts, term)]
    for p, p0, g in zip(net.parameters(), start.parameters(), expected):
        torch.testing.assert_close(p.detach(), p0.detach() - g, rtol=1e-5, atol=1e-6)


@pytest.mark.distributed
@pytest.mark.slow
def test_two_process_ddp_gradient_is_the_mean_of_the_parts(tmp_path):
    """dist_scripts/selfsup_ddp.py: DDP + REI + EQ-Reg; every rank checks the all-reduced gradient."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    torchrun = shutil.which("torchrun")
    script = os.path.join(HERE, "dist_scripts", "selfsup_ddp.py")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(HERE))
    proc = subprocess.run(
        [*cmd, "--standalone", "--nproc_per_node", "2", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert proc.stdout.count("selfsup composition OK") == 2, tail
