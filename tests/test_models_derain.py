"""Deraining networks: shapes, sizes, Hub round trip, default taps, exact C4 equivariance."""

from __future__ import annotations

import warnings

import pytest
import torch

from eqreg_hf import EqRegConfig, equivariance_error
from eqreg_hf.tasks.derain.networks import FastDerainer, RCDNet, StrictC4Derainer


def _has_e2cnn() -> bool:
    try:
        import e2cnn  # noqa: F401
    except ImportError:
        return False
    return True


needs_e2cnn = pytest.mark.skipif(not _has_e2cnn(), reason="e2cnn is not installed (pip install e2cnn)")

TINY = [
    pytest.param(lambda: FastDerainer(channels=8, num_blocks=2), id="fast"),
    pytest.param(
        lambda: RCDNet(num_stages=2, num_maps=4, kernel_size=3, num_features=5, num_resblocks=1), id="rcdnet"
    ),
    pytest.param(
        lambda: RCDNet(
            num_stages=1, num_maps=4, kernel_size=5, num_features=1, num_resblocks=2, batch_norm=False
        ),
        id="rcdnet-nobn",
    ),
    pytest.param(lambda: StrictC4Derainer(num_fields=2, num_blocks=1), id="strict-c4", marks=needs_e2cnn),
]
SIZES = [(1, 16, 16), (2, 17, 23), (3, 9, 32)]


def _silence():
    warnings.filterwarnings("ignore", category=UserWarning, module="e2cnn")


@pytest.mark.parametrize("make", TINY)
@pytest.mark.parametrize("b,h,w", SIZES)
def test_output_shape_matches_input(make, b, h, w):
    _silence()
    net = make()
    x = torch.rand(b, 3, h, w)
    y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    "make,low,high",
    [
        (FastDerainer, 100_000, 300_000),
        (lambda: FastDerainer(channels=48), 100_000, 300_000),
        # The paper's RCDNet has ~3.2M parameters (S = 17, 32 maps of 9x9, 4 resblocks per proxnet).
        (RCDNet, 2_500_000, 3_500_000),
        pytest.param(StrictC4Derainer, 80_000, 160_000, marks=needs_e2cnn),
    ],
)
def test_default_parameter_counts(make, low, high):
    _silence()
    n = sum(p.numel() for p in make().parameters())
    assert low <= n <= high, n


@needs_e2cnn
def test_strict_c4_matches_fast_derainer_budget():
    _silence()
    fast = sum(p.numel() for p in FastDerainer().parameters())
    strict = sum(p.numel() for p in StrictC4Derainer().parameters())
    assert 0.7 < strict / fast < 1.3, (strict, fast)


@pytest.mark.parametrize("make", TINY)
def test_save_pretrained_round_trip(make, tmp_path):
    _silence()
    torch.manual_seed(0)
    net = make()
    # a few "trained" statistics so BatchNorm buffers are part of what must survive the round trip
    net.train()
    net(torch.rand(2, 3, 12, 12))
    net.eval()
    x = torch.rand(2, 3, 13, 11)
    with torch.no_grad():
        before = net(x)
    net.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    loaded = type(net).from_pretrained(tmp_path)
    assert not loaded.training
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)


def test_config_json_holds_constructor_arguments(tmp_path):
    import json

    RCDNet(num_stages=3, num_maps=8, kernel_size=5, num_features=9, num_resblocks=1).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_stages"] == 3 and cfg["num_features"] == 9 and cfg["kernel_size"] == 5
    card = (tmp_path / "README.md").read_text()
    assert "eqreg-hf" in card and "2505.19799" in card


@needs_e2cnn
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("h,w", [(15, 15), (13, 18)])
def test_strict_c4_is_exactly_equivariant(k, h, w):
    _silence()
    torch.manual_seed(k)
    net = StrictC4Derainer(num_fields=3, num_blocks=2).eval()
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        a = net(torch.rot90(x, k, dims=(-2, -1)))
        b = torch.rot90(net(x), k, dims=(-2, -1))
    assert (a - b).abs().max() < 1e-5
    # and it is not the identity (the test would pass trivially otherwise)
    assert (net(x) - x).abs().mean() > 1e-4


def test_plain_net_is_not_equivariant():
    """Counterpart of the strict test: the ordinary CNN at init is far from equivariant."""
    torch.manual_seed(0)
    net = FastDerainer(channels=8, num_blocks=2).eval()
    x = torch.rand(1, 3, 15, 15)
    with torch.no_grad():
        gap = (net(torch.rot90(x, 1, (-2, -1))) - torch.rot90(net(x), 1, (-2, -1))).abs().max()
    assert gap > 1e-3


@pytest.mark.parametrize(
    "make,t,count",
    [
        (lambda: FastDerainer(channels=8, num_blocks=3), 4, 6),
        (lambda: FastDerainer(channels=8, num_blocks=3), 8, 6),
        (lambda: RCDNet(num_stages=2, num_maps=4, kernel_size=3, num_features=5, num_resblocks=2), 4, 8),
        (lambda: RCDNet(num_stages=3, num_maps=4, kernel_size=3, num_features=1, num_resblocks=1), 2, 6),
        pytest.param(lambda: StrictC4Derainer(num_fields=2, num_blocks=2), 4, 4, marks=needs_e2cnn),
        pytest.param(lambda: StrictC4Derainer(num_fields=2, num_blocks=3), 4, 6, marks=needs_e2cnn),
    ],
)
def test_default_taps_are_module_names(make, t, count):
    _silence()
    net = make()
    taps = net.eqreg_layers(t)
    assert len(taps) == count
    modules = dict(net.named_modules())
    for name in taps:
        assert name in modules, name
        assert isinstance(modules[name], torch.nn.Module)


def test_rcdnet_taps_are_the_widened_bnet_convs():
    net = RCDNet()  # paper setting: 3 + 33 = 36 channels
    modules = dict(net.named_modules())
    taps = net.eqreg_layers(4)
    assert len(taps) == 17 * 4 * 2
    assert all(modules[n].out_channels == 36 and n.startswith("bnets.") for n in taps)


@pytest.mark.parametrize(
    "make,t,match",
    [
        (lambda: FastDerainer(channels=6, num_blocks=1), 4, "channels=6"),
        (
            lambda: RCDNet(num_stages=1, num_maps=4, kernel_size=3, num_features=4, num_resblocks=1),
            4,
            "3 \\+ num_features=7",
        ),
    ],
)
def test_indivisible_channels_name_the_fix(make, t, match):
    with pytest.raises(ValueError, match=match):
        make().eqreg_layers(t)


@pytest.mark.parametrize("bad", [dict(kernel_size=4)])
def test_even_kernel_is_refused(bad):
    with pytest.raises(ValueError, match="odd"):
        FastDerainer(**bad)
    with pytest.raises(ValueError, match="odd"):
        RCDNet(num_stages=1, num_maps=4, num_features=1, num_resblocks=1, **bad)


def test_rcdnet_stages():
    net = RCDNet(num_stages=3, num_maps=4, kernel_size=3, num_features=5, num_resblocks=1)
    x = torch.rand(2, 3, 11, 14)
    backgrounds, rains = net.forward_stages(x)
    assert len(backgrounds) == 4 and len(rains) == 3
    assert torch.equal(backgrounds[-1], net(x)) or not net.training
    assert all(b.shape == x.shape for b in backgrounds + rains)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: FastDerainer(channels=8, num_blocks=2), id="fast"),
        pytest.param(
            lambda: RCDNet(num_stages=1, num_maps=4, kernel_size=3, num_features=5, num_resblocks=1),
            id="rcdnet",
        ),
    ],
)
def test_default_taps_work_with_the_core(make):
    """The default taps resolve in EqReg / equivariance_error and carry regular C4 fields."""
    torch.manual_seed(0)
    net = make().eval()
    rep = equivariance_error(net, torch.rand(1, 3, 13, 13), layers=net.eqreg_layers(4), group_order=4)
    assert sorted(rep) == sorted(net.eqreg_layers(4))
    assert rep.mean > 0.05  # an untrained ordinary CNN is far from equivariant
    EqRegConfig(layers=net.eqreg_layers(4))  # valid config


@needs_e2cnn
def test_strict_c4_has_zero_equivariance_error_at_every_tap():
    """The library's T_k convention (field-major, roll +k) matches e2cnn's regular fields."""
    _silence()
    torch.manual_seed(0)
    net = StrictC4Derainer(num_fields=2, num_blocks=2)
    rep = equivariance_error(
        net, torch.rand(1, 3, 11, 11), layers=net.eqreg_layers(4), group_order=4, include_output=True
    )
    assert sorted(rep) == sorted(net.eqreg_layers(4) + ["output"])
    assert max(rep.values()) < 1e-5, rep.table()


def test_rcdnet_stage_loss_weights_every_stage():
    from eqreg_hf.tasks.derain.networks import rcdnet_stage_loss

    torch.manual_seed(0)
    net = RCDNet(num_stages=3, num_maps=4, kernel_size=3, num_features=1, num_resblocks=1).train()
    x, y = torch.rand(2, 3, 10, 10), torch.rand(2, 3, 10, 10)
    assert torch.is_tensor(net(x))  # off by default
    net.stage_outputs = True
    out = net(x)
    assert out["backgrounds"].shape == (2, 4, 3, 10, 10) and out["rains"].shape == (2, 3, 3, 10, 10)
    assert torch.equal(out["background"], out["backgrounds"][:, -1])
    mse = torch.nn.functional.mse_loss
    expected = sum((1.0 if s == 3 else 0.1) * mse(out["backgrounds"][:, s], y) for s in range(4)) + sum(
        (1.0 if s == 2 else 0.1) * mse(out["rains"][:, s], x - y) for s in range(3)
    )
    assert torch.allclose(rcdnet_stage_loss(out, y), expected)
    rcdnet_stage_loss(out, y).backward()
    assert net.rain_kernels0.grad is not None  # the first stage's M initialisation gets gradient too
    assert torch.is_tensor(net.eval()(x))  # evaluation always gets the final background
    with pytest.raises(TypeError, match="stage_outputs"):
        rcdnet_stage_loss(net(x), y)


@needs_e2cnn
@pytest.mark.parametrize("t", [2, 8])
def test_strict_c4_refuses_fields_it_does_not_hold(t):
    # A C4 field read as two C2 fields would give a wrong (not loose) reading: 0.72 on an exactly C4 net.
    with pytest.raises(ValueError, match="C4 only"):
        StrictC4Derainer(num_fields=2, num_blocks=1).eqreg_layers(t)
