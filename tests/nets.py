"""Tiny networks for the tests: an exactly C_t-equivariant one (t in {2, 4}) and ordinary ones.

The equivariant net is built by hand, the textbook way: a lifting convolution whose output field
(i, j) uses the kernel of field i rotated j steps, then group convolutions whose kernel for
output (i, j) is the base kernel rotated j steps with its input group axis rolled by j. Channels are
field-major (c = i*t + j), as in docs/design.md; with T_k = roll(+k) then rotate, T_k F(x) = F(R_k x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _rot(w: torch.Tensor, j: int, t: int) -> torch.Tensor:
    return torch.rot90(w, j * 4 // t, dims=(-2, -1))


class LiftingConv(nn.Module):
    def __init__(self, c_in: int, fields: int, t: int = 4, k: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.t, self.stride, self.padding, self.kernel_size = t, stride, padding, k
        self.weight = nn.Parameter(torch.randn(fields, c_in, k, k) / (c_in * k * k) ** 0.5)
        self.bias = nn.Parameter(torch.randn(fields) * 0.1)

    def forward(self, x):
        w = torch.stack([_rot(self.weight, j, self.t) for j in range(self.t)], dim=1)  # [n, t, c, k, k]
        w = w.flatten(0, 1)
        b = self.bias.repeat_interleave(self.t)
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding)


class GroupConv(nn.Module):
    def __init__(
        self, fields_in: int, fields_out: int, t: int = 4, k: int = 3, stride: int = 1, padding: int = 1
    ):
        super().__init__()
        self.t, self.stride, self.padding, self.kernel_size = t, stride, padding, k
        self.weight = nn.Parameter(
            torch.randn(fields_out, fields_in, t, k, k) / (fields_in * t * k * k) ** 0.5
        )
        self.bias = nn.Parameter(torch.randn(fields_out) * 0.1)

    def forward(self, x):
        t = self.t
        # output (i, j): input group axis rolled by j, kernel rotated j steps
        w = torch.stack(
            [_rot(self.weight.roll(j, dims=2), j, t) for j in range(t)], dim=1
        )  # [n, t, m, t, k, k]
        w = w.flatten(0, 1).flatten(1, 2)
        b = self.bias.repeat_interleave(t)
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding)


class GroupPool(nn.Module):
    """Mean over the group axis: a regular map becomes a trivial (rotation-only) map."""

    def __init__(self, t: int = 4):
        super().__init__()
        self.t = t

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, c // self.t, self.t, h, w).mean(2)


class ExactC4Net(nn.Module):
    """lift -> relu -> gconv -> relu -> gconv(stride) -> relu -> group pool -> 1x1 conv (trivial)."""

    def __init__(self, t: int = 4, fields: int = 3, stride: int = 1, c_in: int = 3):
        super().__init__()
        self.lift = LiftingConv(c_in, fields, t)
        self.act1 = nn.ReLU()
        self.g1 = GroupConv(fields, fields, t)
        self.act2 = nn.ReLU()
        self.g2 = GroupConv(fields, fields, t, stride=stride)
        self.act3 = nn.ReLU()
        self.pool = GroupPool(t)
        self.head = nn.Conv2d(fields, 3, 1)

    def forward(self, x):
        return self.head(self.pool(self.act3(self.g2(self.act2(self.g1(self.act1(self.lift(x))))))))


REGULAR_TAPS = ["lift", "act1", "g1", "act2", "g2", "act3"]
TRIVIAL_TAPS = ["pool", "head"]


class PlainCNN(nn.Module):
    def __init__(self, width: int = 8, inplace: bool = False, bn: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width) if bn else nn.Identity(),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def forward(self, x):
        return x - self.body(x)


def check_exact_distance_against_autograd(shape, elements, group, field, layout, distance, grad_tolerance):
    """``ExactDistance`` (hand-written backward) against autograd through ``transform_feature`` and
    ``equivariance_distance``, for each element: the value within rtol 1e-5, both gradients within
    ``grad_tolerance(reference_gradient) -> (rtol, atol)``."""
    from eqreg_hf import equivariance_distance
    from eqreg_hf.core.distance import ExactDistance, ExactSpec
    from eqreg_hf.core.layouts import transform_feature

    torch.manual_seed(0)
    fa = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    fb = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    for g in elements:
        ours = ExactDistance.apply(fa, fb, ExactSpec(lambda f, i: f, g, 4, field, layout, distance))
        ref = equivariance_distance(transform_feature(fa, g, group, field, layout, "nearest"), fb, distance)
        assert torch.allclose(ours.double(), ref.double(), rtol=1e-5), g
        g1 = torch.autograd.grad(ours * 1.7, (fa, fb))
        g2 = torch.autograd.grad(ref * 1.7, (fa, fb))
        for x, y in zip(g1, g2):
            rtol, atol = grad_tolerance(y)
            assert torch.allclose(x.double(), y.double(), rtol=rtol, atol=atol), g
