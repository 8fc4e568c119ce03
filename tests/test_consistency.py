"""Rotation consistency and self-ensembling: exact for equivariant nets, every element undone, refusals."""

import pytest
import torch

from eqreg_hf.core.group_families import as_group
from eqreg_hf.core.groups import compose, is_identity, rotate_image
from eqreg_hf.tasks.consistency import consistency_report, inverse, self_ensemble


@pytest.mark.parametrize("group", ["C2", "C4", "D2", "D4"])
def test_inverse_undoes_every_element(group):
    spec = as_group(group)
    for g in spec.elements(include_identity=True):
        assert is_identity(compose(inverse(g, group), g, spec)), g
        x = torch.rand(1, 1, 5, 5)
        assert torch.equal(rotate_image(rotate_image(x, g, spec), inverse(g, group), spec), x)


def _pairs(n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(3, 10, 10, generator=gen), torch.rand(3, 10, 10, generator=gen)) for _ in range(n)]


def test_an_equivariant_model_is_consistent_and_its_ensemble_changes_nothing():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1)  # a 1x1 conv commutes with every turn and mirror image
    report = consistency_report(net, _pairs(), "D4")
    assert report["output_consistency"] < 1e-6
    assert report["psnr_turned"] == pytest.approx(report["psnr"], abs=1e-4)
    assert report["psnr_ensemble"] == pytest.approx(report["psnr"], abs=1e-4)
    assert report["ensemble_passes"] == 8.0


def test_a_direction_biased_model_is_not_and_the_ensemble_is_consistent():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, (1, 5), padding=(0, 2))  # a horizontal filter: not rotation-equivariant
    assert consistency_report(net, _pairs(), "C4")["output_consistency"] > 0.05
    y = torch.rand(1, 3, 12, 12)
    ens = self_ensemble(net, y, "C4")
    turned = self_ensemble(net, torch.rot90(y, 1, (-2, -1)), "C4")
    assert torch.allclose(turned, torch.rot90(ens, 1, (-2, -1)), atol=1e-5)


def test_model_mode_is_restored_and_bad_input_refused():
    net = torch.nn.Conv2d(3, 3, 1).train()
    consistency_report(net, _pairs(1), "C2")
    assert net.training
    with pytest.raises(ValueError, match="group='C8'.*exact 90° turns only"):
        consistency_report(net, _pairs(1), "C8")
    with pytest.raises(ValueError, match="no \\(degraded, clean\\) pairs"):
        consistency_report(net, [], "C4")
