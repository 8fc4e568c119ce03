"""EQ-Reg callbacks: the λ schedule (pure function + callback) and equivariance evaluation."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers", reason="the callbacks plug into transformers.Trainer")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "dist_scripts"))

from common import TINY_DERAIN_LAYERS, PairDataset, TinyDerainer, tiny_args  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from eqreg_hf import EqRegConfig, EqRegTrainer, equivariance_error  # noqa: E402
from eqreg_hf.callbacks import EqRegWeightSchedule, EquivarianceEvalCallback, eqreg_weight_at  # noqa: E402

# (kwargs, step, expected)
SCHEDULE_CASES = [
    (dict(weight=2.0, schedule="constant", warmup_steps=5), 0, 2.0),
    (dict(weight=2.0, schedule="linear", warmup_steps=4), 0, 0.0),
    (dict(weight=2.0, schedule="linear", warmup_steps=4), 1, 0.5),
    (dict(weight=2.0, schedule="linear", warmup_steps=4), 4, 2.0),
    (dict(weight=2.0, schedule="linear", warmup_steps=4), 99, 2.0),
    (dict(weight=2.0, schedule="linear", warmup_steps=4, start_weight=1.0), 2, 1.5),
    (dict(weight=2.0, schedule="cosine", warmup_steps=4), 1, 2.0 * 0.5 * (1 - math.cos(math.pi / 4))),
    (dict(weight=2.0, schedule="cosine", warmup_steps=4), 2, 1.0),
    (dict(weight=2.0, schedule="cosine", warmup_steps=0, total_steps=10, final_weight=0.0), 5, 1.0),
    (dict(weight=2.0, schedule="cosine", warmup_steps=0, total_steps=10, final_weight=0.0), 10, 0.0),
    (dict(weight=2.0, schedule="linear", warmup_steps=2, total_steps=6, final_weight=1.0), 4, 1.5),
    (dict(weight=2.0, schedule="linear", warmup_steps=0), 0, 2.0),
]


@pytest.mark.parametrize("kw,step,expected", SCHEDULE_CASES)
def test_weight_schedule_values(kw, step, expected):
    assert eqreg_weight_at(step, **kw) == pytest.approx(expected)


def test_cosine_warmup_is_monotone_and_bounded():
    ws = [eqreg_weight_at(s, 1.0, "cosine", warmup_steps=7) for s in range(10)]
    assert all(a <= b for a, b in zip(ws, ws[1:])) and ws[0] == 0.0 and ws[-1] == 1.0


BAD_SCHEDULES = [
    (dict(schedule="exp"), "Choose between"),
    (dict(warmup_steps=-1), "warmup_steps=-1"),
    (dict(warmup_steps=1.5), "warmup_steps=1.5"),
    (dict(final_weight=-0.1), "final_weight=-0.1"),
]


@pytest.mark.parametrize("kw,match", BAD_SCHEDULES)
def test_schedule_rejects_bad_input(kw, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(".", r"\.")):
        EqRegWeightSchedule(**kw)


def _trainer(tmp_path, callbacks, max_steps=3, eval_dataset=None, **kw):
    model = TinyDerainer()
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.4, distance="mse")
    args = tiny_args(
        str(tmp_path), max_steps=max_steps, per_device_train_batch_size=2, per_device_eval_batch_size=3, **kw
    )
    trainer = EqRegTrainer(
        model=model,
        args=args,
        train_dataset=PairDataset(8),
        eval_dataset=eval_dataset,
        eqreg=cfg,
        task_loss=F.l1_loss,
        callbacks=callbacks,
    )
    return trainer, model, cfg


def test_schedule_drives_the_live_weight(tmp_path):
    cb = EqRegWeightSchedule("linear", warmup_steps=0.5)  # half of max_steps=4 -> 2 steps
    trainer, _, cfg = _trainer(tmp_path, [cb], max_steps=4)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "eqreg_weight" in h]
    assert [h["eqreg_weight"] for h in logs] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    assert logs[0]["eqreg_loss"] == 0.0 and logs[1]["eqreg_loss"] > 0
    assert cfg.weight == 0.4  # the user's config is never modified


def test_equivariance_eval_callback_logs_and_matches_direct_measurement(tmp_path):
    eval_ds = PairDataset(5, size=(9, 11), seed=3)  # odd, non-square: 2 batches of 3 + 2
    cb = EquivarianceEvalCallback(num_batches=2, max_images=2)
    trainer, model, _ = _trainer(
        tmp_path, [cb], max_steps=1, eval_dataset=eval_ds, eval_strategy="steps", eval_steps=1
    )
    trainer.train()
    entry = next(h for h in trainer.state.log_history if "eval_loss" in h)
    per_tap = {n: entry[f"eval_equiv_error/{n}"] for n in TINY_DERAIN_LAYERS}
    assert entry["eval_equiv_error"] == pytest.approx(sum(per_tap.values()) / len(per_tap))

    # The same numbers from equivariance_error on the same images with the trained model.
    batches = [torch.stack([eval_ds[i]["pixel_values"] for i in idx])[:2] for idx in ([0, 1, 2], [3, 4])]
    reports = [equivariance_error(model, x, layers=TINY_DERAIN_LAYERS) for x in batches]
    for n in TINY_DERAIN_LAYERS:
        assert per_tap[n] == pytest.approx(sum(r[n] for r in reports) / 2, rel=1e-5)

    # After training (hooks gone) evaluate() still measures the bound layers and returns the values.
    metrics = trainer.evaluate()
    assert metrics["eval_equiv_error"] == pytest.approx(entry["eval_equiv_error"], rel=1e-5)
    assert trainer.state.log_history[-1]["eval_equiv_error"] == metrics["eval_equiv_error"]


def test_equivariance_eval_callback_without_layers_warns(tmp_path):
    cb = EquivarianceEvalCallback()
    model = TinyDerainer()
    trainer = EqRegTrainer(
        model=model,
        args=tiny_args(str(tmp_path), per_device_eval_batch_size=2),
        eval_dataset=PairDataset(2),
        task_loss=F.l1_loss,
        callbacks=[cb],
    )
    with pytest.warns(UserWarning, match="no layers to measure"):
        metrics = trainer.evaluate()
    assert "eval_equiv_error" not in metrics and "eval_loss" in metrics


class _Integration(TrainerCallback):
    """Stands in for TensorBoard / W&B: records what each on_log hands it."""

    def __init__(self):
        self.logged: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logged.append(dict(logs or {}))


@pytest.mark.parametrize("order", ["callback-first", "integration-first", "added-later"])
def test_reporting_integrations_receive_the_equivariance_error(tmp_path, order):
    integration, cb = _Integration(), EquivarianceEvalCallback(num_batches=1, max_images=2)
    callbacks = {
        "callback-first": [cb, integration],
        "integration-first": [integration, cb],
        "added-later": [integration],
    }[order]
    trainer, _, _ = _trainer(
        tmp_path,
        callbacks,
        max_steps=2,
        eval_dataset=PairDataset(3, seed=3),
        eval_strategy="steps",
        eval_steps=1,
    )
    if order == "added-later":
        trainer.add_callback(cb)
    trainer.train()
    evals = [e for e in integration.logged if "eval_loss" in e]
    assert len(evals) == 2 and all("eval_equiv_error" in e for e in evals)
    # training log entries and the end-of-training summary are not measured
    assert not any(
        "eval_equiv_error" in e or "train_equiv_error" in e
        for e in integration.logged
        if "eval_loss" not in e
    )
    history = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert [h["eval_equiv_error"] for h in history] == [e["eval_equiv_error"] for e in evals]
    # evaluate() returns them too, and measures once per evaluation (same numbers as the logged entry)
    metrics = trainer.evaluate(metric_key_prefix="test")
    assert integration.logged[-1]["test_equiv_error"] == metrics["test_equiv_error"] > 0
    assert "eval_equiv_error" not in metrics


@pytest.mark.parametrize("group", ["C2", "D2"])
def test_equivariance_eval_callback_measures_its_own_config_whole(group):
    torch.manual_seed(0)
    model = TinyDerainer().eval()
    batches = [{"pixel_values": torch.rand(3, 3, 9, 9)}]
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS[:1], group=group, weight=0.0)  # weight plays no part
    cb = EquivarianceEvalCallback(cfg, num_batches=1, max_images=2, include_output=True)
    values = cb.measure(model, batches)
    direct = equivariance_error(model, batches[0]["pixel_values"][:2], cfg, include_output=True)
    assert cb.last_report.group == group and cb.last_report.ks == direct.ks
    assert values["equiv_error/output"] == pytest.approx(direct["output"], rel=1e-6)
    assert values["equiv_error"] == pytest.approx(direct.mean, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eqreg": ["body.0"]}, r"eqreg=\['body.0'\] is not an EqRegConfig"),
        ({"layers": ["body.0"], "fields": "trivial"}, r"does not take \['fields', 'layers'\]"),
    ],
)
def test_equivariance_eval_callback_refuses_loose_settings(kwargs, match):
    with pytest.raises(TypeError, match=match):
        EquivarianceEvalCallback(**kwargs)


@pytest.mark.parametrize("weight", [0.4, "auto"])
def test_the_trainers_d4_run_is_measured_under_d4(tmp_path, weight):
    """Without its own config the callback measures the trainer's EQ-Reg: a D4 run under D4 (flips
    included), not the C4 default."""
    cb = EquivarianceEvalCallback(num_batches=1, max_images=2)
    trainer = EqRegTrainer(
        model=TinyDerainer(),
        args=tiny_args(
            str(tmp_path), max_steps=1, per_device_train_batch_size=2, per_device_eval_batch_size=2
        ),
        train_dataset=PairDataset(4),
        eval_dataset=PairDataset(2, size=(9, 11), seed=3),
        eqreg=EqRegConfig(layers=TINY_DERAIN_LAYERS, group="D4", weight=weight, distance="mse"),
        task_loss=F.l1_loss,
        callbacks=[cb],
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert cb.last_report.group == "D4" and (1, 0) in [
        tuple(g) for g in cb.last_report.ks if not isinstance(g, int)
    ]
    assert set(TINY_DERAIN_LAYERS) <= {
        k.split("/", 1)[1] for k in metrics if k.startswith("eval_equiv_error/")
    }
