"""The one EQ-Reg training step: every training path (Trainer mixin, Accelerate loop, cost benchmark) runs
it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eqreg_hf import EqReg, EqRegConfig
from eqreg_hf.core.regularizer import split_rows
from eqreg_hf.train.step import EqRegStep


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


@pytest.mark.parametrize("rotate_targets", [True, False])
def test_step_matches_the_loss_written_out_by_hand(rotate_targets):
    net = _net()
    x, y = torch.rand(4, 3, 9, 9), torch.rand(4, 3, 9, 9)
    step = EqRegStep(EqReg(net, EqRegConfig(layers=["0"], weight=0.3, distance="mse")), rotate_targets)
    out = net(step.stack(x, k=1))
    task, eq = step.losses(F.mse_loss, out, y)
    expected_target = torch.cat([y, torch.rot90(y, 1, (-2, -1))]) if rotate_targets else y
    expected_out = out if rotate_targets else out[:4]
    assert torch.allclose(task, F.mse_loss(expected_out, expected_target))
    with torch.no_grad():
        f = net[0](torch.cat([x, torch.rot90(x, 1, (-2, -1))]))
        a = torch.rot90(f[:4].view(4, 2, 4, 9, 9).roll(1, 2).view(4, 8, 9, 9), 1, (-2, -1))
        assert torch.allclose(eq, 0.3 * (a - f[4:]).pow(2).mean(), rtol=1e-5)


def test_off_means_identity():
    net = _net()
    x = torch.rand(2, 3, 9, 9)
    for step in (EqRegStep(None), EqRegStep(EqReg(net, EqRegConfig(layers=["0"], weight=0.0)))):
        assert step.stack(x) is x and not step.stacked
        task, eq = step.losses(F.mse_loss, net(x), x)
        assert eq.item() == 0.0


@pytest.mark.parametrize(
    "outputs",
    [
        torch.arange(6.0).view(6, 1),
        {"logits": torch.arange(6.0).view(6, 1), "aux": torch.tensor(1.0)},
        (torch.arange(6.0).view(6, 1), torch.arange(12.0).view(6, 2)),
    ],
)
def test_split_rows_is_the_one_split(outputs):
    first = split_rows(outputs, slice(0, 4), 6)
    flat = first if torch.is_tensor(first) else (first["logits"] if isinstance(first, dict) else first[0])
    assert flat.shape[0] == 4 and flat[-1].item() == 3.0


def _count_steps(monkeypatch):
    calls = []
    original = EqRegStep.stack

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EqRegStep, "stack", counting)
    return calls


def test_loop_and_cost_benchmark_run_the_step(monkeypatch):
    from eqreg_hf.train.cost import measure_step_cost
    from eqreg_hf.train.loop import train_loop

    calls = _count_steps(monkeypatch)
    net, cfg = _net(), EqRegConfig(layers=["0"], weight=1e-2)
    x, y = torch.rand(4, 3, 9, 9), torch.rand(4, 3, 9, 9)
    train_loop(
        net,
        DataLoader(TensorDataset(x, y), batch_size=2),
        torch.optim.SGD(net.parameters(), 1e-3),
        F.mse_loss,
        cfg,
        max_steps=2,
        progress=False,
    )
    assert len(calls) == 2
    measure_step_cost(net, lambda: (x, y), F.mse_loss, cfg, repeats=1, warmup=0)
    assert len(calls) == 3


def test_trainer_runs_the_step(monkeypatch, tmp_path):
    import datasets
    from transformers import TrainingArguments

    from eqreg_hf import EqRegTrainer

    calls = _count_steps(monkeypatch)
    data = datasets.Dataset.from_dict(
        {"pixel_values": torch.rand(4, 3, 9, 9).tolist(), "labels": torch.rand(4, 3, 9, 9).tolist()}
    ).with_format("torch")
    args = TrainingArguments(
        str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
    )
    EqRegTrainer(
        model=_net(),
        args=args,
        train_dataset=data,
        task_loss=F.mse_loss,
        eqreg=EqRegConfig(layers=["0"], weight=1e-2),
    ).train()
    assert len(calls) == 2


def test_docs_training_loop_example_runs(monkeypatch, tmp_path):
    import os
    import re

    monkeypatch.chdir(tmp_path)
    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "training.md"), encoding="utf-8").read()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "EqRegStep(EqReg(" in b)
    exec(compile(block, "docs/training.md", "exec"), {"__name__": "__docs__"})
