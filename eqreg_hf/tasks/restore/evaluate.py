"""Evaluation of a restorer on whole held-out images: image quality and the layer-wise equivariance error.

PSNR / SSIM on RGB (data range 1, outputs clamped to [0, 1]; :mod:`eqreg_hf.tasks.metrics`, torchmetrics
underneath), the PSNR of the degraded input itself (the number to beat; for super-resolution its bicubic
upsampling), and the equivariance error ``||T_g F(x) - F(R_g x)|| / ||F(R_g x)||`` of the model's taps and
of its output (:func:`eqreg_hf.core.measure.equivariance_error`) under C4 or D4, so plain, augmented,
EQ-Reg, output-level-EI and strictly equivariant runs are compared on the same footing.
:func:`~eqreg_hf.tasks.restore.recipe.train_restorer` calls it at the end of a run (and, for the
training / held-out curves, every ``eval_every`` steps).

Example:
    >>> from eqreg_hf.tasks.restore.networks import DnCNN
    >>> pairs = [(torch.rand(3, 16, 16), torch.rand(3, 16, 16))]
    >>> metrics, report = evaluate_restorer(DnCNN(channels=8, depth=3), pairs)
    >>> sorted(metrics)
    ['degraded_psnr', 'equivariance_error', 'output_equivariance_error', 'psnr', 'ssim']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.unwrap import model_device

__all__ = [
    "evaluate_restorer",
    "image_quality",
    "restore",
    "default_taps",
    "RunEvaluation",
    "run_evaluation",
    "EVAL_DEGRADATION_SEED",
    "check_model_output",
]

Pairs = list[tuple[torch.Tensor, torch.Tensor]]
# The held-out photos and the training-set PSNR are degraded with their own fixed seeds, the same for
# every run (whatever its seed), so runs, methods and seeds are compared on identical inputs.
EVAL_DEGRADATION_SEED = 1234
_TRAIN_EVAL_SEED = 4321


def restore(model: nn.Module, degraded: torch.Tensor) -> torch.Tensor:
    """The model's restored image(s) for ``degraded`` ``[B, C, h, w]`` (Swin2SR's ``ModelOutput``
    unpacked), float32."""
    out = model(degraded)
    if not isinstance(out, torch.Tensor):
        from eqreg_hf.tasks.restore.swin2sr import reconstruction

        out = reconstruction(out)
    return out.float()


def _input_baseline(degraded: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The degraded input at the clean size: itself, or its bicubic upsampling (super-resolution)."""
    if tuple(degraded.shape[-2:]) == tuple(size):
        return degraded
    return F.interpolate(degraded, size=size, mode="bicubic", align_corners=False)


@torch.no_grad()
def image_quality(model: nn.Module, pairs: Pairs) -> dict[str, float]:
    """``{"psnr", "ssim", "degraded_psnr"}`` on RGB over ``(degraded, clean)`` pairs (each image whole,
    one at a time).

    Raises:
        ValueError: when the model's output is not the size of the clean image (names both and the fix).
    """
    from eqreg_hf.tasks.metrics import RestorationMetrics

    device = model_device(model)
    restored, given = RestorationMetrics(on="rgb"), RestorationMetrics(on="rgb")
    was_training = model.training
    model.eval()
    try:
        for degraded, clean in pairs:
            pred = restore(model, degraded.unsqueeze(0).to(device)).clamp(0, 1).cpu()
            if pred.shape[-2:] != clean.shape[-2:]:
                raise ValueError(
                    f"The model's output is {tuple(pred.shape[-2:])} for a {tuple(degraded.shape[-2:])} "
                    f"input, but the clean image is {tuple(clean.shape[-2:])}: build the model for the same "
                    "task and scale as the degradation (e.g. build_restorer(name, task='sr', scale=s) "
                    "for a scale-s downsampling)."
                )
            restored.update(pred, clean.unsqueeze(0))
            given.update(
                _input_baseline(degraded.unsqueeze(0).float(), tuple(clean.shape[-2:])).clamp(0, 1),
                clean.unsqueeze(0),
            )
    finally:
        model.train(was_training)
    quality = restored.compute()
    return {"psnr": quality["psnr"], "ssim": quality["ssim"], "degraded_psnr": given.compute()["psnr"]}


def default_taps(model: nn.Module, group: str = "C4") -> Any:
    """The layers the equivariance error is measured on: ``model.eqreg_layers(<field size>)`` (t for C_t,
    2t for D_t), else ``"auto"`` (the core's policy, e.g. Swin2SR's stage outputs)."""
    from eqreg_hf.core.groups import as_group

    if callable(getattr(model, "eqreg_layers", None)):
        return model.eqreg_layers(as_group(group).size)
    return "auto"


@torch.no_grad()
def evaluate_restorer(
    model: nn.Module,
    pairs: Pairs,
    *,
    taps: Any = None,
    group: str = "C4",
    equiv_images: int = 2,
    max_images: int | None = None,
) -> tuple[dict[str, float], Any]:
    """PSNR / SSIM (RGB) on whole held-out images and the layer-wise equivariance error under ``group``.

    Args:
        model: the restorer (a tensor-returning net, or a transformers model whose output has
            ``reconstruction``); put in eval mode for the measurement, restored afterwards.
        pairs: ``(degraded, clean)`` tensors ``[3, h, w]`` / ``[3, H, W]`` (e.g. ``held_out_pairs(...)``).
        taps: layers for the equivariance error (default :func:`default_taps`).
        group: ``"C4"`` (quarter turns), ``"D4"`` (and mirror images), ``"C2"``, ...
        equiv_images: how many images (of the first image's size) the equivariance error is measured on.
        max_images: evaluate at most this many pairs (default: all).

    Returns:
        ``(metrics, report)``: ``metrics`` has ``psnr, ssim`` (RGB, mean over images), ``degraded_psnr`` (the
        degraded input's, bicubically upsampled for SR), ``equivariance_error`` (mean over the taps; NaN when
        there are none) and ``output_equivariance_error`` (the restored image's); ``report`` is the
        :class:`~eqreg_hf.EquivarianceReport` of the taps.
    """
    pairs = list(pairs)[:max_images] if max_images is not None else list(pairs)
    if not pairs:
        raise ValueError("evaluate_restorer got no images: give at least one (degraded, clean) pair.")
    if equiv_images < 1:
        raise ValueError(f"equiv_images={equiv_images!r} is not valid: use a positive integer (1 or more).")
    quality = image_quality(model, pairs)
    report = _equivariance_report(
        model, pairs[:equiv_images], default_taps(model, group) if taps is None else taps, group
    )
    output_err = report.pop("output", float("nan"))
    mean = report.mean if len(report) else float("nan")
    return {
        **quality,
        "equivariance_error": float(mean),
        "output_equivariance_error": float(output_err),
    }, report


def _equivariance_report(model: nn.Module, pairs: Pairs, taps: Any, group: str) -> Any:
    """The equivariance error of ``taps`` and the output, on the degraded images of ``pairs`` shaped like
    the first."""
    from eqreg_hf.core.measure import equivariance_error

    ref = pairs[0][0].shape
    batch = torch.stack([y for y, _ in pairs if y.shape == ref]).to(model_device(model))
    return equivariance_error(model, batch, layers=taps, group=group, include_output=True)


@dataclass
class RunEvaluation:
    """What one training run is measured on, and its curve: fixed held-out and training pairs, taps, group.

    Called as ``eval_fn(model, step)`` (the loop's and the Trainer's periodic evaluation) it appends one row
    to :attr:`history`: ``step, train_psnr, train_ssim, eval_psnr, eval_ssim`` (and ``equivariance_error,
    output_equivariance_error`` when :attr:`curve_errors` is set; the final row always has them);
    :attr:`seconds` is the time those evaluations took (not training).
    """

    eval_pairs: Pairs
    train_pairs: Pairs
    taps: Any
    group: str
    equiv_images: int
    curve_errors: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def final(self, model: nn.Module, step: int) -> tuple[dict[str, float], Any]:
        """The full evaluation at ``step`` (``metrics`` with ``train_psnr``/``train_ssim``, the report),
        recorded in the history (replacing a periodic row of the same step)."""
        metrics, report = evaluate_restorer(
            model, self.eval_pairs, taps=self.taps, group=self.group, equiv_images=self.equiv_images
        )
        train = _train_quality(model, self.train_pairs)
        metrics.update(train_psnr=train["psnr"], train_ssim=train["ssim"])
        if self.history and self.history[-1]["step"] == step:
            self.history.pop()  # the periodic row of the last step: replaced by the full one
        self.history.append(
            {
                "step": int(step),
                "train_psnr": metrics["train_psnr"],
                "train_ssim": metrics["train_ssim"],
                "eval_psnr": metrics["psnr"],
                "eval_ssim": metrics["ssim"],
                "equivariance_error": metrics["equivariance_error"],
                "output_equivariance_error": metrics["output_equivariance_error"],
            }
        )
        return metrics, report

    def __call__(self, model: nn.Module, step: int) -> dict[str, float]:
        start = time.perf_counter()
        if self.curve_errors:
            self.final(model, step)
        else:  # the curves need the PSNRs only: skip the equivariance measurement (most of the cost)
            held_out, train = image_quality(model, self.eval_pairs), _train_quality(model, self.train_pairs)
            self.history.append(
                {
                    "step": int(step),
                    "train_psnr": train["psnr"],
                    "train_ssim": train["ssim"],
                    "eval_psnr": held_out["psnr"],
                    "eval_ssim": held_out["ssim"],
                }
            )
        self.seconds += time.perf_counter() - start
        return dict(self.history[-1])


def _train_quality(model: nn.Module, pairs: Pairs) -> dict[str, float]:
    """PSNR / SSIM on the training images; NaN when there are none (a self-supervised run has no clean
    training image)."""
    return image_quality(model, pairs) if pairs else {"psnr": float("nan"), "ssim": float("nan")}


def run_evaluation(
    model: nn.Module,
    degradation: Any,
    clean_train: Any,
    clean_eval: Any,
    *,
    group: str = "C4",
    max_images: int | None = None,
    equiv_images: int = 2,
    curve_errors: bool = False,
) -> RunEvaluation:
    """A :class:`RunEvaluation`: the held-out images (a clean ``datasets.Dataset``, or ready
    ``(degraded, clean)`` pairs) and the training images (None: none, the training PSNR is NaN), each whole
    and degraded once with its fixed seed; the taps of ``group``."""
    from eqreg_hf.data.restore import held_out_pairs

    pairs = (
        list(clean_eval)[:max_images]
        if isinstance(clean_eval, list)
        else held_out_pairs(clean_eval, degradation, seed=EVAL_DEGRADATION_SEED, max_images=max_images)
    )
    train_pairs = (
        []
        if clean_train is None
        else held_out_pairs(clean_train, degradation, seed=_TRAIN_EVAL_SEED, max_images=max_images)
    )
    return RunEvaluation(pairs, train_pairs, default_taps(model, group), group, equiv_images, curve_errors)


@torch.no_grad()
def check_model_output(
    model: nn.Module, degradation: Any, size: int, eqreg_config: EqRegConfig | None = None
) -> None:
    """Fail before training when the model's output is not the size of the target, or a tap cannot hold
    the group's regular fields: one forward on a ``size`` x ``size`` input (and, with EQ-Reg, one measurement
    of its taps on it, which applies the channel rule)."""
    from eqreg_hf.core.measure import equivariance_error

    clean = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    degraded = degradation(clean, torch.Generator().manual_seed(0))
    image_quality(model, [(degraded[0], clean[0])])  # raises on a size mismatch
    if eqreg_config is not None and eqreg_config.active:
        equivariance_error(model, degraded.to(model_device(model)), eqreg_config, ks=[1])
