import math

import pytest
import torch

from eqreg_hf.core.groups import (
    _rotate_interp,
    is_exact,
    rotate_features,
    rotate_image,
    rotation_mask,
    sample_k,
    shift_channels,
    swaps_hw,
)
from eqreg_hf.core.layouts import from_nchw, to_nchw

SIZES = [(7, 7), (8, 8), (5, 9), (6, 4)]
ORDERS = [1, 2, 3, 4, 6, 8]


@pytest.mark.parametrize("t", [1, 2, 4])
@pytest.mark.parametrize("hw", SIZES)
def test_exact_orders_are_rot90(t, hw):
    x = torch.randn(2, 3, *hw)
    for k in range(-t, 2 * t):
        assert torch.equal(rotate_image(x, k, t), torch.rot90(x, (k % t) * 4 // t, dims=(-2, -1)))


def test_interpolated_direction_matches_rot90():
    # The grid_sample path at 90° must agree with rot90: pins counter-clockwise for both paths.
    for hw in [(7, 7), (6, 6)]:
        x = torch.randn(1, 2, *hw)
        assert torch.allclose(
            _rotate_interp(x, math.pi / 2, "bilinear"), torch.rot90(x, 1, (-2, -1)), atol=1e-5
        )
        assert torch.allclose(
            _rotate_interp(x, -math.pi / 2, "bilinear"), torch.rot90(x, -1, (-2, -1)), atol=1e-5
        )


@pytest.mark.parametrize("t", ORDERS)
def test_identity(t):
    f = torch.randn(2, 2 * t, 9, 9)
    assert torch.equal(rotate_image(f, 0, t), f)
    assert torch.equal(rotate_features(f, t, t), f)


def _smooth(h, w, c=2):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([torch.exp(-((xx - 0.2 * i) ** 2 + (yy + 0.1) ** 2) * 3) for i in range(c)]).unsqueeze(
        0
    )


@pytest.mark.parametrize("t", ORDERS)
@pytest.mark.parametrize("field", ["regular", "trivial"])
def test_composition_and_inverse(t, field):
    f = _smooth(33, 33, 2 * t) if t > 1 else _smooth(33, 33, 2)
    mask = rotation_mask(33, 33, margin=2.0)
    for a in range(t):
        for b in range(t):
            lhs = rotate_features(rotate_features(f, b, t, field), a, t, field)
            rhs = rotate_features(f, (a + b) % t, t, field)
            exact = is_exact(a, t) and is_exact(b, t)
            tol = 0 if exact else 2e-2  # bilinear resampling of a smooth map
            assert (lhs - rhs).mul(mask).abs().max() <= tol + 1e-6, (a, b)
        inv = rotate_features(rotate_features(f, a, t, field), -a, t, field)
        assert (inv - f).mul(mask).abs().max() <= (0 if is_exact(a, t) else 2e-2) + 1e-6


@pytest.mark.parametrize("t", ORDERS)
def test_channel_shift_is_field_major_roll(t):
    n = 3
    f = torch.arange(n * t, dtype=torch.float32).view(1, n * t, 1, 1)
    g = shift_channels(f, 1, t).flatten().tolist()
    # channel c = i*t + j; after T_1 the slot j holds what was at j-1 (roll by +1 along the group axis)
    for i in range(n):
        for j in range(t):
            assert g[i * t + j] == i * t + (j - 1) % t


@pytest.mark.parametrize("hw", SIZES)
def test_regular_action_on_nchw_equals_design_formula(hw):
    f = torch.randn(2, 12, *hw)
    for k in range(4):
        b, c, h, w = f.shape
        ref = torch.rot90(f.view(b, c // 4, 4, h, w).roll(k, dims=2).view(b, c, h, w), k, (-2, -1))
        assert torch.equal(rotate_features(f, k, 4), ref)


def test_channels_not_divisible_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        rotate_features(torch.randn(1, 6, 5, 5), 1, 4)
    with pytest.raises(ValueError, match="regular"):
        rotate_features(torch.randn(1, 8, 5, 5), 1, 4, field="bogus")


@pytest.mark.parametrize("layout", ["nchw", "nhwc", "tokens"])
def test_layouts_round_trip_and_rotate_consistently(layout):
    b, c, h, w = 2, 8, 4, 6
    f = torch.randn(b, c, h, w)
    prefix = torch.randn(b, 2, c)
    if layout == "nchw":
        raw = f
    elif layout == "nhwc":
        raw = f.permute(0, 2, 3, 1)
    else:
        raw = torch.cat([prefix, f.permute(0, 2, 3, 1).reshape(b, h * w, c)], 1)
    g = to_nchw(raw, layout, prefix_tokens=2, grid=(h, w))
    assert torch.equal(g, f)
    back = from_nchw(g, layout, prefix if layout == "tokens" else None)
    assert torch.equal(back, raw)


def test_tokens_grid_mismatch_is_explained():
    with pytest.raises(ValueError, match="prefix_tokens"):
        to_nchw(torch.randn(1, 10, 4), "tokens", prefix_tokens=0, grid=(3, 3))


def test_rotation_mask_is_inscribed_disk():
    m = rotation_mask(9, 13)
    assert m[4, 6] == 1 and m[0, 0] == 0 and m[4, 0] == 0 and m[0, 6] == 1
    assert torch.equal(m, m.flip(0)) and torch.equal(m, m.flip(1))


def test_sampler_reproducible_and_identity_option():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = [sample_k(4, g1) for _ in range(50)]
    assert a == [sample_k(4, g2) for _ in range(50)]
    assert set(a) == {1, 2, 3}
    g = torch.Generator().manual_seed(0)
    assert set(sample_k(4, g, include_identity=True) for _ in range(200)) == {0, 1, 2, 3}


def test_interpolated_rotation_is_differentiable():
    x = torch.randn(1, 2, 9, 9, requires_grad=True)
    rotate_image(x, 1, 8).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "t, k, swaps",
    [
        (4, 1, True),
        (4, 2, False),
        (4, 3, True),
        (4, -1, True),
        (2, 1, False),
        (8, 2, True),
        (8, 1, False),
        (8, 4, False),
        (1, 0, False),
    ],
)
def test_swaps_hw_matches_what_rotation_does(t, k, swaps):
    x = torch.randn(1, 1, 3, 5)
    assert swaps_hw(k, t) is swaps
    if is_exact(k, t):
        assert (rotate_image(x, k, t).shape[-2:] == (5, 3)) is swaps
