"""The two training engines of :func:`~eqreg_hf.tasks.runner.run_recipe`: the Accelerate loop and the Trainer.

* :func:`fit_loop`: random training items sampled with replacement (so a one-image training set fills every
  batch and the step count does not depend on the data size), Adam with cosine decay to 1 % of the learning
  rate, :func:`eqreg_hf.train.loop.train_loop` (trackers per ``--report-to``, checkpoints per
  ``--save-steps``).
* :func:`training_arguments` and :func:`eval_callback`: the ``transformers.TrainingArguments`` of a run and a
  callback that runs the recipe's periodic evaluation, for recipes that train through ``EqRegTrainer``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.tasks import conventions as hf
from eqreg_hf.train.arguments import LoopArguments
from eqreg_hf.train.loop import TrainHistory, train_loop

__all__ = [
    "fit_loop",
    "loop_arguments",
    "training_arguments",
    "eval_callback",
    "cosine_adam",
    "TrainerEvaluation",
]


def cosine_adam(model: torch.nn.Module, learning_rate: float, max_steps: int) -> tuple[Any, Any]:
    """Adam and a cosine decay to 1 % of ``learning_rate`` over ``max_steps``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max_steps, eta_min=learning_rate * 0.01
    )
    return optimizer, scheduler


def loop_arguments(args: Any, desc: str, periodic: bool, checkpoint_dir: str | None) -> LoopArguments:
    """The :class:`LoopArguments` of a recipe's arguments (the same names)."""
    return LoopArguments(
        max_steps=args.max_steps,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        logging_steps=args.logging_steps,
        eval_steps=args.eval_steps if periodic else None,
        seed=args.seed,
        progress=args.progress,
        desc=desc,
        save_steps=args.save_steps,
        checkpoint_dir=checkpoint_dir,
        resume_from_checkpoint=args.resume_from_checkpoint,
    )


def fit_loop(run: Any) -> TrainHistory:
    """Train ``run.model`` through ``train_loop`` on the recipe's training items; sets ``run.accelerator``."""
    args, recipe = run.args, run.recipe
    items, collate = recipe.train_data(args, run.data[0])
    num_samples = args.max_steps * args.batch_size * args.gradient_accumulation_steps
    sampler = torch.utils.data.RandomSampler(
        items,
        replacement=True,
        num_samples=num_samples,
        generator=torch.Generator().manual_seed(args.seed + 1),
    )
    loader = torch.utils.data.DataLoader(
        items, batch_size=args.batch_size, sampler=sampler, collate_fn=collate
    )
    optimizer, scheduler = cosine_adam(run.model, args.learning_rate, args.max_steps)
    task_loss = recipe.task_loss(args, run.model)
    settings = {**args.to_dict(), **(run.eqreg_config or EqRegConfig(weight=0.0)).to_dict()}
    run.accelerator = hf.start_loop_run(args, run.accelerator, settings, recipe.name)
    periodic = bool(args.eval_steps)
    return train_loop(
        run.model,
        loader,
        optimizer,
        task_loss,
        run.eqreg_config,
        loop_arguments(args, run.desc, periodic, recipe.run_dir(args)),
        lr_scheduler=scheduler,
        eval_fn=run.evaluation if periodic else None,
        accelerator=run.accelerator,
    )


def training_arguments(args: Any, output_dir: str, run_name: str, **overrides: Any) -> Any:
    """``transformers.TrainingArguments`` from a recipe's arguments (cosine schedule, no column dropping,
    ``--report-to``, ``--save-steps``, the seed for weights and data order); ``overrides`` on top."""
    from transformers import TrainingArguments

    values = dict(
        output_dir=output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=float(args.learning_rate),
        lr_scheduler_type="cosine",
        gradient_accumulation_steps=getattr(args, "gradient_accumulation_steps", 1),
        logging_steps=args.logging_steps,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to=args.report_to_list() or "none",
        run_name=run_name,
        project=hf.TRACKER_PROJECT,
        remove_unused_columns=False,
        seed=args.seed,
        disable_tqdm=not args.progress,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def eval_callback(eval_fn: Callable, every: int, trainer_ref: list) -> Any:
    """A ``TrainerCallback`` that calls ``eval_fn(model, step)`` every ``every`` optimizer steps (model in
    eval mode, no gradient) and logs its dict; it counts its own seconds so the training time can leave them
    out."""
    from transformers import TrainerCallback

    class _EvalEvery(TrainerCallback):
        seconds = 0.0

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every:
                return
            start, was_training = time.perf_counter(), model.training
            model.eval()
            try:
                with torch.no_grad():
                    metrics = eval_fn(model, int(state.global_step))
            finally:
                model.train(was_training)
            self.seconds += time.perf_counter() - start
            if metrics:
                should_log = control.should_log  # Trainer.log's on_log clears it: keep this step's loss log
                trainer_ref[0].log({k: float(v) for k, v in dict(metrics).items()})
                control.should_log = should_log

    return _EvalEvery()


class TrainerEvaluation:
    """A Trainer recipe's final evaluation: the Trainer's ``evaluate()`` and the equivariance report of its
    ``EquivarianceEvalCallback`` (``callback``); the recipe sets ``trainer`` once it has built it."""

    def __init__(self, callback: Any):
        self.callback, self.trainer, self.seconds, self.history = callback, None, 0.0, None

    def final(self, model: torch.nn.Module, step: int) -> tuple[dict[str, float], Any]:
        metrics = self.trainer.evaluate()
        hf.report_trainer_images(self.trainer, self.callback.last_report)  # the plot; trackers closed
        return metrics, self.callback.last_report
