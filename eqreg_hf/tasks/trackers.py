"""Trackers (``--report-to``): one class each, in one registry (:data:`TRACKERS`).

A tracker knows its package, the Accelerate tracker of the training loop (``train-derain``), how to log images
there and through the ``transformers.Trainer``'s reporting callback (``train-classifier``), and how to close
that callback's run. Scalars go through Accelerate / the Trainer themselves; only images and the finish
differ per tracker. Adding one is a :class:`Tracker` subclass and one line in :data:`TRACKERS`.

Example:
    >>> REPORT_TO
    ('none', 'tensorboard', 'trackio', 'wandb')
    >>> check_report_to("tensorboard, trackio")
    ['tensorboard', 'trackio']
    >>> check_report_to("mlflow")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: report_to='mlflow' is not valid: give one of ['none', 'tensorboard', 'trackio', 'wandb'] ...
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

__all__ = [
    "PACKAGES",
    "REPORT_TO",
    "TRACKERS",
    "TRACKER_PROJECT",
    "Tracker",
    "check_report_to",
    "figure_array",
    "finish_trainer_trackers",
    "log_loop_images",
    "log_trainer_images",
    "loop_trackers",
    "report_trainer_images",
]

TRACKER_PROJECT = "eqreg-hf"  # trackio / W&B project of the runs (W&B: WANDB_PROJECT overrides it)


class Tracker:
    """One ``--report-to`` name. Subclasses set the class attributes and the methods."""

    name: str = ""  # the --report-to name, also Accelerate's ``tracker.name``
    package: str = ""  # what `pip install` takes
    callback: str = ""  # class name of the Trainer's reporting callback

    def loop_tracker(self, run_dir: str | None, run_name: str) -> Any:
        """The Accelerate tracker of a loop run."""
        raise NotImplementedError

    def log_loop_images(self, tracker: Any, images: dict[str, Any], step: int) -> None:
        """Log ``{name: [H, W, 3] uint8 array}`` through the Accelerate ``tracker``."""
        tracker.log({k: self.image(v) for k, v in images.items()}, step=step)

    def image(self, array: Any) -> Any:
        """An image object the tracker's ``log`` takes."""
        raise NotImplementedError

    def trainer_active(self, cb: Any) -> bool:
        """Whether the Trainer's callback ``cb`` has a run open."""
        return bool(getattr(cb, "_initialized", False))

    def log_trainer_images(self, cb: Any, images: dict[str, Any], step: int) -> None:
        """Log images through the Trainer's callback ``cb`` (an open run)."""
        raise NotImplementedError

    def finish_trainer(self, cb: Any) -> None:
        """Close the run the Trainer's callback ``cb`` has open."""


class TensorBoard(Tracker):
    name, package, callback = "tensorboard", "tensorboard", "TensorBoardCallback"

    def loop_tracker(self, run_dir: str | None, run_name: str) -> Any:
        from accelerate.tracking import TensorBoardTracker

        return TensorBoardTracker(run_name, os.path.join(run_dir, "runs"))

    def log_loop_images(self, tracker: Any, images: dict[str, Any], step: int) -> None:
        tracker.log_images({k: v[None] for k, v in images.items()}, step=step, dataformats="NHWC")

    def trainer_active(self, cb: Any) -> bool:
        return getattr(cb, "tb_writer", None) is not None

    def log_trainer_images(self, cb: Any, images: dict[str, Any], step: int) -> None:
        for key, value in images.items():
            cb.tb_writer.add_image(key, value, step, dataformats="HWC")

    def finish_trainer(self, cb: Any) -> None:
        cb.tb_writer.close()
        cb.tb_writer = None


class Trackio(Tracker):
    name, package, callback = "trackio", "trackio", "TrackioCallback"

    def loop_tracker(self, run_dir: str | None, run_name: str) -> Any:
        from accelerate.tracking import TrackioTracker

        return TrackioTracker(TRACKER_PROJECT, name=run_name)

    def image(self, array: Any) -> Any:
        import trackio

        return trackio.Image(array)

    def log_trainer_images(self, cb: Any, images: dict[str, Any], step: int) -> None:
        cb._trackio.log({k: self.image(v) for k, v in images.items()})

    def finish_trainer(self, cb: Any) -> None:
        cb._trackio.finish()
        cb._initialized = False


class WandB(Tracker):
    name, package, callback = "wandb", "wandb", "WandbCallback"

    def loop_tracker(self, run_dir: str | None, run_name: str) -> Any:
        from accelerate.tracking import WandBTracker

        return WandBTracker(os.environ.get("WANDB_PROJECT", TRACKER_PROJECT), name=run_name)

    def image(self, array: Any) -> Any:
        import wandb

        return wandb.Image(array)

    def log_trainer_images(self, cb: Any, images: dict[str, Any], step: int) -> None:
        cb._wandb.log({**{k: cb._wandb.Image(v) for k, v in images.items()}, "train/global_step": step})

    def finish_trainer(self, cb: Any) -> None:
        if getattr(cb._wandb, "run", None):
            cb._wandb.finish()


# The registry: --report-to name -> tracker.
TRACKERS: dict[str, Tracker] = {t.name: t for t in (TensorBoard(), Trackio(), WandB())}
REPORT_TO = ("none", *TRACKERS)
PACKAGES = {name: t.package for name, t in TRACKERS.items()}  # the package each tracker needs


def check_report_to(report_to: str) -> list[str]:
    """The trackers ``report_to`` names ("none" or comma-separated names, any case; [] for "none"); a
    ValueError naming the registered ones for anything else."""
    names = [n.strip().lower() for n in str(report_to).split(",") if n.strip()]
    bad = [n for n in names if n not in REPORT_TO]
    if bad or not names or ("none" in names and len(names) > 1):
        raise ValueError(
            f"report_to={report_to!r} is not valid: give one of {list(REPORT_TO)} or several "
            "trackers comma-separated, e.g. --report-to tensorboard,trackio."
        )
    return [n for n in names if n != "none"]


def loop_trackers(args: Any, run_dir: str | None, run_name: str) -> list[Any]:
    """Accelerate trackers for ``--report-to`` (TensorBoard writes under ``<run_dir>/runs/<run_name>``)."""
    return [TRACKERS[name].loop_tracker(run_dir, run_name) for name in check_report_to(args.report_to)]


def log_loop_images(accelerator: Any, images: dict[str, Any], step: int) -> None:
    """Log ``{name: [H, W, 3] array}`` to each of the accelerator's trackers that takes images."""
    for tracker in accelerator.trackers:
        if tracker.name in TRACKERS:
            TRACKERS[tracker.name].log_loop_images(tracker, images, step)


def _trainer_trackers(trainer: Any) -> list[tuple[Tracker, Any]]:
    """``(tracker, callback)`` for each of the Trainer's reporting callbacks with an open run."""
    by_callback = {t.callback: t for t in TRACKERS.values()}
    pairs = [(by_callback.get(type(cb).__name__), cb) for cb in trainer.callback_handler.callbacks]
    return [(t, cb) for t, cb in pairs if t is not None and t.trainer_active(cb)]


def log_trainer_images(trainer: Any, images: dict[str, Any]) -> None:
    """Log images through the Trainer's reporting integrations (TensorBoard, trackio, W&B), at the current
    step."""
    for tracker, cb in _trainer_trackers(trainer):
        tracker.log_trainer_images(cb, images, trainer.state.global_step)


def finish_trainer_trackers(trainer: Any) -> None:
    """Close what the final ``evaluate()`` re-opened after training ended: TensorBoard's writer, trackio's
    run, W&B's run."""
    for tracker, cb in _trainer_trackers(trainer):
        tracker.finish_trainer(cb)


def figure_array(draw: Any) -> Any:
    """``draw(path)`` saves a PNG; returns it as an ``[H, W, 3]`` uint8 array (for the trackers)."""
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        path = draw(os.path.join(tmp, "figure.png"))
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).copy()


def report_trainer_images(trainer: Any, report: Any) -> None:
    """Log the per-layer equivariance plot of the last evaluation, then close the trackers the evaluation
    used."""
    if report is not None and trainer.args.report_to and trainer.args.report_to != ["none"]:
        log_trainer_images(trainer, {"eval/equivariance_per_layer": figure_array(report.plot)})
    finish_trainer_trackers(trainer)
