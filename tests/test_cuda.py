"""CUDA checks (issue 14, item 3): run by scripts/device_check.sh on a GPU machine; skipped without CUDA.

bf16 and fp16 (with a gradient scaler) through the Trainer, the exact distance on CUDA against the CPU
result (value and gradients), torch.compile with the inductor backend, and the Accelerate loop in fp16.
"""

from __future__ import annotations

import copy
import os
import sys

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here; scripts/device_check.sh runs these on a GPU machine",
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "dist_scripts"))
from common import TINY_DERAIN_LAYERS, PairDataset, TinyDerainer, tiny_args  # noqa: E402

from eqreg_hf import EqReg, EqRegConfig  # noqa: E402


def _trainer(tmp_path, **overrides):
    from eqreg_hf import EqRegTrainer

    torch.manual_seed(0)
    args = tiny_args(str(tmp_path), use_cpu=False, max_steps=3, **overrides)
    return EqRegTrainer(
        model=TinyDerainer(),
        args=args,
        train_dataset=PairDataset(16),
        eqreg=EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.1),
        task_loss=F.l1_loss,
        eqreg_log_taps=True,
    )


def _check_logs(trainer):
    logs = [h for h in trainer.state.log_history if "eqreg_loss" in h]
    assert len(logs) == 3
    for log in logs:
        assert torch.isfinite(torch.tensor([log["loss"], log["task_loss"], log["eqreg_loss"]])).all()
        assert log["eqreg_loss"] > 0 and all(log[f"eqreg/{n}"] > 0 for n in TINY_DERAIN_LAYERS)


def test_trainer_bf16_on_cuda(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    trainer = _trainer(tmp_path, bf16=True)
    trainer.train()
    assert next(trainer.model.parameters()).is_cuda
    _check_logs(trainer)


def test_trainer_fp16_with_a_gradient_scaler(tmp_path):
    trainer = _trainer(tmp_path, fp16=True)
    trainer.train()
    assert trainer.accelerator.scaler is not None  # fp16 runs through a GradScaler
    _check_logs(trainer)


@pytest.mark.parametrize("distance", ["relative", "mse", "fro"])
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_exact_distance_on_cuda_matches_cpu(distance, group):
    torch.manual_seed(0)
    cpu = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1)
    )
    gpu = copy.deepcopy(cpu).cuda()
    x = torch.rand(4, 3, 17, 17)
    results = []
    for net, inputs in ((cpu, x), (gpu, x.cuda())):
        reg = EqReg(net, EqRegConfig(layers=["0", "2"], group=group, weight=1.0, distance=distance, seed=3))
        net.train()
        out = net(reg.stack(inputs))
        loss = reg.loss() + out.float().mean() * 0
        loss.backward()
        results.append((loss.detach().cpu(), [p.grad.detach().cpu() for p in net.parameters()]))
        reg.remove()
    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = results
    assert loss_cpu > 0
    torch.testing.assert_close(loss_gpu, loss_cpu, rtol=1e-4, atol=1e-6)
    for g_cpu, g_gpu in zip(grads_cpu, grads_gpu):
        torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-3, atol=1e-5)


def test_torch_compile_inductor_taps_fire(tmp_path):
    trainer = _trainer(tmp_path, torch_compile=True, torch_compile_backend="inductor")
    trainer.train()
    _check_logs(trainer)


def test_accelerate_loop_fp16_on_cuda():
    from torch.utils.data import DataLoader

    from eqreg_hf.train.loop import train_loop

    torch.manual_seed(0)
    net = TinyDerainer()
    data = DataLoader(PairDataset(16), batch_size=4)
    history = train_loop(
        net,
        data,
        torch.optim.Adam(net.parameters(), lr=1e-3),
        F.mse_loss,
        EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.1),
        max_steps=4,
        log_every=1,
        mixed_precision="fp16",
        progress=False,
        input_key="pixel_values",
    )
    assert next(net.parameters()).is_cuda
    assert len(history.logs) == 4 and all(torch.isfinite(torch.tensor(log["loss"])) for log in history.logs)
    assert all(log["eqreg_loss"] > 0 for log in history.logs)
