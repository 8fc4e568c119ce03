"""The Hugging Face example-script conventions of the training commands: trackers, push, resume.

``DerainTrainingArguments`` and ``ClassifierArgs`` both inherit :class:`HFRunArguments`, so
``eqreg-hf train-derain`` and ``eqreg-hf train-classifier`` share these flags, with the names of
``transformers.TrainingArguments``:

* ``--report-to tensorboard|trackio|wandb|none`` (several: comma-separated): the Trainer's reporting
  integrations (classifier) or Accelerate's trackers (the derain loop) log ``train/task_loss``,
  ``train/eqreg_loss``, ``train/eqreg_weight``, ``eval/equiv_error/<tap>`` at each evaluation, and the
  equivariance plot (and, for deraining, the example grid) as images where the tracker takes images;
* ``--push-to-hub --hub-model-id ID [--hub-private]``: after a successful run, the saved Hub folder is
  published with :func:`eqreg_hf.hub.push_folder` (its checks; one commit). The repo id, online mode and
  the token are checked *before* training; nothing is pushed when training fails or is interrupted;
* ``--save-steps N`` and ``--resume-from-checkpoint PATH|latest``.

Example:
    >>> HFRunArguments(report_to="tensorboard,trackio").report_to_list()
    ['tensorboard', 'trackio']
    >>> HFRunArguments(hub_model_id="me/model").check_conventions()  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: hub_model_id='me/model' is set but push_to_hub is off, so nothing would be pushed:
    add --push-to-hub (or drop --hub-model-id).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

# The trackers (--report-to) are a registry in eqreg_hf.tasks.trackers; re-exported here for the callers.
from eqreg_hf.tasks.trackers import PACKAGES as _PACKAGES
from eqreg_hf.tasks.trackers import (
    REPORT_TO,
    TRACKER_PROJECT,
    check_report_to,
    figure_array,
    finish_trainer_trackers,
    log_loop_images,
    log_trainer_images,
    loop_trackers,
    report_trainer_images,
)

__all__ = [
    "HFRunArguments",
    "REPORT_TO",
    "TRACKER_PROJECT",
    "preflight",
    "push_trained",
    "loop_trackers",
    "tracker_config",
    "log_loop_images",
    "log_trainer_images",
    "finish_trainer_trackers",
    "figure_array",
    "loop_run_dir",
    "run_name",
    "start_loop_run",
    "end_loop_run",
    "trainer_checkpoint",
    "report_trainer_images",
]


@dataclass
class HFRunArguments:
    """The flags every training command shares with the Hugging Face example scripts (names of
    ``TrainingArguments``)."""

    report_to: str = field(
        default="none",
        metadata={
            "help": f"Where to log: one of {list(REPORT_TO)}, "
            "or several comma-separated (tensorboard,trackio)."
        },
    )
    run_name: str | None = field(
        default=None,
        metadata={"help": "Name of the run in the trackers (default: the output folder's name)."},
    )
    save_steps: int | None = field(
        default=None,
        metadata={"help": "Write a checkpoint-<step> folder every N optimizer steps (default: none)."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue from a checkpoint-<step> folder, or 'latest' (the last one of this run)."
        },
    )
    push_to_hub: bool = field(
        default=False,
        metadata={
            "help": "Publish the saved model folder after a successful run "
            "(needs --hub-model-id and a token)."
        },
    )
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Hub repository, 'user/name' or 'org/name'."}
    )
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repository private."})

    def report_to_list(self) -> list[str]:
        """The trackers asked for ([] for 'none')."""
        names = [n.strip().lower() for n in str(self.report_to).split(",") if n.strip()]
        return [n for n in names if n != "none"]

    def check_conventions(self) -> None:
        """Refuse bad values of these flags (called by the subclasses' ``validate``)."""
        check_report_to(self.report_to)
        if self.save_steps is not None and (
            isinstance(self.save_steps, bool) or not isinstance(self.save_steps, int) or self.save_steps < 1
        ):
            raise ValueError(
                f"save_steps={self.save_steps!r} is not valid: give a positive number of optimizer "
                "steps, or leave it out (no checkpoints)."
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub is on but hub_model_id is not set: add --hub-model-id user/name.")
        if not self.push_to_hub and (self.hub_model_id or self.hub_private):
            what = f"hub_model_id={self.hub_model_id!r}" if self.hub_model_id else "hub_private=True"
            raise ValueError(
                f"{what} is set but push_to_hub is off, so nothing would be pushed: add --push-to-hub "
                f"(or drop --{'hub-model-id' if self.hub_model_id else 'hub-private'})."
            )
        if self.hub_model_id is not None:
            repo = str(self.hub_model_id)
            if repo.count("/") != 1 or not all(repo.split("/")):
                raise ValueError(f"hub_model_id={repo!r} is not valid: use 'user/name' or 'org/name'.")


def preflight(
    args: HFRunArguments, folder: str | None, needs_dir: str | None = None, trainer: bool = False
) -> None:
    """What must hold before any training: the trackers are installed, the checkpoint to resume from exists,
    a push can happen.

    Args:
        args: the run's arguments.
        folder: the Hub folder the run will save (None: it saves none).
        needs_dir: the folder of checkpoints / TensorBoard logs, or None when the run has none.
        trainer: the run is a ``transformers.Trainer`` run (its checkpoints), not the Accelerate loop.

    Raises:
        ValueError: naming the flag, what is missing and the fix (the CLI prints it in one line).
    """
    for name in args.report_to_list():
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ValueError(
                f"--report-to {name} needs the {_PACKAGES[name]} package, which is not installed: "
                f"pip install {_PACKAGES[name]} (or choose another tracker, or none)."
            )
    if needs_dir is None and (args.save_steps or "tensorboard" in args.report_to_list()):
        what = "--save-steps" if args.save_steps else "--report-to tensorboard"
        raise ValueError(f"{what} needs a folder to write to: add --output-dir (or --run-dir).")
    if args.resume_from_checkpoint is not None:
        if trainer:
            trainer_checkpoint(args, needs_dir)
        else:
            from eqreg_hf.train.checkpoint import resolve_checkpoint

            resolve_checkpoint(args.resume_from_checkpoint, needs_dir)
    if args.push_to_hub:
        from eqreg_hf.hub.push import HubPushError, check_push_ready

        if folder is None:
            raise ValueError(
                "--push-to-hub needs a saved model folder: give --output-dir (and keep the model saved)."
            )
        try:
            check_push_ready(args.hub_model_id)
        except HubPushError as err:
            raise ValueError(f"--push-to-hub: {err}") from None


def push_trained(args: HFRunArguments, folder: str, what: str) -> str | None:
    """Publish ``folder`` when ``--push-to-hub`` is on (after a successful run); returns the commit URL."""
    if not args.push_to_hub:
        return None
    from eqreg_hf.hub.push import push_folder

    return push_folder(
        folder,
        args.hub_model_id,
        private=args.hub_private,
        commit_message=f"Upload {what} trained with eqreg-hf",
    )


def tracker_config(*parts: dict[str, Any]) -> dict[str, Any]:
    """One flat dict of run settings the trackers accept (str / int / float / bool; other values as text)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return out


# ------------------------------------------------------------------------- the Accelerate loop (train-derain)
def loop_run_dir(args: Any) -> str | None:
    """Where a loop run keeps checkpoints and TensorBoard logs: ``--run-dir``, else ``<output_dir>-run``.

    Not inside the Hub folder ``output_dir``: that folder is replaced as a whole when the model is saved.
    """
    if getattr(args, "run_dir", None):
        return args.run_dir
    return f"{os.path.normpath(args.output_dir)}-run" if args.output_dir else None


def run_name(args: Any, default: str) -> str:
    folder = getattr(args, "output_dir", None)
    return args.run_name or (os.path.basename(os.path.normpath(folder)) if folder else default)


def start_loop_run(args: Any, accelerator: Any, config: dict[str, Any], default_name: str = "train") -> Any:
    """The accelerator of a loop run: ``accelerator`` as given, or, with ``--report-to``, a new one whose
    trackers are started with the run's settings."""
    if accelerator is not None or not args.report_to_list():
        return accelerator
    from eqreg_hf.train.loop import make_accelerator

    run_dir = loop_run_dir(args)
    accelerator = make_accelerator(
        args.gradient_accumulation_steps,
        args.mixed_precision,
        log_with=loop_trackers(args, run_dir, run_name(args, default_name)),
        project_dir=run_dir,
    )
    accelerator.init_trackers(TRACKER_PROJECT, config=tracker_config(config))
    return accelerator


def end_loop_run(
    accelerator: Any, history: Any, metrics: dict[str, Any], report: Any, images: dict[str, Any]
) -> None:
    """Log the final evaluation (metrics, per-layer equivariance error; unless the loop's own last evaluation
    was at the same step) and the images, then close the trackers."""
    if accelerator is None or not accelerator.trackers:
        return
    step = history.steps
    if not (history.evals and history.evals[-1]["step"] == step):
        values = {f"eval/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        values.update({f"eval/equiv_error/{k}": float(v) for k, v in dict(report or {}).items()})
        accelerator.log(values, step=step)
    if images and accelerator.is_main_process:
        log_loop_images(accelerator, {k: figure_array(draw) for k, draw in images.items()}, step)
    accelerator.end_training()


# ----------------------------------------------------------------------------- the Trainer (train-classifier)
def trainer_checkpoint(args: HFRunArguments, output_dir: str) -> str | None:
    """``--resume-from-checkpoint`` for ``Trainer.train``: a checkpoint folder (``latest``: the last one)."""
    value = args.resume_from_checkpoint
    if value is None:
        return None
    if value == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        found = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if found is None:
            raise ValueError(
                f"--resume-from-checkpoint latest found no checkpoint-<step> folder in {output_dir!r}: "
                "give a checkpoint folder, or train with --save-steps N first."
            )
        return found
    if not os.path.isfile(os.path.join(value, "trainer_state.json")):
        raise ValueError(
            f"--resume-from-checkpoint {value!r} is not a Trainer checkpoint (no trainer_state.json): "
            "give a checkpoint-<step> folder written with --save-steps, or 'latest'."
        )
    return value
