"""deepinv's equivariant-imaging loss as the output-level baseline: its transforms are the exact group,
and the loss is ~0 for an exactly equivariant perfect reconstructor, > 0 for a non-equivariant one."""

from __future__ import annotations

import doctest
import importlib
from types import SimpleNamespace

import deepinv  # noqa: F401  (a hard dependency: fail, not skip, when it is missing)
import pytest
import torch
from torch import nn

from eqreg_hf.data.restore import Degradation
from eqreg_hf.tasks.restore.baselines import EquivariantImagingLoss, ei_transform


def _d4(x):
    """name -> R x for the 8 elements of D4 (eqreg_hf.core.groups: flip the width axis, then rot90)."""
    return {(f, k): torch.rot90(x.flip(-1) if f else x, k, (-2, -1)) for f in (0, 1) for k in range(4)}


class Masked(nn.Module):
    """A projection ``y -> m * y`` (idempotent): EI sees only whether it commutes with the group."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, y):
        return y * self.mask


def _asymmetric_conv():
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = torch.tensor(
                [[0.0, 0.0, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 0.0]]
            )  # leans right
    return conv


@pytest.mark.parametrize("size", [(7, 7), (8, 8), (6, 8), (5, 9)])
def test_deepinv_quarter_turns_and_reflection_are_exact(size):
    from deepinv.transform import Reflect, Rotate

    x = torch.rand(2, 3, *size)
    rotate = Rotate(multiples=90.0, positive=True, n_trans=1, constant_shape=False)
    for k in range(4):
        assert torch.equal(rotate.transform(x, theta=[90.0 * k]), torch.rot90(x, k, (-2, -1)))
    reflect = Reflect(dim=[-1], n_trans=1)
    assert torch.equal(reflect.transform(x, dims=torch.tensor([[-1.0]])), x.flip(-1))


@pytest.mark.parametrize("group,size", [("C2", 2), ("C4", 4), ("D2", 4), ("D4", 8)])
def test_the_transform_draws_every_element_of_its_group_and_nothing_else(group, size):
    x = torch.rand(1, 1, 5, 5)
    elements = _d4(x)
    transform = ei_transform(group, seed=0)
    seen = set()
    for _ in range(80):
        y = transform(x)
        match = [g for g, t in elements.items() if t.shape == y.shape and torch.equal(t, y)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == size and (group[0] == "D" or all(f == 0 for f, _ in seen))
    assert all(k % (4 // int(group[1])) == 0 for _, k in seen)  # C2 / D2: half turns only


def test_identity_on_noise_free_denoising_gives_zero_and_a_gradient_path():
    model = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3)[:, :, None, None])
    loss_fn = EquivariantImagingLoss(model, Degradation("denoise", sigma=0.0), group="D4", weight=1.0)
    clean = torch.rand(2, 3, 12, 12)
    loss = loss_fn(model(clean), clean)
    assert torch.isfinite(loss) and float(loss.detach()) < 1e-10 and float(loss_fn.last["ei"]) < 1e-10
    loss.backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()


def test_ei_term_separates_equivariant_from_non_equivariant_projections():
    """Both models are projections (f(A(f y)) = f y whatever the group does); only the asymmetric one pays."""
    clean = torch.rand(2, 3, 8, 8)
    centre = torch.zeros(1, 1, 8, 8)
    centre[..., 2:6, 2:6] = 1  # D4-symmetric
    left = torch.zeros(1, 1, 8, 8)
    left[..., :, :4] = 1  # not even C2-symmetric
    deg = Degradation("denoise", sigma=0.0)
    for mask, expect_zero in ((centre, True), (left, False)):
        model = Masked(mask)
        loss_fn = EquivariantImagingLoss(model, deg, group="C4", seed=1)
        terms = [float((loss_fn(model(clean), clean), loss_fn.last["ei"])[1]) for _ in range(8)]
        assert (max(terms) < 1e-12) if expect_zero else (max(terms) > 1e-2), terms


def test_asymmetric_conv_pays_and_gets_a_gradient():
    conv = _asymmetric_conv()
    deg = Degradation("denoise", sigma=0.1)
    clean = torch.rand(2, 3, 16, 16)
    loss_fn = EquivariantImagingLoss(conv, deg, group="C4", weight=1.0, seed=0)
    torch.manual_seed(0)
    loss = loss_fn(conv(deg(clean, torch.Generator().manual_seed(0))), clean)
    assert torch.isfinite(loss) and float(loss_fn.last["ei"]) > 0
    loss.backward()
    assert conv.weight.grad.abs().sum() > 0


def test_inpainting_and_sr_with_a_swin2sr_like_output():
    class Up(nn.Module):  # returns a ModelOutput-like object, like Swin2SRForImageSuperResolution
        def __init__(self, scale):
            super().__init__()
            self.conv, self.scale = nn.Conv2d(3, 3, 3, padding=1), scale

        def forward(self, y):
            up = nn.functional.interpolate(y, scale_factor=self.scale, mode="bicubic", align_corners=False)
            return SimpleNamespace(reconstruction=self.conv(up))

    clean = torch.rand(2, 3, 12, 12)
    for deg, model in ((Degradation("inpaint", sigma=0.02), Up(1)), (Degradation("sr", scale=3), Up(3))):
        loss_fn = EquivariantImagingLoss(model, deg, group="D4", weight=0.5)
        loss = loss_fn(model(deg(clean)), clean)
        assert torch.isfinite(loss) and float(loss_fn.last["ei"]) > 0
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(
        ValueError, match=r"output \(2, 3, 4, 4\) does not match.*\(2, 3, 12, 12\).*scale \(3\)"
    ):
        loss_fn(torch.rand(2, 3, 4, 4), clean)


def test_replays_from_its_seed_and_weight_zero_is_plain_mse():
    conv = _asymmetric_conv()
    deg = Degradation("denoise", sigma=0.0)  # no noise: the transforms are the only randomness
    clean = torch.rand(1, 3, 8, 8)
    out = conv(clean)
    runs = [
        [float(f(out, clean).detach()) for _ in range(6)]
        for f in (
            EquivariantImagingLoss(conv, deg, seed=4),
            EquivariantImagingLoss(conv, deg, seed=4),
            EquivariantImagingLoss(conv, deg, seed=5),
        )
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    plain = EquivariantImagingLoss(conv, deg, weight=0)
    assert torch.equal(plain(out, clean), nn.functional.mse_loss(out, clean))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(group="C8"), r"group='C8'.*\('C2', 'C4', 'D2', 'D4'\)"),
        (dict(weight=-1.0), r"weight=-1.0.*>= 0"),
        (dict(weight=float("inf")), r"weight=inf"),
        (dict(weight=True), r"weight=True"),
        (dict(degradation="denoise"), r"degradation='denoise' is not a Degradation"),
        (dict(model=3), r"model=3 is not callable"),
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs, match):
    args = dict(model=nn.Identity(), degradation=Degradation())
    args.update({k: kwargs.pop(k) for k in ("model", "degradation") if k in kwargs})
    with pytest.raises(ValueError, match=match) as err:
        EquivariantImagingLoss(args["model"], args["degradation"], **kwargs)
    assert "\n" not in str(err.value)


def test_docstring_examples():
    result = doctest.testmod(
        importlib.import_module("eqreg_hf.tasks.restore.baselines"), extraglobs={"torch": torch}
    )
    assert result.failed == 0 and result.attempted > 0
