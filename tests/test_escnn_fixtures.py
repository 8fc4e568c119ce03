"""The pinned D_t convention against escnn: regular-field nets exported to plain torch (tests/fixtures).

``scripts/export_escnn_fixtures.py`` built them with escnn (``flipRot2dOnR2(4)``, ``flipRot2dOnR2(2)``,
``rot2dOnR2(4)``) in an environment of its own and saved ``nn.Conv2d`` / ``nn.ReLU`` weights; these tests
rebuild the modules from the JSON description, without escnn.
"""

import json
import os

import pytest
import torch
from torch import nn

from eqreg_hf import EqReg, EqRegConfig, equivariance_error
from eqreg_hf.core import regularizer
from eqreg_hf.core.groups import as_group

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ZERO = 5e-6  # float32: measured 1e-7 .. 4e-7 relative at every tap for every element
SIZES = [(11, 11), (12, 12), (9, 13)]


def load_net(name: str) -> tuple[nn.Sequential, list[str], dict[str, str]]:
    """(the exported net, every layer's name, the fields: regular except the trivial output conv)."""
    with open(os.path.join(FIXTURES, "escnn_nets.json"), encoding="utf-8") as fh:
        spec = json.load(fh)["nets"][name]
    modules = []
    for layer in spec["layers"]:
        if layer["type"] == "Conv2d":
            modules.append(
                nn.Conv2d(
                    layer["in_channels"],
                    layer["out_channels"],
                    tuple(layer["kernel_size"]),
                    stride=tuple(layer["stride"]),
                    padding=tuple(layer["padding"]),
                    bias=layer["bias"],
                )
            )
        else:
            assert layer["type"] == "ReLU", layer
            modules.append(nn.ReLU())
    net = nn.Sequential(*modules)
    net.load_state_dict(torch.load(os.path.join(FIXTURES, "escnn_nets.pt"), weights_only=True)[name])
    names = [layer["name"] for layer in spec["layers"]]
    return net, names, {layer["name"]: layer["field"] for layer in spec["layers"]}


def test_fixtures_are_small_and_describe_regular_fields():
    sizes = [os.path.getsize(os.path.join(FIXTURES, f)) for f in ("escnn_nets.pt", "escnn_nets.json")]
    assert sum(sizes) < 64_000, sizes
    for name, field_size in (("D4", 8), ("D2", 4), ("C4", 4)):
        net, names, fields = load_net(name)
        assert [fields[n] for n in names].count("trivial") == 1
        assert all(
            m.out_channels % field_size == 0 for m in net if isinstance(m, nn.Conv2d) and m is not net[-1]
        )


@pytest.mark.parametrize("name", ["D4", "D2"])
@pytest.mark.parametrize("hw", SIZES)
def test_escnn_dihedral_nets_read_zero_at_every_tap_for_every_element(name, hw):
    torch.manual_seed(0)
    net, names, fields = load_net(name)
    cfg = EqRegConfig(layers=names, fields=fields, group=name)
    rep = equivariance_error(net, torch.randn(2, 3, *hw), cfg, include_output=True)
    assert rep.ks == as_group(name).elements()  # every non-identity element, flips included
    assert set(rep) == set(names) | {"output"}
    worst = max(err for per in rep.per_k.values() for err in per.values())
    assert worst < ZERO, rep.per_k


@pytest.mark.parametrize("name", ["D4", "D2"])
@pytest.mark.parametrize("small", [1 << 16, 0])
def test_eqreg_loss_is_zero_on_escnn_nets_for_every_element(name, small, monkeypatch):
    # both ways of comparing: small maps batched (autograd), and one by one (the hand-written backward)
    monkeypatch.setattr(regularizer, "SMALL_MAP", small)
    torch.manual_seed(0)
    net, names, fields = load_net(name)
    reg = EqReg(
        net.train(), EqRegConfig(layers=names, fields=fields, group=name, weight=1.0, distance="relative")
    )
    x = torch.randn(2, 3, 12, 12)
    for g in as_group(name).elements():
        _, eq = reg(x, k=g)
        eq.backward()
        assert set(reg.last_terms) == set(names)
        assert max(reg.last_terms.values()) < ZERO**2, (g, reg.last_terms)  # relative d is a squared ratio
    reg.remove()


def test_c4_only_net_is_caught_by_the_flips():
    torch.manual_seed(0)
    net, names, fields = load_net("C4")
    cfg = EqRegConfig(layers=names, fields=fields, group="D4")
    rep = equivariance_error(net, torch.randn(2, 3, 11, 11), cfg, include_output=True)
    for layer, per in rep.per_k.items():
        rotations = [per[g] for g in rep.ks if not g.flip]
        flips = [per[g] for g in rep.ks if g.flip]
        assert max(rotations) < ZERO, (layer, per)  # two C4 fields read as one D4 field: rotations still fit
        assert min(flips) > 0.3, (layer, per)  # but escnn's C4 kernels are not mirror-symmetric


def test_group_c4_is_exactly_what_group_order_4_gives():
    torch.manual_seed(0)
    net, names, fields = load_net("C4")
    x = torch.randn(3, 3, 12, 12)
    cfg = EqRegConfig(layers=names, fields=fields)
    rep = equivariance_error(net, x, cfg, include_output=True)
    assert rep.group == "C4" and rep.ks == [1, 2, 3] and max(rep.values()) < ZERO
    assert equivariance_error(net, x, cfg, group="C4", include_output=True).per_k == rep.per_k
    runs = []
    for kw in (dict(group_order=4), dict(group="C4")):
        net.zero_grad()
        reg = EqReg(
            net.train(), EqRegConfig(layers=names, fields=fields, weight=1.0, distance="fro", seed=2, **kw)
        )
        outs = []
        for _ in range(3):
            out, eq = reg(x)
            (out.pow(2).mean() + eq).backward()
            outs.append((reg.last_k, eq.detach(), dict(reg.last_terms)))
        reg.remove()
        runs.append((outs, [p.grad.clone() for p in net.parameters()]))
    (o1, g1), (o2, g2) = runs
    assert [k for k, _, _ in o1] == [k for k, _, _ in o2] and all(isinstance(k, int) for k, _, _ in o1)
    assert all(torch.equal(a[1], b[1]) and a[2] == b[2] for a, b in zip(o1, o2))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
