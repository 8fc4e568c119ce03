"""The open sets of core: distances and group families are registries (one class + one line to add one)."""

import pytest
import torch
from torch import nn

from eqreg_hf import EqReg, EqRegConfig, equivariance_distance, rotate_features, rotate_image
from eqreg_hf.core import regularizer
from eqreg_hf.core.distances import DISTANCES, Distance, get_distance, register_distance


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
