"""The `evaluate` metric module for the equivariance error: loads offline, computes known values."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

import eqreg_hf
from eqreg_hf import equivariance_error, rotate_features, rotate_image

evaluate = pytest.importorskip("evaluate", reason="the metric module is for the evaluate library")

METRIC_DIR = os.path.join(os.path.dirname(eqreg_hf.__file__), "tasks", "metrics", "equivariance_error")


@pytest.fixture(scope="module")
def metric():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # must not need the network
    return evaluate.load(METRIC_DIR)


def test_loads_from_the_file_path_too():
    m = evaluate.load(os.path.join(METRIC_DIR, "equivariance_error.py"))
    assert "equivariance" in m.description.lower()


# (shape of F(x), k, group order, field)
EXACT_CASES = [
    ((8, 5, 5), 1, 4, "regular"),
    ((8, 5, 7), 1, 4, "regular"),
    ((8, 6, 6), 3, 4, "regular"),
    ((6, 4, 5), 1, 2, "regular"),
    ((3, 5, 6), 2, 4, "trivial"),
    ((12,), 1, 4, "regular"),
]


@pytest.mark.parametrize("shape, k, t, field", EXACT_CASES)
def test_exactly_equivariant_features_score_zero(metric, shape, k, t, field):
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal(shape).astype("float32") for _ in range(3)]
    if len(shape) == 3:
        refs = [rotate_features(torch.from_numpy(f)[None], k, t, field=field)[0].numpy() for f in feats]
    else:
        refs = [np.roll(f.reshape(-1, t), k, axis=1).reshape(-1) for f in feats]
    out = metric.compute(predictions=feats, references=refs, k=k, group_order=t, field=field)
    assert out["equivariance_error"] < 1e-6
    assert len(out["per_example"]) == 3 and max(out["per_example"]) < 1e-6


def test_known_value_for_a_hand_made_pair(metric):
    # F(x) = ones on a regular C4 map: T_k leaves it unchanged;
    # reference = 2 * ones -> ||1 - 2|| / ||2|| = 0.5
    a = np.ones((4, 3, 3), dtype="float32")
    out = metric.compute(predictions=[a, a], references=[2 * a, 2 * a], k=1)
    assert out["equivariance_error"] == pytest.approx(0.5)
    # Pooled over examples: sqrt(Σ d²) / sqrt(Σ r²), not the mean of the per-example ratios.
    out = metric.compute(predictions=[a, a], references=[2 * a, 4 * a], k=1)
    expected = np.sqrt((1 + 9) * a.size) / np.sqrt((4 + 16) * a.size)
    assert out["equivariance_error"] == pytest.approx(expected, rel=1e-6)
    assert out["per_example"] == pytest.approx([0.5, 0.75])


def test_per_example_rotations(metric):
    rng = np.random.default_rng(1)
    feats = [rng.standard_normal((8, 5, 5)).astype("float32") for _ in range(3)]
    ks = [1, 2, 3]
    refs = [rotate_features(torch.from_numpy(f)[None], k, 4)[0].numpy() for f, k in zip(feats, ks)]
    assert metric.compute(predictions=feats, references=refs, ks=ks)["equivariance_error"] < 1e-6
    assert metric.compute(predictions=feats, references=refs, k=1)["equivariance_error"] > 0.5


def test_matches_the_library_measurement(metric):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)).eval()
    x = torch.randn(3, 3, 9, 11)
    with torch.no_grad():
        fx = net(x)
        frx = net(rotate_image(x, 1, 4))
    out = metric.compute(predictions=list(fx.numpy()), references=list(frx.numpy()), k=1)
    report = equivariance_error(net, x, layers=["2"], group_order=4, ks=[1])
    assert out["equivariance_error"] == pytest.approx(report["2"], rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"field": "scalar"}, "Unknown field"),
        ({"ks": [1]}, "one rotation per example"),
    ],
)
def test_bad_arguments_are_named(metric, kwargs, message):
    a = np.ones((4, 3, 3), dtype="float32")
    with pytest.raises(ValueError, match=message):
        metric.compute(predictions=[a, a], references=[a, a], **kwargs)


def test_shape_mismatch_is_explained(metric):
    with pytest.raises(ValueError, match="same k"):
        metric.compute(
            predictions=[np.ones((4, 3, 5), dtype="float32")],
            references=[np.ones((4, 3, 5), dtype="float32")],
            k=1,
        )
