"""An Accelerate training loop with EQ-Reg, for timm / plain PyTorch models outside the Trainer.

One optimizer step = ``gradient_accumulation_steps`` micro-batches; each micro-batch is ONE
forward of the stacked batch ``[x; R_k x]`` through the (possibly DDP-wrapped) model:

    xs  = step.stack(x, optimizer_step=n)         # [x; R_k x]: one k per optimizer step
    out = model(xs)
    task, eq = step.losses(task_loss_fn, out, y)  # targets rotated (images) / copied (labels); λ Σ_l d_l
    accelerator.backward(task + eq)               # accelerate divides by the accumulation steps

(:class:`~eqreg_hf.train.step.EqRegStep`, the same step the Trainer mixin runs.)

The logs (``task_loss``, ``eqreg_loss``, ``loss``, ``eqreg_weight``, one ``eqreg/<tap>`` per tap, ``lr``) are
window means reduced across processes, so every rank logs the same numbers. The progress bar
shows the task and EQ-Reg terms side by side, and a one-time warning fires when the EQ-Reg
term outweighs the task loss 10 : 1 (λ is not portable between distances and tasks, see
the README, "Choosing λ"). A :class:`~eqreg_hf.WeightSchedule` sets the live λ before each step.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.regularizer import EqReg
from eqreg_hf.train.arguments import MIXED_PRECISION, LoopArguments
from eqreg_hf.train.step import EqRegStep

__all__ = ["LoopArguments", "MIXED_PRECISION", "TrainHistory", "make_accelerator", "train_loop"]

DOMINANCE_RATIO = 10.0  # warn when λ·L_eq exceeds the task loss this many times


@dataclass
class TrainHistory:
    """What :func:`train_loop` returns.

    Attributes:
        logs: one dict per logging window: ``step``, ``loss``, ``task_loss``, ``eqreg_loss``,
            ``eqreg_weight`` (the live λ), ``lr`` and ``eqreg/<tap>`` (unweighted per-tap distance), means
            over the window and across processes.
        evals: one dict per evaluation: ``step`` plus whatever ``eval_fn`` returned.
        steps: optimizer steps done.
        train_time_s: wall time of the loop (evaluations included).
    """

    logs: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    train_time_s: float = 0.0

    def series(self, key: str) -> list[float]:
        """The values of ``key`` over the logging windows (e.g. ``history.series("task_loss")``)."""
        return [log[key] for log in self.logs if key in log]


def _split_batch(batch: Any, input_key: str, target_key: str) -> tuple[torch.Tensor, Any]:
    if isinstance(batch, Mapping):
        missing = [k for k in (input_key, target_key) if k not in batch]
        if missing:
            raise KeyError(
                f"Batch keys {sorted(batch)} lack {missing}: pass input_key= / target_key= to train_loop "
                f"(now input_key={input_key!r}, target_key={target_key!r})."
            )
        return batch[input_key], batch[target_key]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"Unsupported batch of type {type(batch).__name__}: use (input, target) tuples or dicts with "
        f"the keys input_key / target_key."
    )


def make_accelerator(
    gradient_accumulation_steps: int = 1,
    mixed_precision: str = "no",
    log_with: Any = None,
    project_dir: str | None = None,
):
    """An ``accelerate.Accelerator`` for :func:`train_loop`; ``log_with`` (tracker names or
    ``GeneralTracker``s) and ``project_dir`` (where TensorBoard writes) are Accelerate's; call
    ``init_trackers`` before training."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    # AcceleratorState is a process-wide singleton that refuses a different mixed_precision once
    # set. In a single process (a notebook, the demo's three runs) it is safe to reset it; under
    # a launcher, the launch configuration decides, as accelerate intends.
    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        if AcceleratorState().mixed_precision != mixed_precision:
            AcceleratorState._reset_state()
    return Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=log_with,
        project_dir=project_dir,
    )


class _LogWindow:
    """Sums of the logged terms over a logging window, kept as tensors (no device sync per step) and
    reduced across processes only when the window is logged."""

    def __init__(self, tap_names: list[str], device: torch.device):
        self.tap_names = tap_names
        self.sums = torch.zeros(2 + len(tap_names), dtype=torch.float64, device=device)  # task, eq, *taps
        self.count = 0

    def add(self, task: torch.Tensor, eq: torch.Tensor, reg: EqReg | None) -> None:
        self.sums[0] += task.detach().to(torch.float64)
        self.sums[1] += eq.detach().to(torch.float64)
        if reg is not None:
            terms = reg.last_terms_tensors
            for i, name in enumerate(self.tap_names):
                if name in terms:
                    self.sums[2 + i] += terms[name].to(self.sums.device, torch.float64)
        self.count += 1

    def means(self, accelerator: Any) -> dict[str, float]:
        totals = accelerator.reduce(
            torch.cat([self.sums, self.sums.new_tensor([float(self.count)])]), reduction="sum"
        ).cpu()
        values = (totals[:-1] / totals[-1].clamp_min(1)).tolist()
        self.sums.zero_()
        self.count = 0
        out = {"task_loss": values[0], "eqreg_loss": values[1], "loss": values[0] + values[1]}
        out.update({f"eqreg/{name}": values[2 + i] for i, name in enumerate(self.tap_names)})
        return out


def _resolve_checkpoint(args: LoopArguments) -> str | None:
    """The checkpoint to resume from (None: a fresh start)."""
    from eqreg_hf.train.checkpoint import resolve_checkpoint

    return resolve_checkpoint(args.resume_from_checkpoint, args.checkpoint_dir)


def _warn_if_dominant(
    ratio: float, log: dict[str, float], reg: EqReg, config: EqRegConfig, step: int
) -> bool:
    """One warning when λ·L_eq outweighs the task loss DOMINANCE_RATIO : 1 (``ratio``); returns whether it
    fired."""
    if ratio <= DOMINANCE_RATIO:
        return False
    suggested = reg.weight * 0.05 / ratio
    warnings.warn(
        f"The EQ-Reg term ({log['eqreg_loss']:.3g}) is {ratio:.0f}x the task loss ({log['task_loss']:.3g}) "
        f"at step {step}: it dominates training and will hurt the task. λ is not portable between distances "
        "and tasks; start where the EQ-Reg term is a few percent of the task loss, e.g. "
        f"weight={suggested:.2g} instead of {reg.weight:g} (distance={config.distance!r}).",
        stacklevel=3,
    )
    return True


def train_loop(
    model: torch.nn.Module,
    train_dataloader: Any,
    optimizer: torch.optim.Optimizer,
    task_loss_fn: Callable[[Any, Any], torch.Tensor],
    eqreg_config: EqRegConfig | None = None,
    args: LoopArguments | None = None,
    *,
    lr_scheduler: Any = None,
    eval_fn: Callable[[torch.nn.Module, int], dict[str, Any] | None] | None = None,
    accelerator: Any = None,
    **settings: Any,
) -> TrainHistory:
    """Train ``model`` for ``args.max_steps`` optimizer steps with Accelerate, adding EQ-Reg if configured.

    ``loss = task_loss_fn(model(xs), ys) + λ Σ_l d(T_k F_l(x), F_l(R_k x))`` (Bai et al., CVPR 2025),
    one forward of ``xs = [x; R_k x]`` per micro-batch; ``ys`` are the targets rotated with the
    same k (image targets) or copied (labels), or just ``y`` with the loss on the original rows
    when ``eqreg_config.rotate_targets`` is False.

    Args:
        model: any ``nn.Module`` taking the input tensor positionally (restoration nets, timm
            classifiers, transformers models whose first argument is ``pixel_values``).
        train_dataloader: yields ``(input, target)`` tuples or dicts (see ``input_key`` /
            ``target_key``); it is cycled until ``max_steps`` optimizer steps are done.
        optimizer: a torch optimizer over ``model``'s parameters.
        task_loss_fn: ``(outputs, targets) -> scalar``; e.g. ``F.mse_loss`` or ``F.cross_entropy``.
        eqreg_config: an :class:`~eqreg_hf.EqRegConfig` (None or inactive: plain training, no hooks).
        args: a :class:`~eqreg_hf.train.arguments.LoopArguments` (budget, precision, logging,
            evaluation, checkpoints, λ schedule).
        lr_scheduler: stepped once per optimizer step.
        eval_fn: ``(unwrapped model in eval mode, step) -> dict`` of metrics, called on every
            process every ``eval_steps`` steps and after the last step.
        accelerator: an existing ``accelerate.Accelerator`` (default: a new one).
        **settings: ``LoopArguments`` fields as keywords, on top of ``args`` (``max_steps=2``); the old
            names ``log_every`` / ``eval_every`` still work.

    Logs and evaluations also go to the accelerator's trackers (``Accelerator(log_with=...)`` and
    ``init_trackers``), as ``train/<name>`` and ``eval/<name>`` at the optimizer step.

    Returns:
        A :class:`TrainHistory` (``logs``, ``evals``, ``steps``, ``train_time_s``).

    Example:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from eqreg_hf import EqRegConfig
        >>> from eqreg_hf.tasks.derain.networks import FastDerainer
        >>> net = FastDerainer(channels=8, num_blocks=1)
        >>> data = DataLoader(TensorDataset(torch.rand(4, 3, 9, 9), torch.rand(4, 3, 9, 9)), batch_size=2)
        >>> cfg = EqRegConfig(layers=net.eqreg_layers(4), weight=1e-2)
        >>> hist = train_loop(net, data, torch.optim.Adam(net.parameters()), torch.nn.functional.mse_loss,
        ...                   cfg, LoopArguments(max_steps=2, progress=False))
        >>> hist.steps
        2
    """
    args = LoopArguments.build(args, settings)
    resume = _resolve_checkpoint(args)
    if args.weight_schedule is not None and eqreg_config is not None and eqreg_config.auto_weight:
        raise ValueError(
            "weight_schedule and EqRegConfig(weight='auto') both set λ: drop the schedule (auto has its "
            "own warm-up, auto_warmup) or give a number as the weight."
        )
    if args.seed is not None:
        from accelerate.utils import set_seed

        set_seed(args.seed)
    if accelerator is None:
        accelerator = make_accelerator(args.gradient_accumulation_steps, args.mixed_precision)
    # Hooks go on the inner modules before prepare(): they still fire through DDP / FSDP.
    reg = (
        EqReg(accelerator.unwrap_model(model), eqreg_config)
        if eqreg_config is not None and eqreg_config.stacks
        else None
    )
    input_key = args.input_key
    if input_key is None:
        input_key = eqreg_config.image_key if eqreg_config is not None else "pixel_values"
    rotate_targets = True if eqreg_config is None else eqreg_config.rotate_targets
    step = EqRegStep(reg, rotate_targets=rotate_targets, max_steps=args.max_steps)
    prepared = accelerator.prepare(
        model, optimizer, train_dataloader, *([lr_scheduler] if lr_scheduler else [])
    )
    model, optimizer, train_dataloader = prepared[:3]
    lr_scheduler = prepared[3] if lr_scheduler is not None else None
    run = _Run(accelerator, (model, optimizer, lr_scheduler), reg, step, eqreg_config, args, eval_fn)
    if resume is not None:
        run.resume(resume)
    try:
        run.train(train_dataloader, task_loss_fn, input_key, args.target_key)
    finally:
        run.bar.close()
        if reg is not None:
            reg.remove()
    history = run.history
    if history.logs and not math.isfinite(history.logs[-1]["loss"]):
        warnings.warn(f"Training diverged: the last logged loss is {history.logs[-1]['loss']}.", stacklevel=2)
    return history


class _Run:
    """The state of one :func:`train_loop` call: counters, the log window, the progress bar, evaluation."""

    def __init__(
        self,
        accelerator: Any,
        prepared: tuple[Any, Any, Any],
        reg: EqReg | None,
        step: EqRegStep,
        config: EqRegConfig | None,
        args: LoopArguments,
        eval_fn: Callable | None,
    ):
        self.accelerator = accelerator
        self.model, self.optimizer, self.lr_scheduler = prepared
        self.reg, self.step_fn, self.config, self.schedule = reg, step, config, args.weight_schedule
        self.peak = float(config.weight) if config is not None and not config.auto_weight else 0.0
        self.max_steps, self.log_every, self.max_grad_norm = (
            args.max_steps,
            args.logging_steps,
            args.max_grad_norm,
        )
        self.desc = args.desc
        self.eval_fn, self.eval_every = eval_fn, args.eval_steps
        self.save_steps, self.checkpoint_dir = args.save_steps, args.checkpoint_dir
        self.skip = 0  # micro-batches a resumed run draws again without training on them
        self.history = TrainHistory()
        self.window = _LogWindow(list(reg.tap_names) if reg is not None else [], accelerator.device)
        self.warned = False
        self.done = 0
        self.bar = tqdm(
            total=args.max_steps,
            desc=args.desc,
            disable=not (args.progress and accelerator.is_local_main_process),
            dynamic_ncols=True,
        )

    def resume(self, path: str) -> None:
        """Continue from a checkpoint: prepared objects, RNG, EQ-Reg state and the step counter."""
        from eqreg_hf.train.checkpoint import load_loop_checkpoint

        self.done = load_loop_checkpoint(self.accelerator, path, self.reg)
        if self.done >= self.max_steps:
            raise ValueError(
                f"The checkpoint {path!r} is at step {self.done}, not before max_steps={self.max_steps}: "
                "raise max_steps to train on, or start without resume_from_checkpoint."
            )
        self.step_fn.reset()
        self.skip = self.done * self.accelerator.gradient_accumulation_steps
        self.bar.update(self.done)

    def train(self, dataloader: Any, task_loss_fn: Callable, input_key: str, target_key: str) -> None:
        start = time.perf_counter()
        self.model.train()
        while self.done < self.max_steps:
            n_batches = 0
            for batch in dataloader:
                n_batches += 1
                if self.skip:  # resumed: the batches the checkpoint had trained on come again, unused
                    self.skip -= 1
                    continue
                self.micro_batch(batch, task_loss_fn, input_key, target_key)
                if self.accelerator.sync_gradients:
                    self.after_optimizer_step()
                if self.done >= self.max_steps:
                    break
            if n_batches == 0:
                raise ValueError("train_dataloader is empty: it yielded no batch.")
        self.evaluate()
        self.history.steps = self.done
        self.history.train_time_s = time.perf_counter() - start

    def micro_batch(self, batch: Any, task_loss_fn: Callable, input_key: str, target_key: str) -> None:
        acc = self.accelerator
        if self.reg is not None and self.schedule is not None:
            self.reg.weight = self.schedule(self.done, self.max_steps, peak=self.peak)
        with acc.accumulate(self.model):
            x, y = _split_batch(batch, input_key, target_key)
            xs = self.step_fn.stack(x, optimizer_step=self.done)
            with acc.autocast():
                out = self.model(xs)
            task, eq = self.step_fn.losses(task_loss_fn, out, y)
            acc.backward(task + eq.to(task.dtype))
            if self.max_grad_norm is not None and acc.sync_gradients:
                acc.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            if self.lr_scheduler is not None and acc.sync_gradients:
                self.lr_scheduler.step()
            self.optimizer.zero_grad()
        self.window.add(task, eq, self.reg)

    def after_optimizer_step(self) -> None:
        self.done += 1
        self.bar.update(1)
        if self.done % self.log_every == 0 or self.done == self.max_steps:
            self.log()  # eqreg_weight: the λ this step used
        if self.eval_every is not None and self.done % self.eval_every == 0 and self.done < self.max_steps:
            self.evaluate()
        self.step_fn.end_optimizer_step()  # weight="auto": λ for the next step (a no-op otherwise)
        if self.save_steps and self.done % self.save_steps == 0:
            from eqreg_hf.train.checkpoint import save_loop_checkpoint

            save_loop_checkpoint(self.accelerator, self.checkpoint_dir, self.done, self.reg)

    def log(self) -> None:
        log = {"step": self.done, **self.window.means(self.accelerator)}
        if self.reg is not None:
            log["eqreg_weight"] = self.reg.weight
        source = (
            self.lr_scheduler.get_last_lr()[0]
            if self.lr_scheduler is not None
            else self.optimizer.param_groups[0]["lr"]
        )
        log["lr"] = float(source)
        self.history.logs.append(log)
        if self.accelerator.trackers:
            self.accelerator.log({f"train/{k}": v for k, v in log.items() if k != "step"}, step=self.done)
        share = log["eqreg_loss"] / max(log["task_loss"], 1e-30)
        self.bar.set_postfix(
            task=f"{log['task_loss']:.3g}",
            eqreg=f"{log['eqreg_loss']:.3g}",
            eq_share=f"{100 * share:.1f}%",
            refresh=False,
        )
        if self.reg is not None and not self.warned:
            self.warned = _warn_if_dominant(share, log, self.reg, self.config, self.done)

    def evaluate(self) -> None:
        if self.eval_fn is None:
            return
        inner = self.accelerator.unwrap_model(self.model)
        was_training = inner.training
        inner.eval()
        try:
            metrics = self.eval_fn(inner, self.done)
        finally:
            inner.train(was_training)
        if metrics:
            self.history.evals.append({"step": self.done, **metrics})
            if self.accelerator.trackers:
                self.accelerator.log(
                    {
                        f"eval/{k}": float(v)
                        for k, v in metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                    },
                    step=self.done,
                )
            if not self.bar.disable:
                shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                self.bar.write(
                    f"[{self.desc}] step {self.done}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
                )
