"""The open sets of core: distances and group families are registries (one class + one line to add one)."""

import dataclasses

import pytest
import torch
from torch import nn

from eqreg_hf import (
    EqReg,
    EqRegConfig,
    equivariance_distance,
    equivariance_error,
    rotate_features,
    rotate_image,
)
from eqreg_hf.core import regularizer
from eqreg_hf.core.distances import DISTANCES, Distance, get_distance, register_distance
from eqreg_hf.core.groups import GROUPS, Cyclic, Dihedral, Group, as_group, register_group


class Squared(Distance):
    """A toy distance: the squared Frobenius norm (value and gradient factors only)."""

    name = "toy-squared"

    def value(self, sq, n, norms, eps):
        return sq

    def factors(self, grad, value, n, norms, eps):
        return 2 * grad, 2 * grad


@pytest.fixture
def toy_distance():
    register_distance(Squared())
    yield "toy-squared"
    del DISTANCES["toy-squared"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: get_distance("l1"),
        lambda: EqRegConfig(distance="l1"),
        lambda: equivariance_distance(torch.ones(2), torch.zeros(2), "l1"),
    ],
)
def test_an_unknown_distance_names_the_registered_ones(make):
    with pytest.raises(ValueError, match=r"'l1'.*\['fro', 'mse', 'relative'\].*register_distance"):
        make()


def test_a_distance_name_is_registered_once():
    with pytest.raises(ValueError, match="'fro' is already registered"):
        register_distance(DISTANCES["fro"])


@pytest.mark.parametrize("small_map", [1 << 16, 0])  # the batched small-map path, the exact per-map path
@pytest.mark.parametrize("group", ["C4", "D4"])
def test_a_registered_toy_distance_works_end_to_end(toy_distance, small_map, group, monkeypatch):
    monkeypatch.setattr(regularizer, "SMALL_MAP", small_map)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).train()
    cfg = EqRegConfig(layers=["0"], group=group, weight=0.5, distance=toy_distance)
    assert EqRegConfig.from_dict(cfg.to_dict()).distance == toy_distance  # the name is stored (JSON)
    x = torch.randn(2, 3, 9, 9)
    k = (1, 1) if group == "D4" else 1
    with EqReg(net, cfg) as reg:
        _, eq = reg(x, k=k)
        (ours,) = torch.autograd.grad(eq, net[0].weight)
    f = net[0](torch.cat([x, rotate_image(x, k, group)]))
    expected = 0.5 * (rotate_features(f[:2], k, group) - f[2:]).pow(2).sum()
    (theirs,) = torch.autograd.grad(expected, net[0].weight)
    assert float(eq.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6)


class ZFamily(Cyclic):
    """A toy family: ``Z<t>``, the rotation group under another name (one class + one line)."""

    prefix = "Z"
    form = "'Z<t>' (C_t under another name)"


@pytest.fixture
def toy_family():
    register_group(ZFamily)
    yield "Z4"
    del GROUPS["Z"]


@pytest.mark.parametrize("make", [lambda: as_group("X4"), lambda: EqRegConfig(group="X4")])
def test_an_unknown_group_family_names_the_registered_ones(make):
    with pytest.raises(ValueError, match=r"'X' is not registered.*register_group.*\['C', 'D'\]"):
        make()


def test_a_group_family_prefix_is_registered_once():
    with pytest.raises(ValueError, match="'C' is already registered"):
        register_group(Cyclic)


def test_a_registered_toy_family_works_end_to_end(toy_family):
    cfg = EqRegConfig(layers=["0", "2"], group=toy_family, weight=1.0, seed=3)
    assert cfg.group_spec == ZFamily(4) and cfg.group_spec.size == 4 and cfg.group == "Z4"
    assert EqRegConfig.from_dict(cfg.to_dict()) == cfg
    losses = []
    for group in (toy_family, "C4"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).train()
        with EqReg(net, dataclasses.replace(cfg, group=group)) as reg:
            _, eq = reg(torch.randn(2, 3, 9, 9))
            losses.append((reg.last_k, float(eq.detach())))
        report = equivariance_error(net, torch.randn(1, 3, 9, 9), group=group, layers=["0"])
        losses.append((report.group, report.ks, round(report.mean, 5)))
    assert losses[0] == losses[2] and losses[1][1:] == losses[3][1:] and losses[1][0] == "Z4"


def test_group_keeps_its_old_constructor_and_field():
    assert Group(True, 4) == Dihedral(4) == as_group("D4") and Group(False, 2) == as_group(2)
    assert as_group("D4").dihedral and not as_group("C4").dihedral
