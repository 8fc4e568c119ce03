"""mode="pair": EQ-Reg's stacked step with no term — the control that separates the term from the batch."""

from __future__ import annotations

import copy
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "dist_scripts"))

from common import PairDataset, TinyDerainer, tiny_args  # noqa: E402

from eqreg_hf import EqReg, EqRegConfig, EqRegTrainer  # noqa: E402
from eqreg_hf.core.groups import rotate_image  # noqa: E402
from eqreg_hf.train.step import EqRegStep  # noqa: E402


def test_config_pair_stacks_without_a_term_and_refuses_a_weight():
    cfg = EqRegConfig.pair("D4")
    assert (cfg.stacks, cfg.active, cfg.weight, cfg.group) == (True, False, 0.0, "D4")
    assert EqRegConfig.from_dict(json.loads(cfg.to_json_string())) == cfg
    assert not EqRegConfig(weight=0.0).stacks and EqRegConfig(weight=0.1).stacks
    assert not EqRegConfig.pair("C1").stacks  # the trivial group stacks nothing
    with pytest.raises(ValueError, match=r"mode='pair'.*weight=0.01 would not be used.*--eqreg.weight 0"):
        EqRegConfig(mode="pair")
    with pytest.raises(ValueError, match=r"Unknown mode 'paired'. Choose between \['eqreg', 'pair'\]"):
        EqRegConfig(mode="paired", weight=0.0)


@pytest.mark.parametrize("group", ["C4", "D4"])
def test_pair_step_is_plain_training_on_the_stacked_batch(group):
    torch.manual_seed(0)
    net = TinyDerainer()
    ref = copy.deepcopy(net)
    x, y = torch.rand(3, 3, 9, 9), torch.rand(3, 3, 9, 9)
    reg = EqReg(net, EqRegConfig.pair(group))
    assert reg.taps == [] and not net.head._forward_hooks and reg.active
    step = EqRegStep(reg)
    k = reg.sample_k((9, 9))
    out = net(step.stack(x, k=k))
    task, eq = step.losses(F.mse_loss, out, y)
    assert out.shape[0] == 6 and eq.item() == 0.0 and reg.last_terms == {}
    (task + eq).backward()
    # the same gradient as a plain step on [x; R_g x] with targets [y; R_g y]
    xs, ys = torch.cat([x, rotate_image(x, k, group)]), torch.cat([y, rotate_image(y, k, group)])
    F.mse_loss(ref(xs), ys).backward()
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad)
    net.eval()
    assert not reg.active and step.stack(x).shape[0] == 3  # evaluation never stacks
    assert "mode='pair'" in reg.describe()


def test_pair_through_the_trainer_sees_twice_the_images(tmp_path):
    torch.manual_seed(0)
    net = TinyDerainer()
    seen = []
    net.head.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    trainer = EqRegTrainer(
        model=net,
        args=tiny_args(str(tmp_path), max_steps=2),
        train_dataset=PairDataset(8),
        eqreg=EqRegConfig.pair("C4", layers="auto"),
        task_loss=F.mse_loss,
    )
    trainer.train()
    assert seen and all(n == 8 for n in seen)  # batch 4 → [x; R_g x]
    assert trainer.state.log_history[0]["eqreg_loss"] == 0.0


def test_train_restore_pair_is_named_and_carded(tmp_path, capsys):
    from eqreg_hf.cli import main

    out = tmp_path / "pair"
    code = main(
        [
            "train-restore",
            "--quick",
            "--max-steps",
            "2",
            "--eqreg.mode",
            "pair",
            "--eqreg.group",
            "D4",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    card = (out / "README.md").read_text()
    assert "pair: the stacked batch [x; R_g x]" in card and "without the EQ-Reg term" in card
    assert json.loads((out / "eqreg_config.json").read_text())["mode"] == "pair"
    assert "pair-D4" in card
