"""Restoration networks: DnCNN, StrictRestorer (plain torch, strictly C4 / D4-equivariant), build_restorer."""

from __future__ import annotations

import pytest
import torch

from eqreg_hf.core.groups import rotate_features
from eqreg_hf.core.measure import equivariance_error
from eqreg_hf.tasks.restore.networks import (
    RESTORER_CHOICES,
    DnCNN,
    GroupConv2d,
    StrictRestorer,
    build_restorer,
)

TOL = 1e-5


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _errors(net, x, group, measured_as=None):
    rep = equivariance_error(
        net, x, group=group, layers=net.eqreg_layers(measured_as or group), include_output=True
    )
    return dict(rep), rep.ks


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_dncnn_shapes_and_taps(scale):
    net = DnCNN(channels=8, depth=4, scale=scale)
    assert net(torch.rand(2, 3, 7, 10)).shape == (2, 3, 7 * scale, 10 * scale)
    assert net.eqreg_layers(4) == net.eqreg_layers("D4") == ["head", "body.0", "body.1"]
    with pytest.raises(ValueError, match="channels=12 changed to a multiple of 8"):
        DnCNN(channels=12).eqreg_layers("D4")


def test_dncnn_bad_arguments():
    for kwargs, what in (
        ({"depth": 1}, "depth=1"),
        ({"kernel_size": 4}, "kernel_size=4"),
        ({"scale": 0}, "scale=0"),
    ):
        with pytest.raises(ValueError, match=what) as err:
            DnCNN(**kwargs)
        assert "\n" not in str(err.value)


def test_dncnn_sr_upsampling_keeps_the_symmetry():
    """With the residual off, the sr network is bicubic upsampling, which turns and mirrors exactly."""
    net = DnCNN(channels=8, depth=3, scale=2)
    torch.nn.init.zeros_(net.tail.weight)
    torch.nn.init.zeros_(net.tail.bias)
    rep = equivariance_error(net, torch.rand(1, 3, 9, 12), group="D4", layers=["head"], include_output=True)
    assert rep["output"] < 1e-6 and rep["head"] > 0.1


def test_parameter_counts_are_matched():
    plain = _count(DnCNN())
    assert plain == 38755
    for group, fields in (("C4", 16), ("D4", 11)):
        net = StrictRestorer(group)
        assert net.num_fields == fields == StrictRestorer.matched_fields(32, 6, group)
        assert abs(_count(net) - plain) / plain < 0.10, (group, _count(net))


@pytest.mark.parametrize("hw", [(12, 12), (10, 13)], ids=["square", "non-square"])
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_strict_restorer_is_exactly_equivariant_at_every_tap(group, hw):
    torch.manual_seed(0)
    net = StrictRestorer(group, num_fields=4, depth=5)
    with torch.no_grad():
        net.tail.weight.mul_(10)  # a residual of the size of the input, so the output check means something
    x = torch.rand(2, 3, *hw)
    errors, ks = _errors(net, x, group)
    assert len(ks) == (7 if group == "D4" else 3)  # every non-identity element, 90° turns included
    assert set(errors) == {"head", "body.0", "body.1", "body.2", "output"}
    assert max(errors.values()) < TOL, errors
    if group == "D4":  # a D4 field is two C4 fields: the net is C4-equivariant in eqreg_hf's C4 layout too
        errors, _ = _errors(net, x, "C4")
        assert max(errors.values()) < TOL, errors
    # a plain DnCNN of the same depth is far from equivariant under the same measurement
    plain, _ = _errors(DnCNN(channels=16, depth=5), x, group)
    assert min(v for k, v in plain.items() if k != "output") > 0.1


def test_strict_restorer_sr_and_auto_taps():
    torch.manual_seed(0)
    net = StrictRestorer("D4", num_fields=2, depth=3, scale=2)
    x = torch.rand(1, 3, 6, 7)
    assert net(x).shape == (1, 3, 12, 14)
    rep = equivariance_error(net, x, group="D4", include_output=True)  # layers="auto": eqreg_layers(8)
    assert set(rep) == {"head", "body.0", "output"} and max(rep.values()) < TOL


def test_strict_restorer_refuses_groups_its_fields_cannot_carry():
    c4, d4 = StrictRestorer("C4", num_fields=1, depth=2), StrictRestorer("D4", num_fields=1, depth=2)
    assert (
        c4.eqreg_layers(4) == c4.eqreg_layers("C4") == d4.eqreg_layers(8) == d4.eqreg_layers("C4") == ["head"]
    )
    for net, group in ((c4, "D4"), (c4, 8), (c4, "C2"), (d4, "D2"), (d4, 2), (c4, 3)):
        with pytest.raises(ValueError, match="holds (C4|D4) regular fields") as err:
            net.eqreg_layers(group)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="choose one of \\('C4', 'D4'\\)"):
        StrictRestorer("C8")


def test_d4_fields_are_not_c2_fields():
    """Why C2 / D2 are refused: a 4-channel C4 field is not two contiguous 2-channel C2 fields."""
    torch.manual_seed(0)
    net = StrictRestorer("C4", num_fields=2, depth=2)
    x = torch.rand(1, 3, 8, 8)
    f, f_rot = net.head(x), net.head(torch.rot90(x, 2, (-2, -1)))
    assert torch.allclose(rotate_features(f, 2, 4), f_rot, atol=1e-6)
    assert not torch.allclose(rotate_features(f, 1, 2), f_rot, atol=1e-2)


def _e2cnn_layers():
    e2cnn = pytest.importorskip("e2cnn")
    gspace = e2cnn.gspaces.Rot2dOnR2(N=4)
    rgb = e2cnn.nn.FieldType(gspace, 3 * [gspace.trivial_repr])
    hidden = e2cnn.nn.FieldType(gspace, 3 * [gspace.regular_repr])
    return (
        e2cnn,
        rgb,
        hidden,
        e2cnn.nn.R2Conv(rgb, hidden, 3, padding=1),
        e2cnn.nn.R2Conv(hidden, hidden, 3, padding=1),
    )


def test_channel_convention_agrees_with_e2cnn_c4():
    """An e2cnn Rot2dOnR2(4) regular-field net reads ~0 under eqreg_hf's C4 action, as ours does, and ours can
    express e2cnn's expanded weights exactly: the two channel conventions are the same."""
    torch.manual_seed(0)
    e2cnn, rgb, hidden, lift, conv = _e2cnn_layers()

    class E2Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lift, self.conv, self.feat1, self.feat2 = (
                lift,
                conv,
                torch.nn.Identity(),
                torch.nn.Identity(),
            )

        def forward(self, x):
            f = self.lift(e2cnn.nn.GeometricTensor(x, rgb))
            g = self.conv(e2cnn.nn.GeometricTensor(torch.relu(self.feat1(f.tensor)), hidden))
            return self.feat2(g.tensor)

    x = torch.rand(1, 3, 9, 11)
    theirs = equivariance_error(E2Net(), x, group="C4", layers=["feat1", "feat2"])
    ours = StrictRestorer("C4", num_fields=3, depth=3)
    assert max(theirs.values()) < TOL and max(_errors(ours, x, "C4")[0].values()) < TOL
    lift_w, _ = lift.expand_parameters()
    conv_w, _ = conv.expand_parameters()
    my_lift = GroupConv2d(3, 3, "C4", lift=True)
    my_conv = GroupConv2d(3, 3, "C4")
    with torch.no_grad():  # the free kernels are the rows of output channel (i, identity)
        my_lift.weight.copy_(lift_w[0::4].reshape(3, 3, 9))
        my_conv.weight.copy_(conv_w[0::4].reshape(3, 3, 4 * 9))
    assert torch.allclose(my_lift.full_weight(), lift_w, atol=1e-6)
    assert torch.allclose(my_conv.full_weight(), conv_w, atol=1e-6)


@pytest.mark.parametrize("name", RESTORER_CHOICES)
def test_hub_round_trip_and_gradients(name, tmp_path):
    torch.manual_seed(0)
    small = {"channels": 8} if name == "dncnn" else {"num_fields": 2}
    net = build_restorer(name, "sr", scale=2, depth=3, **small)
    x = torch.rand(2, 3, 6, 8)
    net.save_pretrained(tmp_path)
    again = type(net).from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(net(x), again(x))
    assert again.scale == 2 and getattr(again, "group", None) == getattr(net, "group", None)
    loss = (net(x) - torch.rand(2, 3, 12, 16)).pow(2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_build_restorer_choices_and_scale():
    assert isinstance(build_restorer("dncnn"), DnCNN) and build_restorer("dncnn", scale=4).scale == 1
    assert build_restorer("strict-d4", "sr", scale=3).group.name == "D4"
    assert build_restorer("strict-c4", "inpaint").group.name == "C4"
    with pytest.raises(
        ValueError, match="Unknown restorer 'unet': choose one of \\('dncnn', 'strict-c4', 'strict-d4'\\)"
    ):
        build_restorer("unet")
    with pytest.raises(ValueError, match="Unknown task 'deblur'"):
        build_restorer("dncnn", "deblur")
