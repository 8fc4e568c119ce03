import copy
import io
import pickle

import pytest
import torch
from nets import PlainCNN
from torch import nn

from eqreg_hf import EqReg, EqRegConfig, FeatureTaps
from eqreg_hf.core.selection import resolve_taps
from eqreg_hf.core.taps import first_tensor


class TupleNet(nn.Module):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y, {"aux": y.mean()}

    def __init__(self):
        super().__init__()
        self.block = self.Block()

    def forward(self, x):
        return self.block(x)[0]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize(
    "layers, expected",
    [
        (["body.0"], ["body.0"]),
        ("body.[03]", ["body.0", "body.3"]),
        (["body.*"], [f"body.{i}" for i in range(6)]),
        (
            "auto",
            ["body.0", "body.3"],
        ),  # every Conv2d whose channels divide by t (the 3-channel output is not)
    ],
)
def test_layer_selection(layers, expected):
    names = [s.name for s in resolve_taps(PlainCNN(), EqRegConfig(layers=layers))]
    assert names == expected


@pytest.mark.parametrize(
    "layers, match",
    [(["body.9"], "No module named"), (["bdy.0"], "Did you mean"), ("head.*", "matches no module")],
)
def test_bad_layer_names_are_explained(layers, match):
    with pytest.raises(ValueError, match=match):
        resolve_taps(PlainCNN(), EqRegConfig(layers=layers))


def test_first_tensor_of_tuple_dict_and_model_output():
    t = torch.ones(1)
    assert first_tensor((None, t)) is t
    assert first_tensor({"logits": t}) is t
    from transformers.modeling_outputs import ImageClassifierOutput

    assert first_tensor(ImageClassifierOutput(logits=t)) is t


def test_tuple_returning_layer_is_captured():
    net = TupleNet()
    with FeatureTaps(net, ["block"]) as taps, pytest.warns(UserWarning, match=r"only feature map.*'block:0'"):
        taps.arm()
        net(torch.randn(2, 3, 5, 5))
        got = taps.take()["block"]
    assert len(got) == 1 and got[0][1].shape == (2, 4, 5, 5)


def test_idle_taps_record_nothing():
    net = PlainCNN()
    with FeatureTaps(net, ["body.0"]) as taps:
        net(torch.randn(1, 3, 5, 5))
        assert taps.take() == {"body.0": []}


@pytest.mark.parametrize("capture", ["auto", "clone"])
def test_inplace_activation_after_tap_is_safe(capture):
    # body.0's output is overwritten by ReLU(inplace=True): the capture must hold the pre-ReLU values.
    torch.manual_seed(0)
    net = PlainCNN(inplace=True)
    x = torch.randn(2, 3, 7, 7)
    expected = net.body[0](x)
    assert (expected < 0).any()
    net.train()
    reg = EqReg(net, EqRegConfig(layers=["body.0"], capture=capture, weight=1.0))
    reg._hooks.arm()
    net(x)
    got = reg._hooks.take()["body.0"][0][1]
    assert torch.allclose(got, expected)
    reg.remove()


def test_inplace_mutation_without_clone_is_refused():
    class AddInPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            y += 1  # mutates the tapped output after the hook ran
            return y

    net = AddInPlace()
    with FeatureTaps(net, ["conv"], clone=False) as taps:
        taps.arm()
        net(torch.randn(1, 3, 5, 5))
        with pytest.raises(RuntimeError, match="modified in place"):
            taps.take()


def _state(net):
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    return buf.getvalue()


@pytest.mark.parametrize("how", ["remove", "context", "exception"])
def test_hooks_are_gone(how):
    net = PlainCNN()
    before = _hook_count(net)
    if how == "remove":
        reg = EqReg(net, EqRegConfig(layers="auto"))
        assert _hook_count(net) > before
        reg.remove()
        reg.remove()  # idempotent
    elif how == "context":
        with EqReg(net, EqRegConfig(layers="auto")):
            assert _hook_count(net) > before
    else:
        with pytest.raises(ZeroDivisionError):
            with EqReg(net, EqRegConfig(layers="auto")) as reg:
                reg(torch.randn(1, 3, 5, 5), k=1)
                raise ZeroDivisionError("an error inside the block")
    assert _hook_count(net) == before


def test_model_saves_pickles_and_copies_as_before():
    torch.manual_seed(0)
    net = PlainCNN()
    ref_state = _state(net)
    reg = EqReg(net, EqRegConfig(layers="auto", weight=1.0))
    reg.remove()
    assert _state(net) == ref_state
    clone = pickle.loads(pickle.dumps(net))
    copied = copy.deepcopy(net)
    x = torch.randn(1, 3, 6, 6)
    for other in (clone, copied):
        assert _hook_count(other) == 0
        assert torch.equal(other(x), net(x))
    # Deep-copying while attached works too (hooks are plain closures), and the copy is independent.
    reg = EqReg(net, EqRegConfig(layers="auto", weight=1.0))
    copied = copy.deepcopy(net)
    reg.remove()
    assert torch.equal(copied(x), net(x))


def test_e2cnn_layers_can_be_tapped_directly():
    pytest.importorskip("e2cnn", reason="e2cnn is a dev dependency")
    from e2cnn import gspaces
    from e2cnn import nn as enn

    from eqreg_hf import equivariance_error

    gs = gspaces.Rot2dOnR2(4)
    f_in = enn.FieldType(gs, 3 * [gs.trivial_repr])
    f_mid = enn.FieldType(gs, 4 * [gs.regular_repr])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = enn.R2Conv(f_in, f_mid, 3, padding=1)
            self.relu = enn.ReLU(f_mid)
            self.conv2 = enn.R2Conv(f_mid, f_mid, 3, padding=1)

        def forward(self, x):
            return self.conv2(self.relu(self.conv1(enn.GeometricTensor(x, f_in)))).tensor

    torch.manual_seed(0)
    rep = equivariance_error(Net(), torch.randn(2, 3, 9, 9), layers=["conv1", "relu", "conv2"])
    assert set(rep) == {"conv1", "relu", "conv2"} and max(rep.values()) < 1e-4
