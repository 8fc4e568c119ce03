"""D_t: the group elements, R_g and T_g with the pinned convention, the config's group, the sampler, the
stacked step, the hand-written backward under flips, alignment under flips, measurement, cards and the
CLI flag."""

import argparse
import warnings

import pytest
import torch
from nets import PlainCNN, check_exact_distance_against_autograd
from torch import nn

from eqreg_hf import EqReg, EqRegAlignmentWarning, EqRegConfig, equivariance_distance, equivariance_error
from eqreg_hf.core import regularizer
from eqreg_hf.core.distance import ExactDistance, ExactSpec
from eqreg_hf.core.groups import (
    Group,
    GroupElement,
    as_element,
    as_group,
    compose,
    is_exact,
    regular_channels_ok,
    rotate_features,
    rotate_image,
    rotation_mask,
    sample_k,
    shift_channels,
    swaps_hw,
)
from eqreg_hf.hub.card import group_name

DIHEDRAL = ["D1", "D2", "D3", "D4", "D8"]


def test_group_names_and_elements():
    assert (
        as_group("D4") == Group(True, 4)
        and as_group("c8") == Group(False, 8)
        and as_group(2) == Group(False, 2)
    )
    assert as_group("D4").size == 8 and as_group("D4").name == "D4" and as_group("D1").size == 2
    d4 = as_group("D4").elements(include_identity=True)
    assert [4 * f + k for f, k in d4] == list(range(8))  # indexed f*t + k
    assert as_group("D4").elements() == d4[1:] and as_group("C4").elements() == [1, 2, 3]
    for bad in ("E4", "D0", "D", "4", 0, True, "D-2"):
        with pytest.raises(ValueError, match=r"'C<t>'.*'D<t>'"):
            as_group(bad)


def test_elements_and_their_errors():
    assert as_element(5, "D4") == (0, 1) and as_element((1, 6), "D4") == GroupElement(1, 2)
    assert as_element(torch.tensor(3), 4) == (0, 3)
    with pytest.raises(ValueError, match=r"has a flip, but C4 has rotations only: use group='D4'"):
        as_element((1, 0), "C4")
    for bad in ((2, 1), (1, 0.5), 1.5, True, (1, 2, 3)):
        with pytest.raises(ValueError, match=r"int k .* pair \(f, k\)"):
            as_element(bad, "D4")
    with pytest.raises(ValueError, match="has a flip"):
        rotate_image(torch.randn(1, 1, 3, 3), (1, 1), "C4")


def test_image_action_is_flip_then_quarter_turns():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    assert rotate_image(x, (1, 0), "D4").flatten().tolist() == [2, 1, 4, 3]  # mirror left-right
    # flip first, then a quarter turn counter-clockwise: [[2, 1], [4, 3]] -> [[1, 3], [2, 4]]
    assert rotate_image(x, (1, 1), "D4").flatten().tolist() == [1, 3, 2, 4]
    y = torch.randn(2, 3, 5, 7)
    for k in range(4):
        assert torch.equal(rotate_image(y, (1, k), 4), torch.rot90(y.flip(-1), k, (-2, -1)))
        assert torch.equal(rotate_image(y, (0, k), "D4"), rotate_image(y, k, 4))


def test_channel_permutation_is_the_pinned_one():
    t, n = 4, 2
    f = torch.arange(n * 2 * t, dtype=torch.float32).view(1, -1, 1, 1)
    for k in range(t):
        out = shift_channels(f, (1, k), "D4").flatten().tolist()
        rot = shift_channels(f, (0, k), "D4").flatten().tolist()
        for i in range(n):
            for s in (0, 1):
                for r in range(t):
                    c = i * 2 * t + s * t + r
                    assert out[c] == i * 2 * t + (1 - s) * t + (k - r) % t  # (s, r) <- (1 - s, k - r)
                    assert rot[c] == i * 2 * t + s * t + (r - k) % t  # roll by +k inside each half


@pytest.mark.parametrize("group", DIHEDRAL)
@pytest.mark.parametrize("field", ["regular", "trivial"])
def test_actions_compose_like_the_group(group, field):
    g_ = as_group(group)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 33), torch.linspace(-1, 1, 33), indexing="ij")
    f = torch.stack([torch.exp(-((xx - 0.2 * i) ** 2 + (yy + 0.1 * i) ** 2) * 3) for i in range(g_.size)])[
        None
    ]
    mask = rotation_mask(33, 33, margin=2.0)
    elements = g_.elements(include_identity=True)
    for a in elements:
        for b in elements:
            lhs = rotate_features(rotate_features(f, b, group, field), a, group, field)
            rhs = rotate_features(f, compose(a, b, group), group, field)
            exact = is_exact(a, group) and is_exact(b, group)
            assert (lhs - rhs).mul(mask).abs().max() <= (0 if exact else 2e-2) + 1e-6, (a, b)
            img = rotate_image(rotate_image(f, b, group), a, group)
            assert (img - rotate_image(f, compose(a, b, group), group)).mul(mask).abs().max() <= (
                0 if exact else 2e-2
            ) + 1e-6
    for a in elements:  # mirror images are their own inverses
        if a.flip:
            assert compose(a, a, group) == (0, 0)
            assert torch.equal(
                rotate_features(rotate_features(f, a, group, field), a, group, field), f
            ) or not is_exact(a, group)


def test_channel_rule_is_2t_for_dihedral_fields():
    assert regular_channels_ok(8, "D4") and not regular_channels_ok(12, "D4") and regular_channels_ok(12, 4)
    with pytest.raises(ValueError, match=r"12 channels, not divisible by 8 \(a regular D4 field has 2t = 8"):
        rotate_features(torch.randn(1, 12, 3, 3), (1, 0), "D4")


def test_flips_keep_the_shape_of_non_square_maps():
    x = torch.randn(1, 8, 5, 9)
    for g in as_group("D4").elements():
        assert swaps_hw(g, 4) == (g.k % 2 == 1)
        assert (rotate_features(x, g, "D4").shape[-2:] == (9, 5)) == swaps_hw(g, 4)


def test_sampler_draws_every_non_identity_element_seeded():
    gen = torch.Generator().manual_seed(0)
    draws = [sample_k("D4", gen) for _ in range(300)]
    assert set(draws) == set(as_group("D4").elements()) and all(isinstance(g, GroupElement) for g in draws)
    gen = torch.Generator().manual_seed(0)
    assert [sample_k("D4", gen) for _ in range(300)] == draws
    assert set(sample_k("D2", gen, include_identity=True) for _ in range(200)) == set(
        as_group("D2").elements(True)
    )
    assert sample_k("C4", torch.Generator().manual_seed(1)) == sample_k(4, torch.Generator().manual_seed(1))


def test_config_group_field_and_conflicts():
    assert EqRegConfig().group is None and EqRegConfig().group_order == 4
    cfg = EqRegConfig(group="d4")
    assert cfg.group == "D4" and cfg.group_order == 4 and cfg.group_spec == Group(True, 4)
    assert EqRegConfig(group="D2", group_order=2).group_spec.size == 4
    assert EqRegConfig.from_dict(cfg.to_dict()) == cfg
    assert EqRegConfig(group="D1", weight=1.0).active and not EqRegConfig(group_order=1, weight=1.0).active
    with pytest.raises(ValueError, match=r"group='D8' and group_order=4 disagree.*group='D8'.*group_order=4"):
        EqRegConfig(group="D8", group_order=4)
    with pytest.raises(ValueError, match="'C<t>'"):
        EqRegConfig(group="rot4")


def test_cli_flag_comes_from_the_config():
    from eqreg_hf.cli.flags import add_dataclass_arguments, dataclass_from_args

    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, EqRegConfig, "eqreg.")
    assert (
        dataclass_from_args(EqRegConfig, p.parse_args(["--eqreg.group", "D4"]), "eqreg.").group_spec.name
        == "D4"
    )
    assert (
        dataclass_from_args(EqRegConfig, p.parse_args(["--eqreg.group-order", "2"]), "eqreg.").group_spec.name
        == "C2"
    )
    assert "--eqreg.group" in p.format_help()
    with pytest.raises(ValueError, match="disagree"):
        dataclass_from_args(
            EqRegConfig, p.parse_args(["--eqreg.group", "D4", "--eqreg.group-order", "2"]), "eqreg."
        )


def test_card_names_the_group():
    assert group_name("D4").startswith("D4 (rotations by multiples of 90° and their mirror images")
    assert group_name(4).startswith("C4 (rotations by multiples of 90°")
    assert group_name("D1").startswith("D1 (left-right mirror")
    from eqreg_hf.hub.card import _eqreg_section

    assert _eqreg_section(EqRegConfig(group="D4", weight=0.1))["group"].startswith("D4")


@pytest.mark.parametrize("distance", ["fro", "mse", "relative"])
@pytest.mark.parametrize("field", ["regular", "trivial"])
@pytest.mark.parametrize("layout", ["nchw", "vector"])
def test_hand_written_backward_covers_the_flips(distance, field, layout):
    # the exact distance computes in float32 (measured: value within 3e-7, gradient within 5e-7 of its max)
    check_exact_distance_against_autograd(
        (3, 16, 5, 5) if layout == "nchw" else (3, 16),
        as_group("D4").elements(),
        "D4",
        field,
        layout,
        distance,
        lambda y: (1e-5, 2e-6 * float(y.abs().max())),
    )


@pytest.mark.parametrize("distance", ["fro", "relative"])
def test_flip_gradient_lands_in_one_buffer_of_a_stacked_map(distance):
    torch.manual_seed(0)
    f = torch.randn(5, 8, 4, 6, dtype=torch.float64, requires_grad=True)  # 3 originals, 2 transformed copies
    pick = lambda x, i: x[:2] if i == 0 else x[3:5]  # noqa: E731
    for g in [(1, 0), (1, 2), (0, 2)]:
        g = GroupElement(*g)
        ours = ExactDistance.apply(f, None, ExactSpec(pick, g, 4, "regular", "nchw", distance))
        ref = equivariance_distance(rotate_features(f[:2], g, "D4"), f[3:5], distance)
        (g1,) = torch.autograd.grad(ours * 0.3, f)
        (g2,) = torch.autograd.grad(ref * 0.3, f)
        assert torch.allclose(ours.double(), ref.double(), rtol=1e-5)
        assert torch.allclose(g1, g2, rtol=1e-5, atol=2e-6 * float(g2.abs().max()))
        assert g1[2].abs().sum() == 0 and g1[0].abs().sum() > 0


@pytest.mark.parametrize("case", ["stacked", "fraction", "two-pass"])
def test_batched_small_maps_and_per_map_path_agree_under_d4(case, monkeypatch):
    results = {}
    for small in (1 << 16, 0):
        monkeypatch.setattr(regularizer, "SMALL_MAP", small)
        torch.manual_seed(0)
        net = PlainCNN(width=16).train()
        reg = EqReg(
            net,
            EqRegConfig(
                layers=["body.0", "body.3", "body.5"],
                fields={"body.5": "trivial"},
                group="D4",
                weight=1.0,
                rotated_fraction=0.5 if case == "fraction" else 1.0,
            ),
        )
        x = torch.randn(4, 3, 8, 10 if case == "two-pass" else 8)
        out, eq = reg(x, k=(1, 1) if case == "two-pass" else (1, 2))
        task = sum(o.pow(2).mean() for o in out) if case == "two-pass" else out.pow(2).mean()
        (task + eq).backward()
        results[small] = (eq.detach(), reg.last_terms, [p.grad.clone() for p in net.parameters()])
    (e1, t1, g1), (e2, t2, g2) = results[1 << 16], results[0]
    assert torch.allclose(e1, e2, rtol=1e-5) and e1 > 0 and t1.keys() == t2.keys()
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_stacked_step_flips_inputs_and_targets_alike():
    net = PlainCNN(width=8).train()
    reg = EqReg(net, EqRegConfig(layers=["body.0"], group="D4", weight=1.0, seed=3))
    x, y = torch.randn(2, 3, 9, 9), torch.randn(2, 3, 9, 9)
    seen = set()
    for _ in range(60):
        xs = reg.stack(x)
        g = reg.last_k
        seen.add(g)
        assert isinstance(g, GroupElement) and g != (0, 0)
        assert torch.equal(xs[2:], rotate_image(x, g, "D4"))
        assert torch.equal(reg.stack_targets(y)[2:], rotate_image(y, g, "D4"))
        assert reg.stack_targets(torch.arange(2)).tolist() == [0, 1, 0, 1]
        net(xs)
        assert reg.loss().item() > 0
    assert seen == set(as_group("D4").elements())
    assert reg.describe().startswith("EQ-Reg: D4,")


def test_non_square_inputs_draw_flips_and_half_turns_only():
    net = PlainCNN(width=8).train()
    reg = EqReg(net, EqRegConfig(layers=["body.0"], group="D4", weight=1.0))
    drawn = set()
    with pytest.warns(UserWarning, match=r"non-square.*flips, 180°"):
        for _ in range(40):
            xs = reg.stack(torch.randn(2, 3, 7, 11))
            drawn.add(reg.last_k)
            assert xs.shape == (4, 3, 7, 11)
            net(xs)
            reg.loss()
    assert drawn == {(0, 2), (1, 0), (1, 2)}
    with pytest.raises(ValueError, match=r"transform by g=\(1, 1\).*two passes"):
        reg.stack(torch.randn(2, 3, 7, 11), k=(1, 1))
    (out_x, out_r), eq = reg(torch.randn(2, 3, 7, 11), k=(1, 1))  # two passes
    assert out_r.shape[-2:] == (11, 7) and eq.item() > 0


def test_d4_training_lowers_the_d4_error():
    torch.manual_seed(0)
    net = PlainCNN(width=16).train()
    layers = ["body.0", "body.3"]
    before = equivariance_error(net, torch.randn(4, 3, 9, 9), layers=layers, group="D4")
    reg = EqReg(net, EqRegConfig(layers=layers, group="D4", weight=1.0, distance="relative"))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        x = torch.randn(4, 3, 9, 9)
        out, eq = reg(x)
        loss = nn.functional.mse_loss(out, reg.stack_targets(x)) + eq
        opt.zero_grad()
        loss.backward()
        opt.step()
    reg.remove()
    after = equivariance_error(net, torch.randn(4, 3, 9, 9), layers=layers, group="D4")
    assert after.group == "D4" and len(after.ks) == 7
    assert after.mean < 0.3 * before.mean, (before.mean, after.mean)
    for name in layers:  # flips are learnt too, not only the rotations
        assert max(after.per_k[name][g] for g in after.ks if g.flip) < 0.5 * before[name]


def test_measure_reports_per_element_and_the_group():
    torch.manual_seed(0)
    rep = equivariance_error(
        PlainCNN(width=8), torch.randn(1, 3, 9, 9), layers=["body.0"], group="D2", include_output=True
    )
    assert (
        rep.group == "D2" and rep.ks == [(0, 1), (1, 0), (1, 1)] and set(rep.per_k["body.0"]) == set(rep.ks)
    )
    assert "(D2," in rep.table() and rep.to_dict()["ks"] == [[0, 1], [1, 0], [1, 1]]
    only = equivariance_error(
        PlainCNN(width=8), torch.randn(1, 3, 9, 9), layers=["body.0"], group="D4", ks=[(1, 0), 2]
    )
    assert only.ks == [(1, 0), (0, 2)]
    with pytest.raises(ValueError, match="disagree"):
        equivariance_error(
            PlainCNN(width=8), torch.randn(1, 3, 9, 9), layers=["body.0"], group="D4", group_order=2
        )


def _strided(stride_hw):
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=stride_hw, padding=1), nn.ReLU()).train()


def test_alignment_under_flips():
    # A stride-2 conv on an even width is off by one pixel under a flip: D1 (a flip only) warns...
    reg = EqReg(_strided((1, 2)), EqRegConfig(layers=["0"], group="D1", weight=1.0))
    with pytest.warns(
        EqRegAlignmentWarning, match=r"'0'.*nearest aligned input size 9x(7|9).*a flip of the map"
    ):
        reg(torch.randn(1, 3, 9, 8), k=(1, 0))
    reg.remove()
    # ...a stride-2 conv on an even *height* is not moved by a left-right flip: D1 stays quiet, C2 does not.
    x = torch.randn(1, 3, 8, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EqRegAlignmentWarning)
        reg = EqReg(_strided((2, 1)), EqRegConfig(layers=["0"], group="D1", weight=1.0, distance="relative"))
        reg(x, k=(1, 0))
    assert reg.last_terms["0"] > 0  # a random conv is not flip-equivariant; the point is no false alarm
    reg.remove()
    with pytest.warns(EqRegAlignmentWarning, match="a rotation or flip of the map"):
        EqReg(_strided(2), EqRegConfig(layers=["0"], group="D4", weight=1.0))(
            torch.randn(1, 3, 8, 8), k=(1, 0)
        )
    with pytest.warns(EqRegAlignmentWarning, match="a 90° rotation of the map"):
        EqReg(_strided((2, 1)), EqRegConfig(layers=["0"], group="C2", weight=1.0))(x, k=1)


def test_alignment_matters_for_a_flip_symmetric_conv():
    # A conv whose kernels are left-right symmetric commutes with flips exactly when the grid is aligned.
    net = _strided((1, 2))
    with torch.no_grad():
        net[0].weight.copy_((net[0].weight + net[0].weight.flip(-1)) / 2)
    errs = {}
    for w in (9, 8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EqRegAlignmentWarning)
            cfg = EqRegConfig(layers=["0"], fields="trivial", group="D1")
            errs[w] = equivariance_error(net, torch.randn(2, 3, 7, w), cfg)["0"]
    assert errs[9] < 1e-6 and errs[8] > 0.1, errs


def test_gradient_accumulation_is_exact_under_d4(tmp_path):
    """GA=2 with half the batch == GA=1 under D4: one element per optimizer step, the same losses and
    parameters."""
    pytest.importorskip("transformers", reason="the Trainer integration needs transformers")
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "dist_scripts"))
    from common import TINY_DERAIN_LAYERS, PairDataset, TinyDerainer, flat_params, tiny_args

    from eqreg_hf import EqRegTrainer

    runs = []
    for bs, ga in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model = TinyDerainer()
        # seed 4 draws (1, 0), (1, 3), (1, 2): three mirror images
        cfg = EqRegConfig(layers=TINY_DERAIN_LAYERS, group="D4", weight=0.1, distance="mse", seed=4)
        trainer = EqRegTrainer(
            model=model,
            args=tiny_args(
                str(tmp_path / f"ga{ga}"),
                max_steps=3,
                per_device_train_batch_size=bs,
                gradient_accumulation_steps=ga,
            ),
            train_dataset=PairDataset(12),
            eqreg=cfg,
            task_loss=nn.functional.l1_loss,
        )
        trainer.train()
        runs.append(
            ([h["eqreg_loss"] for h in trainer.state.log_history if "eqreg_loss" in h], flat_params(model))
        )
    (l1, p1), (l2, p2) = runs
    assert len(l1) == 3 and all(v > 0 for v in l1) and l1 == pytest.approx(l2, rel=1e-5)
    assert torch.allclose(p1, p2, rtol=1e-5, atol=1e-6), float((p1 - p2).abs().max())


def test_equivariance_callback_measures_the_trainers_group():
    pytest.importorskip("transformers", reason="the callbacks are TrainerCallbacks")
    from eqreg_hf.callbacks.equivariance import EquivarianceEvalCallback

    torch.manual_seed(0)
    net = PlainCNN(width=8)
    batches = [(torch.randn(2, 3, 9, 9),)]  # a loader of (images, ...) tuples
    reg = EqReg(net.train(), EqRegConfig(layers=["body.0"], group="D4", weight=1.0))
    cb = EquivarianceEvalCallback(num_batches=1)
    cb.bind_eqreg(reg)
    cb.measure(net, batches)
    assert cb.last_report.group == "D4" and len(cb.last_report.ks) == 7
    own = EquivarianceEvalCallback(EqRegConfig(layers=["body.0"], group_order=2), num_batches=1)
    own.bind_eqreg(reg)  # the user's config wins, whole: its group cannot be dropped on the way
    own.measure(net, batches)
    assert own.last_report.group == "C2"
    with pytest.raises(TypeError, match=r"does not take \['group_order'\].*eqreg=EqRegConfig"):
        EquivarianceEvalCallback(group_order=2)
