"""Measure layer-wise equivariance at every evaluation of a ``transformers.Trainer`` run."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import TrainerCallback

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.measure import equivariance_error

__all__ = ["EquivarianceEvalCallback"]


class EquivarianceEvalCallback(TrainerCallback):
    """Run :func:`~eqreg_hf.equivariance_error` on a few eval batches at each evaluation.

    Logs ``eval_equiv_error`` (the mean over taps of ``mean_k ||T_k F(x) - F(R_k x)|| / ||F(R_k x)||``)
    and, with ``per_tap=True``, ``eval_equiv_error/<tap>``; values are averaged across processes.
    They are added to the metrics that ``trainer.evaluate()`` returns and to the evaluation entry of
    ``trainer.state.log_history``, and — measured when the evaluation is *logged* — passed on to the
    callbacks after this one, so reporting integrations (TensorBoard, W&B, ...) record them.
    :class:`~eqreg_hf.EqRegTrainer` puts this callback first; with a plain ``Trainer``, add it with
    ``trainer.callback_handler.callbacks.insert(0, cb)`` for the integrations to see its values
    (otherwise they still reach ``evaluate()``'s metrics and the log history).

    What is measured comes from one :class:`~eqreg_hf.EqRegConfig` (its layers, group, fields, layouts and
    prefix tokens): ``eqreg`` if given, else the trainer's EQ-Reg (:class:`~eqreg_hf.EqRegTrainer` binds it,
    with its resolved taps; a D4 run is measured under D4, flips included). Pass ``eqreg`` to use the
    callback with a plain ``Trainer`` or to measure other layers or another group.

    Args:
        eqreg: the settings to measure with (default: the trainer's EQ-Reg).
        num_batches: eval batches to measure on (default 2).
        max_images: cap on the images taken from each batch (default 8).
        image_key: key of the image in the batch (default: the config's ``image_key``).
        per_tap: also log one value per tap (default True).
        include_output: also measure the model output (invariance of logits / equivariance of images).

    Example:
        >>> measured = EqRegConfig(layers=["body.0"], group="D4")
        >>> cb = EquivarianceEvalCallback(measured, num_batches=1)
        >>> trainer = EqRegTrainer(..., eqreg=cfg, callbacks=[cb])  # doctest: +SKIP
        >>> trainer.evaluate()["eval_equiv_error"]  # doctest: +SKIP
        0.42
    """

    def __init__(
        self,
        eqreg: EqRegConfig | None = None,
        *,
        num_batches: int = 2,
        max_images: int | None = 8,
        image_key: str | None = None,
        per_tap: bool = True,
        include_output: bool = False,
        **removed: Any,
    ):
        if removed:
            raise TypeError(
                f"EquivarianceEvalCallback does not take {sorted(removed)}: put the layers, group, fields, "
                "layouts and prefix tokens in one config, "
                "EquivarianceEvalCallback(eqreg=EqRegConfig(layers=..., group=...), num_batches=...)."
            )
        if eqreg is not None and not isinstance(eqreg, EqRegConfig):
            raise TypeError(
                f"eqreg={eqreg!r} is not an EqRegConfig: pass EqRegConfig(layers=[...], group='C4') or "
                "nothing (the trainer's EQ-Reg)."
            )
        if num_batches < 1:
            raise ValueError(f"num_batches={num_batches!r} must be >= 1.")
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images={max_images!r} must be >= 1 or None (whole batches).")
        self.eqreg = eqreg
        self.num_batches = num_batches
        self.max_images = max_images
        self.image_key = image_key
        self.per_tap = per_tap
        self.include_output = include_output
        self._from_reg: EqRegConfig | None = None
        self._warned = False
        self._measured: Any = None
        self.last_report = None

    def bind_eqreg(self, reg: Any) -> None:
        """Remember the trainer's EQ-Reg settings (kept after training, for later ``evaluate()`` calls)."""
        if reg is None:
            return
        # The resolved per-tap settings (an auto-chosen NHWC or token tap must be read the same way here).
        taps = [t for t in reg.taps if t.name in set(reg.tap_names)]
        self._from_reg = dataclasses.replace(
            reg.config,
            layers=[t.name for t in taps],
            fields={t.name: t.field for t in taps},
            layouts={t.name: t.layout for t in taps},
            prefix_tokens={t.name: t.prefix_tokens for t in taps if t.prefix_tokens is not None} or None,
        )

    @property
    def config(self) -> EqRegConfig | None:
        """The config measured with: ``eqreg``, else the trainer's (None before a trainer binds one)."""
        return self.eqreg if self.eqreg is not None else self._from_reg

    def measure(self, model: torch.nn.Module, dataloader: Any) -> dict[str, float]:
        """``{"equiv_error": mean, "equiv_error/<tap>": ...}`` on the first ``num_batches`` batches."""
        from eqreg_hf.train.step import accepts_keyword

        config = self.config
        if config is None:
            raise ValueError(
                "EquivarianceEvalCallback does not know which layers to measure: pass "
                "eqreg=EqRegConfig(layers=[...]) or use it with EqRegTrainer and an active EqRegConfig."
            )
        key = self.image_key or config.image_key
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        input_key = key if accepts_keyword(model, key) else None
        sums: dict[str, float] = {}
        n = 0
        for i, batch in enumerate(dataloader):
            if i >= self.num_batches:
                break
            x = batch[key] if isinstance(batch, Mapping) else batch[0]
            if self.max_images is not None:
                x = x[: self.max_images]
            report = equivariance_error(
                model, x.to(device), config, include_output=self.include_output, input_key=input_key
            )
            self.last_report = report
            for name, v in report.items():
                sums[name] = sums.get(name, 0.0) + float(v)
            n += 1
        if n == 0:
            return {}
        names = sorted(sums)
        vec = torch.tensor([sums[k] / n for k in names], dtype=torch.float64, device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                torch.distributed.all_reduce(vec)
                vec = vec / world
        per_tap = dict(zip(names, vec.tolist()))
        taps = [v for k, v in per_tap.items() if k != "output"]
        out = {"equiv_error": sum(taps) / len(taps) if taps else float("nan")}
        if self.per_tap:
            out.update({f"equiv_error/{k}": v for k, v in per_tap.items()})
        return out

    adds_eval_metrics = True  # EqRegTrainer puts such callbacks before the reporting integrations

    @staticmethod
    def _eval_prefix(logs: Mapping) -> str | None:
        """``"eval"`` (or the metric_key_prefix) for an evaluation's log entry, None for training logs."""
        for k in logs:
            if k.endswith("_runtime") and f"{k[: -len('_runtime')]}_samples_per_second" in logs:
                prefix = k[: -len("_runtime")]
                if prefix != "train":  # the summary logged at the end of train()
                    return prefix
        return None

    def on_log(self, args, state, control, logs=None, model=None, eval_dataloader=None, **kwargs):
        # Trainer.evaluate() logs its metrics (on_log, which reporting integrations listen to) before
        # on_evaluate: measuring here puts the values into the same dict, so integrations after this
        # callback, evaluate()'s return value and the log history all get them.
        if logs is None or self._eval_prefix(logs) is None:
            return
        self._add_values(logs, state, model, eval_dataloader)
        self._measured = logs

    def on_evaluate(self, args, state, control, model=None, eval_dataloader=None, metrics=None, **kwargs):
        if metrics is not None and metrics is self._measured:  # done when it was logged
            self._measured = None
            return
        self._add_values(metrics if metrics is not None else {}, state, model, eval_dataloader)

    def _add_values(self, metrics, state, model, eval_dataloader) -> None:
        if model is None or eval_dataloader is None:
            return
        if self.config is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "EquivarianceEvalCallback: no layers to measure (pass eqreg=EqRegConfig(layers=...) or "
                    "train with an active EQ-Reg first); skipping.",
                    stacklevel=2,
                )
            return
        prefix = self._eval_prefix(metrics) or "eval"
        values = {f"{prefix}_{k}": v for k, v in self.measure(model, eval_dataloader).items()}
        # Find the entry Trainer.log just appended for this evaluation, then extend both.
        for entry in reversed(state.log_history):
            if entry.get("step") == state.global_step and all(
                entry.get(k) == v for k, v in metrics.items() if k in entry
            ):
                if any(k in entry for k in metrics):
                    entry.update(values)
                    break
        metrics.update(values)
