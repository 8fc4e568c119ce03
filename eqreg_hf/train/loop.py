"""An Accelerate training loop with EQ-Reg, for timm / plain PyTorch models outside the Trainer.

One optimizer step = ``gradient_accumulation_steps`` micro-batches; each micro-batch is ONE
forward of the stacked batch ``[x; R_k x]`` through the (possibly DDP-wrapped) model:

    xs  = reg.stack(x)                 # arms the taps on the inner modules
    out = model(xs)
    task = task_loss_fn(out, reg.stack_targets(y))   # targets rotated (images) / copied (labels)
    eq   = reg.loss()                  # λ Σ_l d_l, float32
    accelerator.backward(task + eq)    # accelerate divides by the accumulation steps

The logs (``task_loss``, ``eqreg_loss``, ``loss``, one ``eqreg/<tap>`` per tap, ``lr``) are
window means reduced across processes, so every rank logs the same numbers. The progress bar
shows the task and EQ-Reg terms side by side, and a one-time warning fires when the EQ-Reg
term outweighs the task loss 10 : 1 (λ is not portable between distances and tasks, see
``docs/derain.md``, "Choosing λ").
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

MIXED_PRECISION = ("no", "bf16", "fp16")
DOMINANCE_RATIO = 10.0  # warn when λ·L_eq exceeds the task loss this many times


@dataclass
class TrainHistory:
    """What :func:`train_loop` returns.

    Attributes:
        logs: one dict per logging window: ``step``, ``loss``, ``task_loss``, ``eqreg_loss``,
            ``lr`` and ``eqreg/<tap>`` (unweighted per-tap distance), means over the window and
            across processes.
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


def _first_rows(out: Any, n: int, total: int) -> Any:
    """The first ``n`` rows of a model output (tensor, dict or ModelOutput) stacked to ``total`` rows."""
    if torch.is_tensor(out):
        return out[:n]
    if isinstance(out, Mapping):
        sliced = {k: (v[:n] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == total else v) for k, v in out.items()}
        try:
            return type(out)(**sliced)
        except TypeError:
            return sliced
    if isinstance(out, (tuple, list)):
        return type(out)(_first_rows(o, n, total) for o in out)
    raise TypeError(f"Cannot split a model output of type {type(out).__name__} into original and rotated rows.")


def _to_float32(out: Any) -> Any:
    # bf16 autocast outputs: the task loss is computed in float32 (as the EQ-Reg loss is).
    if torch.is_tensor(out) and out.is_floating_point() and out.dtype != torch.float32:
        return out.float()
    return out


def _make_accelerator(gradient_accumulation_steps: int, mixed_precision: str):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    # AcceleratorState is a process-wide singleton that refuses a different mixed_precision once
    # set. In a single process (a notebook, the demo's three runs) it is safe to reset it; under
    # a launcher, the launch configuration decides, as accelerate intends.
    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        if AcceleratorState().mixed_precision != mixed_precision:
            AcceleratorState._reset_state()
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps, mixed_precision=mixed_precision)


def train_loop(
    model: torch.nn.Module,
    train_dataloader: Any,
    optimizer: torch.optim.Optimizer,
    task_loss_fn: Callable[[Any, Any], torch.Tensor],
    eqreg_config: Any = None,
    *,
    max_steps: int,
    gradient_accumulation_steps: int = 1,
    mixed_precision: str = "no",
    lr_scheduler: Any = None,
    eval_fn: Callable[[torch.nn.Module, int], dict[str, Any] | None] | None = None,
    eval_every: int | None = None,
    log_every: int = 10,
    accelerator: Any = None,
    progress: bool = True,
    input_key: str | None = None,
    target_key: str = "labels",
    max_grad_norm: float | None = None,
    seed: int | None = None,
    desc: str = "train",
) -> TrainHistory:
    """Train ``model`` for ``max_steps`` optimizer steps with Accelerate, adding EQ-Reg if configured.

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
        max_steps: optimizer steps.
        gradient_accumulation_steps: micro-batches per optimizer step (default 1). Ignored when
            ``accelerator`` is given (its own setting wins).
        mixed_precision: "no" (default), "bf16" or "fp16"; ignored when ``accelerator`` is given.
        lr_scheduler: stepped once per optimizer step.
        eval_fn: ``(unwrapped model in eval mode, step) -> dict`` of metrics, called on every
            process every ``eval_every`` steps and after the last step.
        eval_every: steps between evaluations (None: only at the end).
        log_every: steps per logging window (default 10).
        accelerator: an existing ``accelerate.Accelerator`` (default: a new one).
        progress: show a tqdm bar on the local main process (default True).
        input_key: image key of dict batches (default: ``eqreg_config.image_key`` or "pixel_values").
        target_key: target key of dict batches (default "labels").
        max_grad_norm: clip the gradient norm (default None: no clipping).
        seed: if given, ``accelerate.utils.set_seed(seed)`` before anything random.
        desc: label of the progress bar.

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
        ...                   cfg, max_steps=2, progress=False)
        >>> hist.steps
        2
    """
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"Unknown mixed_precision mode: {mixed_precision!r}. Choose between {list(MIXED_PRECISION)}.")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r} must be a positive integer (optimizer steps).")
    if gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps={gradient_accumulation_steps!r} must be >= 1.")
    if log_every < 1:
        raise ValueError(f"log_every={log_every!r} must be >= 1.")
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every={eval_every!r} must be >= 1 or None (evaluate only at the end).")
    if seed is not None:
        from accelerate.utils import set_seed

        set_seed(seed)
    if accelerator is None:
        accelerator = _make_accelerator(gradient_accumulation_steps, mixed_precision)
    raw_model = accelerator.unwrap_model(model)

    reg = None
    if eqreg_config is not None and eqreg_config.active:
        from eqreg_hf import EqReg

        # Hooks go on the inner modules before prepare(): they still fire through DDP / FSDP.
        reg = EqReg(raw_model, eqreg_config)
    if input_key is None:
        input_key = eqreg_config.image_key if eqreg_config is not None else "pixel_values"
    rotate_targets = True if eqreg_config is None else bool(eqreg_config.rotate_targets)

    prepared = accelerator.prepare(model, optimizer, train_dataloader, *([lr_scheduler] if lr_scheduler else []))
    model, optimizer, train_dataloader = prepared[:3]
    if lr_scheduler is not None:
        lr_scheduler = prepared[3]

    history = TrainHistory()
    tap_names = list(reg.tap_names) if reg is not None else []
    # Window sums: [task, eq, *taps] and the micro-batch count; reduced across ranks at log time.
    window = torch.zeros(2 + len(tap_names), dtype=torch.float64, device=accelerator.device)
    window_count = 0
    warned = False
    bar = tqdm(total=max_steps, desc=desc, disable=not (progress and accelerator.is_local_main_process), dynamic_ncols=True)
    start = time.perf_counter()
    step = 0

    def run_eval() -> None:
        if eval_fn is None:
            return
        inner = accelerator.unwrap_model(model)
        was_training = inner.training
        inner.eval()
        try:
            metrics = eval_fn(inner, step)
        finally:
            inner.train(was_training)
        if metrics:
            history.evals.append({"step": step, **metrics})
            if bar is not None and not bar.disable:
                shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                bar.write(f"[{desc}] step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))

    try:
        model.train()
        while step < max_steps:
            n_batches = 0
            for batch in train_dataloader:
                n_batches += 1
                with accelerator.accumulate(model):
                    x, y = _split_batch(batch, input_key, target_key)
                    b = x.shape[0]
                    xs = reg.stack(x) if reg is not None else x
                    stacked = xs.shape[0] != b
                    with accelerator.autocast():
                        out = model(xs)
                    out = _to_float32(out)
                    if stacked and rotate_targets:
                        task = task_loss_fn(out, reg.stack_targets(y))
                    elif stacked:
                        task = task_loss_fn(_first_rows(out, b, xs.shape[0]), y)
                    else:
                        task = task_loss_fn(out, y)
                    eq = reg.loss() if reg is not None else torch.zeros((), device=task.device)
                    accelerator.backward(task + eq.to(task.dtype))
                    if max_grad_norm is not None and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                    optimizer.step()
                    if lr_scheduler is not None and accelerator.sync_gradients:
                        lr_scheduler.step()
                    optimizer.zero_grad()

                # Tensor sums (no .item() per step: no device sync outside logging).
                window[0] += task.detach().to(torch.float64)
                window[1] += eq.detach().to(torch.float64)
                if reg is not None:
                    terms = reg.last_terms or {}
                    for i, name in enumerate(tap_names):
                        window[2 + i] += float(terms.get(name, 0.0))
                window_count += 1
                if not accelerator.sync_gradients:
                    continue
                step += 1
                bar.update(1)
                if step % log_every == 0 or step == max_steps:
                    totals = accelerator.reduce(
                        torch.cat([window, window.new_tensor([float(window_count)])]),
                        reduction="sum",
                    ).cpu()
                    means = (totals[:-1] / totals[-1].clamp_min(1)).tolist()
                    log = {"step": step, "task_loss": means[0], "eqreg_loss": means[1], "loss": means[0] + means[1]}
                    log.update({f"eqreg/{name}": means[2 + i] for i, name in enumerate(tap_names)})
                    if lr_scheduler is not None:
                        log["lr"] = float(lr_scheduler.get_last_lr()[0])
                    else:
                        log["lr"] = float(optimizer.param_groups[0]["lr"])
                    history.logs.append(log)
                    window.zero_()
                    window_count = 0
                    ratio = log["eqreg_loss"] / max(log["task_loss"], 1e-30)
                    bar.set_postfix(task=f"{log['task_loss']:.3g}", eqreg=f"{log['eqreg_loss']:.3g}",
                                    eq_share=f"{100 * ratio:.1f}%", refresh=False)
                    if reg is not None and not warned and ratio > DOMINANCE_RATIO:
                        warned = True
                        suggested = float(eqreg_config.weight) * 0.05 / ratio
                        warnings.warn(
                            f"The EQ-Reg term ({log['eqreg_loss']:.3g}) is {ratio:.0f}x the task loss "
                            f"({log['task_loss']:.3g}) at step {step}: it dominates training and will hurt the task. "
                            f"λ is not portable between distances and tasks; start where the EQ-Reg term is a few "
                            f"percent of the task loss, e.g. weight={suggested:.2g} instead of {eqreg_config.weight:g} "
                            f"(distance={eqreg_config.distance!r}).",
                            stacklevel=2,
                        )
                if eval_every is not None and step % eval_every == 0 and step < max_steps:
                    run_eval()
                if step >= max_steps:
                    break
            if n_batches == 0:
                raise ValueError("train_dataloader is empty: it yielded no batch.")
        run_eval()
    finally:
        bar.close()
        if reg is not None:
            reg.remove()
    history.steps = step
    history.train_time_s = time.perf_counter() - start
    if history.logs and not math.isfinite(history.logs[-1]["loss"]):
        warnings.warn(f"Training diverged: the last logged loss is {history.logs[-1]['loss']}.", stacklevel=2)
    return history
