"""The tasks the web demo serves, one :class:`AppTask` each, in one registry (:data:`APP_TASKS`).

A saved folder names its task and its training degradation (the card's ``eqreg`` metadata,
:func:`eqreg_hf.hub.card_facts.saved_task`). The entry of that task says how to read those settings (and
refuses, in one line, a folder that lacks one it needs), how to degrade an example the way the model was
trained, what the PSNR of the input compares, and how to label the three images. Adding a task is one
subclass and ``register_app_task(MyTask)``; ``eqreg-hf space`` refuses a folder whose task has no entry.

Example:
    >>> task = APP_TASKS["denoise"]
    >>> settings = task.settings({"task": "denoise", "sigma": 0.1}, "runs/denoise")
    >>> task.describe(settings)
    'Gaussian noise, σ = 0.1 (25.5/255), as in training'
    >>> sorted(APP_TASKS)
    ['classification', 'denoise', 'derain', 'inpaint', 'sr']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["APP_TASKS", "AppTask", "app_task", "register_app_task"]


class AppTask:
    """How the demo serves one saved task. Subclasses set the attributes and override what differs."""

    name: str = ""  # the task a folder's card names ("denoise", ...)
    restores: bool = True  # False: the demo shows the per-layer equivariance error only
    channels: int = 3  # image channels the network takes (1: grey slices)
    labels: tuple[str, str, str] = ("input (degraded)", "restored", "clean")

    def settings(self, degradation: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
        """The training degradation read from the folder, checked; a one-line ValueError when one the task
        needs is missing."""
        return {}

    def describe(self, settings: Mapping[str, Any]) -> str:
        """The degradation in words, for the page."""
        return ""

    def side_multiple(self, settings: Mapping[str, Any], input_multiple: int = 2) -> int:
        """Both sides of the clean image are made a multiple of this, so that the model's input has sides
        that are multiples of ``input_multiple`` (even: exact turns; a window size, ...)."""
        return input_multiple

    def degrade(self, clean: np.ndarray, settings: Mapping[str, Any], seed: int) -> np.ndarray:
        """The model's input for a clean float ``[H, W, C]`` image in [0, 1]."""
        raise NotImplementedError

    def input_baseline(self, degraded: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The degraded input as compared with the clean image (PSNR of the input): itself by default."""
        return degraded

    def _need(self, degradation: Mapping[str, Any] | None, keys: tuple[str, ...], source: str) -> dict:
        d = dict(degradation or {})
        if d.get("task", self.name) != self.name:
            raise ValueError(
                f"{source}: the card names the task {self.name!r} but a {d['task']!r} degradation; re-save "
                "the folder with its own (CardFacts(degradation=...))."
            )
        missing = [k for k in keys if d.get(k) is None]
        if missing:
            raise ValueError(
                f"{source} is a {self.name!r} model but its folder does not record {', '.join(missing)} (no "
                "eqreg block in README.md's metadata, no training_log.json): the demo cannot degrade like "
                "training. Re-save it with train-restore, or write_hub_folder(..., CardFacts(task="
                f"{self.name!r}, degradation=Degradation({self.name!r}, ...).to_dict()))."
            )
        return d


APP_TASKS: dict[str, AppTask] = {}


def register_app_task(cls: type[AppTask]) -> type[AppTask]:
    """Add a task to :data:`APP_TASKS` (once per name); returns the class, so it can decorate it."""
    if not cls.name or cls.name in APP_TASKS:
        raise ValueError(f"App task {cls.name!r} has no name or is registered already: {sorted(APP_TASKS)}.")
    APP_TASKS[cls.name] = cls()
    return cls


def app_task(task: str | None, source: str) -> AppTask:
    """The registered entry of a saved task; one line naming the registered ones otherwise."""
    if task not in APP_TASKS:
        said = f"names the task {task!r}" if task else "does not name its task (no eqreg block in README.md)"
        raise ValueError(
            f"{source} {said}; the web demo serves {sorted(APP_TASKS)}. Re-save the folder with a training "
            "command or write_hub_folder(..., CardFacts(task=...)), or register the task "
            "(eqreg_hf.app.tasks.register_app_task)."
        )
    return APP_TASKS[task]


def _sigma_words(sigma: float) -> str:
    return f"σ = {sigma:.4g} ({sigma * 255:.3g}/255)"


class _Restoration(AppTask):
    """denoise / inpaint / sr: the training forward model (:class:`eqreg_hf.data.restore.Degradation`)."""

    needs: tuple[str, ...] = ()

    def settings(self, degradation: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
        from eqreg_hf.data.restore import Degradation

        d = self._need(degradation, self.needs, source)
        fields = {k: d[k] for k in ("sigma", "mask_ratio", "scale", "sr_filter") if d.get(k) is not None}
        fields.setdefault("sigma", 0.0)  # inpaint / sr cards without noise
        return Degradation(self.name, **fields).to_dict()  # checked by the forward model itself

    def degrade(self, clean: np.ndarray, settings: Mapping[str, Any], seed: int) -> np.ndarray:
        import torch

        from eqreg_hf.data.restore import Degradation

        forward = Degradation(**settings)
        x = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1).float()
        y = forward(x, torch.Generator().manual_seed(seed))
        return y.permute(1, 2, 0).clamp(0, 1).numpy()


@register_app_task
class Denoise(_Restoration):
    name, needs = "denoise", ("sigma",)

    def describe(self, settings: Mapping[str, Any]) -> str:
        return f"Gaussian noise, {_sigma_words(settings['sigma'])}, as in training"


@register_app_task
class Inpaint(_Restoration):
    name, needs = "inpaint", ("mask_ratio",)
    labels = ("input (pixels missing)", "restored", "clean")

    def describe(self, settings: Mapping[str, Any]) -> str:
        noise = f", noise {_sigma_words(settings['sigma'])}" if settings["sigma"] > 0 else ""
        return f"{100 * settings['mask_ratio']:.3g}% of the pixels missing{noise}, as in training"


@register_app_task
class SuperResolution(_Restoration):
    name, needs = "sr", ("scale",)
    labels = ("input (low resolution)", "restored (upscaled)", "clean")

    def describe(self, settings: Mapping[str, Any]) -> str:
        noise = f", noise {_sigma_words(settings['sigma'])}" if settings["sigma"] > 0 else ""
        return f"×{settings['scale']} downsampling ({settings['sr_filter']} filter){noise}, as in training"

    def side_multiple(self, settings: Mapping[str, Any], input_multiple: int = 2) -> int:
        return int(settings["scale"]) * input_multiple  # the low-resolution input is the model's

    def input_baseline(self, degraded: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        # the evaluation's baseline (degraded_psnr): the input upsampled bicubically to the clean size
        x = torch.from_numpy(np.ascontiguousarray(degraded)).permute(2, 0, 1)[None]
        up = F.interpolate(x, size=tuple(shape[:2]), mode="bicubic", align_corners=False)
        return up[0].permute(1, 2, 0).clamp(0, 1).numpy()


@register_app_task
class Derain(AppTask):
    """Synthetic rain streaks drawn with the saved :class:`~eqreg_hf.data.RainSettings`."""

    name = "derain"
    labels = ("input (rainy)", "derained", "clean")

    def settings(self, degradation: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
        from eqreg_hf.data.rain_settings import RainSettings

        d = self._need(degradation, (), source)
        names = {f.name for f in dataclasses.fields(RainSettings)}
        rain = RainSettings(**{k: v for k, v in d.items() if k in names})
        # a model trained on a rain dataset (or a folder that does not say) still sees synthetic rain here:
        # the page says so next to the images
        return {"rain": d.get("rain"), **dataclasses.asdict(rain)}

    def describe(self, settings: Mapping[str, Any]) -> str:
        source = settings.get("rain")
        if source == "synthetic":
            return "synthetic rain streaks, drawn as in training"
        trained = f"the rain of {source}" if source else "a rain its folder does not record"
        return f"eqreg-hf's synthetic rain streaks (the model was trained on {trained}, which differs)"

    def degrade(self, clean: np.ndarray, settings: Mapping[str, Any], seed: int) -> np.ndarray:
        from eqreg_hf.data.rain_settings import RainSettings
        from eqreg_hf.data.synthetic import add_rain

        rain = RainSettings(**{k: v for k, v in settings.items() if k != "rain"})
        return add_rain(clean, intensity=rain.intensity, blend=rain.blend, seed=seed, **rain.streak_kwargs())


@register_app_task
class Classification(AppTask):
    name, restores = "classification", False

    def describe(self, settings: Mapping[str, Any]) -> str:
        return "a classifier: the demo shows its per-layer equivariance error"
