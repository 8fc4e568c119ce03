"""transformers' Swin2SR for restoration, built from a config (no download) and trained with ``EqRegTrainer``.

    model = build_swin2sr("denoise")                      # a tiny CPU model, random weights
    log, seconds = fit_with_trainer(model, train_ds, EqRegConfig(layers="auto", weight=1e-2),
                                    max_steps=200, batch_size=8, learning_rate=2e-4)

``Swin2SRForImageSuperResolution`` refuses ``labels`` ("Training is not supported"), so the task loss is
ours: the mean squared error between :func:`reconstruction` of the outputs and the clean targets (the
Trainer mixin pops the targets before the forward and rotates them with the input). ``layers="auto"``
taps the stage outputs (``swin2sr.encoder.stages.N``, tokens on the input grid, see
:mod:`eqreg_hf.core.selection`).

Input sizes: Swin2SR pads an input to a multiple of ``window_size`` (reflect, bottom/right), which is
not symmetric under rotation; transformers 5.x even fails on such inputs (its ``patch_unembed`` uses the
unpadded size). Train on crops whose degraded side is a multiple of ``window_size``
(:func:`check_input_size` says so in one line).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.data.restore import RESTORE_TASKS

__all__ = [
    "build_swin2sr",
    "reconstruction",
    "fit_with_trainer",
    "check_input_size",
    "TINY_SWIN2SR",
    "FIT_SETTINGS",
]

# transformers' upsamplers and the factors each one builds (Upsample: powers of two and 3; nearest+conv: 4).
_UPSAMPLER_SCALES = {
    "pixelshuffle": (2, 3, 4, 8),
    "pixelshuffledirect": (2, 3, 4, 8),
    "pixelshuffle_aux": (2, 3, 4, 8),
    "nearest+conv": (4,),
}
# The tiny CPU default. drop_path_rate=0: stochastic depth would drop different blocks in the original and
# rotated rows of EQ-Reg's stacked batch, so the term would measure the noise, not the (lack of) equivariance.
TINY_SWIN2SR = dict(
    embed_dim=24,
    depths=[2, 2],
    num_heads=[2, 2],
    window_size=4,
    mlp_ratio=2.0,
    img_range=1.0,
    num_channels=3,
    image_size=64,
    drop_path_rate=0.0,
)


def build_swin2sr(task: str = "denoise", scale: int = 2, **config_kwargs: Any) -> nn.Module:
    """A ``Swin2SRForImageSuperResolution`` with random weights from a ``Swin2SRConfig``.

    Args:
        task: ``"denoise"`` / ``"inpaint"`` (same-size restoration: ``upscale=1``, no upsampler, the output is
            the input plus a learned residual) or ``"sr"`` (``upscale=scale`` and a pixel-shuffle upsampler,
            ``"pixelshuffledirect"`` by default: SwinIR's lightweight one).
        scale: the super-resolution factor (``"sr"`` only): 2, 3, 4 or 8 (4 for ``upsampler="nearest+conv"``).
        **config_kwargs: ``Swin2SRConfig`` fields overriding :data:`TINY_SWIN2SR` (e.g. ``embed_dim=60``).

    The untrained same-size model starts at the identity: transformers adds the raw input and then the data
    mean (0.45) to the residual, so the final convolution's bias starts at minus that mean.
    """
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    if task not in RESTORE_TASKS:
        raise ValueError(f"task={task!r} is not a restoration task; choose one of {list(RESTORE_TASKS)}.")
    kwargs = {**TINY_SWIN2SR, **config_kwargs}
    defaults = Swin2SRConfig()
    unknown = sorted(k for k in config_kwargs if not hasattr(defaults, k))
    if unknown:
        raise ValueError(
            f"Unknown Swin2SRConfig field(s) {unknown}; use fields of transformers.Swin2SRConfig such "
            "as embed_dim, depths, num_heads, window_size, mlp_ratio, upsampler."
        )
    _set_upsampling(kwargs, task, scale)
    if len(kwargs["depths"]) != len(kwargs["num_heads"]):
        raise ValueError(
            f"depths={list(kwargs['depths'])} and num_heads={list(kwargs['num_heads'])} must have one "
            "entry per stage each; pass both with the same length."
        )
    window, image = int(kwargs["window_size"]), kwargs["image_size"]
    side = min(image) if isinstance(image, (list, tuple)) else int(image)
    if window < 1 or window > side:
        raise ValueError(
            f"window_size={window} must be between 1 and image_size={side} (Swin2SR shrinks windows larger "
            "than image_size and then pads to the wrong multiple); lower window_size or raise image_size."
        )
    model = Swin2SRForImageSuperResolution(Swin2SRConfig(**kwargs))
    if not kwargs["upsampler"]:
        with torch.no_grad():
            mean = model.swin2sr.mean.reshape(-1).to(model.final_convolution.bias.dtype)
            model.final_convolution.bias.copy_(-mean * float(kwargs["img_range"]))
    return model


def _set_upsampling(kwargs: dict, task: str, scale: Any) -> None:
    """Fill ``upscale`` / ``upsampler`` for the task, refusing values that contradict it."""
    if task != "sr":
        if kwargs.get("upscale", 1) != 1 or kwargs.get("upsampler", ""):
            raise ValueError(
                f"task={task!r} restores at the input's size: upscale must be 1 and upsampler '' (got "
                f"upscale={kwargs.get('upscale', 1)!r}, upsampler={kwargs.get('upsampler', '')!r}); "
                "use task='sr' to upsample."
            )
        kwargs.update(upscale=1, upsampler="")
        return
    upsampler = kwargs.setdefault("upsampler", "pixelshuffledirect")
    if upsampler not in _UPSAMPLER_SCALES:
        raise ValueError(
            f"upsampler={upsampler!r} cannot super-resolve; choose one of {list(_UPSAMPLER_SCALES)}."
        )
    valid = _UPSAMPLER_SCALES[upsampler]
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in valid:
        raise ValueError(
            f"scale={scale!r} is not an upsampling factor of Swin2SR's {upsampler!r} upsampler; "
            f"choose one of {list(valid)}."
        )
    if kwargs.get("upscale", scale) != scale:
        raise ValueError(
            f"upscale={kwargs['upscale']!r} contradicts scale={scale}; pass the factor as scale= only."
        )
    kwargs["upscale"] = scale


def reconstruction(outputs: Any) -> torch.Tensor:
    """The restored image of a model's outputs: ``outputs.reconstruction`` (a transformers ``ModelOutput``),
    the ``"reconstruction"`` entry of a dict, or the tensor itself."""
    if torch.is_tensor(outputs):
        return outputs
    rec = (
        outputs.get("reconstruction")
        if isinstance(outputs, Mapping)
        else getattr(outputs, "reconstruction", None)
    )
    if rec is None:
        raise ValueError(
            f"{type(outputs).__name__} holds no 'reconstruction'; pass a tensor or an "
            "ImageSuperResolutionOutput (Swin2SRForImageSuperResolution's output)."
        )
    return rec


def reconstruction_mse(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    """The task loss: mean squared error between :func:`reconstruction` and the clean targets."""
    return F.mse_loss(reconstruction(outputs), labels)


def check_input_size(
    model: nn.Module, height: int, width: int, target_hw: tuple[int, int] | None = None
) -> None:
    """One-line ``ValueError`` unless a Swin2SR ``model`` takes a ``height`` x ``width`` input without padding
    (sides multiples of ``window_size``) and, if ``target_hw`` is given, returns that size (``upscale`` x
    input).

    Models without ``config.window_size`` / ``config.upscale`` pass (nothing to check)."""
    config = getattr(model, "config", None)
    window, up = getattr(config, "window_size", None), getattr(config, "upscale", None)
    if window and (height % window or width % window):
        fit = lambda n: max(window, n // window * window)  # noqa: E731
        raise ValueError(
            f"Input {height}x{width} is not a multiple of Swin2SR's window_size={window}: it pads "
            "bottom/right (not rotation-symmetric; transformers then fails). Use crops whose degraded "
            f"side is a multiple of {window}, e.g. {fit(height)}x{fit(width)}."
        )
    if up and target_hw is not None and tuple(target_hw) != (height * up, width * up):
        raise ValueError(
            f"Target {target_hw[0]}x{target_hw[1]} does not match the {height * up}x{width * up} output "
            f"of Swin2SR (upscale={up}) for a {height}x{width} input; build the model with the task's "
            "scale (build_swin2sr('sr', scale=...)) or degrade the data with the model's upscale."
        )


class _Repeated(Dataset):
    """``base`` repeated to ``length`` items: item i is ``base[i % len(base)]``."""

    def __init__(self, base: Any, length: int):
        self.base, self.length = base, int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Any:
        if not 0 <= i < self.length:
            raise IndexError(i)
        return self.base[i % len(self.base)]


def _check_fit_args(
    model: nn.Module,
    train_dataset: Any,
    eqreg_config: Any,
    counts: dict[str, Any],
    learning_rate: Any,
    eval_fn: Any,
    eval_every: Any,
) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1.")
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, (int, float))
        or not math.isfinite(learning_rate)
        or learning_rate <= 0
    ):
        raise ValueError(f"learning_rate={learning_rate!r} must be a finite number > 0, e.g. 2e-4.")
    if eqreg_config is not None and not isinstance(eqreg_config, EqRegConfig):
        raise ValueError(f"eqreg_config={eqreg_config!r} must be an EqRegConfig or None (plain training).")
    if (eval_fn is None) != (eval_every is None):
        raise ValueError(
            f"eval_fn and eval_every go together (got eval_fn={eval_fn!r}, eval_every={eval_every!r}); "
            "pass both to evaluate during training, or neither."
        )
    if eval_every is not None and (
        isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1
    ):
        raise ValueError(
            f"eval_every={eval_every!r} must be an integer >= 1 (optimizer steps between evaluations)."
        )
    if len(train_dataset) == 0:
        raise ValueError("train_dataset is empty; give at least one {'pixel_values', 'labels'} item.")
    item = train_dataset[0]
    if not isinstance(item, Mapping) or not {"pixel_values", "labels"} <= set(item):
        keys = sorted(item) if isinstance(item, Mapping) else type(item).__name__
        raise ValueError(
            f"train_dataset items must be dicts with 'pixel_values' and 'labels' (got {keys}); use "
            "RestoreTransform (eqreg_hf.data.restore) with ds.with_transform(...)."
        )
    x, y = item["pixel_values"], item["labels"]
    check_input_size(model, int(x.shape[-2]), int(x.shape[-1]), (int(y.shape[-2]), int(y.shape[-1])))


FIT_SETTINGS = {
    "max_steps": None,
    "batch_size": None,
    "learning_rate": None,
    "gradient_accumulation_steps": 1,
    "seed": 0,
    "logging_steps": 10,
    "progress": True,
    "report_to": "none",
}


def _fit_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``fit_with_trainer``'s keyword settings over the defaults; an unknown or missing one is named."""
    unknown = sorted(set(settings) - set(FIT_SETTINGS))
    missing = sorted(k for k, v in FIT_SETTINGS.items() if v is None and k not in settings)
    if unknown or missing:
        raise TypeError(
            f"fit_with_trainer: unknown settings {unknown}, missing {missing}; the settings are "
            f"{sorted(FIT_SETTINGS)} (max_steps, batch_size and learning_rate are required)."
        )
    return {**FIT_SETTINGS, **settings}


def fit_with_trainer(
    model: nn.Module,
    train_dataset: Any,
    eqreg_config: EqRegConfig | None,
    *,
    eval_fn: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    eval_every: int | None = None,
    output_dir: str | None = None,
    task_loss: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
    **settings: Any,
) -> tuple[list[dict], float]:
    """Train ``model`` with :class:`~eqreg_hf.train.trainer.EqRegTrainer`; returns ``(log_history, seconds)``.

    ``train_dataset`` is any map dataset of ``{"pixel_values": degraded, "labels": clean}`` (e.g. a
    ``datasets`` dataset with ``RestoreTransform``), repeated to
    ``max_steps * batch_size * gradient_accumulation_steps`` items so that a one-image training set still
    fills every batch. The task loss is the MSE between :func:`reconstruction` and the targets (rotated with
    the input by the mixin); ``eqreg_config=None`` (or an inactive one) trains plainly. Cosine learning rate,
    AdamW, no checkpoints (``save_strategy="no"``); ``progress=False``: no progress bar and nothing printed.
    ``eval_fn(model, step) -> dict`` runs every ``eval_every`` optimizer steps (eval mode, no gradient) and
    its dict is logged (``log_history`` entries with ``step``). ``seconds`` is the wall time of ``train()``
    without the time spent in ``eval_fn``. ``output_dir=None``: a temporary folder (nothing is saved there
    anyway). ``task_loss(outputs, labels)``: another task loss (default: the MSE of :func:`reconstruction`),
    e.g. a self-supervised one whose labels are packed measurements.
    """
    values = _fit_settings(settings)
    max_steps, batch_size, learning_rate = values["max_steps"], values["batch_size"], values["learning_rate"]
    gradient_accumulation_steps, seed = values["gradient_accumulation_steps"], values["seed"]
    logging_steps, progress, report_to = values["logging_steps"], values["progress"], values["report_to"]
    from transformers import TrainingArguments

    from eqreg_hf.tasks.engines import eval_callback
    from eqreg_hf.train.trainer import EqRegTrainer

    counts = dict(
        max_steps=max_steps,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        logging_steps=logging_steps,
    )
    _check_fit_args(model, train_dataset, eqreg_config, counts, learning_rate, eval_fn, eval_every)
    data = _Repeated(train_dataset, max_steps * batch_size * gradient_accumulation_steps)
    with tempfile.TemporaryDirectory(prefix="swin2sr-") as tmp:
        args = TrainingArguments(
            output_dir=output_dir or tmp,
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            learning_rate=float(learning_rate),
            lr_scheduler_type="cosine",
            gradient_accumulation_steps=gradient_accumulation_steps,
            seed=seed,
            logging_steps=logging_steps,
            save_strategy="no",
            report_to=report_to,
            remove_unused_columns=False,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=not progress,
            dataloader_num_workers=0,
        )
        ref: list = [None]
        callbacks = [eval_callback(eval_fn, eval_every, ref)] if eval_fn is not None else []
        trainer = EqRegTrainer(
            model=model,
            args=args,
            train_dataset=data,
            eqreg=eqreg_config,
            task_loss=task_loss or reconstruction_mse,
            callbacks=callbacks,
        )
        ref[0] = trainer
        if not progress:  # no bar, and no log dict printed per logging step either (the bar's stand-in)
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start - sum(cb.seconds for cb in callbacks)
    return trainer.state.log_history, seconds
