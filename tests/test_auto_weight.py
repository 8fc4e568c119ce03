"""weight="auto": λ set each step so that the EQ-Reg term is a chosen share of the task loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eqreg_hf import EqReg, EqRegConfig, WeightSchedule, train_loop
from eqreg_hf.core.schedule import AutoWeight
from eqreg_hf.train.step import EqRegStep


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 3, 3, padding=1),
    )


def _data(n=32, size=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    return x, (0.5 * x + 0.1 * torch.rand(n, 3, size, size, generator=g))


def _auto_cfg(**kw):
    return EqRegConfig(**{"layers": ["0", "2"], "weight": "auto", "distance": "mse", **kw})


# ---------------------------------------------------------------------------------------------- the estimator
def test_weight_follows_the_formula_with_bias_corrected_averages():
    auto = AutoWeight(target_share=0.2, warmup=0, momentum=0.5)
    auto.observe(torch.tensor(1.0), torch.tensor(4.0))
    assert auto.step() == pytest.approx(0.2 * 1.0 / 4.0)  # bias-corrected: the first value itself
    auto.observe(torch.tensor(3.0), torch.tensor(4.0))
    task = (0.5 * 0.5 * 1 + 0.5 * 3) / (1 - 0.25)  # (0.25 + 1.5) / 0.75
    assert auto.step() == pytest.approx(0.2 * task / 4.0)


def test_micro_batches_of_a_step_are_averaged():
    a, b = AutoWeight(0.1, warmup=0), AutoWeight(0.1, warmup=0)
    for task, eq in ((1.0, 2.0), (3.0, 6.0)):
        a.observe(torch.tensor(task), torch.tensor(eq))
    b.observe(torch.tensor(2.0), torch.tensor(4.0))
    assert a.step() == pytest.approx(b.step())


@pytest.mark.parametrize(
    "warmup,max_steps,shares",
    [
        (4, None, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
        (0.5, 8, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
        (0, None, [1.0] * 6),
    ],
)
def test_share_ramps_over_the_warmup(warmup, max_steps, shares):
    auto = AutoWeight(0.1, warmup=warmup)
    assert [auto.share_at(s, max_steps) / 0.1 for s in range(6)] == pytest.approx(shares)


def test_bounds_hold_when_the_eqreg_term_vanishes():
    auto = AutoWeight(target_share=0.05, warmup=0, floor=1e-3)
    peak_weight = None
    for i in range(200):
        auto.observe(torch.tensor(1.0), torch.tensor(10.0 * 0.5**i))  # L_eq -> 0 (an equivariant network)
        w = auto.step()
        peak_weight = peak_weight or w
        assert math.isfinite(w) and w >= 0
    assert w <= 0.05 * 1.0 / (1e-3 * 10.0) * 1.0001  # at most 1/floor times the weight at the largest term
    capped = AutoWeight(target_share=0.05, warmup=0, max_weight=0.5)
    for i in range(50):
        capped.observe(torch.tensor(1.0), torch.tensor(10.0 * 0.5**i))
        assert capped.step() <= 0.5


def test_nothing_observed_keeps_the_weight_and_non_finite_values_are_ignored():
    auto = AutoWeight(0.1, warmup=0)
    assert auto.step() == 0.0  # no statistics yet: λ = 0
    auto.observe(torch.tensor(1.0), torch.tensor(2.0))
    w = auto.step()
    assert auto.step() == w  # an extra close with nothing observed changes nothing
    auto.observe(torch.tensor(float("nan")), torch.tensor(float("inf")))
    assert auto.step() == pytest.approx(w)


def test_state_round_trip():
    a = AutoWeight(0.1, warmup=3)
    for i in range(4):
        a.observe(torch.tensor(1.0 + i), torch.tensor(2.0))
        a.step()
    b = AutoWeight(0.1, warmup=3)
    b.load_state_dict(a.state_dict())
    for auto in (a, b):
        auto.observe(torch.tensor(5.0), torch.tensor(1.0))
    assert a.step() == b.step()


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(weight="0.1"), "'auto'"),
        (dict(weight=float("nan")), "finite"),
        (dict(weight=-1.0), "finite"),
        (dict(weight="auto", target_share=0.0), "target_share"),
        (dict(weight="auto", target_share=float("inf")), "target_share"),
        (dict(weight="auto", auto_warmup=-1), "auto_warmup"),
        (dict(weight="auto", auto_warmup=2.5), "auto_warmup"),
    ],
)
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        EqRegConfig(**kw)


# ---------------------------------------------------------------------------------------------- in training
@pytest.mark.parametrize("share", [0.05, 0.3])
def test_share_converges_to_the_target_in_the_loop(share):
    """Once the losses settle, λ·L_eq / L_task sits at the target (the running averages lag a falling
    loss)."""
    net = _net()
    hist = train_loop(
        net,
        DataLoader(TensorDataset(*_data()), batch_size=8, shuffle=True),
        torch.optim.Adam(net.parameters(), 3e-3),
        F.mse_loss,
        _auto_cfg(target_share=share, auto_warmup=5),
        max_steps=150,
        log_every=1,
        progress=False,
        seed=0,
    )
    ratios = [h["eqreg_loss"] / h["task_loss"] for h in hist.logs[-30:]]
    assert sum(ratios) / len(ratios) == pytest.approx(share, rel=0.2), ratios
    weights = hist.series("eqreg_weight")
    assert weights[0] == 0.0 and all(w > 0 for w in weights[6:])


def test_the_estimate_only_scales_the_eqreg_gradient():
    """λ is a number computed without gradient: d(total) = d(task) + λ d(L_eq), the task term's direction
    unchanged."""
    net = _net()
    x, y = _data(n=4)
    step = EqRegStep(EqReg(net, _auto_cfg(target_share=0.1, auto_warmup=0)))
    for n in range(3):  # a few steps so that λ > 0
        out = net(step.stack(x, optimizer_step=n))
        task, eq = step.losses(F.mse_loss, out, y)
    lam = step.reg.weight
    assert lam > 0 and isinstance(lam, float)
    params = list(net.parameters())
    grads = [
        torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
        for v in (task + eq, task, eq / lam)
    ]
    grads = [[torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)] for gs in grads]
    for gt, ga, ge in zip(*grads):
        assert torch.allclose(gt, ga + lam * ge, atol=1e-6)
    assert any(
        not torch.equal(gt, ga) for gt, ga in zip(grads[0], grads[1])
    )  # the EQ-Reg term does contribute


def test_gradient_accumulation_gives_the_same_weights():
    x, y = _data(n=16)
    series = {}
    for ga, bs in ((1, 8), (2, 4)):
        net = _net()
        hist = train_loop(
            net,
            DataLoader(TensorDataset(x, y), batch_size=bs),
            torch.optim.SGD(net.parameters(), 0.05),
            F.mse_loss,
            _auto_cfg(target_share=0.1, auto_warmup=0),
            max_steps=4,
            log_every=1,
            gradient_accumulation_steps=ga,
            progress=False,
        )
        series[ga] = hist.series("eqreg_weight")
    assert series[2] == pytest.approx(series[1], rel=1e-4)
    assert series[1][-1] > 0


def test_auto_refuses_a_second_way_of_setting_lambda():
    net = _net()
    with pytest.raises(ValueError, match="both set λ"):
        train_loop(
            net,
            DataLoader(TensorDataset(*_data(n=8)), batch_size=4),
            torch.optim.SGD(net.parameters(), 0.1),
            F.mse_loss,
            _auto_cfg(),
            max_steps=1,
            progress=False,
            weight_schedule=WeightSchedule(),
        )
    from eqreg_hf.callbacks import EqRegWeightSchedule

    reg = EqReg(net, _auto_cfg())
    with pytest.raises(ValueError, match="both set λ"):
        EqRegWeightSchedule().bind_eqreg(reg)
    reg.remove()


def test_trainer_resume_repeats_the_weight_trajectory(tmp_path):
    import datasets
    from transformers import TrainingArguments

    from eqreg_hf import EqRegTrainer

    x, y = _data(n=16)
    data = datasets.Dataset.from_dict({"pixel_values": x.tolist(), "labels": y.tolist()}).with_format("torch")

    def run(out, max_steps, resume=None, save_steps=None):
        args = TrainingArguments(
            str(out),
            max_steps=max_steps,
            per_device_train_batch_size=4,
            report_to=[],
            logging_steps=1,
            use_cpu=True,
            remove_unused_columns=False,
            seed=0,
            save_strategy="steps" if save_steps else "no",
            save_steps=save_steps or 500,
            learning_rate=1e-3,
            lr_scheduler_type="constant",
        )
        trainer = EqRegTrainer(
            model=_net(),
            args=args,
            train_dataset=data,
            task_loss=F.mse_loss,
            eqreg=_auto_cfg(target_share=0.1, auto_warmup=2),
        )
        trainer.train(resume_from_checkpoint=resume)
        return [h["eqreg_weight"] for h in trainer.state.log_history if "eqreg_weight" in h]

    full = run(tmp_path / "full", 6)
    run(tmp_path / "part", 3, save_steps=3)
    resumed = run(tmp_path / "part", 6, resume=str(tmp_path / "part" / "checkpoint-3"))
    assert full[0] == 0.0 and full[-1] > 0
    assert len(full) == len(resumed) == 6  # the resumed history starts with the checkpoint's 3 entries
    assert resumed == pytest.approx(full, rel=1e-6), (full, resumed)


def test_cli_flags_build_an_auto_config():
    import argparse

    from eqreg_hf.cli.eqreg_args import add_eqreg_arguments, eqreg_config_from_args

    parser = argparse.ArgumentParser()
    add_eqreg_arguments(parser)
    cfg = eqreg_config_from_args(parser.parse_args(["--eqreg.weight", "auto", "--eqreg.target-share", "0.1"]))
    assert cfg.weight == "auto" and cfg.target_share == 0.1 and cfg.active
    assert eqreg_config_from_args(parser.parse_args(["--eqreg.weight", "0.5"])).weight == 0.5


def test_model_card_names_the_automatic_weight():
    from eqreg_hf.hub.card import CardFacts, make_model_card

    facts = CardFacts(
        task="derain",
        model_name="m",
        metrics={"psnr": 30.0},
        dataset="synthetic",
        training={"final_eqreg_weight": 0.0123},
    )
    card = make_model_card(facts, eqreg_config=_auto_cfg(target_share=0.05))
    text = str(card)
    assert "auto (share 0.05)" in text and "0.0123" in text
