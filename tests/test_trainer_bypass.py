"""Issue 13, the Trainer: a subclass whose own compute_loss bypasses the mixin, and the mixin placed second.

Before, both trained without EQ-Reg and without a word: no stacked forward, no EQ-Reg keys in the logs.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers", reason="the Trainer integration needs transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "dist_scripts"))

from common import TINY_DERAIN_LAYERS, ClassDataset, PairDataset, TinyDerainer, tiny_args, tiny_vit  # noqa: E402
from transformers import Seq2SeqTrainer, Trainer  # noqa: E402

from eqreg_hf import EqRegConfig, EqRegTrainer, EqRegTrainerMixin  # noqa: E402


class OwnLoss(EqRegTrainer):
    """The usual customisation: a Trainer subclass with its own loss that calls the model itself."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(inputs["pixel_values"])
        loss = F.l1_loss(out, inputs["labels"])
        return (loss, {"logits": out}) if return_outputs else loss


class LabelSmoothing(EqRegTrainer):
    """A classifier's own loss (label smoothing) on the model's logits: bypasses the mixin too."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(pixel_values=inputs["pixel_values"])
        loss = F.cross_entropy(out.logits, inputs["labels"], label_smoothing=0.1)
        return (loss, out) if return_outputs else loss


class CallsSuper(EqRegTrainer):
    """A custom compute_loss that goes through the mixin: fine."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def _derain(cls, tmp_path, **cfg):
    return cls(
        model=TinyDerainer(),
        args=tiny_args(str(tmp_path), max_steps=2),
        train_dataset=PairDataset(8),
        task_loss=F.l1_loss,
        eqreg=EqRegConfig(**{"layers": TINY_DERAIN_LAYERS, "weight": 0.1, **cfg}),
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: _derain(OwnLoss, tmp),
        lambda tmp: LabelSmoothing(
            model=tiny_vit(),
            args=tiny_args(str(tmp), max_steps=2),
            train_dataset=ClassDataset(8),
            eqreg=EqRegConfig(layers=["vit.layers.0"], weight=0.1),
        ),
    ],
    ids=["own-l1-loss", "label-smoothing"],
)
def test_compute_loss_that_bypasses_the_mixin_stops_on_the_first_step(make, tmp_path):
    trainer = make(tmp_path)
    with pytest.raises(
        RuntimeError,
        match=r"first training step ran no EQ-Reg.*compute_loss.*super\(\).compute_loss"
        r".*task_loss=",
    ):
        trainer.train()
    assert trainer.state.global_step == 0  # stopped before the first optimizer step
    assert trainer.eqreg is None  # hooks removed on the way out


def test_compute_loss_that_calls_super_trains(tmp_path):
    trainer = _derain(CallsSuper, tmp_path)
    trainer.train()
    assert trainer.state.global_step == 2
    assert trainer.state.log_history[0]["eqreg_loss"] > 0


@pytest.mark.parametrize("cfg", [{"weight": 0.0}, {"group_order": 1}], ids=["weight-0", "t-1"])
def test_own_loss_is_fine_when_eqreg_is_off(cfg, tmp_path):
    trainer = _derain(OwnLoss, tmp_path, **cfg)
    trainer.train()  # nothing to bypass: plain training
    assert trainer.state.global_step == 2


def test_identity_draws_do_not_count_as_a_bypass(tmp_path):
    # include_identity=True can draw k = 0 (no rotated rows) on the first step: the mixin still ran
    trainer = _derain(CallsSuper, tmp_path, include_identity=True, group_order=2, seed=3)
    trainer.train()
    assert trainer.state.global_step == 2


@pytest.mark.parametrize("base", [Trainer, Seq2SeqTrainer])
def test_mixin_after_the_trainer_in_the_bases_is_refused(base):
    with pytest.raises(
        TypeError, match=r"EqRegTrainerMixin comes after .*Trainer in the bases.*Put the mixin first"
    ):
        type("Wrong", (base, EqRegTrainerMixin), {})


def test_mixin_first_is_accepted():
    cls = type("Right", (EqRegTrainerMixin, Seq2SeqTrainer), {})
    assert cls.__mro__.index(EqRegTrainerMixin) < cls.__mro__.index(Trainer)
    torch.manual_seed(0)  # keep the global RNG use of this module predictable for the tests after it
