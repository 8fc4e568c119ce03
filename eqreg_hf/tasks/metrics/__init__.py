"""Evaluation metrics: PSNR / SSIM for restoration (Y channel or RGB) and top-1 accuracy.

The metric math is torchmetrics'; this module only adds the colour conversion the deraining
literature uses and a small accumulator for evaluation loops.

Rain100L/H, Rain1400 and Rain12 results are reported on the **Y channel of YCbCr** (ITU-R BT.601,
"studio swing", as MATLAB's ``rgb2ycbcr``)::

    Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255        with R, G, B in [0, 1]

so Y lies in [16/255, 235/255]. PSNR uses ``data_range=1`` on that [0, 1] scale (the same number as
computing on [0, 255] with ``data_range=255``). SSIM is torchmetrics' Gaussian SSIM (11x11 window,
sigma 1.5, K1 = 0.01, K2 = 0.03), i.e. Wang et al. 2004 as most papers compute it.

PSNR is computed **per image** and then averaged (how papers report it), not from the pooled MSE of
the batch. Identical images have MSE = 0 and PSNR = ``inf``; the average then is ``inf`` too. That is
reported as is (never silently clipped); pass ``max_psnr=`` to cap each image's PSNR (e.g. 100 dB)
where a finite number is needed, e.g. for logging.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "rgb_to_y",
    "restoration_metrics",
    "RestorationMetrics",
    "top1_accuracy",
    "trainer_accuracy",
]

_COLOR_SPACES = ("y", "rgb")

# ITU-R BT.601 luma for [0, 1] RGB inputs (MATLAB rgb2ycbcr), offsets on the [0, 1] scale.
_Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
_Y_OFFSET = 16.0 / 255.0


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Y channel of YCbCr (ITU-R BT.601) of RGB images in [0, 1].

    ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``, the conversion the deraining literature
    (and MATLAB's ``rgb2ycbcr``) uses. A single-channel input is taken as already grey and returned.

    Args:
        x: ``[..., 3, H, W]`` (or ``[..., 1, H, W]``) float tensor with values in [0, 1].

    Returns:
        ``[..., 1, H, W]`` tensor, values in [16/255, 235/255] for inputs in [0, 1].

    Example:
        >>> rgb_to_y(torch.ones(1, 3, 4, 4)).max().item() * 255  # doctest: +ELLIPSIS
        235.0...
    """
    if x.dim() < 3 or x.shape[-3] not in (1, 3):
        raise ValueError(
            f"rgb_to_y expects images shaped [..., 3, H, W] (or [..., 1, H, W]), got {tuple(x.shape)}; "
            "pass channels-first RGB tensors in [0, 1]."
        )
    if x.shape[-3] == 1:
        return x
    x = x.float()
    r, g, b = x.unbind(dim=-3)
    y = _Y_OFFSET + _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b
    return y.unsqueeze(-3)


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, on: str, quantize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if on not in _COLOR_SPACES:
        raise ValueError(
            f"Unknown colour space on={on!r}. Choose between {list(_COLOR_SPACES)}: "
            "'y' (Y of YCbCr, how deraining results are reported) or 'rgb'."
        )
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}; crop or resize the prediction to the target first."
        )
    if pred.dim() == 3:
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)
    if pred.dim() != 4:
        raise ValueError(f"Expected images shaped [B, C, H, W] or [C, H, W], got {tuple(pred.shape)}.")
    # 8-bit images (e.g. read from PNG) are scaled to [0, 1] rather than clamped to {0, 1}
    pred = (pred.detach().float() / 255.0 if pred.dtype == torch.uint8 else pred.detach().float()).clamp(
        0.0, 1.0
    )
    target = (
        target.detach().float() / 255.0 if target.dtype == torch.uint8 else target.detach().float()
    ).clamp(0.0, 1.0)
    if quantize:
        # Papers save the output as 8-bit PNG before scoring it; this mimics that.
        pred = torch.round(pred * 255.0) / 255.0
        target = torch.round(target * 255.0) / 255.0
    if on == "y":
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return pred, target


def _per_image_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(pred, target, data_range=1.0, dim=(1, 2, 3), reduction="none")


def _per_image_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")


def restoration_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    on: str = "y",
    quantize: bool = False,
    max_psnr: float | None = None,
) -> dict[str, float]:
    """PSNR (dB) and SSIM of restored images, averaged over the batch.

    PSNR = 10 log10(1 / MSE) per image (data range 1), SSIM after Wang et al. (2004); both from
    torchmetrics, on the Y channel of YCbCr (BT.601) or on RGB.

    Args:
        pred: restored images ``[B, C, H, W]`` or ``[C, H, W]``, float in [0, 1] (clamped) or uint8.
        target: clean images, same shape.
        on: ``"y"`` (default; how Rain100L/H etc. are reported) or ``"rgb"``.
        quantize: round both to 8 bits first, as when scoring saved PNGs (default False).
        max_psnr: cap each image's PSNR at this value (default None: identical images give ``inf``).

    Returns:
        ``{"psnr": float, "ssim": float}``.

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> m = restoration_metrics((x + 0.05).clamp(0, 1), x)
        >>> sorted(m)
        ['psnr', 'ssim']
    """
    pred, target = _prepare(pred, target, on, quantize)
    psnr = _per_image_psnr(pred, target)
    if max_psnr is not None:
        psnr = psnr.clamp(max=max_psnr)
    ssim = _per_image_ssim(pred, target)
    return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}


class RestorationMetrics:
    """Running PSNR / SSIM over an evaluation loop (per-image values, averaged at the end).

    Same definitions as :func:`restoration_metrics`; ``update`` many batches, ``compute`` once.

    Args:
        on: ``"y"`` (default) or ``"rgb"``.
        quantize: round to 8 bits before scoring (default False).
        max_psnr: cap each image's PSNR (default None: ``inf`` for a perfect image).

    Example:
        >>> acc = RestorationMetrics(on="y")
        >>> for _ in range(2):
        ...     x = torch.rand(2, 3, 16, 16)
        ...     _ = acc.update((x + 0.05).clamp(0, 1), x)
        >>> acc.count
        4
        >>> sorted(acc.compute())
        ['psnr', 'ssim']
    """

    def __init__(self, on: str = "y", quantize: bool = False, max_psnr: float | None = None):
        if on not in _COLOR_SPACES:
            raise ValueError(f"Unknown colour space on={on!r}. Choose between {list(_COLOR_SPACES)}.")
        self.on = on
        self.quantize = quantize
        self.max_psnr = max_psnr
        self.reset()

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._psnr_sum = 0.0
        self._ssim_sum = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Add a batch; returns this batch's own averages."""
        pred, target = _prepare(pred, target, self.on, self.quantize)
        psnr = _per_image_psnr(pred, target)
        if self.max_psnr is not None:
            psnr = psnr.clamp(max=self.max_psnr)
        ssim = _per_image_ssim(pred, target)
        self._psnr_sum += float(psnr.double().sum())
        self._ssim_sum += float(ssim.double().sum())
        self.count += int(psnr.numel())
        return {"psnr": float(psnr.mean()), "ssim": float(ssim.mean())}

    def compute(self) -> dict[str, float]:
        """Mean PSNR and SSIM over every image seen since the last ``reset``."""
        if self.count == 0:
            return {"psnr": math.nan, "ssim": math.nan}
        return {"psnr": self._psnr_sum / self.count, "ssim": self._ssim_sum / self.count}

    def __repr__(self) -> str:
        return f"RestorationMetrics(on={self.on!r}, count={self.count})"


def top1_accuracy(logits: Any, labels: Any) -> float:
    """Fraction of samples whose highest logit is the label (torchmetrics multiclass accuracy).

    Accepts torch tensors or numpy arrays (e.g. a ``transformers`` ``EvalPrediction``), so it can be
    the body of a Trainer ``compute_metrics``.

    Args:
        logits: ``[N, num_classes]`` scores.
        labels: ``[N]`` integer class indices.

    Returns:
        Accuracy in [0, 1] (micro average, i.e. correct / total).

    Example:
        >>> top1_accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        0.5
    """
    from torchmetrics.functional.classification import multiclass_accuracy

    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels).long().reshape(-1)
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"top1_accuracy expects logits [N, num_classes] and labels [N], got "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}."
        )
    if labels.numel() == 0:
        return math.nan
    acc = multiclass_accuracy(logits.float(), labels, num_classes=logits.shape[1], average="micro", top_k=1)
    return float(acc)


def trainer_accuracy(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for a ``transformers.Trainer`` classifier: ``{"accuracy": top-1}`` of its
    ``EvalPrediction`` (the logits, or the first of a tuple of outputs)."""
    logits = eval_pred.predictions
    logits = logits[0] if isinstance(logits, (tuple, list)) else logits
    return {"accuracy": top1_accuracy(torch.as_tensor(logits), torch.as_tensor(eval_pred.label_ids))}
