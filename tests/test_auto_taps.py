"""layers="auto" on timm and transformers vision models: taps found, loss finite, gradients, one error
per tap."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from eqreg_hf import EqReg, EqRegConfig, equivariance_error
from eqreg_hf.core.alignment import EqRegAlignmentWarning
from eqreg_hf.core.selection import auto_taps, find_backbone

timm = pytest.importorskip("timm", reason="timm is needed for the timm adapter tests")


pytestmark = pytest.mark.usefixtures("one_thread")

# (timm name, constructor overrides that shrink it, input size, expected layout, expected prefix tokens)
TIMM_CASES = [
    ("resnet18", {}, 33, "auto", None),
    ("resnet10t", {}, (33, 33), "auto", None),
    ("test_convnext", {}, 32, "auto", None),
    ("test_efficientnet", {}, 33, "auto", None),
    ("mobilenetv3_small_050", {}, 33, "auto", None),
    ("regnetx_002", {}, 33, "auto", None),
    ("ghostnet_050", {}, 33, "auto", None),
    ("densenet121", {"growth_rate": 8, "block_config": (1, 1, 1, 1)}, 29, "auto", None),
    ("test_vit", {"img_size": 32, "depth": 2}, 32, "tokens", 1),
    (
        "deit_tiny_distilled_patch16_224",
        {"img_size": 48, "depth": 5, "embed_dim": 32, "num_heads": 2},
        48,
        "tokens",
        2,
    ),
    (
        "vit_tiny_patch16_224",
        {"img_size": (32, 48), "depth": 2, "reg_tokens": 2, "dynamic_img_size": True},
        (32, 48),
        "tokens",
        3,
    ),
    (
        "swin_tiny_patch4_window7_224",
        {
            "img_size": 32,
            "window_size": 2,
            "embed_dim": 16,
            "depths": (1, 1, 1, 1),
            "num_heads": (1, 1, 1, 1),
        },
        32,
        "nhwc",
        None,
    ),
    ("mambaout_femto", {"dims": (8, 16, 24, 32), "depths": (1, 1, 1, 1)}, 33, "nhwc", None),
]


def _input(size, batch=2, seed=0):
    h, w = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _check_regularizer(model: nn.Module, x: torch.Tensor, group_order: int = 4):
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EqRegAlignmentWarning)  # small test sizes; alignment is tested below
        with EqReg(model, EqRegConfig(layers="auto", group_order=group_order, weight=1.0)) as reg:
            assert reg.tap_names, reg.describe()
            out, eq = reg(x, k=1)
            assert torch.isfinite(eq) and float(eq) > 0
            assert set(reg.last_terms) == set(reg.tap_names)
            model.zero_grad()
            eq.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert grads and any(float(g.abs().sum()) > 0 for g in grads), (
                "no gradient reached the parameters"
            )
            names = list(reg.tap_names)
        report = equivariance_error(model, x[:1], layers="auto", group_order=group_order)
    assert set(report) == set(names)
    assert all(v == v and v >= 0 for v in report.values())
    return names, out


@pytest.mark.parametrize("name, kwargs, size, layout, prefix", TIMM_CASES, ids=[c[0] for c in TIMM_CASES])
def test_timm_auto_taps(name, kwargs, size, layout, prefix):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3, **kwargs)
    taps = auto_taps(model, 4)
    assert taps, f"no taps for {name}"
    modules = dict(model.named_modules())
    assert all(t.name in modules for t in taps)
    assert {t.layout for t in taps} == {layout}
    assert {t.prefix_tokens for t in taps} == {prefix}
    assert all(t.field == "regular" for t in taps)
    # The stages timm itself advertises as features (token models: a few evenly spaced blocks).
    advertised = [d["module"] for d in model.feature_info]
    assert [t.name for t in taps] == [n for n in advertised if n in {t.name for t in taps}]
    names, out = _check_regularizer(model, _input(size))
    # Non-square inputs and a 90° k: two passes, outputs (model(x), model(R x)).
    shapes = [o.shape for o in out] if isinstance(out, tuple) else [out.shape]
    assert shapes in ([(4, 3)], [(2, 3), (2, 3)])
    assert names == [t.name for t in taps]


def test_token_models_tap_few_evenly_spaced_blocks():
    model = timm.create_model("test_vit", pretrained=False, img_size=32, depth=6)
    assert [t.name for t in auto_taps(model, 4)] == ["blocks.1", "blocks.2", "blocks.4", "blocks.5"]


def test_model_with_eqreg_layers_names_its_own_taps():
    from eqreg_hf.tasks.derain.networks import FastDerainer

    net = FastDerainer(channels=8, num_blocks=2)
    taps = auto_taps(net, 4)
    assert [t.name for t in taps] == net.eqreg_layers(4)
    _check_regularizer(net, _input((17, 17), batch=1))


@pytest.mark.parametrize(
    "group_order, skipped", [(2, set()), (16, {"stages.0"}), (32, {"stages.0", "stages.1"})]
)
def test_channels_not_divisible_are_skipped_with_a_note(group_order, skipped):
    model = timm.create_model("convnext_atto", pretrained=False)  # stages: 40, 80, 160, 320 channels
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        taps = auto_taps(model, group_order)
    names = {t.name for t in taps}
    assert names == {"stages.0", "stages.1", "stages.2", "stages.3"} - skipped
    notes = [str(w.message) for w in caught if "not divisible" in str(w.message)]
    assert bool(notes) == bool(skipped)
    for s in skipped:
        assert s in notes[0]


def test_wrapped_backbone_names_are_prefixed():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = timm.create_model("test_resnet", pretrained=False, num_classes=0)
            self.head = nn.Linear(self.backbone.num_features, 2)

        def forward(self, x):
            return self.head(self.backbone(x))

    model = Wrapper()
    prefix, backbone, kind = find_backbone(model)
    assert (prefix, kind) == ("backbone", "timm") and backbone is model.backbone
    taps = auto_taps(model, 2)
    assert [t.name for t in taps] == ["backbone." + d["module"] for d in model.backbone.feature_info]
    _check_regularizer(model, _input(33), group_order=2)


def test_plain_conv_net_falls_back_to_conv_layers():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1),
    )
    assert auto_taps(net, 4) is None
    reg = EqReg(net, EqRegConfig(layers="auto", group_order=4, weight=1.0))
    assert reg.tap_names == ["0", "4"]  # the 6-channel conv does not fit C4
    reg.remove()


ALIGNMENT_CASES = [
    # stride-32 CNNs with 3x3/stride-2/pad-1 downsampling: aligned at 32 m + 1
    ("resnet18", 32, "33x33"),
    ("resnet18", 40, "33x33"),
    ("resnet18", 33, None),
    ("resnet18", 65, None),
    ("regnetx_002", 64, "65x65"),
    # patchify stem (4x4/stride 4) and 2x2/stride-2 downsampling: aligned at multiples of 32
    ("test_convnext", 33, "32x32"),
    ("test_convnext", 64, None),
]


@pytest.mark.parametrize("name, size, aligned", ALIGNMENT_CASES)
def test_alignment_warning_names_nearest_aligned_size(name, size, aligned):
    model = timm.create_model(name, pretrained=False, num_classes=2).train()

    def alignment_warnings(s):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with EqReg(model, EqRegConfig(layers="auto", group_order=4, weight=1.0)) as reg:
                reg(_input(s, batch=1), k=1)
        return [str(w.message) for w in caught if issubclass(w.category, EqRegAlignmentWarning)]

    msgs = alignment_warnings(size)
    if aligned is None:
        assert msgs == []
    else:
        assert len(msgs) == 1 and f"{size}x{size}" in msgs[0] and aligned in msgs[0], msgs
        # The recommended size really is aligned: no warning there.
        assert alignment_warnings(int(aligned.split("x")[0])) == []


# ---------------------------------------------------------------------------------------------- transformers


def _hf_cases():
    transformers = pytest.importorskip("transformers", reason="transformers is needed for its adapter tests")
    T = transformers
    vit = T.ViTConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    deit = T.DeiTConfig(
        hidden_size=16,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    convnext = T.ConvNextConfig(hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1], num_labels=3)
    resnet = T.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1], layer_type="basic", num_labels=3
    )
    swin = T.SwinConfig(
        image_size=32, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=3
    )
    return {
        "vit": (T.ViTForImageClassification, vit, ["vit.layers.0", "vit.layers.1"], "tokens", 1),
        "deit": (
            T.DeiTForImageClassificationWithTeacher,
            deit,
            ["deit.layers.1", "deit.layers.2", "deit.layers.4", "deit.layers.5"],
            "tokens",
            2,
        ),
        "convnext": (
            T.ConvNextForImageClassification,
            convnext,
            [f"convnext.encoder.stages.{i}" for i in range(4)],
            "nchw",
            None,
        ),
        "resnet": (
            T.ResNetForImageClassification,
            resnet,
            [f"resnet.encoder.stages.{i}" for i in range(4)],
            "nchw",
            None,
        ),
        "swin": (
            T.SwinForImageClassification,
            swin,
            ["swin.encoder.layers.0", "swin.encoder.layers.1"],
            "tokens",
            0,
        ),
        "swin-base-model": (T.SwinModel, swin, ["encoder.layers.0", "encoder.layers.1"], "tokens", 0),
    }


HF_IDS = ["vit", "deit", "convnext", "resnet", "swin", "swin-base-model"]


@pytest.mark.parametrize("case", HF_IDS)
def test_transformers_auto_taps(case):
    cls, config, expected, layout, prefix = _hf_cases()[case]
    torch.manual_seed(0)
    model = cls(config)
    taps = auto_taps(model, 4)
    assert [t.name for t in taps] == expected
    assert {t.layout for t in taps} == {layout}
    assert {t.prefix_tokens for t in taps} == {prefix}
    x = _input(33 if case == "resnet" else 32)
    names, _ = _check_regularizer(model, x)
    assert names == expected


def test_transformers_swin_skips_stages_not_divisible():
    T = pytest.importorskip("transformers")
    config = T.SwinConfig(
        image_size=32, patch_size=2, embed_dim=6, depths=[1, 1], num_heads=[1, 2], window_size=4
    )
    # Stage 0 ends with patch merging -> 12 channels; stage 1 keeps 12: C8 fits neither, C4 both.
    assert len(auto_taps(T.SwinModel(config), 4)) == 2
    with pytest.warns(UserWarning, match="not divisible"):
        assert auto_taps(T.SwinModel(config), 8) is None
