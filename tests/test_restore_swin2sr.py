"""transformers' Swin2SR for restoration: build, the Trainer path with EQ-Reg, exact accumulation, Hub round
trip, layers="auto" (stage outputs on the input grid: an equivariant oracle reads ~0) and the window alignment
warnings."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers  # noqa: F401  (Swin2SR comes from transformers, a hard dependency: fail, not skip)

from eqreg_hf import EqReg, EqRegConfig, equivariance_error
from eqreg_hf.core.alignment import EqRegAlignmentWarning
from eqreg_hf.core.selection import auto_taps
from eqreg_hf.tasks.restore.swin2sr import build_swin2sr, fit_with_trainer, reconstruction

pytestmark = pytest.mark.usefixtures("one_thread")

STAGES = ["swin2sr.encoder.stages.0", "swin2sr.encoder.stages.1"]


class Pairs(torch.utils.data.Dataset):
    """``n`` fixed (noisy, clean) pairs of ``size`` x ``size``; ``scale`` > 1: the input is the clean image
    average-pooled (a stand-in for super-resolution data)."""

    def __init__(self, n=3, size=16, scale=1, channels=3):
        g = torch.Generator().manual_seed(0)
        self.clean = torch.rand(n, channels, size, size, generator=g)
        low = torch.nn.functional.avg_pool2d(self.clean, scale) if scale > 1 else self.clean
        self.noisy = low + 0.1 * torch.randn(low.shape, generator=g)

    def __len__(self):
        return len(self.clean)

    def __getitem__(self, i):
        return {"pixel_values": self.noisy[i], "labels": self.clean[i]}


def _params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _fit(model, data=None, eqreg=None, **kw):
    kw = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1, "progress": False, **kw}
    return fit_with_trainer(model, data if data is not None else Pairs(), eqreg, **kw)


@pytest.mark.parametrize(
    "task, scale, size, out",
    [("denoise", 2, 16, 16), ("inpaint", 2, 12, 12), ("sr", 2, 8, 16), ("sr", 3, 8, 24), ("sr", 4, 4, 16)],
)
def test_output_size_and_identity_start(task, scale, size, out):
    torch.manual_seed(0)
    model = build_swin2sr(task, scale=scale).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        y = reconstruction(model(pixel_values=x))
    assert y.shape == (2, 3, out, out)
    assert model.config.upscale == (scale if task == "sr" else 1)
    if task != "sr":  # the residual starts small: the untrained model is close to the identity
        assert float((y - x).abs().mean()) < 0.1


def test_reconstruction_reads_outputs_dicts_and_tensors():
    t = torch.zeros(1)
    assert reconstruction(t) is t and reconstruction({"reconstruction": t}) is t
    with pytest.raises(ValueError, match="no 'reconstruction'"):
        reconstruction({"logits": t})


BUILD_ERRORS = [
    (dict(task="deblur"), "task='deblur'"),
    (dict(task="sr", scale=5), "scale=5"),
    (dict(task="sr", scale=2, upsampler="nearest+conv"), r"scale=2 .*\[4\]"),
    (dict(task="sr", scale=2, upsampler="bilinear"), "upsampler='bilinear'"),
    (dict(task="sr", scale=2, upscale=3), "upscale=3 contradicts scale=2"),
    (dict(task="denoise", upscale=2), "upscale must be 1"),
    (dict(task="denoise", embed_dims=8), r"Unknown Swin2SRConfig field\(s\) \['embed_dims'\]"),
    (dict(task="denoise", window_size=16, image_size=8), "window_size=16"),
    (dict(task="denoise", depths=[1, 1, 1]), r"depths=\[1, 1, 1\] and num_heads=\[2, 2\]"),
]


@pytest.mark.parametrize("kwargs, match", BUILD_ERRORS, ids=[m.split()[0] for _, m in BUILD_ERRORS])
def test_build_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        build_swin2sr(**kwargs)
    assert "\n" not in str(err.value)


FIT_ERRORS = [
    (dict(max_steps=0), "max_steps=0"),
    (dict(batch_size=2.5), "batch_size=2.5"),
    (dict(learning_rate=-1.0), "learning_rate=-1.0"),
    (dict(eval_fn=lambda m, s: {}), "eval_fn and eval_every go together"),
    (dict(data=Pairs(size=18)), r"18x18 is not a multiple of Swin2SR's window_size=4.*16x16"),
    (dict(data=Pairs(size=16, scale=2)), "Target 16x16 does not match the 8x8 output"),
    (dict(data=[{"image": torch.zeros(3, 8, 8)}]), "'pixel_values' and 'labels'"),
    (dict(data=[]), "train_dataset is empty"),
]


@pytest.mark.parametrize("kwargs, match", FIT_ERRORS, ids=[m.split()[0] for _, m in FIT_ERRORS])
def test_fit_refuses_bad_input_before_training(kwargs, match):
    model = build_swin2sr("denoise")
    before = _params(model)
    with pytest.raises(ValueError, match=match) as err:
        _fit(model, **kwargs)
    assert "\n" not in str(err.value)
    assert torch.equal(before, _params(model))


def test_trainer_path_logs_eqreg_and_evaluations():
    torch.manual_seed(0)
    model = build_swin2sr("denoise")
    cfg = EqRegConfig(layers="auto", weight=0.1, distance="mse")
    calls = []

    def eval_fn(m, step):
        calls.append((step, m.training))
        return {"eval_psnr": 10.0 + step}

    # Swin2SR raises on labels= ("Training is not supported"): the run only works if our MSE is the task loss.
    log, seconds = _fit(model, eqreg=cfg, max_steps=4, eval_fn=eval_fn, eval_every=2)
    train = [h for h in log if "task_loss" in h]
    assert [h["step"] for h in train] == [1, 2, 3, 4]
    for h in train:
        assert h["eqreg_loss"] > 0 and h["task_loss"] > 0
        assert h["loss"] == pytest.approx(h["task_loss"] + h["eqreg_loss"], rel=1e-4)
    assert calls == [(2, False), (4, False)]
    assert [(h["step"], h["eval_psnr"]) for h in log if "eval_psnr" in h] == [(2, 12.0), (4, 14.0)]
    assert seconds > 0 and model.training
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_plain_training_and_super_resolution(capsys):
    torch.manual_seed(0)
    model = build_swin2sr("sr", scale=2)
    before = _params(model)
    log, _ = _fit(model, Pairs(size=16, scale=2), None, max_steps=1)
    assert "loss" in log[0] and "eqreg_loss" not in log[0]
    assert capsys.readouterr().out == ""  # progress=False prints nothing (no bar, no log dicts)
    assert not torch.equal(before, _params(model))


def test_gradient_accumulation_is_exact():
    """GA=2 with batch 2 == GA=1 with batch 4: the same losses and parameters (no dropout, one k per step)."""
    runs = []
    for batch, ga in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = build_swin2sr("denoise")
        log, _ = _fit(
            model,
            Pairs(n=5),
            EqRegConfig(layers="auto", weight=0.5, distance="mse"),
            batch_size=batch,
            gradient_accumulation_steps=ga,
        )
        runs.append(([(h["task_loss"], h["eqreg_loss"]) for h in log if "task_loss" in h], _params(model)))
    (log1, p1), (log2, p2) = runs
    assert len(log1) == 2 and log1 == [pytest.approx(v, rel=1e-4) for v in log2]
    assert torch.allclose(p1, p2, rtol=1e-4, atol=1e-6), float((p1 - p2).abs().max())


def test_save_pretrained_round_trip(tmp_path):
    from transformers import Swin2SRForImageSuperResolution

    torch.manual_seed(0)
    model = build_swin2sr("denoise")
    _fit(model, max_steps=1)
    model.save_pretrained(tmp_path)
    loaded = Swin2SRForImageSuperResolution.from_pretrained(tmp_path).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(
            reconstruction(model.eval()(pixel_values=x)), reconstruction(loaded(pixel_values=x))
        )
    assert [t.label for t in auto_taps(loaded, 4)] == [f"{n}:0" for n in STAGES]


# ---------------------------------------------------------------------------------------------- layers="auto"


def _equivariant_oracle(**config):
    """A Swin2SR whose stage outputs are exactly rotation/flip-equivariant as trivial fields: every 3x3 kernel
    averaged over D4, constant queries (attention weights depend on the key's content only) and no relative
    position bias. Each window (or masked shifted-window region) then pools its tokens symmetrically, so the
    stages commute with rot90 and flips iff the window grid is symmetric and the tokens are read on the
    right grid."""
    torch.manual_seed(0)
    model = build_swin2sr("denoise", **config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1:
                turns = [torch.rot90(m.weight, k, (-2, -1)) for k in range(4)]
                m.weight.copy_(sum(turns + [w.flip(-1) for w in turns]) / 8)
            if type(m).__name__ == "Swin2SRSelfAttention":
                m.query.weight.zero_()
                m.query.bias.normal_()
                m.continuous_position_bias_mlp[-1].weight.zero_()
    return model.eval()


def test_auto_taps_are_the_stage_outputs_as_tokens():
    model = build_swin2sr("sr", scale=2, depths=[1, 1, 1], num_heads=[2, 2, 2])
    taps = auto_taps(model, 4)
    assert [t.label for t in taps] == [f"swin2sr.encoder.stages.{i}:0" for i in range(3)]
    assert {(t.layout, t.prefix_tokens, t.field) for t in taps} == {("tokens", 0, "regular")}
    # embed_dim 24 holds regular C8 fields, not C16 ones: every stage is skipped with a note
    with pytest.warns(UserWarning, match="not divisible"):
        assert auto_taps(model, 16) is None


@pytest.mark.parametrize("window, hw", [(4, (16, 12)), (6, (12, 18))])
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_an_equivariant_swin2sr_reads_zero_on_a_non_square_input(window, hw, group):
    model = _equivariant_oracle(window_size=window)
    x = torch.rand(1, 3, *hw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EqRegAlignmentWarning)
        report = equivariance_error(model, x, EqRegConfig(fields="trivial", group=group))
    assert set(report) == set(STAGES)
    assert max(report.values()) < 1e-5, report


def test_random_swin2sr_is_not_equivariant_and_its_term_is_finite():
    torch.manual_seed(0)
    model = build_swin2sr("denoise")
    x = torch.rand(2, 3, 16, 16)
    report = equivariance_error(model, x[:1], layers="auto", group_order=4)
    assert set(report) == set(STAGES) and all(0.3 < v < 2 for v in report.values()), report
    model.train()
    with EqReg(model, EqRegConfig(layers="auto", group_order=4, weight=1.0)) as reg:
        out = model(pixel_values=reg.stack(x, k=1))
        eq = reg.loss()
    assert reconstruction(out).shape == (4, 3, 16, 16)
    assert torch.isfinite(eq) and eq.item() > 0
    eq.backward()
    assert float(model.swin2sr.first_convolution.weight.grad.abs().sum()) > 0


def test_odd_window_is_flagged_misaligned():
    model = _equivariant_oracle(window_size=3)
    with pytest.warns(EqRegAlignmentWarning, match="odd window_size.*even window_size"):
        report = equivariance_error(model, torch.rand(1, 3, 12, 12), EqRegConfig(fields="trivial"))
    assert set(report.misaligned) == set(STAGES)
    assert max(report.values()) > 1e-3  # the shifted windows really are asymmetric


def test_size_not_a_multiple_of_the_window_warns_before_transformers_fails():
    model = build_swin2sr("denoise")
    with pytest.warns(EqRegAlignmentWarning, match=r"18x14.*window_size=4.*Crop inputs to 16x16"):
        with EqReg(model.train(), EqRegConfig(layers="auto", weight=1.0)) as reg:
            try:
                model(pixel_values=reg.stack(torch.rand(1, 3, 18, 14), k=2))
            except RuntimeError:  # transformers 5.x cannot unembed the padded tokens
                pass
