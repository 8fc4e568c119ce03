"""PSNR / SSIM (Y of YCbCr and RGB) and top-1 accuracy."""

from __future__ import annotations

import doctest
import importlib
import math

import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")

from eqreg_hf.tasks.metrics import RestorationMetrics, restoration_metrics, rgb_to_y, top1_accuracy  # noqa: E402

Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0  # dY for a grey step of 1 in R = G = B


def _images(b=2, h=19, w=26, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.2 + 0.6 * torch.rand(b, 3, h, w, generator=g)  # in [0.2, 0.8]: offsets below never clip


@pytest.mark.parametrize(
    "rgb,y255",
    [
        ((0, 0, 0), 16.0),
        ((1, 1, 1), 235.0),
        ((1, 0, 0), 16 + 65.481),
        ((0, 1, 0), 16 + 128.553),
        ((0, 0, 1), 16 + 24.966),
    ],
)
def test_rgb_to_y_bt601(rgb, y255):
    x = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 3, 5)
    y = rgb_to_y(x)
    assert y.shape == (1, 1, 3, 5)
    assert torch.allclose(y * 255, torch.full_like(y, y255), atol=1e-4)


@pytest.mark.parametrize("on", ["y", "rgb"])
def test_identical_images(on):
    x = _images()
    m = restoration_metrics(x, x, on=on)
    assert math.isinf(m["psnr"]) and m["psnr"] > 0
    assert m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert restoration_metrics(x, x, on=on, max_psnr=100.0)["psnr"] == pytest.approx(100.0)


@pytest.mark.parametrize("on,gain", [("rgb", 1.0), ("y", Y_GAIN)])
@pytest.mark.parametrize("delta", [0.1, 0.03])
def test_known_mse_gives_known_psnr(on, gain, delta):
    target = _images()
    pred = target + delta  # MSE = (gain * delta)^2 exactly
    expected = 10 * math.log10(1.0 / (gain * delta) ** 2)
    assert restoration_metrics(pred, target, on=on)["psnr"] == pytest.approx(expected, abs=1e-3)


def test_psnr_is_averaged_per_image_not_pooled():
    target = _images(b=2)
    pred = target.clone()
    pred[0] += 0.1
    pred[1] += 0.01
    per_image = [10 * math.log10(1 / 0.1**2), 10 * math.log10(1 / 0.01**2)]
    pooled = 10 * math.log10(1 / ((0.1**2 + 0.01**2) / 2))
    got = restoration_metrics(pred, target, on="rgb")["psnr"]
    assert got == pytest.approx(sum(per_image) / 2, abs=1e-3) and abs(got - pooled) > 1.0


def test_ssim_matches_scikit_image_reference():
    skm = pytest.importorskip("skimage.metrics")
    target = _images(b=1, h=33, w=47)
    pred = (target + 0.08 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    yp, yt = rgb_to_y(pred)[0, 0].numpy(), rgb_to_y(target)[0, 0].numpy()
    ref = skm.structural_similarity(
        yt, yp, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    got = restoration_metrics(pred, target, on="y")["ssim"]
    assert 0.3 < got < 0.999 and got == pytest.approx(ref, abs=0.01)  # border handling differs slightly


def test_worse_restoration_scores_lower():
    target = _images()
    g = torch.Generator().manual_seed(2)
    mild = target + 0.02 * torch.randn(target.shape, generator=g)
    bad = target + 0.2 * torch.randn(target.shape, generator=g)
    a, b = restoration_metrics(mild, target), restoration_metrics(bad, target)
    assert a["psnr"] > b["psnr"] and a["ssim"] > b["ssim"]


def test_quantize_rounds_to_8_bit():
    target = torch.full((1, 3, 12, 12), 100 / 255)
    pred = target + 0.3 / 255  # below half a grey level: vanishes after rounding
    assert math.isinf(restoration_metrics(pred, target, on="rgb", quantize=True)["psnr"])
    assert math.isfinite(restoration_metrics(pred, target, on="rgb")["psnr"])


@pytest.mark.parametrize("on", ["y", "rgb"])
def test_accumulator_equals_one_shot(on):
    target, pred = _images(b=5, seed=3), _images(b=5, seed=4)
    acc = RestorationMetrics(on=on)
    assert math.isnan(acc.compute()["psnr"])
    acc.update(pred[:2], target[:2])
    acc.update(pred[2:], target[2:])
    once = restoration_metrics(pred, target, on=on)
    got = acc.compute()
    assert acc.count == 5
    assert got["psnr"] == pytest.approx(once["psnr"], rel=1e-5)
    assert got["ssim"] == pytest.approx(once["ssim"], rel=1e-5)
    acc.reset()
    assert acc.count == 0


def test_uint8_images_are_scaled_not_clamped():
    target = (_images(b=1) * 255).round()
    pred = target + 10
    expected = restoration_metrics(pred / 255, target / 255, on="rgb")["psnr"]
    got = restoration_metrics(pred.to(torch.uint8), target.to(torch.uint8), on="rgb")["psnr"]
    assert got == pytest.approx(expected, abs=1e-3) and got == pytest.approx(
        20 * math.log10(255 / 10), abs=1e-3
    )


def test_single_image_chw_is_accepted():
    t = _images(b=1)[0]
    assert restoration_metrics(t + 0.1, t, on="rgb")["psnr"] == pytest.approx(20.0, abs=1e-3)


@pytest.mark.parametrize(
    "pred,target,on,match",
    [
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), "lab", r"Choose between \['y', 'rgb'\]"),
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), "y", "same shape"),
        (torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8), "y", r"\[\.\.\., 3, H, W\]"),
    ],
)
def test_bad_inputs(pred, target, on, match):
    with pytest.raises(ValueError, match=match):
        restoration_metrics(pred, target, on=on)


@pytest.mark.parametrize(
    "logits,labels,expected",
    [
        ([[2.0, 1.0], [0.0, 3.0]], [0, 0], 0.5),
        ([[0.1, 0.2, 0.7], [0.9, 0.05, 0.05], [0.2, 0.5, 0.3]], [2, 0, 1], 1.0),
        ([[1.0, 0.0, 0.0, 0.0]] * 4, [1, 2, 3, 1], 0.0),
    ],
)
def test_top1_accuracy(logits, labels, expected):
    assert top1_accuracy(torch.tensor(logits), torch.tensor(labels)) == pytest.approx(expected)
    assert top1_accuracy(np.asarray(logits), np.asarray(labels)) == pytest.approx(expected)  # EvalPrediction


def test_top1_accuracy_shape_error():
    with pytest.raises(ValueError, match=r"logits \[N, num_classes\]"):
        top1_accuracy(torch.zeros(3, 4), torch.zeros(2))


def test_docstring_examples():
    result = doctest.testmod(importlib.import_module("eqreg_hf.tasks.metrics"), extraglobs={"torch": torch})
    assert result.failed == 0 and result.attempted > 0
