"""The Accelerate training loop: EQ-Reg terms, batches, accumulation, logging, warnings, evaluation."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from eqreg_hf import EqRegConfig
from eqreg_hf.tasks.derain.networks import FastDerainer
from eqreg_hf.train.loop import TrainHistory, train_loop


def _pairs(n=8, size=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 3, size, size, generator=g)
    rainy = (clean + 0.3 * (torch.rand(n, 3, size, size, generator=g) > 0.9)).clamp(0, 1)
    return rainy, clean


class DictPairs(Dataset):
    def __init__(self, x, y, xkey, ykey):
        self.x, self.y, self.xkey, self.ykey = x, y, xkey, ykey

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {self.xkey: self.x[i], self.ykey: self.y[i], "idx": i}


class TinyClassifier(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)).mean((-2, -1)))


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


CASES = [
    # (name, model factory, batch factory, loss, eqreg layers (None: no EQ-Reg))
    (
        "restoration-tuple-eqreg",
        lambda: FastDerainer(channels=8, num_blocks=1),
        lambda: DataLoader(TensorDataset(*_pairs()), batch_size=4),
        F.mse_loss,
        ["body.0.conv1", "body.0.conv2"],
    ),
    (
        "restoration-dict-eqreg",
        lambda: FastDerainer(channels=8, num_blocks=1),
        lambda: DataLoader(DictPairs(*_pairs(), "rainy", "clean"), batch_size=4),
        F.mse_loss,
        ["body.0.conv1"],
    ),
    (
        "classifier-labels-eqreg",
        TinyClassifier,
        lambda: DataLoader(
            DictPairs(torch.rand(8, 3, 11, 11), torch.randint(0, 3, (8,)), "pixel_values", "labels"),
            batch_size=4,
        ),
        F.cross_entropy,
        ["conv"],
    ),
    (
        "restoration-plain",
        lambda: FastDerainer(channels=8, num_blocks=1),
        lambda: DataLoader(TensorDataset(*_pairs()), batch_size=4),
        F.mse_loss,
        None,
    ),
]


@pytest.mark.parametrize("name,make_model,make_data,loss_fn,layers", CASES, ids=[c[0] for c in CASES])
def test_loop_trains_and_logs(name, make_model, make_data, loss_fn, layers):
    torch.manual_seed(0)
    model = make_model()
    seen = []

    def task(out, y):
        seen.append((out.shape[0], y.shape[0]))
        return loss_fn(out, y)

    cfg = EqRegConfig(layers=layers, group_order=4, weight=1e-3, distance="mse") if layers else None
    keys = dict(input_key="rainy", target_key="clean") if "dict" in name and "restoration" in name else {}
    hist = train_loop(
        model,
        make_data(),
        torch.optim.Adam(model.parameters(), 1e-3),
        task,
        cfg,
        max_steps=3,
        log_every=2,
        progress=False,
        **keys,
    )
    assert isinstance(hist, TrainHistory) and hist.steps == 3
    assert [log["step"] for log in hist.logs] == [2, 3]
    for log in hist.logs:
        assert math.isclose(log["loss"], log["task_loss"] + log["eqreg_loss"], rel_tol=1e-9)
        assert log["lr"] == pytest.approx(1e-3)
    if layers:
        # one forward of the stacked batch, targets stacked (rotated images / copied labels)
        assert all(o == 8 and y == 8 for o, y in seen)
        assert all(log["eqreg_loss"] > 0 for log in hist.logs)
        for layer in layers:
            assert hist.logs[-1][f"eqreg/{layer}"] > 0
        # λ · Σ_l d_l is what is logged as the EQ-Reg term
        terms = sum(hist.logs[-1][f"eqreg/{layer}"] for layer in layers)
        assert hist.logs[-1]["eqreg_loss"] == pytest.approx(1e-3 * terms, rel=1e-5)
    else:
        assert all(o == 4 for o, _ in seen)
        assert all(log["eqreg_loss"] == 0 for log in hist.logs)
    assert _no_hooks(model)


def test_rotate_targets_false_uses_original_rows_only():
    torch.manual_seed(0)
    model = FastDerainer(channels=8, num_blocks=1)
    seen = []

    def task(out, y):
        seen.append((out.shape[0], y.shape[0]))
        return F.mse_loss(out, y)

    cfg = EqRegConfig(layers=["body.0.conv1"], weight=1e-3, distance="mse", rotate_targets=False)
    train_loop(
        model,
        DataLoader(TensorDataset(*_pairs()), batch_size=4),
        torch.optim.SGD(model.parameters(), 0.01),
        task,
        cfg,
        max_steps=2,
        progress=False,
    )
    assert seen == [(4, 4), (4, 4)]


def test_rotated_targets_are_rotated_with_the_same_k():
    """A model that is exactly equivariant and fits its targets has zero task loss on both halves."""
    x = torch.rand(4, 3, 9, 9)
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[:3, :3, 0, 0] = torch.eye(3)
    target = torch.cat([x, torch.zeros(4, 1, 9, 9)], dim=1)  # the model maps x to this exactly
    cfg = EqRegConfig(layers=["0"], weight=1e-3, distance="mse", fields="trivial")
    hist = train_loop(
        model,
        DataLoader(TensorDataset(x, target), batch_size=4),
        torch.optim.SGD(model.parameters(), lr=0.0),
        F.mse_loss,
        cfg,
        max_steps=3,
        log_every=1,
        progress=False,
    )
    assert max(log["task_loss"] for log in hist.logs) < 1e-12
    assert max(log["eqreg_loss"] for log in hist.logs) < 1e-12


def test_gradient_accumulation_matches_a_full_batch():
    """GA=2 with half batches == GA=1 with full batches (no BatchNorm, C2: k is always 1, mse distance)."""
    rainy, clean = _pairs(n=8, size=11)
    torch.manual_seed(0)
    base = FastDerainer(channels=8, num_blocks=1)
    results = []
    for ga, bs in [(1, 8), (2, 4)]:
        model = copy.deepcopy(base)
        cfg = EqRegConfig(layers=["body.0.conv1", "body.0.conv2"], group_order=2, weight=0.5, distance="mse")
        hist = train_loop(
            model,
            DataLoader(TensorDataset(rainy, clean), batch_size=bs),
            torch.optim.SGD(model.parameters(), lr=0.5),
            F.mse_loss,
            cfg,
            max_steps=2,
            gradient_accumulation_steps=ga,
            log_every=1,
            progress=False,
        )
        results.append((model, hist))
    (m1, h1), (m2, h2) = results
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)
    for a, b in zip(h1.logs, h2.logs):
        assert a["task_loss"] == pytest.approx(b["task_loss"], rel=1e-5)
        assert a["eqreg_loss"] == pytest.approx(b["eqreg_loss"], rel=1e-5)
    # and training moved the parameters at all
    assert any(not torch.equal(p, q) for p, q in zip(m1.parameters(), base.parameters()))


@pytest.mark.parametrize("weight,warns", [(1e3, True), (1e-6, False)])
def test_warns_once_when_eqreg_dominates(weight, warns):
    torch.manual_seed(0)
    model = FastDerainer(channels=8, num_blocks=1)
    cfg = EqRegConfig(layers=["body.0.conv1"], weight=weight, distance="relative")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_loop(
            model,
            DataLoader(TensorDataset(*_pairs()), batch_size=4),
            torch.optim.SGD(model.parameters(), lr=0.0),
            F.mse_loss,
            cfg,
            max_steps=3,
            log_every=1,
            progress=False,
        )
    msgs = [str(w.message) for w in caught if "dominates" in str(w.message)]
    assert len(msgs) == (1 if warns else 0)
    if warns:
        assert "weight=" in msgs[0] and "relative" in msgs[0]


def test_eval_fn_runs_in_eval_mode_on_schedule():
    model = FastDerainer(channels=8, num_blocks=1)
    calls = []

    def eval_fn(m, step):
        calls.append((step, m.training))
        return {"score": float(step)}

    hist = train_loop(
        model,
        DataLoader(TensorDataset(*_pairs()), batch_size=4),
        torch.optim.SGD(model.parameters(), lr=0.01),
        F.mse_loss,
        None,
        max_steps=5,
        eval_every=2,
        eval_fn=eval_fn,
        progress=False,
    )
    assert calls == [(2, False), (4, False), (5, False)]
    assert [e["step"] for e in hist.evals] == [2, 4, 5] and hist.evals[-1]["score"] == 5.0
    assert model.training


def test_bf16_runs_and_logs_finite_losses():
    torch.manual_seed(0)
    model = FastDerainer(channels=8, num_blocks=1)
    cfg = EqRegConfig(layers=["body.0.conv1"], weight=1e-2, distance="mse")
    hist = train_loop(
        model,
        DataLoader(TensorDataset(*_pairs()), batch_size=4),
        torch.optim.Adam(model.parameters(), 1e-3),
        F.mse_loss,
        cfg,
        max_steps=2,
        log_every=1,
        mixed_precision="bf16",
        progress=False,
    )
    assert all(math.isfinite(log["loss"]) and log["eqreg_loss"] > 0 for log in hist.logs)
    # a later float32 run in the same process still works (the accelerate state is reset)
    train_loop(
        model,
        DataLoader(TensorDataset(*_pairs()), batch_size=4),
        torch.optim.Adam(model.parameters()),
        F.mse_loss,
        None,
        max_steps=1,
        progress=False,
    )


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(mixed_precision="fp8"), ValueError, "fp8.*Choose between"),
        (dict(max_steps=0), ValueError, "max_steps=0"),
        (dict(gradient_accumulation_steps=0), ValueError, "gradient_accumulation_steps=0"),
        (dict(input_key="image", target_key="clean"), KeyError, "image"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    model = FastDerainer(channels=8, num_blocks=1)
    data = DataLoader(DictPairs(*_pairs(), "rainy", "clean"), batch_size=4)
    kwargs = {"max_steps": 1, **kwargs}
    with pytest.raises(error, match=match):
        train_loop(
            model, data, torch.optim.SGD(model.parameters(), 0.1), F.mse_loss, None, progress=False, **kwargs
        )


def test_hooks_removed_when_training_fails():
    model = FastDerainer(channels=8, num_blocks=1)
    cfg = EqRegConfig(layers=["body.0.conv1"], weight=1e-2)

    def broken(out, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train_loop(
            model,
            DataLoader(TensorDataset(*_pairs()), batch_size=4),
            torch.optim.SGD(model.parameters(), 0.1),
            broken,
            cfg,
            max_steps=1,
            progress=False,
        )
    assert _no_hooks(model)


@pytest.mark.filterwarnings("ignore:The EQ-Reg term")
def test_eqreg_reduces_equivariance_error():
    """End to end: with a strong EQ-Reg term the tapped layers become more equivariant than without."""
    from eqreg_hf import equivariance_error

    rainy, clean = _pairs(n=8, size=15)
    errors = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = FastDerainer(channels=8, num_blocks=1)
        cfg = EqRegConfig(layers=model.eqreg_layers(4), weight=weight, distance="relative")
        train_loop(
            model,
            DataLoader(TensorDataset(rainy, clean), batch_size=4, shuffle=True),
            torch.optim.Adam(model.parameters(), 3e-3),
            F.mse_loss,
            cfg,
            max_steps=25,
            progress=False,
            seed=0,
        )
        errors[weight] = equivariance_error(model, rainy[:2], layers=model.eqreg_layers(4)).mean
    assert errors[1.0] < 0.7 * errors[0.0], errors


def test_weight_schedule_drives_the_loop_without_touching_the_config():
    from eqreg_hf import WeightSchedule

    model = FastDerainer(channels=8, num_blocks=1)
    cfg = EqRegConfig(layers=["body.0.conv1"], weight=0.4, distance="mse")
    hist = train_loop(
        model,
        DataLoader(TensorDataset(*_pairs()), batch_size=4),
        torch.optim.SGD(model.parameters(), 1e-3),
        F.mse_loss,
        cfg,
        max_steps=4,
        log_every=1,
        progress=False,
        weight_schedule=WeightSchedule("linear", warmup_steps=0.5),
    )
    assert hist.series("eqreg_weight") == pytest.approx([0.0, 0.2, 0.4, 0.4])
    assert hist.logs[0]["eqreg_loss"] == 0.0 and hist.logs[1]["eqreg_loss"] > 0  # weight 0: no rotated pass
    assert cfg.weight == 0.4  # the user's config is never modified
    assert _no_hooks(model)


@pytest.mark.parametrize("bad", ["linear", lambda step: 0.1])
def test_weight_schedule_must_be_a_schedule_object(bad):
    model = FastDerainer(channels=8, num_blocks=1)
    with pytest.raises(TypeError, match="WeightSchedule"):
        train_loop(
            model,
            DataLoader(TensorDataset(*_pairs()), batch_size=4),
            torch.optim.SGD(model.parameters(), 0.1),
            F.mse_loss,
            None,
            max_steps=1,
            progress=False,
            weight_schedule=bad,
        )


def test_per_tap_logging_reads_detached_tensors_not_floats(monkeypatch):
    """The loop sums the per-tap terms as tensors (a float() per tap per step would sync the device)."""
    from eqreg_hf.core.regularizer import EqReg

    def no_floats(self):
        raise AssertionError("train_loop read reg.last_terms (floats: a device sync per tap per step)")

    monkeypatch.setattr(EqReg, "last_terms", property(no_floats))
    model = FastDerainer(channels=8, num_blocks=1)
    cfg = EqRegConfig(layers=["body.0.conv1", "body.0.conv2"], weight=1e-2)
    hist = train_loop(
        model,
        DataLoader(TensorDataset(*_pairs()), batch_size=4),
        torch.optim.SGD(model.parameters(), 1e-3),
        F.mse_loss,
        cfg,
        max_steps=2,
        log_every=1,
        progress=False,
    )
    assert all(hist.logs[-1][f"eqreg/{n}"] > 0 for n in ("body.0.conv1", "body.0.conv2"))


def test_one_k_per_optimizer_step_under_accumulation(monkeypatch):
    """Gradient accumulation reuses the k of its optimizer step (as the Trainer does): one draw per step."""
    from eqreg_hf.core.regularizer import EqReg

    drawn = []
    original = EqReg.sample_k

    def recording(self, hw=None):
        drawn.append(original(self, hw))
        return drawn[-1]

    monkeypatch.setattr(EqReg, "sample_k", recording)
    model = FastDerainer(channels=8, num_blocks=1)
    cfg = EqRegConfig(layers=["body.0.conv1"], weight=1e-2)
    train_loop(
        model,
        DataLoader(TensorDataset(*_pairs(n=8)), batch_size=2),
        torch.optim.SGD(model.parameters(), 1e-3),
        F.mse_loss,
        cfg,
        max_steps=2,
        gradient_accumulation_steps=2,
        progress=False,
    )
    assert len(drawn) == 2
