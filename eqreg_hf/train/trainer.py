"""EQ-Reg for ``transformers.Trainer``: a mixin that adds the equivariance term to ``compute_loss``.

    total = task_loss(model([x; R_k x]), [y; y or R_k y]) + λ Σ_l w_l d(T_k F_l(x), F_l(R_k x))

(Bai, Fu, Xie, Meng, CVPR 2025.) One forward of the stacked batch per micro-batch, the hooks on the
inner modules of the (possibly DDP-wrapped or compiled) model, one k per optimizer step.

    from eqreg_hf import EqRegConfig, EqRegTrainer
    trainer = EqRegTrainer(model=model, args=args, train_dataset=ds,
                           eqreg=EqRegConfig(layers="auto", group_order=4, weight=0.1))
    trainer.train()

Gradient accumulation: the Trainer divides a loss by the accumulation steps unless it believes the
loss was already normalised by ``num_items_in_batch`` (which depends on the model: ViT normalises,
ConvNeXt does not accept the kwarg, ResNet accepts it and ignores it). The mixin therefore always
computes per-micro-batch means (``num_items_in_batch=None``) and declares
``loss_is_scaled_for_ga = False``, so the task term and the EQ-Reg term are both divided exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.regularizer import EqReg
from eqreg_hf.core.unwrap import unwrap_model
from eqreg_hf.train.checkpoint import EQREG_STATE_NAME, load_eqreg_state, save_eqreg_state
from eqreg_hf.train.step import EqRegStep, accepts_keyword

try:
    from transformers import Trainer
except ImportError as err:  # pragma: no cover - transformers is a hard dependency of the package
    raise ImportError("eqreg_hf.train.trainer needs transformers: pip install transformers") from err

__all__ = ["EqRegTrainerMixin", "EqRegTrainer", "EQREG_STATE_NAME"]


class EqRegTrainerMixin:
    """Adds EQ-Reg to any ``transformers.Trainer`` subclass: ``class T(EqRegTrainerMixin, Seq2SeqTrainer)``.

    ``compute_loss`` runs one forward of ``[x; R_k x]`` (``x = inputs[eqreg.image_key]``) and returns
    ``task + λ·L_eq``. Targets for the rotated half: labels (``dim <= 2``) are copied, image targets
    rotated with the same k (``eqreg.rotate_targets=True``, the paper's choice: rotation augmentation
    for free); with ``rotate_targets=False`` the task loss sees the original half only.

    The task loss is, in order: ``task_loss(outputs, targets)`` if given; the Trainer's
    ``compute_loss_func`` if given; otherwise the loss the model returns (transformers models given
    ``labels``). Plain ``nn.Module`` models whose ``forward`` has no ``pixel_values`` argument are
    called positionally, ``model(inputs[image_key])``.

    Args (keyword, on top of the Trainer's):
        eqreg: an :class:`EqRegConfig` (or its dict). None or inactive (weight 0, group_order 1):
            plain training, no hooks.
        task_loss: ``(outputs, targets) -> scalar`` mean loss, e.g. ``torch.nn.functional.l1_loss``
            for a derainer fed ``{"pixel_values": rainy, "labels": clean}``. ``targets`` is the
            tensor under the label key (or a dict when ``args.label_names`` names several).
        eqreg_log_taps: also log the unweighted distance of each tap as ``eqreg/<tap>`` (default False).

    Logs (window means, averaged across processes, in ``trainer.state.log_history``): ``loss`` (the
    Trainer's, = task + EQ-Reg), ``task_loss``, ``eqreg_loss`` (λ-weighted), ``eqreg_weight``
    (the live λ) and, opt-in, ``eqreg/<tap>``.

    Example:
        >>> from transformers import TrainingArguments
        >>> trainer = EqRegTrainer(model=net, args=TrainingArguments("out", max_steps=10),
        ...                        train_dataset=ds, task_loss=torch.nn.functional.l1_loss,
        ...                        eqreg=EqRegConfig(layers="body.*.conv", weight=1e-2))  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    # compute_loss returns per-micro-batch means, never num_items_in_batch-normalised sums.
    loss_is_scaled_for_ga = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _check_bases(cls)

    def __init__(
        self,
        *args: Any,
        eqreg: EqRegConfig | Mapping[str, Any] | None = None,
        task_loss: Callable[[Any, Any], torch.Tensor] | None = None,
        eqreg_log_taps: bool = False,
        **kwargs: Any,
    ):
        if isinstance(eqreg, Mapping):
            eqreg = EqRegConfig.from_dict(dict(eqreg))
        if eqreg is not None and not isinstance(eqreg, EqRegConfig):
            raise TypeError(f"eqreg={eqreg!r} must be an EqRegConfig, a dict of its fields, or None.")
        if task_loss is not None and kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "Pass either task_loss= or compute_loss_func=, not both: they are the same thing (the "
                "task loss of the stacked outputs); task_loss also works for models that return no loss."
            )
        if task_loss is not None and not callable(task_loss):
            raise TypeError(f"task_loss={task_loss!r} must be a callable (outputs, targets) -> loss.")
        super().__init__(*args, **kwargs)
        self.eqreg_config = eqreg
        self.task_loss = task_loss
        self.eqreg_log_taps = bool(eqreg_log_taps)
        self.eqreg: EqReg | None = None
        if task_loss is not None and not self.label_names:
            # A plain nn.Module has no `labels` argument, so the Trainer finds no label names and would
            # skip compute_loss during evaluation; the targets live under "labels" by convention.
            self.label_names = ["labels"]
        self._eqreg_window: dict[str, torch.Tensor] = {}
        self._eqreg_window_steps: set[int] = set()
        self._eqreg_step: EqRegStep | None = None
        self._eqreg_positional: bool | None = None
        self._eqreg_loss_calls = 0  # training-mode calls of the mixin's compute_loss with EQ-Reg attached
        self._eqreg_bypass_checked = False
        self._eqreg_measuring_callbacks_first()

    def add_callback(self, callback: Any) -> None:
        super().add_callback(callback)
        self._eqreg_measuring_callbacks_first()

    def _eqreg_measuring_callbacks_first(self) -> None:
        """Callbacks that add metrics to an evaluation's log entry (``adds_eval_metrics``) go first, so that
        reporting integrations (TensorBoard, W&B, ...) called after them receive those metrics."""
        cbs = self.callback_handler.callbacks
        first = [cb for cb in cbs if getattr(cb, "adds_eval_metrics", False)]
        if first:
            cbs[:] = first + [cb for cb in cbs if cb not in first]

    # ------------------------------------------------------------------ attaching
    def _eqreg_ensure(self, model: nn.Module | None = None) -> EqReg | None:
        """The live :class:`EqReg`, attached to the core module of ``model`` (re-attached if it changed)."""
        cfg = self.eqreg_config
        if cfg is None or not cfg.stacks:
            return None
        target = unwrap_model(model if model is not None else self.model)
        if self.eqreg is not None and self.eqreg.model is target:
            return self.eqreg
        if self.eqreg is not None:
            self.eqreg.remove()
        self.eqreg = EqReg(target, cfg)  # a schedule sets eqreg.weight; the config is never changed
        self._eqreg_step = EqRegStep(self.eqreg, rotate_targets=cfg.rotate_targets)
        self._eqreg_positional = None
        for cb in self.callback_handler.callbacks:
            if hasattr(cb, "bind_eqreg"):
                cb.bind_eqreg(self.eqreg)
        return self.eqreg

    def _eqreg_detach(self) -> None:
        if self.eqreg is not None:
            self.eqreg.remove()
        for cb in self.callback_handler.callbacks:
            if hasattr(cb, "bind_eqreg"):
                cb.bind_eqreg(None)
        self.eqreg = None
        self._eqreg_step = None

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train`` with the hooks attached before the first (possibly compiled) call and
        removed afterwards, also when training fails; restores the k sampler on resume."""
        self._eqreg_window = {}
        self._eqreg_window_steps = set()
        self._eqreg_bypass_checked = False
        try:
            reg = self._eqreg_ensure(self.model)
            if reg is not None and resume_from_checkpoint:
                ckpt = resume_from_checkpoint
                if isinstance(ckpt, bool):
                    from transformers.trainer_utils import get_last_checkpoint

                    ckpt = get_last_checkpoint(self.args.output_dir)
                if ckpt is not None:  # None: the Trainer raises its own error
                    self._eqreg_load_state(ckpt)
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._eqreg_detach()

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """``Trainer.training_step``; on the first one, checks that the mixin's ``compute_loss`` ran (see
        :meth:`_eqreg_check_not_bypassed`)."""
        calls = self._eqreg_loss_calls
        loss = super().training_step(model, inputs, *args, **kwargs)
        if not self._eqreg_bypass_checked:
            self._eqreg_bypass_checked = True
            self._eqreg_check_not_bypassed(calls)
        return loss

    def _eqreg_check_not_bypassed(self, calls_before: int) -> None:
        """EQ-Reg configured, a training step done, but the mixin's ``compute_loss`` never ran: a subclass's
        own ``compute_loss`` bypassed it, so there was no stacked forward and no EQ-Reg term. Stop, with the
        fix."""
        reg = self.eqreg
        if reg is None or not self.model.training or self._eqreg_loss_calls > calls_before:
            return
        owner = next((c for c in type(self).__mro__ if "compute_loss" in vars(c)), None)
        raise RuntimeError(
            "EQ-Reg is configured but the first training step ran no EQ-Reg: "
            f"{type(self).__name__}.compute_loss (defined in {getattr(owner, '__qualname__', '?')}) does not "
            "call the mixin's compute_loss, so there was no stacked forward [x; R_k x] and no EQ-Reg term. "
            "Call super().compute_loss(model, inputs, return_outputs, num_items_in_batch) from it, or drop "
            "the override and pass your loss as task_loss=(outputs, targets) -> loss."
        )

    # ------------------------------------------------------------------ checkpoints
    def _eqreg_load_state(self, checkpoint: str) -> None:
        if not load_eqreg_state(self.eqreg, checkpoint):
            import warnings

            warnings.warn(
                f"Resuming from {checkpoint!r} without {EQREG_STATE_NAME}: the EQ-Reg k sampler restarts "
                "from its seed, so the resumed run will not repeat the uninterrupted one exactly.",
                stacklevel=3,
            )
            return
        self._eqreg_step.reset()

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        if self._eqreg_step is not None:
            # weight="auto": the finished step's statistics go in the state
            self._eqreg_step.end_optimizer_step()
        super()._save_checkpoint(model, trial)
        if self.eqreg is None or not self.args.should_save:
            return
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        save_eqreg_state(self.eqreg, folder, global_step=int(self.state.global_step))

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model`` plus ``eqreg_config.json`` (the base config, as given) beside the
        weights."""
        super().save_model(output_dir, _internal_call)
        if self.eqreg_config is not None and self.args.should_save:
            self.eqreg_config.save_pretrained(output_dir if output_dir is not None else self.args.output_dir)

    # ------------------------------------------------------------------ the loss
    def _eqreg_target_keys(self, inputs: Mapping[str, Any]) -> list[str]:
        names = list(self.label_names or []) or ["labels"]
        return [k for k in names if k in inputs and inputs[k] is not None]

    def _eqreg_forward(self, model: nn.Module, inputs: dict[str, Any]) -> Any:
        key = self.eqreg_config.image_key if self.eqreg_config is not None else "pixel_values"
        if self._eqreg_positional is None:
            self._eqreg_positional = not accepts_keyword(unwrap_model(model), key)
        if self._eqreg_positional:
            x = inputs.pop(key)
            return model(x, **inputs)
        return model(**inputs)

    def _eqreg_loss_fn(self, model: nn.Module, n_targets: int) -> Any:
        """The task loss ``(outputs, targets) -> loss``: ``task_loss``, ``compute_loss_func`` or the model's
        own."""
        if self.task_loss is not None:
            return self.task_loss
        if self.compute_loss_func is not None:
            return lambda outputs, target: self.compute_loss_func(outputs, target, num_items_in_batch=None)
        core = unwrap_model(model)
        if hasattr(core, "loss_function") and n_targets == 1:
            # transformers heads compute loss_function(labels, logits, config); reuse it on the original half.
            def head_loss(outputs: Any, target: Any) -> torch.Tensor:
                logits = outputs.get("logits") if isinstance(outputs, Mapping) else None
                if logits is None:
                    raise ValueError(f"{type(core).__name__} returned no logits to compute its loss on.")
                return core.loss_function(target, logits, core.config)

            return head_loss
        raise ValueError(
            "EqRegConfig(rotate_targets=False) computes the task loss on the original half only, so it "
            f"cannot use the loss that {type(core).__name__} computes on the whole stacked batch. Pass "
            "task_loss=(outputs, targets) -> loss to the trainer, or use rotate_targets=True."
        )

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """``task + λ·L_eq`` from one forward of the stacked batch (plain task loss in eval mode)."""
        cfg = self.eqreg_config
        reg = self._eqreg_ensure(model) if cfg is not None else None
        step = self._eqreg_step if reg is not None and model.training else EqRegStep(None)
        self._eqreg_loss_calls += step.reg is not None
        inputs = dict(inputs)
        if step.reg is not None:
            if cfg.image_key not in inputs:
                raise KeyError(
                    f"EQ-Reg looks for the image under {cfg.image_key!r}, but the batch has keys "
                    f"{sorted(inputs)}. Set EqRegConfig(image_key=...) to the right key (and "
                    "TrainingArguments(remove_unused_columns=False) if the Trainer dropped the column)."
                )
            # one k per optimizer step during training (gradient accumulation sees one rotation)
            optimizer_step = int(self.state.global_step) if getattr(self, "is_in_train", False) else None
            step.max_steps = self.state.max_steps or None
            inputs[cfg.image_key] = step.stack(inputs[cfg.image_key], optimizer_step=optimizer_step)
        target_keys = self._eqreg_target_keys(inputs)
        model_loss = (
            self.task_loss is None
            and self.compute_loss_func is None
            and not (step.stacked and not step.rotate_targets)
        )
        try:
            if model_loss:
                # The model computes the task loss: a per-batch mean (num_items_in_batch=None), see
                # loss_is_scaled_for_ga.
                for t in target_keys:
                    inputs[t] = step.targets(inputs[t])
                task, outputs = super().compute_loss(
                    model, inputs, return_outputs=True, num_items_in_batch=None
                )
            else:
                targets = {t: inputs.pop(t) for t in target_keys}
                outputs = self._eqreg_forward(model, inputs)
                target = next(iter(targets.values())) if len(targets) == 1 else (targets or None)
                if isinstance(target, dict):  # several label keys: each stacked like a single one
                    target = {t: step.targets(v) for t, v in target.items()}
                    task = self._eqreg_loss_fn(model, len(targets))(step.task_outputs(outputs), target)
                else:
                    task = step.task_loss(self._eqreg_loss_fn(model, len(targets)), outputs, target)
                if not isinstance(outputs, Mapping):
                    # prediction_step reads outputs[1:] from non-dict outputs (it assumes a leading loss).
                    outputs = {"logits": outputs}
        except BaseException:
            step.discard()  # disarm and free the captures; the original error is the one to see
            raise
        if step.reg is None:
            return (task, outputs) if return_outputs else task
        eq = step.eq_loss(task.device)
        step.observe(task)  # weight="auto": this micro-batch's statistics
        self._eqreg_record(task, eq, reg)
        loss = task + eq.to(task.dtype)
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ logging
    def _eqreg_record(self, task: torch.Tensor, eq: torch.Tensor, reg: EqReg) -> None:
        # Same bookkeeping as the Trainer's own loss: each micro-batch counts 1/GA of its step.
        ga = float(
            getattr(self, "current_gradient_accumulation_steps", None)
            or self.args.gradient_accumulation_steps
        )
        vals = {"task_loss": task.detach().float(), "eqreg_loss": eq.detach().float()}
        if self.eqreg_log_taps:
            for name, v in reg.last_terms_tensors.items():
                vals[f"eqreg/{name}"] = v.detach().float()
        for name, v in vals.items():
            v = v.to(torch.float64) / ga
            self._eqreg_window[name] = self._eqreg_window[name] + v if name in self._eqreg_window else v
        self._eqreg_window_steps.add(int(self.state.global_step))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """``Trainer.log`` plus the EQ-Reg window means whenever the Trainer logs its training ``loss``."""
        if "loss" in logs and self._eqreg_window_steps:
            names = ["task_loss", "eqreg_loss"]
            if self.eqreg_log_taps and self.eqreg is not None:
                names += [f"eqreg/{n}" for n in self.eqreg.tap_names]
            device = self.args.device
            zero = torch.zeros((), dtype=torch.float64, device=device)
            vec = torch.stack([self._eqreg_window.get(n, zero).to(device) for n in names])
            vec = vec / len(self._eqreg_window_steps)
            if self.accelerator.num_processes > 1:
                vec = self.accelerator.reduce(vec, reduction="mean")
            for n, v in zip(names, vec.tolist()):
                logs[n] = v
            if self.eqreg is not None:
                logs["eqreg_weight"] = self.eqreg.weight
            self._eqreg_window = {}
            self._eqreg_window_steps = set()
        super().log(logs, *args, **kwargs)


def _check_bases(cls: type) -> None:
    """The mixin must come before ``Trainer`` in the bases, or ``Trainer.compute_loss`` shadows its own."""
    mro = cls.__mro__
    if Trainer in mro and mro.index(Trainer) < mro.index(EqRegTrainerMixin):
        bases = ", ".join(b.__name__ for b in cls.__bases__)
        raise TypeError(
            f"class {cls.__name__}({bases}): EqRegTrainerMixin comes after {Trainer.__name__} in the bases, "
            "so Trainer.compute_loss shadows the mixin's and EQ-Reg would never run. Put the mixin first: "
            f"class {cls.__name__}(EqRegTrainerMixin, <your Trainer class>)."
        )


class EqRegTrainer(EqRegTrainerMixin, Trainer):
    """``transformers.Trainer`` with EQ-Reg: ``EqRegTrainer(model=..., args=..., train_dataset=...,
    eqreg=cfg)``.

    See :class:`EqRegTrainerMixin` for the extra arguments (``eqreg``, ``task_loss``, ``eqreg_log_taps``).
    """
