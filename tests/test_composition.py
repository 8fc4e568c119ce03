"""EQ-Reg composes with losses that call the model again: the taps capture only the stacked pass they armed.

The extra passes of an equivariant-imaging style loss (``mse(model(R_g x̂), R_g x̂)`` with ``x̂ = model(y)``),
a teacher copy, a pass under ``reg.paused()``: none is captured, and the gradient of the sum is exactly the
gradient of (task + other loss) plus the gradient of the EQ-Reg term computed on its own. Checked for the raw
API, for the library's loop under gradient accumulation, and (tests/dist_scripts/ddp_composition.py) under
2-process DDP.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eqreg_hf import EqReg, EqRegConfig
from eqreg_hf.train.arguments import LoopArguments
from eqreg_hf.train.loop import train_loop

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "dist_scripts"))

# the tiny network, the EI-style loss (the model again on the rotated reconstruction, pure torch) and the
# gradient helper are the DDP script's, so the one-process and the two-process checks test the same thing
from ddp_composition import LAYERS, ei_loss, grads, stacked  # noqa: E402
from ddp_composition import net as make_net  # noqa: E402


def _captured_calls(reg: EqReg) -> dict[str, int]:
    return {name: len(items) for name, items in reg._hooks._captured.items()}


def test_ei_style_loss_gradient_is_the_sum_of_the_parts():
    torch.manual_seed(1)
    y, target = torch.rand(2, 3, 9, 9), torch.rand(2, 3, 9, 9)
    cfg = EqRegConfig(layers=LAYERS, weight=0.3)
    net = make_net().train()
    reg = EqReg(net, cfg)

    def combined():
        out = net(reg.stack(y, k=1))
        other = F.mse_loss(out, reg.stack_targets(target)) + ei_loss(net, out)
        assert _captured_calls(reg) == {"0": 1, "2": 1}  # the EI pass ran, uncaptured
        return other + reg.loss()

    together = grads(net, combined)
    terms = dict(reg.last_terms)

    plain = copy.deepcopy(net)  # shares the hooks' functions, which ignore any module but `net`
    reg.remove()

    def task_and_ei():
        out = plain(stacked(y))
        return F.mse_loss(out, stacked(target)) + ei_loss(plain, out)

    parts = grads(plain, task_and_ei)
    alone = EqReg(net, cfg)
    term = grads(net, lambda: alone(y, k=1)[1])
    assert alone.last_terms == pytest.approx(terms, rel=1e-6)
    for g, a, b in zip(together, parts, term):
        torch.testing.assert_close(g, a + b, rtol=1e-5, atol=1e-7)
    assert any(b.abs().max() > 0 for b in term)  # the term has a gradient of its own


def _term_of(net: nn.Module, cfg: EqRegConfig, y: torch.Tensor, between) -> tuple[float, dict]:
    reg = EqReg(net, cfg)
    try:
        xs = reg.stack(y, k=1)
        between(net, reg, xs, y)
        net(xs)
        calls = _captured_calls(reg)
        return float(reg.loss().detach()), calls
    finally:
        reg.remove()


def _nothing(net, reg, xs, y):
    return None


def _foreign_batch(net, reg, xs, y):
    net(y)  # another batch: never captured


def _paused_stacked_tensor(net, reg, xs, y):
    with reg.paused():
        net(xs)  # the stacked tensor itself, but paused


def _teacher_copy(net, reg, xs, y):
    teacher = copy.deepcopy(net)  # an EMA / teacher copy made while EQ-Reg is attached
    with torch.no_grad():
        teacher(xs)


@pytest.mark.parametrize("between", [_foreign_batch, _paused_stacked_tensor, _teacher_copy])
def test_a_foreign_forward_between_stack_and_the_stacked_pass_is_not_captured(between):
    torch.manual_seed(2)
    y = torch.rand(3, 3, 9, 9)
    cfg = EqRegConfig(layers=LAYERS, weight=1.0)
    net = make_net().train()
    clean, _ = _term_of(net, cfg, y, _nothing)
    value, calls = _term_of(net, cfg, y, between)
    assert calls == {"0": 1, "2": 1}
    assert value == pytest.approx(clean, rel=1e-6)


def test_the_stacked_pass_inside_paused_is_not_a_term():
    net = make_net().train()
    reg = EqReg(net, EqRegConfig(layers=LAYERS, weight=1.0))
    xs = reg.stack(torch.rand(2, 3, 9, 9), k=1)
    with reg.paused():
        net(xs)
    with pytest.raises(RuntimeError, match="before the stacked batch went through the model"):
        reg.loss()
    reg.remove()


def test_two_pass_call_captures_its_two_passes_only():
    """reg(x, k) on a non-square batch runs two passes; a forward after it is not captured."""
    torch.manual_seed(3)
    net = make_net().train()
    reg = EqReg(net, EqRegConfig(layers=LAYERS, weight=1.0))
    x = torch.rand(2, 3, 9, 11)
    (out_x, out_r), eq = reg(x, k=1)
    assert out_x.shape[-2:] == (9, 11) and out_r.shape[-2:] == (11, 9) and eq.item() > 0
    net(x)
    assert _captured_calls(reg) == {"0": 0, "2": 0}
    reg.remove()


def _micro_batch_grads(net: nn.Module, cfg: EqRegConfig, y: torch.Tensor, t: torch.Tensor) -> list:
    """(task + EI) and the EQ-Reg term of one micro-batch, each on its own, summed."""
    plain = copy.deepcopy(net)

    def task_and_ei():
        out = plain(stacked(y, 2))
        return F.mse_loss(out, stacked(t, 2)) + ei_loss(plain, out)

    parts = grads(plain, task_and_ei)
    reg = EqReg(net, cfg)
    term = grads(net, lambda: reg(y, k=1)[1])
    reg.remove()
    return [a + b for a, b in zip(parts, term)]


def test_loop_with_gradient_accumulation_and_an_ei_loss_is_exact():
    """One optimizer step of train_loop (GA=2, SGD) == the parameters moved by the separately computed
    gradients; C2, so the loop's k is the one k there is."""
    torch.manual_seed(4)
    y, t = torch.rand(4, 3, 9, 9), torch.rand(4, 3, 9, 9)
    cfg = EqRegConfig(layers=LAYERS, group_order=2, weight=0.5)
    net = make_net().train()
    start = copy.deepcopy(net)
    captured = []

    def loss_fn(out, target):  # the loop's task loss, calling the model a second time
        value = F.mse_loss(out, target) + ei_loss(net, out)
        captured.append(sum(len(v) for v in _live_captures(net)))
        return value

    lr = 0.1
    train_loop(
        net,
        DataLoader(TensorDataset(y, t), batch_size=2),
        torch.optim.SGD(net.parameters(), lr=lr),
        loss_fn,
        cfg,
        LoopArguments(max_steps=1, gradient_accumulation_steps=2, progress=False),
    )
    assert captured == [2, 2]  # each micro-batch: one call per tap, the EI pass not among them
    halves = [_micro_batch_grads(start, cfg, y[i : i + 2], t[i : i + 2]) for i in (0, 2)]
    for p0, p1, g0, g1 in zip(start.parameters(), net.parameters(), *halves):
        torch.testing.assert_close(p1, p0 - lr * (g0 + g1) / 2, rtol=1e-5, atol=1e-6)


def _live_captures(net: nn.Module) -> list:
    from eqreg_hf.core.arming import attached_pass

    return list(attached_pass(net).taps._captured.values())


@pytest.mark.distributed
def test_ddp_two_processes_ei_loss_is_exact(tmp_path):
    """2 processes (gloo, DDP): the all-reduced gradient of task + EI + EQ-Reg equals the mean over ranks
    of the separately computed parts, and each rank captured one call per tap."""
    torchrun = shutil.which("torchrun")
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone",
        "--nproc_per_node",
        "2",
        os.path.join(HERE, "dist_scripts", "ddp_composition.py"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE]))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert proc.stdout.count("composition OK") == 2, tail


def test_docs_composition_example_runs():
    """The deepinv example of docs/training.md ("Losses that call the model again") runs as written."""
    import re

    text = open(os.path.join(HERE, os.pardir, "docs", "training.md"), encoding="utf-8").read()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "dinv.loss.EILoss" in b)
    namespace: dict = {"__name__": "__docs__"}
    exec(compile(block, "docs/training.md", "exec"), namespace)
    assert namespace["reg"].last_terms and torch.isfinite(namespace["total"])
