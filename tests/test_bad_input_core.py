"""Issue 13, the core: config values that mean nothing, odd module outputs, automatic choices that do not fit.

Each case here was accepted before and gave a silently wrong result (EQ-Reg off, a negative loss, a setting
ignored, the wrong tensor compared); now each is refused in one line that names the value, or gives the
right result with a warning that names the choice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch
from nets import PlainCNN
from torch import nn

from eqreg_hf import EqReg, EqRegConfig
from eqreg_hf.core.selection import resolve_taps
from eqreg_hf.core.taps import FeatureTaps, match_layer, select_output

# --------------------------------------------------------------- config values: type and range of every field

BAD_VALUES = [
    # the examples
    ({"weight": math.nan}, r"weight=nan"),
    ({"weight": math.inf}, r"weight=inf"),
    ({"weight": "0.1"}, r"weight='0.1'"),
    ({"layer_weights": {"body.0": -1.0}}, r"layer_weights\['body.0'\]=-1.0 .*>= 0"),
    # more of the same kind
    ({"layer_weights": {"body.0": math.nan}}, r"layer_weights\['body.0'\]=nan"),
    ({"layer_weights": -0.5}, r"layer_weights=-0.5"),
    ({"layer_weights": {"body.0": "2"}}, r"'2' is a string"),
    ({"layer_weights": {}}, r"empty dict"),
    ({"rotated_fraction": "0.5"}, r"rotated_fraction='0.5'.*string"),
    ({"rotated_fraction": 0.0}, r"rotated_fraction=0.0.*\(0, 1\]"),
    ({"rotated_fraction": math.nan}, r"rotated_fraction=nan"),
    ({"rotated_fraction": True}, r"rotated_fraction=True"),
    ({"seed": -1}, r"seed=-1"),
    ({"seed": "3"}, r"seed='3'.*string"),
    ({"seed": 1.5}, r"seed=1.5"),
    ({"eps": 0.0}, r"eps=0.0.*> 0"),
    ({"eps": "1e-8"}, r"eps='1e-8'.*string"),
    ({"group_order": "4"}, r"group_order='4'"),
    ({"group_order": 0}, r"group_order=0"),
    ({"layers": []}, r"layers=\[\]"),
    ({"layers": ""}, r"layers='' is empty"),
    ({"layers": ["body.0", 3]}, r"holds 3, an int"),
    ({"layers": ["auto", "body.0"]}, r"'auto' stands alone"),
    ({"layers": {"body.0": 1}}, r"layers=\{'body.0': 1\}.*a dict"),
    ({"prefix_tokens": -1}, r"prefix_tokens=-1"),
    ({"prefix_tokens": {"blocks.0": 1.5}}, r"prefix_tokens\['blocks.0'\]=1.5"),
    ({"include_identity": "yes"}, r"include_identity='yes' is a str"),
    ({"rotate_targets": 1}, r"rotate_targets=1 is an int"),
    ({"image_key": ""}, r"image_key=''"),
    ({"distance": ["fro"]}, r"distance=\['fro'\] is a list"),
    ({"distance": "l2"}, r"Unknown distance 'l2'"),
    ({"fields": {"body.0": "irregular"}}, r"Unknown fields value 'irregular'"),
    ({"fields": {}}, r"fields=\{\} is an empty dict"),
    ({"layouts": "nchwc"}, r"Unknown layouts value"),
    ({"interpolation": "cubic"}, r"Unknown interpolation"),
    ({"capture": 1}, r"capture=1 is an int"),
]


@pytest.mark.parametrize("kw, match", BAD_VALUES, ids=[str(kw) for kw, _ in BAD_VALUES])
def test_bad_config_values_are_refused_in_one_line(kw, match):
    with pytest.raises(ValueError, match=match) as err:
        EqRegConfig(**kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kw, match", BAD_VALUES[:12], ids=[str(kw) for kw, _ in BAD_VALUES[:12]])
def test_bad_values_read_from_json_are_refused(kw, match, tmp_path):
    # JSON cannot hold nan/inf in strict mode, but Python's json writes and reads them: the same refusal
    path = tmp_path / "eqreg_config.json"
    path.write_text(json.dumps({**EqRegConfig().to_dict(), **kw}))
    with pytest.raises(ValueError, match=match):
        EqRegConfig.from_pretrained(path)


def test_non_json_config_file_names_the_file(tmp_path):
    (tmp_path / "eqreg_config.json").write_text("weight: 0.1\n")  # YAML, not JSON
    with pytest.raises(ValueError, match=r"eqreg_config.json.*is not valid JSON.*save_pretrained"):
        EqRegConfig.from_pretrained(tmp_path)
    (tmp_path / "eqreg_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"holds a list, not a JSON object"):
        EqRegConfig.from_pretrained(tmp_path)


def test_a_config_that_validates_survives_json(tmp_path):
    cfg = EqRegConfig(
        layers=["body.0"],
        layer_weights={"body.*": 0.0},
        prefix_tokens={"body.0": 0},
        seed=7,
        rotated_fraction=0.5,
        eps=1e-6,
    )
    assert EqRegConfig.from_dict(json.loads(cfg.to_json_string())) == cfg


@pytest.mark.parametrize(
    "setting, value",
    [
        (
            "layer_weights",
            {"body.9": 2.0},
        ),  # the example: a weight keyed by a name that matches no tap
        ("fields", {"bdy.0": "trivial"}),  # a field type keyed by a typo
        ("layouts", {"head.*": "nhwc"}),
        ("prefix_tokens", {"blocks.*": 1}),
    ],
)
def test_setting_keyed_by_a_name_that_matches_no_tap_is_refused(setting, value):
    cfg = EqRegConfig(layers=["body.0", "body.3"], **{setting: value})
    with pytest.raises(
        ValueError, match=rf"{setting}=.*{list(value)[0]!r}.*matches none of the 2 tapped layer"
    ):
        EqReg(PlainCNN(), cfg)


def test_setting_keys_that_match_a_tap_are_used():
    reg = EqReg(PlainCNN(), EqRegConfig(layers="body.*", layer_weights={"body.[03]": 2.0, "body.1": 0.0}))
    assert {t.name: t.weight for t in reg.taps} == {
        "body.0": 2.0,
        "body.1": 0.0,
        "body.2": 1.0,
        "body.3": 2.0,
        "body.4": 1.0,
        "body.5": 1.0,
    }
    reg.remove()


VALID_CONFIGS = [
    {},
    {"weight": 0.0},
    {"group_order": 1},
    {"weight": "auto"},
    {"rotated_fraction": 1},
    {"weight": 1},
    {"layers": "body.*", "layer_weights": {"body.0": 0}, "fields": {"body.3": "trivial"}},
    {"layers": ["body.0"], "prefix_tokens": {"body.0": 0}, "layouts": {"body.0": "nchw"}},
    {"layers": ["body.0:0"], "group_order": 8, "distance": "fro", "capture": "recompute"},
]


@pytest.mark.parametrize("kw", VALID_CONFIGS, ids=[str(kw) for kw in VALID_CONFIGS])
def test_describe_never_fails_on_a_valid_config(kw):
    cfg = EqRegConfig(**({"layers": ["body.0", "body.3"]} | kw))
    with EqReg(PlainCNN(), cfg) as reg:
        text = reg.describe()
    assert text.startswith("EQ-Reg:")
    assert all(t.name in text for t in reg.taps)


# ------------------------------------------------------------------- odd module outputs: an explicit selector


class AuxFirst(nn.Module):
    """Returns (an auxiliary vector, the feature map): the first tensor is the wrong one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.mean((2, 3)), y


class MaskAndMap(nn.Module):
    """Returns {"mask": [B, 1, H, W], "features": [B, 8, H, W]}: two maps, the choice must be explicit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return {"mask": torch.sigmoid(y[:, :1]), "features": y}


@dataclasses.dataclass
class Out:
    mask: torch.Tensor
    features: torch.Tensor


class DataclassOut(MaskAndMap):
    def forward(self, x):
        return Out(**super().forward(x))


class Wrap(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        out = self.block(x)
        y = out[1] if isinstance(out, tuple) else out["features"] if isinstance(out, dict) else out.features
        return self.head(y)


def _captured(net, layer, x=None):
    x = torch.randn(2, 3, 6, 6) if x is None else x
    reg = EqReg(net, EqRegConfig(layers=[layer], weight=0.1))
    with FeatureTaps(net, reg.taps) as taps:
        taps.arm()
        net(x)
        got = taps.take()[reg.taps[0].name][0][1]
    reg.remove()
    return got


def test_tuple_with_an_aux_vector_first_compares_the_feature_map_and_says_so():
    net = Wrap(AuxFirst())
    with pytest.warns(
        UserWarning, match=r"'block'.*several tensors.*'0' \(2, 8\).*'1' \(2, 8, 6, 6\).*'block:1'"
    ):
        got = _captured(net, "block")
    assert got.shape == (2, 8, 6, 6)  # before: the [2, 8] aux vector, silently


def test_two_maps_without_a_selector_are_refused():
    net = Wrap(MaskAndMap())
    with pytest.raises(
        ValueError, match=r"'block'.*several tensors.*'mask' \(2, 1, 6, 6\).*'features'.*block:mask"
    ):
        _captured(net, "block")


@pytest.mark.parametrize("cls", [MaskAndMap, DataclassOut])
def test_selector_in_the_layer_spec_picks_the_element(cls):
    net = Wrap(cls())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _captured(net, "block:features")
        mask = _captured(net, "block:mask")
    assert got.shape == (2, 8, 6, 6) and mask.shape == (2, 1, 6, 6)


def test_selector_that_is_not_there_lists_what_is():
    net = Wrap(AuxFirst())
    with pytest.raises(
        ValueError, match=r"selector 'features' is not in the tuple.*'0' \(2, 8\), '1' \(2, 8, 6, 6\)"
    ):
        _captured(net, "block:features")
    with pytest.raises(ValueError, match=r"selector 5 is not in"):
        _captured(net, "block:5")


def test_selector_trains_end_to_end():
    net = Wrap(MaskAndMap())
    reg = EqReg(net, EqRegConfig(layers=["block:features"], weight=0.1))
    out, eq = reg(torch.randn(2, 3, 6, 6), k=1)
    assert eq.item() > 0 and reg.last_terms.keys() == {"block"}
    assert "block:features" in reg.describe()
    reg.remove()


def test_select_output_unit():
    x, v = torch.zeros(2, 4, 3, 3), torch.zeros(2)
    assert select_output(x) == (x, None)
    assert select_output((None, x))[0] is x
    assert select_output([x, v])[1] is not None  # chosen with a note
    assert select_output({"a": {"b": x}}, ("a", "b"))[0] is x
    with pytest.raises(ValueError, match="several tensors"):
        select_output((x, x))


# ----------------------------------------------------------------------------- automatic choices and patterns


class TinyRestorer(nn.Module):
    """Hidden convs of 8 channels and a 3-channel output conv (an image)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return x + self.tail(torch.relu(self.body(torch.relu(self.head(x)))))


def test_auto_with_a_group_order_no_hidden_conv_divides_is_refused():
    # the example: t = 3 divides only the 3-channel output conv, which was tapped as a regular field
    with pytest.raises(ValueError, match=r"layers='auto' found no layer.*no hidden nn.Conv2d.*group_order=3"):
        resolve_taps(TinyRestorer(), EqRegConfig(layers="auto", group_order=3))


@pytest.mark.parametrize("t, expected", [(2, ["head", "body"]), (4, ["head", "body"]), (8, ["head", "body"])])
def test_auto_never_taps_the_image_output_conv(t, expected):
    assert [
        s.name for s in resolve_taps(TinyRestorer(), EqRegConfig(layers="auto", group_order=t))
    ] == expected


class Stages(nn.Module):
    def __init__(self):
        super().__init__()
        self.stages = nn.Sequential(
            *[nn.Sequential(nn.Conv2d(4, 4, 1), nn.Sequential(nn.Conv2d(4, 4, 1))) for _ in range(2)]
        )


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("stages.*", ["stages.0", "stages.1"]),  # one level (it matched all 8 before)
        ("stages.*.0", ["stages.0.0", "stages.1.0"]),
        (
            "stages.**",
            [
                "stages.0",
                "stages.0.0",
                "stages.0.1",
                "stages.0.1.0",
                "stages.1",
                "stages.1.0",
                "stages.1.1",
                "stages.1.1.0",
            ],
        ),
        ("**.0", ["stages.0", "stages.0.0", "stages.0.1.0", "stages.1.0", "stages.1.1.0"]),
        ("stages.[1]", ["stages.1"]),
        ("stages.?.1", ["stages.0.1", "stages.1.1"]),
    ],
)
def test_star_matches_one_level_double_star_any_depth(pattern, expected):
    assert [s.name for s in resolve_taps(Stages(), EqRegConfig(layers=pattern, fields="trivial"))] == expected


def test_match_layer_unit():
    assert match_layer("layer1.0.conv1", "layer*.0.conv1") and not match_layer("a.layer1", "layer*")
    assert match_layer("body.1", "body.[!0]") and not match_layer("body.0", "body.[!0]")
    assert match_layer("a[b", "a[b")  # an unclosed bracket is a literal


def test_star_on_a_timm_convnext_is_one_level():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_convnext", pretrained=False)
    stages = [n for n, _ in model.stages.named_children()]
    got = [s.name for s in resolve_taps(model, EqRegConfig(layers="stages.*", fields="trivial"))]
    assert got == [f"stages.{n}" for n in stages]  # the issue: 162 nested modules for stages.* on a ConvNeXt
    deep = resolve_taps(model, EqRegConfig(layers="stages.**", fields="trivial"))
    assert len(deep) > len(got) * 3


# --------------------------------------------------------------- measurement: the alignment check of training


def test_equivariance_error_warns_and_reports_misaligned_taps():
    from nets import REGULAR_TAPS, ExactC4Net

    from eqreg_hf import EqRegAlignmentWarning, equivariance_error

    torch.manual_seed(0)
    net = ExactC4Net(stride=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EqRegAlignmentWarning)
        aligned = equivariance_error(net, torch.randn(2, 3, 9, 9), layers=REGULAR_TAPS)
    assert aligned.misaligned == {} and aligned.mean < 1e-5 and "warning" not in aligned.table()
    # the example: 0.0000 at one size, 0.56 at the next, without a word
    with pytest.warns(EqRegAlignmentWarning, match=r"8x8.*'g2'.*nearest aligned input size (7x7|9x9)"):
        report = equivariance_error(net, torch.randn(2, 3, 8, 8), layers=REGULAR_TAPS)
    assert set(report.misaligned) == {"g2", "act3"} and report["g2"] > 0.1
    assert report["lift"] < 1e-5 and "lift" not in report.misaligned
    table = report.table()
    assert "(misaligned)" in table.splitlines()[[ln.split()[0] for ln in table.splitlines()].index("g2")]
    assert "warning: misaligned for input 8x8: g2, act3" in table
    assert report.to_dict()["misaligned"]["g2"] in ([7, 7], [9, 9])
