import pytest
import torch
from nets import REGULAR_TAPS, TRIVIAL_TAPS, ExactC4Net, PlainCNN

from eqreg_hf import EqRegConfig, equivariance_error

FIELDS = {n: "trivial" for n in TRIVIAL_TAPS}


@pytest.mark.parametrize("hw", [(9, 9), (10, 10), (7, 12)])
def test_near_zero_on_exact_net(hw):
    torch.manual_seed(0)
    rep = equivariance_error(
        ExactC4Net(),
        torch.randn(2, 3, *hw),
        EqRegConfig(layers=REGULAR_TAPS + TRIVIAL_TAPS, fields=FIELDS),
        include_output=True,
    )
    assert list(rep) == REGULAR_TAPS + TRIVIAL_TAPS + ["output"]
    assert max(rep.values()) < 1e-5
    assert rep.ks == [1, 2, 3]


def test_large_on_ordinary_cnn_and_mode_restored():
    torch.manual_seed(0)
    net = PlainCNN(bn=True).train()
    rep = equivariance_error(net, torch.randn(2, 3, 9, 9), layers="auto")
    assert net.training  # restored
    assert rep.mean > 0.3 and all(v > 0.1 for v in rep.values())


def test_t2_and_explicit_ks():
    rep = equivariance_error(ExactC4Net(t=2), torch.randn(1, 3, 9, 9), layers=["g1"], group_order=2)
    assert rep.ks == [1] and rep["g1"] < 1e-5


def test_table_and_plot(tmp_path):
    rep = equivariance_error(PlainCNN(), torch.randn(1, 3, 9, 9), layers=["body.0", "body.3"])
    text = rep.table()
    assert "body.0" in text and "mean" in text and f"{rep.mean:.4f}" in text
    path = rep.plot(tmp_path / "err.png", others={"a": rep, "b": rep})
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert not list(tmp_path.glob("*.tmp*"))
    assert rep.to_dict()["mean"] == pytest.approx(rep.mean)


def test_input_key_for_hf_style_models():
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = PlainCNN()

        def forward(self, pixel_values):
            return {"logits": self.net(pixel_values)}

    rep = equivariance_error(
        Wrapped(),
        torch.randn(1, 3, 9, 9),
        layers=["net.body.0"],
        input_key="pixel_values",
        include_output=True,
    )
    assert set(rep) == {"net.body.0", "output"}


@pytest.mark.parametrize(
    "shortcuts, match",
    [
        ({"layers": ["body.3"]}, r"layers=\['body.3'\] \(config: \['body.0'\]\) disagree"),
        ({"group": "D4"}, r"group D4 \(config: C4\) disagree"),
        ({"group_order": 2, "layers": ["body.3"]}, r"layers=.* and group C2 \(config: C4\) disagree"),
    ],
)
def test_a_config_and_a_conflicting_shortcut_is_an_error(shortcuts, match):
    cfg = EqRegConfig(layers=["body.0"])
    with pytest.raises(ValueError, match=match):
        equivariance_error(PlainCNN(), torch.randn(1, 3, 9, 9), cfg, **shortcuts)


def test_a_config_and_agreeing_shortcuts_measure_alike():
    torch.manual_seed(0)
    net, x = PlainCNN(), torch.randn(1, 3, 9, 9)
    cfg = EqRegConfig(layers=["body.0"], group="D2")
    rep = equivariance_error(net, x, cfg)
    assert rep.group == "D2" and rep == equivariance_error(net, x, cfg, layers=["body.0"], group="D2")
    assert rep == equivariance_error(net, x, layers=["body.0"], group="D2")
    with pytest.raises(TypeError, match=r"config=\['body.0'\] is not an EqRegConfig"):
        equivariance_error(net, x, ["body.0"])
