"""torchrun --standalone --nproc_per_node 2 ddp_trainer.py OUT_DIR

EqRegTrainer under DDP (gloo, CPU): (a) a plain CNN without BatchNorm, batch 2 per process, whose
parameters and logs the test compares with 1 process x batch 4; (b) a tiny ViT. Checks here: the
Trainer's default find_unused_parameters=True, identical parameters and identical (cross-process
averaged) logs on both ranks. Rank 0 writes OUT_DIR/ddp_trainer.pt.
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from common import (
    TINY_DERAIN_LAYERS,
    ClassDataset,
    PairDataset,
    TinyDerainer,
    flat_params,
    tiny_args,
    tiny_vit,
)

from eqreg_hf import EqRegConfig, EqRegTrainer


def gathered(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return out


def log_vector(history, keys):
    return torch.tensor([h[k] for h in history for k in keys if k in h], dtype=torch.float64)


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    results = {}

    # (a) plain CNN, task_loss, the model the 2-vs-1-process comparison uses.
    torch.manual_seed(0)  # the test builds the same initial weights for its 1-process run
    model = TinyDerainer()
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.5, distance="mse")
    trainer = EqRegTrainer(
        model=model,
        args=tiny_args(os.path.join(out_dir, "cnn"), per_device_train_batch_size=2, max_steps=3),
        train_dataset=PairDataset(12),
        eqreg=cfg,
        task_loss=F.l1_loss,
    )
    trainer.train()
    assert dist.is_initialized() and dist.get_world_size() == 2, "expected 2 processes"
    ddp = trainer.model_wrapped
    assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel), type(ddp)
    assert ddp.find_unused_parameters is True, "the Trainer's default for a plain module should be True"
    p = flat_params(model)
    a, b = gathered(p)
    assert torch.equal(a, b), f"ranks differ after DDP steps: {float((a - b).abs().max())}"
    keys = ("loss", "task_loss", "eqreg_loss")
    logs = log_vector(trainer.state.log_history, keys)
    la, lb = gathered(logs)
    assert torch.equal(la, lb), f"logs differ between ranks: {la} vs {lb}"
    results["cnn_params"] = p
    results["cnn_logs"] = [{k: h[k] for k in keys} for h in trainer.state.log_history if "eqreg_loss" in h]

    # (b) a transformers ViT (model-computed loss) under DDP.
    vit = tiny_vit()
    trainer = EqRegTrainer(
        model=vit,
        args=tiny_args(os.path.join(out_dir, "vit"), per_device_train_batch_size=2, max_steps=2),
        train_dataset=ClassDataset(8),
        eqreg=EqRegConfig(layers="auto", weight=0.1),
    )
    trainer.train()
    a, b = gathered(flat_params(vit))
    assert torch.equal(a, b), f"ViT ranks differ: {float((a - b).abs().max())}"
    logs = log_vector(trainer.state.log_history, keys)
    la, lb = gathered(logs)
    assert torch.equal(la, lb) and len(la) == 6, (la, lb)
    results["vit_eqreg_loss"] = [h["eqreg_loss"] for h in trainer.state.log_history if "eqreg_loss" in h]

    if dist.get_rank() == 0:
        tmp = os.path.join(out_dir, "ddp_trainer.pt.tmp")
        torch.save(results, tmp)
        os.replace(tmp, os.path.join(out_dir, "ddp_trainer.pt"))
    print(f"rank {dist.get_rank()} OK", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
