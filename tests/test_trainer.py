"""EqRegTrainer / EqRegTrainerMixin: models, targets, logging, exact gradient accumulation, resume, bf16
and compile."""

from __future__ import annotations

import copy
import os
import re
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers", reason="the Trainer integration needs transformers")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "dist_scripts"))

from common import (  # noqa: E402
    TINY_DERAIN_LAYERS,
    ClassDataset,
    PairDataset,
    TinyDerainer,
    flat_params,
    tiny_args,
    tiny_convnext,
    tiny_resnet,
    tiny_vit,
)
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments  # noqa: E402

from eqreg_hf import EqReg, EqRegConfig, EqRegTrainer, EqRegTrainerMixin  # noqa: E402
from eqreg_hf.train.trainer import EQREG_STATE_NAME  # noqa: E402


class Seq2SeqEqRegTrainer(EqRegTrainerMixin, Seq2SeqTrainer):
    pass


# (name, model factory, tapped layers, dataset factory, task_loss, trainer class)
MODEL_CASES = [
    ("vit", tiny_vit, ["vit.layers.0", "vit.layers.1"], lambda: ClassDataset(8), None, EqRegTrainer),
    (
        "convnext",
        tiny_convnext,
        ["convnext.encoder.stages.0", "convnext.encoder.stages.1"],
        lambda: ClassDataset(8),
        None,
        EqRegTrainer,
    ),
    (
        "resnet",
        tiny_resnet,
        ["resnet.encoder.stages.0"],
        lambda: ClassDataset(8, size=13),
        None,
        EqRegTrainer,
    ),
    (
        "derain-seq2seq-mixin",
        TinyDerainer,
        TINY_DERAIN_LAYERS,
        lambda: PairDataset(8, size=(9, 9)),
        F.l1_loss,
        Seq2SeqEqRegTrainer,
    ),
]


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _make(case, tmp_path, cfg_kw=None, **args_kw):
    name, factory, layers, data, task_loss, cls = case
    model = factory()
    cfg = EqRegConfig(layers=layers, weight=0.1, distance="mse", **(cfg_kw or {}))
    if cls is Seq2SeqEqRegTrainer:
        args_kw["args_cls"] = Seq2SeqTrainingArguments
    trainer = cls(
        model=model,
        args=tiny_args(str(tmp_path), **args_kw),
        train_dataset=data(),
        eqreg=cfg,
        task_loss=task_loss,
        eqreg_log_taps=True,
    )
    return trainer, model, cfg


@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_trains_logs_and_removes_hooks(case, tmp_path):
    trainer, model, cfg = _make(case, tmp_path, max_steps=1)
    trainer.train()
    log = trainer.state.log_history[0]
    for key in ("loss", "task_loss", "eqreg_loss", "eqreg_weight"):
        assert key in log, (key, log)
    assert log["eqreg_loss"] > 0
    assert log["loss"] == pytest.approx(log["task_loss"] + log["eqreg_loss"], rel=1e-5)
    taps = [k for k in log if k.startswith("eqreg/")]
    assert sorted(taps) == sorted(f"eqreg/{n}" for n in case[2])
    assert log["eqreg_loss"] == pytest.approx(cfg.weight * sum(log[k] for k in taps), rel=1e-5)
    assert _hook_count(model) == 0  # hooks gone after train()
    assert trainer.eqreg is None


TARGET_CASES = [  # (model case index, rotate_targets)
    (3, True),
    (3, False),
    (0, True),
    (0, False),
]


@pytest.mark.parametrize(
    "idx,rotate", TARGET_CASES, ids=[f"{MODEL_CASES[i][0]}-rotate{r}" for i, r in TARGET_CASES]
)
def test_first_step_matches_manual_computation(idx, rotate, tmp_path):
    """The logged first-step losses equal a hand-made stacked forward with the same k and targets."""
    case = MODEL_CASES[idx]
    trainer, model, cfg = _make(case, tmp_path, cfg_kw={"rotate_targets": rotate}, max_steps=1)
    ref_model = copy.deepcopy(model).train()
    batch = [trainer.train_dataset[i] for i in range(4)]
    x = torch.stack([b["pixel_values"] for b in batch])
    y = torch.stack([b["labels"] for b in batch])
    trainer.train()
    with EqReg(ref_model, cfg) as reg:
        xs = reg.stack(x, k=reg.sample_k(tuple(x.shape[-2:])))  # the first draw of the seeded sampler
        assert xs.shape[0] == 8
        if case[4] is not None:  # plain model + task_loss
            out = ref_model(xs)
            task = F.l1_loss(out if rotate else out[:4], reg.stack_targets(y) if rotate else y)
        else:
            logits = ref_model(pixel_values=xs).logits
            task = F.cross_entropy(logits if rotate else logits[:4], reg.stack_targets(y) if rotate else y)
        eq = reg.loss().detach()
    task = task.detach()
    log = trainer.state.log_history[0]
    assert log["task_loss"] == pytest.approx(task.item(), rel=1e-4)
    assert log["eqreg_loss"] == pytest.approx(eq.item(), rel=1e-4)


GA_CASES = [MODEL_CASES[0], MODEL_CASES[3]]  # a ViT and a plain CNN, no BatchNorm


@pytest.mark.parametrize("case", GA_CASES, ids=[c[0] for c in GA_CASES])
def test_gradient_accumulation_is_exact(case, tmp_path):
    """GA=2 with half the batch == GA=1: same logged losses, same parameters (distance 'mse')."""
    runs = []
    for bs, ga in ((4, 1), (2, 2)):
        trainer, model, _ = _make(
            case,
            tmp_path / f"ga{ga}",
            max_steps=2,
            per_device_train_batch_size=bs,
            gradient_accumulation_steps=ga,
        )
        trainer.train()
        runs.append((trainer.state.log_history, flat_params(model)))
    (log1, p1), (log2, p2) = runs
    for key in ("loss", "task_loss", "eqreg_loss"):
        assert [h[key] for h in log1 if key in h] == pytest.approx(
            [h[key] for h in log2 if key in h], rel=1e-5
        )
    assert torch.allclose(p1, p2, rtol=1e-5, atol=1e-6), float((p1 - p2).abs().max())


def _derain_trainer(tmp_path, max_steps, callbacks=(), **kw):
    model = TinyDerainer()
    # seed=1 draws k = 2, 3, 1, 3: a sampler restarted at step 2 would draw 2, 3 instead of 1, 3 (seed 0's
    # sequence 3, 1, 3, 1 repeats itself and could not tell a restored sampler from a restarted one).
    cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.5, distance="mse", seed=1)
    args = tiny_args(
        str(tmp_path),
        max_steps=max_steps,
        per_device_train_batch_size=2,
        train_sampling_strategy="random",
        optim="adamw_torch",
        lr_scheduler_type="linear",
        learning_rate=0.01,
        **kw,
    )
    return EqRegTrainer(
        model=model,
        args=args,
        train_dataset=PairDataset(8),
        eqreg=cfg,
        task_loss=F.l1_loss,
        callbacks=list(callbacks),
    ), model


def test_resume_equals_uninterrupted(tmp_path):
    """Interrupted at step 2 + resumed == 4 uninterrupted steps (k sampler and λ schedule restored)."""
    from eqreg_hf.callbacks import EqRegWeightSchedule

    full, full_model = _derain_trainer(
        tmp_path / "a",
        4,
        [EqRegWeightSchedule("linear", warmup_steps=4)],
        save_strategy="steps",
        save_steps=2,
    )
    full.train()
    ckpt = tmp_path / "a" / "checkpoint-2"
    assert (ckpt / EQREG_STATE_NAME).is_file() and (ckpt / "eqreg_config.json").is_file()
    assert not list(ckpt.glob("*.tmp"))

    resumed, resumed_model = _derain_trainer(
        tmp_path / "b", 4, [EqRegWeightSchedule("linear", warmup_steps=4)]
    )
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert torch.equal(flat_params(full_model), flat_params(resumed_model))
    logged = [h for h in full.state.log_history if "eqreg_weight" in h]
    assert [h["eqreg_weight"] for h in logged] == pytest.approx([0.0, 0.125, 0.25, 0.375])  # linear warm-up

    def after(t):
        keys = ("step", "eqreg_weight", "task_loss", "eqreg_loss")
        return [
            tuple(h[k] for k in keys) for h in t.state.log_history if "eqreg_weight" in h and h["step"] > 2
        ]

    assert [s for s, *_ in after(resumed)] == [3, 4]
    assert after(resumed) == after(full)

    # Negative control: without the saved sampler state the resumed run draws other rotations.
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    os.remove(bare / EQREG_STATE_NAME)
    other, other_model = _derain_trainer(tmp_path / "c", 4, [EqRegWeightSchedule("linear", warmup_steps=4)])
    with pytest.warns(UserWarning, match="k sampler restarts"):
        other.train(resume_from_checkpoint=str(bare))
    assert not torch.equal(flat_params(full_model), flat_params(other_model))


def test_hooks_removed_when_training_fails(tmp_path):
    calls = []

    def failing_loss(out, y):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom at step 2")
        return F.l1_loss(out, y)

    model = TinyDerainer()
    trainer = EqRegTrainer(
        model=model,
        args=tiny_args(str(tmp_path), max_steps=3, per_device_train_batch_size=2),
        train_dataset=PairDataset(8),
        eqreg=EqRegConfig(layers=TINY_DERAIN_LAYERS),
        task_loss=failing_loss,
    )
    with pytest.raises(RuntimeError, match="boom at step 2"):
        trainer.train()
    assert _hook_count(model) == 0 and trainer.eqreg is None


def test_bf16_autocast(tmp_path):
    model = TinyDerainer()
    trainer = EqRegTrainer(
        model=model,
        args=tiny_args(str(tmp_path), max_steps=1, bf16=True),
        train_dataset=PairDataset(8),
        eqreg=EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.1),
        task_loss=F.l1_loss,
    )
    trainer.train()
    log = trainer.state.log_history[0]
    assert torch.isfinite(torch.tensor([log["loss"], log["task_loss"], log["eqreg_loss"]])).all()
    assert log["eqreg_loss"] > 0


def test_torch_compile_taps_fire(tmp_path):
    """Hooks attached before the first compiled call fire inside the compiled model ('eager' backend)."""
    model = TinyDerainer()
    args = tiny_args(str(tmp_path), max_steps=1, torch_compile=True, torch_compile_backend="eager")
    trainer = EqRegTrainer(
        model=model,
        args=args,
        train_dataset=PairDataset(8),
        eqreg=EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.1),
        task_loss=F.l1_loss,
        eqreg_log_taps=True,
    )
    trainer.train()
    log = trainer.state.log_history[0]
    assert log["eqreg_loss"] > 0 and all(log[f"eqreg/{n}"] > 0 for n in TINY_DERAIN_LAYERS)
    assert _hook_count(model) == 0


def test_inactive_config_is_plain_training(tmp_path):
    model = TinyDerainer()
    trainer = EqRegTrainer(
        model=model,
        args=tiny_args(str(tmp_path), max_steps=1),
        train_dataset=PairDataset(8),
        eqreg=EqRegConfig(layers=TINY_DERAIN_LAYERS, weight=0.0),
        task_loss=F.l1_loss,
    )
    trainer.train()
    log = trainer.state.log_history[0]
    assert "eqreg_loss" not in log and trainer.eqreg is None


BAD_INPUT_CASES = [
    ({"eqreg": EqRegConfig(layers=TINY_DERAIN_LAYERS, image_key="image")}, KeyError, "'image'"),
    (
        {"eqreg": EqRegConfig(layers=TINY_DERAIN_LAYERS), "compute_loss_func": lambda *a, **k: 0},
        ValueError,
        "either task_loss= or compute_loss_func=",
    ),
    ({"eqreg": 3}, TypeError, "must be an EqRegConfig"),
    ({"eqreg": {"layers": ["head"], "wieght": 1}}, ValueError, "wieght"),
]


@pytest.mark.parametrize(
    "kw,exc,match", BAD_INPUT_CASES, ids=["image_key", "two-losses", "type", "unknown-field"]
)
def test_bad_input_names_the_problem(kw, exc, match, tmp_path):
    def build():
        t = EqRegTrainer(
            model=TinyDerainer(),
            args=tiny_args(str(tmp_path), max_steps=1),
            train_dataset=PairDataset(4),
            task_loss=F.l1_loss,
            **kw,
        )
        t.train()

    with pytest.raises(exc, match=re.escape(match)):
        build()


def test_docs_trainer_example_runs(tmp_path, monkeypatch):
    """The three-line example of docs/training.md, executed with the tiny ViT in place of the real one."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "training.md")
    text = open(path, encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "EqRegTrainer(" in b and "trainer.train()" in b)
    monkeypatch.chdir(tmp_path)
    namespace = {
        "model": tiny_vit(),
        "train_dataset": ClassDataset(8),
        "args": tiny_args(str(tmp_path), max_steps=1),
    }
    exec(compile(example, "docs/training.md", "exec"), namespace)
    log = namespace["trainer"].state.log_history[0]
    assert log["eqreg_loss"] > 0 and "task_loss" in log
