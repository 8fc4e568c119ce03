import warnings

import pytest
import torch
from nets import REGULAR_TAPS, TRIVIAL_TAPS, ExactC4Net, PlainCNN, check_exact_distance_against_autograd
from torch import nn

from eqreg_hf import (
    EqReg,
    EqRegAlignmentWarning,
    EqRegConfig,
    equivariance_distance,
    rotate_features,
)
from eqreg_hf.core import regularizer

FIELDS = {n: "trivial" for n in TRIVIAL_TAPS}
ALL_TAPS = REGULAR_TAPS + TRIVIAL_TAPS


def _reg(net, **kw):
    kw.setdefault("layers", ALL_TAPS)
    kw.setdefault("fields", FIELDS)
    kw.setdefault("weight", 1.0)
    return EqReg(net, EqRegConfig(**kw))


@pytest.mark.parametrize("t", [2, 4])
@pytest.mark.parametrize("hw", [(9, 9), (8, 8), (7, 11)])
@pytest.mark.parametrize("distance", ["fro", "mse", "relative"])
def test_zero_on_exactly_equivariant_net(t, hw, distance):
    torch.manual_seed(0)
    net = ExactC4Net(t=t).train()
    reg = _reg(net, group_order=t, distance=distance)
    x = torch.randn(3, 3, *hw)
    ks = range(1, t) if hw[0] == hw[1] else ([1, 2, 3] if t == 4 else [1])  # non-square: two-pass for 90°
    for k in ks:
        out, eq = reg(x, k=k)
        assert set(reg.last_terms) == set(ALL_TAPS)
        for name, d in reg.last_terms.items():
            if distance == "relative":
                assert d <= 1e-6 * 2, (name, d)
            else:  # scale-dependent: compare with the size of the map itself
                assert d <= 1e-6 * max(1.0, _scale(net, x, name, distance)), (name, d)
    reg.remove()


def _scale(net, x, name, distance):
    feats = {}
    h = dict(net.named_modules())[name].register_forward_hook(lambda m, a, o: feats.setdefault("f", o))
    with torch.no_grad():
        net(x)
    h.remove()
    f = feats["f"]
    return float(f.norm()) if distance == "fro" else float(f.pow(2).mean())


@pytest.mark.parametrize("distance", ["fro", "mse", "relative"])
def test_clearly_positive_on_ordinary_cnn(distance):
    torch.manual_seed(0)
    net = PlainCNN().train()
    reg = EqReg(net, EqRegConfig(layers=["body.0", "body.3"], distance=distance, weight=1.0))
    _, eq = reg(torch.randn(2, 3, 9, 9), k=1)
    assert all(v > 1e-3 for v in reg.last_terms.values())
    if distance == "relative":
        assert all(v > 0.3 for v in reg.last_terms.values())
    assert eq.item() > 0


def test_fro_is_the_papers_loss_computed_directly():
    torch.manual_seed(0)
    net = PlainCNN().train()
    taps = ["body.0", "body.3"]
    lam = 1e-3
    reg = EqReg(net, EqRegConfig(layers=taps, distance="fro", weight=lam))
    x = torch.randn(4, 3, 9, 9)
    k = 3
    _, eq = reg(x, k=k)
    # Direct: one forward of the original and one of the rotated batch, Σ_l ||T_k F_l(x) - F_l(R_k x)||_F.
    reg.remove()
    feats = {}
    hooks = [
        dict(net.named_modules())[n].register_forward_hook(
            lambda m, a, o, n=n: feats.setdefault(n, []).append(o)
        )
        for n in taps
    ]
    with torch.no_grad():
        net(x)
        net(torch.rot90(x, k, (-2, -1)))
    for h in hooks:
        h.remove()
    direct = sum(torch.linalg.vector_norm(rotate_features(feats[n][0], k, 4) - feats[n][1]) for n in taps)
    assert torch.allclose(eq, lam * direct, rtol=1e-5)


def test_gradients_reach_parameters():
    net = PlainCNN().train()
    reg = EqReg(net, EqRegConfig(layers="auto", weight=1.0))
    _, eq = reg(torch.randn(2, 3, 9, 9), k=1)
    eq.backward()
    grads = [p.grad for p in net.body[0].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_identity_element_gives_zero_and_no_extra_pass():
    net = PlainCNN().train()
    reg = EqReg(net, EqRegConfig(layers="auto", weight=1.0, include_identity=True))
    x = torch.randn(2, 3, 9, 9)
    out, eq = reg(x, k=0)
    assert out.shape[0] == 2 and eq.item() == 0.0 and reg.last_terms == {}


@pytest.mark.parametrize("off", [dict(weight=0.0), dict(group_order=1), "eval"])
def test_off_means_identity(off):
    net = PlainCNN().train()
    kw = dict(layers="auto", weight=1.0)
    if isinstance(off, dict):
        kw.update(off)
    reg = EqReg(net, EqRegConfig(**kw))
    if off == "eval":
        net.eval()
    calls = []
    net.body[0].register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 9, 9)
    assert reg.stack(x) is x
    out, eq = reg(x)
    assert out.shape[0] == 2 and eq.item() == 0.0 and len(calls) == 1
    assert reg.stack_targets(torch.tensor([1, 2])).tolist() == [1, 2]


@pytest.mark.parametrize("fraction, expected", [(1.0, 4), (0.5, 2), (0.25, 1), (0.1, 1)])
def test_rotated_fraction(fraction, expected):
    net = PlainCNN().train()
    reg = EqReg(net, EqRegConfig(layers="auto", weight=1.0, rotated_fraction=fraction))
    x = torch.randn(4, 3, 9, 9)
    xs = reg.stack(x, k=1)
    assert xs.shape[0] == 4 + expected and reg.last_rotated == expected
    assert torch.equal(xs[4:], torch.rot90(x[:expected], 1, (-2, -1)))
    y_img, y_lab = torch.randn(4, 3, 9, 9), torch.arange(4)
    assert torch.equal(reg.stack_targets(y_img)[4:], torch.rot90(y_img[:expected], 1, (-2, -1)))
    assert reg.stack_targets(y_lab).tolist() == [0, 1, 2, 3] + list(range(expected))
    net(xs)
    eq = reg.loss()
    assert eq.item() > 0
    first, rotated = reg.split(net(x))
    assert first.shape[0] == 4


def test_channel_count_not_divisible_is_refused_with_the_ways_out():
    net = PlainCNN(width=6).train()
    reg = EqReg(net, EqRegConfig(layers=["body.0"], weight=1.0))
    with pytest.raises(ValueError) as err:
        reg(torch.randn(1, 3, 9, 9), k=1)
    msg = str(err.value)
    assert "body.0" in msg and "6 channels" in msg and "group_order=4" in msg and "trivial" in msg
    # The same layer is fine as a trivial field.
    reg.remove()
    reg = EqReg(net, EqRegConfig(layers=["body.0"], weight=1.0, fields="trivial"))
    reg(torch.randn(1, 3, 9, 9), k=1)
    assert reg.last_terms["body.0"] > 0


def test_bf16_autocast_gives_float32_loss():
    torch.manual_seed(0)
    net = ExactC4Net().train()
    reg = _reg(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, eq = reg(torch.randn(2, 3, 9, 9), k=1)
    assert eq.dtype == torch.float32
    # bf16 features are exact-equivariant only up to bf16 rounding
    assert max(reg.last_terms.values()) < 1e-2
    eq.backward()


def test_sampler_is_seeded_and_resumable():
    net = PlainCNN().train()
    a = EqReg(net, EqRegConfig(layers="auto", seed=5))
    b = EqReg(net, EqRegConfig(layers="auto", seed=5))
    ks_a = [a.sample_k() for _ in range(20)]
    assert ks_a == [b.sample_k() for _ in range(20)]
    state = a.state_dict()
    nxt = [a.sample_k() for _ in range(10)]
    b.load_state_dict(state)
    assert [b.sample_k() for _ in range(10)] == nxt
    a.remove(), b.remove()


def test_non_square_sampling_keeps_the_shape():
    net = ExactC4Net().train()
    reg = _reg(net)
    with pytest.warns(UserWarning, match="non-square"):
        xs = reg.stack(torch.randn(2, 3, 7, 11))
    assert reg.last_k == 2 and xs.shape == (4, 3, 7, 11)
    net(xs)
    assert reg.loss().item() < 1e-5
    with pytest.raises(ValueError, match="two passes"):
        reg.stack(torch.randn(2, 3, 7, 11), k=1)


def test_two_pass_outputs_for_non_square_quarter_turn():
    net = ExactC4Net().train()
    reg = _reg(net)
    x = torch.randn(2, 3, 7, 11)
    (out_x, out_r), eq = reg(x, k=1)
    assert out_x.shape[-2:] == (7, 11) and out_r.shape[-2:] == (11, 7)
    assert torch.allclose(torch.rot90(out_x, 1, (-2, -1)), out_r, atol=1e-5)
    assert reg.split((out_x, out_r))[1] is out_r


@pytest.mark.parametrize("t", [8, 6])
def test_interpolated_orders_are_small_on_exact_c4_net_at_quarter_turns_and_masked(t):
    net = ExactC4Net().train()
    reg = _reg(net, group_order=t, layers=REGULAR_TAPS[:1] + TRIVIAL_TAPS, fields="trivial")
    x = torch.randn(2, 3, 17, 17)
    reg(x, k=1)
    assert all(v == v and v < 1.5 for v in reg.last_terms.values())  # finite, masked


def test_alignment_exact_at_aligned_size_and_warns_at_misaligned():
    torch.manual_seed(0)
    net = ExactC4Net(stride=2).train()
    reg = _reg(net, distance="relative")
    with warnings.catch_warnings():
        warnings.simplefilter("error", EqRegAlignmentWarning)
        reg(torch.randn(2, 3, 9, 9), k=1)
    assert max(reg.last_terms.values()) < 1e-6
    with pytest.warns(EqRegAlignmentWarning, match=r"8x8.*'g2'.*nearest aligned input size (7x7|9x9)"):
        reg(torch.randn(2, 3, 8, 8), k=1)
    assert reg.last_terms["g2"] > 0.01
    with warnings.catch_warnings():  # warned once per input size
        warnings.simplefilter("error", EqRegAlignmentWarning)
        reg(torch.randn(2, 3, 8, 8), k=1)


def test_alignment_for_a_plain_strided_conv_stack():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
    ).train()
    reg = EqReg(net, EqRegConfig(layers=["2"], weight=1.0))
    with pytest.warns(EqRegAlignmentWarning, match="nearest aligned input size (29x29|33x33)"):
        reg(torch.randn(1, 3, 32, 32), k=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EqRegAlignmentWarning)
        reg(torch.randn(1, 3, 33, 33), k=1)


def test_token_layout_with_prefix_tokens():
    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, 8, 4, stride=4)
            self.cls = nn.Parameter(torch.zeros(1, 1, 8))
            self.block = nn.Identity()

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            return self.block(torch.cat([self.cls.expand(len(t), -1, -1), t], 1))

    net = TinyViT().train()
    reg = EqReg(net, EqRegConfig(layers=["block"], weight=1.0, fields="trivial"))
    _, eq = reg(torch.randn(2, 3, 16, 16), k=1)
    assert reg.last_terms["block"] > 0
    # with a rotation-invariant patch kernel the patch grid rotates exactly
    with torch.no_grad():
        net.patch.weight.copy_(net.patch.weight.mean(dim=(-1, -2), keepdim=True).expand_as(net.patch.weight))
    reg(torch.randn(2, 3, 16, 16), k=1)
    assert reg.last_terms["block"] < 1e-10


def test_distance_function_values():
    a, b = torch.ones(2, 4, 3, 3), torch.zeros(2, 4, 3, 3)
    assert equivariance_distance(a, b, "fro").item() == pytest.approx(72**0.5)
    assert equivariance_distance(a, b, "mse").item() == pytest.approx(1.0)
    assert equivariance_distance(a, b, "relative").item() == pytest.approx(1.0, rel=1e-6)
    mask = torch.zeros(3, 3)
    mask[1, 1] = 1
    assert equivariance_distance(a, b, "mse", mask).item() == pytest.approx(1.0)
    assert equivariance_distance(a, b, "fro", mask).item() == pytest.approx(8**0.5)


@pytest.mark.parametrize("distance", ["fro", "mse", "relative"])
@pytest.mark.parametrize("field", ["regular", "trivial"])
@pytest.mark.parametrize("layout", ["nchw", "vector"])
def test_hand_written_backward_matches_autograd(distance, field, layout):
    check_exact_distance_against_autograd(
        (3, 8, 5, 5) if layout == "nchw" else (3, 8),
        (1, 2, 3),
        4,
        field,
        layout,
        distance,
        lambda y: (1e-4, 1e-7),
    )


@pytest.mark.parametrize("distance", ["fro", "mse", "relative"])
@pytest.mark.parametrize("layout", ["nchw", "tokens"])
def test_one_gradient_buffer_for_both_halves_of_a_stacked_map(distance, layout):
    # b = 3 originals, m = 2 rotated copies stacked behind them: rows 2 (not rotated) and, for
    # tokens, the class token get no gradient; the rest matches autograd through slicing.
    from eqreg_hf.core.distance import ExactDistance as _ExactDistance
    from eqreg_hf.core.distance import ExactSpec
    from eqreg_hf.core.layouts import to_nchw, transform_feature

    torch.manual_seed(0)
    shape = (5, 8, 4, 4) if layout == "nchw" else (5, 17, 8)
    f = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    view = (lambda x: x) if layout == "nchw" else (lambda x: to_nchw(x, "tokens", 1, (4, 4)))

    def pick(x, i):
        return view(x[:2] if i == 0 else x[3:5])

    for k in (1, 2, 3):
        ours = _ExactDistance.apply(f, None, ExactSpec(pick, k, 4, "regular", "nchw", distance))
        ref = equivariance_distance(
            transform_feature(pick(f, 0), k, 4, "regular", "nchw", "nearest"), pick(f, 1), distance
        )
        assert torch.allclose(ours.double(), ref.double(), rtol=1e-5)
        (g1,) = torch.autograd.grad(ours * 0.3, f)
        (g2,) = torch.autograd.grad(ref * 0.3, f)
        assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)
        assert g1[2].abs().sum() == 0 and g1[0].abs().sum() > 0


@pytest.mark.parametrize("distance", ["fro", "relative"])
@pytest.mark.parametrize("autocast", [False, True])
def test_recompute_capture_gives_the_same_gradients(distance, autocast, monkeypatch):
    monkeypatch.setattr(regularizer, "SMALL_MAP", 0)  # these maps are small: force the per-map path
    grads = {}
    for capture in ("recompute", "reference", "clone"):
        torch.manual_seed(0)
        net = PlainCNN().train()
        reg = EqReg(
            net, EqRegConfig(layers=["body.0", "body.3"], capture=capture, distance=distance, weight=1.0)
        )
        x = torch.randn(2, 3, 9, 9)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = net(reg.stack(x, k=1))
            loss = out.float().pow(2).mean() + reg.loss()
        if capture == "recompute":
            assert reg._recomputable == {"body.0", "body.3"} and reg._recompute_allowed()
        loss.backward()
        grads[capture] = [p.grad.clone() for p in net.parameters()]
    for other in ("reference", "clone"):
        for g1, g2 in zip(grads["recompute"], grads[other]):
            assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_discard_drops_captures_without_a_loss():
    net = PlainCNN().train()
    reg = EqReg(net, EqRegConfig(layers="auto", weight=1.0))
    net(reg.stack(torch.randn(2, 3, 9, 9), k=1))
    reg.discard()
    assert reg.loss().item() == 0.0 and reg.stack_targets(torch.arange(2)).tolist() == [0, 1]


def test_recompute_matches_forward_autocast_when_loss_is_outside_autocast(monkeypatch):
    monkeypatch.setattr(regularizer, "SMALL_MAP", 0)
    # Accelerate wraps only the forward in autocast; the loss and backward run outside it.
    torch.manual_seed(0)
    net = PlainCNN().train()
    reg = EqReg(net, EqRegConfig(layers=["body.0", "body.3"], weight=1.0, capture="recompute"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(reg.stack(torch.randn(2, 3, 9, 9), k=1))
    loss = out.float().pow(2).mean() + reg.loss()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_alignment_warning_names_a_size_that_suits_every_tap():
    # taps at strides 2 and 4 need different sizes on their own; 33 suits both (and is a real fix).
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1)
    ).train()
    reg = EqReg(net, EqRegConfig(layers=["0", "2"], weight=1.0))
    with pytest.warns(
        EqRegAlignmentWarning, match=r"Crop/pad inputs to (\d+)x\1 \(aligned for every tap\)"
    ) as rec:
        reg(torch.randn(1, 3, 30, 30), k=1)
    size = int(str(rec[0].message).split("Crop/pad inputs to ")[1].split("x")[0])
    reg2 = EqReg(net, EqRegConfig(layers=["0", "2"], weight=1.0, distance="relative"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", EqRegAlignmentWarning)
        reg2(torch.randn(1, 3, size, size), k=1)


def test_live_weight_zero_skips_the_rotated_pass():
    net = PlainCNN().train()
    reg = EqReg(net, EqRegConfig(layers="auto", weight=0.5))
    x = torch.randn(2, 3, 9, 9)
    reg.weight = 0.0  # what a schedule does at its start
    assert reg.stack(x) is x
    reg.weight = 0.5
    assert reg.stack(x, k=1).shape[0] == 4


def test_alignment_sees_both_paths_of_a_residual_block():
    # main path: 3x3 stride-2 conv (aligned at odd sizes); shortcut: 2x2 avg-pool (aligned at even sizes).
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.pool = nn.AvgPool2d(2, ceil_mode=True)
            self.proj = nn.Conv2d(3, 8, 1)
            self.out = nn.Identity()

        def forward(self, x):
            return self.out(self.conv(x) + self.proj(self.pool(x)))

    net = Block().train()
    for size in (32, 33):  # neither size aligns both paths
        reg = EqReg(net, EqRegConfig(layers=["out"], weight=1.0))
        with pytest.warns(EqRegAlignmentWarning, match="'out'"):
            reg(torch.randn(1, 3, size, size), k=1)
        reg.remove()


@pytest.mark.parametrize("distance", ["fro", "mse", "relative"])
@pytest.mark.parametrize("case", ["stacked", "fraction", "two-pass", "bf16"])
def test_batched_small_maps_and_per_map_path_agree(distance, case, monkeypatch):
    # Small maps are compared all at once (autograd), large ones one by one (hand-written backward):
    # the same loss, per-tap terms and parameter gradients either way.
    results = {}
    for small in (1 << 16, 0):
        monkeypatch.setattr(regularizer, "SMALL_MAP", small)
        torch.manual_seed(0)
        net = PlainCNN().train()
        reg = EqReg(
            net,
            EqRegConfig(
                layers=["body.0", "body.2", "body.3"],
                distance=distance,
                weight=1.0,
                rotated_fraction=0.5 if case == "fraction" else 1.0,
            ),
        )
        x = torch.randn(4, 3, 9, 11 if case == "two-pass" else 9)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "bf16"):
            out, eq = reg(x, k=1 if case == "two-pass" else 3)
        task = sum(o.float().pow(2).mean() for o in out) if case == "two-pass" else out.float().pow(2).mean()
        (task + eq).backward()
        results[small] = (eq.detach(), reg.last_terms, [p.grad.clone() for p in net.parameters()])
    (e1, t1, g1), (e2, t2, g2) = results[1 << 16], results[0]
    tol = dict(rtol=2e-3, atol=1e-5) if case == "bf16" else dict(rtol=1e-4, atol=1e-6)
    assert torch.allclose(e1, e2, **tol) and e1 > 0
    assert t1.keys() == t2.keys() == {"body.0", "body.2", "body.3"}
    assert all(abs(t1[n] - t2[n]) <= tol["rtol"] * abs(t2[n]) + tol["atol"] for n in t1)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, **tol)
