"""distance="fro" reproduces the paper's loss on a network built the way its reference code builds one.

The reference implementation swaps each convolution of the main blocks for a wrapper that, during the
forward of the stacked batch [x; R_k x] (one k for the whole batch), computes
||T_k conv(x) - conv(R_k x)||_F on the conv's own output (before norm / activation) and stores it; the
training loss adds λ times the sum of the stored values. We rebuild such a network here (our own code,
from the paper's description) and compare with EqReg attached from the outside to a plain twin.
"""

import copy

import pytest
import torch
from torch import nn

from eqreg_hf import EqReg, EqRegConfig, rotate_features, rotate_image


class PaperStyleConv(nn.Module):
    """A conv that records its own equivariance loss when it sees a stacked batch."""

    def __init__(self, conv: nn.Conv2d, t: int):
        super().__init__()
        self.conv, self.t = conv, t
        self.k = None
        self.stored = None

    def forward(self, x):
        y = self.conv(x)
        if self.k is not None:
            b = y.shape[0] // 2
            self.stored = torch.norm(rotate_features(y[:b], self.k, self.t) - y[b:])  # Frobenius, not squared
        return y


def block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(block(3, 16), block(16, 16), block(16, 16))
        self.tail = nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x):
        return x - self.tail(self.body(x))


@pytest.mark.parametrize("t, k", [(4, 1), (4, 2), (4, 3), (2, 1)])
@pytest.mark.parametrize("hw", [(17, 17), (16, 16)])
def test_fro_equals_the_paper_style_loss(t, k, hw):
    torch.manual_seed(0)
    plain = Net().train()
    paper = copy.deepcopy(plain)
    taps = [f"body.{i}.0" for i in range(3)]
    for i in range(3):
        paper.body[i][0] = PaperStyleConv(paper.body[i][0], t)
    lam = 1e-6
    x = torch.randn(4, 3, *hw)
    y = torch.randn(4, 3, *hw)

    # paper-style: stack, one forward, task loss on both halves (targets rotated), λ Σ stored
    for i in range(3):
        paper.body[i][0].k = k
    xs = torch.cat([x, rotate_image(x, k, t)])
    out_p = paper(xs)
    loss_p = nn.functional.mse_loss(out_p, torch.cat([y, rotate_image(y, k, t)])) + lam * sum(
        paper.body[i][0].stored for i in range(3)
    )
    loss_p.backward()

    reg = EqReg(plain, EqRegConfig(layers=taps, group_order=t, weight=lam, distance="fro"))
    out_o = plain(reg.stack(x, k=k))
    loss_o = nn.functional.mse_loss(out_o, reg.stack_targets(y)) + reg.loss()
    loss_o.backward()

    assert torch.allclose(out_o, out_p, atol=1e-6)
    assert torch.allclose(loss_o, loss_p, rtol=1e-6, atol=1e-9)
    for name in taps:
        i = int(name.split(".")[1])
        assert reg.last_terms[name] == pytest.approx(float(paper.body[i][0].stored.detach()), rel=1e-5)
    # identical gradients everywhere, BatchNorm included (it saw both halves in one batch in both)
    pp = dict(paper.named_parameters())
    for n, p in plain.named_parameters():
        q = pp[
            n.replace(".0.weight", ".0.conv.weight").replace(".0.bias", ".0.conv.bias")
            if n.split(".")[-2] == "0" and n.startswith("body")
            else n
        ]
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-7), n
