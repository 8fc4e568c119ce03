"""Multi-process training for real: 2 CPU processes (gloo) launched with torchrun from pytest.

One launch of ``dist_scripts/suite.py`` (each launch pays for importing torch/transformers in two
processes) runs ``ddp_trainer.py`` (EqRegTrainer under DDP: a plain CNN and a ViT) and ``fsdp_loop.py``
(FSDP2 + the Accelerate loop); the tests below check its results. The launch has a timeout, so a
hang fails instead of stalling CI. Each script also runs alone:
``torchrun --standalone --nproc_per_node 2 tests/dist_scripts/ddp_trainer.py OUT_DIR``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers", reason="the Trainer integration needs transformers")
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "dist_scripts")
sys.path.insert(0, SCRIPTS)

from common import TINY_DERAIN_LAYERS, PairDataset, TinyDerainer, flat_params, tiny_args  # noqa: E402

LAUNCH_TIMEOUT_S = 300

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _torchrun(script: str, out_dir) -> None:
    """Launch ``script`` on 2 processes; fail (not hang) on error or timeout."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    torchrun = shutil.which("torchrun")
    cmd = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--standalone",
        "--nproc_per_node",
        "2",
        os.path.join(SCRIPTS, script),
        str(out_dir),
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), SCRIPTS, os.environ.get("PYTHONPATH", "")]),
    )
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{script} hung: no exit after {LAUNCH_TIMEOUT_S} s\n{(err.stderr or '')[-3000:]}")
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"{script} failed (exit {proc.returncode}):\n{tail}"
    assert proc.stdout.count(" OK") == 4, f"both ranks should finish both parts:\n{tail}"


@pytest.fixture(scope="module")
def dist_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    _torchrun("suite.py", out)
    return out


def test_ddp_trainer_matches_one_process_with_double_batch(dist_out, tmp_path):
    """2 processes x batch 2 == 1 process x batch 4 (no BatchNorm, distance 'mse'): parameters and logs.

    In the script: find_unused_parameters=True (the Trainer's default), identical parameters and
    identical cross-process-averaged logs on both ranks, for the CNN and a ViT.
    """
    res = torch.load(dist_out / "ddp_trainer.pt", weights_only=False)

    from eqreg_hf import EqRegConfig, EqRegTrainer

    torch.manual_seed(0)  # the script's initialisation
    model = TinyDerainer()
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.5, distance="mse")
    trainer = EqRegTrainer(
        model=model,
        args=tiny_args(str(tmp_path / "one"), per_device_train_batch_size=4, max_steps=3),
        train_dataset=PairDataset(12),
        eqreg=cfg,
        task_loss=F.l1_loss,
    )
    trainer.train()
    one = [
        {k: h[k] for k in ("loss", "task_loss", "eqreg_loss")}
        for h in trainer.state.log_history
        if "eqreg_loss" in h
    ]
    assert len(one) == len(res["cnn_logs"]) == 3
    for a, b in zip(one, res["cnn_logs"]):
        assert a == pytest.approx(b, rel=1e-5)
    p1, p2 = flat_params(model), res["cnn_params"]
    assert torch.allclose(p1, p2, rtol=1e-5, atol=1e-6), float((p1 - p2).abs().max())
    assert all(v > 0 for v in res["vit_eqreg_loss"])


def test_fsdp2_and_accelerate_loop(dist_out):
    """FSDP2 taps see full activations (== unsharded copy) and train; train_loop keeps ranks identical."""
    res = torch.load(dist_out / "fsdp_loop.pt", weights_only=False)
    assert res["fsdp_eq"] > 0 and len(res["fsdp_losses"]) == 2
    assert res["loop_logs"].shape == (2, 2) and res["loop_hooks_left"] == 0
    # weight="auto": the same λ on both ranks (checked in the script), set from the second step on
    assert res["auto_weights"].shape == (3,) and res["auto_weights"][0] == 0 and res["auto_weights"][-1] > 0
    # D4 under DDP: ranks identical (checked in the script) and the EQ-Reg term is really there
    assert len(res["d4_eqreg_loss"]) == 2 and min(res["d4_eqreg_loss"]) > 0
