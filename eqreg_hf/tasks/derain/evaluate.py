"""Evaluation of a derainer on full held-out images: image quality and the layer-wise equivariance error.

PSNR / SSIM on the Y channel of YCbCr (how Rain100L/H are reported) and on RGB
(:mod:`eqreg_hf.tasks.metrics`, torchmetrics underneath), plus the equivariance error
``||T_k F(x) - F(R_k x)|| / ||F(R_k x)||`` of the model's default taps and of its output
(:func:`eqreg_hf.core.measure.equivariance_error`), so plain, augmented and EQ-Reg runs are
compared on the same layers. :func:`~eqreg_hf.tasks.derain.recipe.train_derainer` calls it at the
end of a run (and every ``eval_every`` steps).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.groups import as_group
from eqreg_hf.core.io import save_figure
from eqreg_hf.core.unwrap import model_device

__all__ = ["evaluate_derainer", "held_out_pairs", "plot_examples", "tracker_images"]


def held_out_pairs(dataset: Any, max_images: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``max_images`` (default: all) ``(rainy, clean)`` pairs of a paired dataset as tensors
    ``[3, H, W]``."""
    from eqreg_hf.data.transforms import to_tensor

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    return [(to_tensor(dataset[i]["rainy"]), to_tensor(dataset[i]["clean"])) for i in range(n)]


@torch.no_grad()
def evaluate_derainer(
    model: nn.Module,
    images: Any,
    *,
    taps: list[str] | None = None,
    group_order: int = 4,
    equiv_images: int = 2,
    max_images: int | None = None,
    group: str | None = None,
) -> tuple[dict[str, float], Any]:
    """PSNR / SSIM (Y and RGB) on full held-out images, and the layer-wise equivariance error.

    Args:
        model: the derainer (put in eval mode for the measurement, restored afterwards).
        images: a paired ``datasets.Dataset`` or a list of ``(rainy, clean)`` tensors ``[3, H, W]``.
        taps: layers for the equivariance error (default: ``model.eqreg_layers(group_order)``).
        group_order: t of C_t for the equivariance error (default 4).
        group: the group by name instead ("D4": rotations and mirror images); its regular fields have
            ``group.size`` channels, which is what ``model.eqreg_layers`` is asked for.
        equiv_images: how many images the equivariance error is measured on (default 2).
        max_images: evaluate at most this many images (default: all).

    Returns:
        ``(metrics, report)``: ``metrics`` has ``psnr_y, ssim_y, psnr_rgb, ssim_rgb,
        equivariance_error`` (mean over taps), ``output_equivariance_error`` (the derained image's
        rotation error) and ``rainy_psnr_y`` (the input's PSNR, the number to beat); ``report``
        is the :class:`~eqreg_hf.EquivarianceReport` of the taps.

    Example:
        >>> from eqreg_hf.tasks.derain.networks import FastDerainer
        >>> net = FastDerainer(channels=8, num_blocks=1)
        >>> pairs = [(torch.rand(3, 17, 20), torch.rand(3, 17, 20))]
        >>> sorted(evaluate_derainer(net, pairs)[0])[:2]
        ['equivariance_error', 'output_equivariance_error']
    """
    pairs = images if isinstance(images, list) else held_out_pairs(images, max_images)
    pairs = pairs[:max_images] if max_images is not None else pairs
    if not pairs:
        raise ValueError("evaluate_derainer got no images: the evaluation split is empty.")
    was_training = model.training
    model.eval()
    try:
        quality, rainy_psnr = _image_quality(model, pairs)
        if taps is None:
            from eqreg_hf.core.groups import as_group

            taps = model.eqreg_layers(as_group(group).size if group is not None else group_order)
        report = _equivariance_report(model, pairs[:equiv_images], taps, group_order, group)
    finally:
        model.train(was_training)
    output_err = report.pop("output", float("nan"))
    metrics = {
        **quality,
        "equivariance_error": report.mean,
        "output_equivariance_error": float(output_err),
        "rainy_psnr_y": rainy_psnr,
    }
    return metrics, report


def _image_quality(
    model: nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[dict[str, float], float]:
    """PSNR / SSIM of the derained images on Y and RGB, and the rainy input's PSNR-Y (the number to beat)."""
    from eqreg_hf.tasks.metrics import RestorationMetrics

    device = model_device(model)
    acc = {on: RestorationMetrics(on=on) for on in ("y", "rgb")}
    rainy_acc = RestorationMetrics(on="y")
    for rainy, clean in pairs:
        pred = model(rainy.unsqueeze(0).to(device)).float().clamp(0, 1).cpu()
        for metric in acc.values():
            metric.update(pred, clean.unsqueeze(0))
        rainy_acc.update(rainy.unsqueeze(0), clean.unsqueeze(0))
    quality = {f"{name}_{on}": acc[on].compute()[name] for on in ("y", "rgb") for name in ("psnr", "ssim")}
    return quality, rainy_acc.compute()["psnr"]


def _equivariance_report(
    model: nn.Module,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    taps: list[str],
    group_order: int,
    group: str | None = None,
) -> Any:
    """The equivariance error of ``taps`` (and the output) on the rainy images of ``pairs`` shaped like
    the first."""
    from eqreg_hf.core.config import EqRegConfig
    from eqreg_hf.core.measure import equivariance_error

    # Same-size images batch together; the first few are enough for a stable mean.
    ref = pairs[0][0].shape
    batch = torch.stack([r for r, _ in pairs if r.shape == ref]).to(model_device(model))
    cfg = EqRegConfig(layers=taps, group=group, group_order=None if group is not None else group_order)
    return equivariance_error(model, batch, cfg, include_output=True)


def plot_examples(
    models: dict[str, nn.Module],
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    path: str | os.PathLike,
    crop: int = 96,
    max_rows: int = 3,
) -> str:
    """Save a PNG grid: one row per image, columns rainy | each model's output | clean (centre crops)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = pairs[:max_rows]
    cols = ["rainy"] + list(models) + ["clean"]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.3 * len(rows)), squeeze=False)
    for r, (rainy, clean) in enumerate(rows):
        h, w = rainy.shape[-2:]
        c = min(crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        images = [rainy]
        for model in models.values():
            was_training = model.training
            model.eval()
            with torch.no_grad():
                images.append(model(rainy.unsqueeze(0).to(model_device(model)))[0].float().cpu())
            model.train(was_training)
        images.append(clean)
        for col, (name, img) in enumerate(zip(cols, images)):
            ax = axes[r][col]
            ax.imshow(img[:, top : top + c, left : left + c].clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def tracker_images(
    model: nn.Module, pairs: list[tuple[torch.Tensor, torch.Tensor]], report: Any
) -> dict[str, Any]:
    """What a run logs as images to its trackers: ``{name: draw(path) -> path}``, the rainy | restored | clean
    crops of two held-out images and the per-layer equivariance plot."""
    images = {
        "eval/examples": lambda path: plot_examples({"restored": model}, pairs[:2], path, crop=96, max_rows=2)
    }
    if report:
        images["eval/equivariance_per_layer"] = report.plot
    return images


@dataclass
class HeldOut:
    """The held-out images of a run and what every evaluation of it measures (the same taps and group)."""

    pairs: list[tuple[torch.Tensor, torch.Tensor]]
    taps: list[str] | None
    group: str
    equiv_images: int
    seconds: float = 0.0
    history: None = None  # the loop keeps the periodic rows

    def final(self, model: nn.Module, step: int) -> tuple[dict[str, float], Any]:
        spec = as_group(self.group)  # C_t by its order (the numbers of before), D_t by name
        kw = {"group": spec.name} if spec.dihedral else {"group_order": spec.t}
        return evaluate_derainer(model, self.pairs, taps=self.taps, equiv_images=self.equiv_images, **kw)

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        """The loop's periodic evaluation (with the per-layer equivariance error)."""
        start = time.perf_counter()
        metrics, report = self.final(model, step)
        self.seconds += time.perf_counter() - start
        return {**metrics, **{f"equiv_error/{k}": v for k, v in dict(report).items()}}
