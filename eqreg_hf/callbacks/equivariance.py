"""Measure layer-wise equivariance at every evaluation of a ``transformers.Trainer`` run."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from transformers import TrainerCallback

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

    The layers, group order, fields and layouts default to those of the trainer's EQ-Reg
    (:class:`~eqreg_hf.EqRegTrainer` binds it); pass ``layers=`` to use the callback with a plain
    ``Trainer`` or to measure other layers.

    Args:
        num_batches: eval batches to measure on (default 2).
        max_images: cap on the images taken from each batch (default 8).
        layers, group_order, fields, layouts, prefix_tokens, group: as in :class:`~eqreg_hf.EqRegConfig`
            (default: the trainer's EQ-Reg settings; a D4 run is measured under D4, flips included).
        image_key: key of the image in the batch (default: the EQ-Reg ``image_key``, else "pixel_values").
        per_tap: also log one value per tap (default True).
        include_output: also measure the model output (invariance of logits / equivariance of images).

    Example:
        >>> trainer = EqRegTrainer(..., eqreg=cfg, callbacks=[EquivarianceEvalCallback(num_batches=1)])  # doctest: +SKIP
        >>> trainer.evaluate()["eval_equiv_error"]  # doctest: +SKIP
        0.42
    """

    def __init__(
        self,
        num_batches: int = 2,
        max_images: int | None = 8,
        layers: Any = None,
        group_order: int | None = None,
        fields: Any = None,
        layouts: Any = None,
        prefix_tokens: Any = None,
        image_key: str | None = None,
        per_tap: bool = True,
        include_output: bool = False,
        group: str | None = None,
    ):
        if num_batches < 1:
            raise ValueError(f"num_batches={num_batches!r} must be >= 1.")
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images={max_images!r} must be >= 1 or None (whole batches).")
        self.num_batches = num_batches
        self.max_images = max_images
        self.settings = {
            "layers": layers,
            "group_order": group_order,
            "fields": fields,
            "layouts": layouts,
            "prefix_tokens": prefix_tokens,
            "group": group,
        }
        self.image_key = image_key
        self.per_tap = per_tap
        self.include_output = include_output
        self._from_reg: dict[str, Any] = {}
        self._warned = False
        self._measured: Any = None
        self.last_report = None

    def bind_eqreg(self, reg: Any) -> None:
        """Remember the trainer's tap settings (kept after training, for later ``evaluate()`` calls)."""
        if reg is None:
            return
        c = reg.config
        # The resolved per-tap settings (an auto-chosen NHWC or token tap must be read the same way here).
        taps = [t for t in reg.taps if t.name in set(reg.tap_names)]
        self._from_reg = {
            "layers": [t.name for t in taps],
            "group_order": c.group_order,
            "group": c.group,
            "fields": {t.name: t.field for t in taps},
            "layouts": {t.name: t.layout for t in taps},
            "prefix_tokens": {t.name: t.prefix_tokens for t in taps if t.prefix_tokens is not None} or None,
            "image_key": c.image_key,
        }

    def _setting(self, name: str, default: Any) -> Any:
        v = self.settings.get(name) if name != "image_key" else self.image_key
        if v is None:
            v = self._from_reg.get(name)
        return default if v is None else v

    def _group(self) -> dict[str, Any]:
        """``group_order`` and ``group`` as one pair: the user's if either is given, else the trainer's EQ-Reg's."""
        own = {k: self.settings.get(k) for k in ("group_order", "group")}
        pair = own if any(v is not None for v in own.values()) else {k: self._from_reg.get(k) for k in own}
        return pair if any(v is not None for v in pair.values()) else {"group_order": 4, "group": None}

    def measure(self, model: torch.nn.Module, dataloader: Any) -> dict[str, float]:
        """``{"equiv_error": mean, "equiv_error/<tap>": ...}`` on the first ``num_batches`` batches."""
        from eqreg_hf.train.step import accepts_keyword

        layers = self._setting("layers", None)
        if layers is None:
            raise ValueError(
                "EquivarianceEvalCallback does not know which layers to measure: pass layers=[...] or use it with "
                "EqRegTrainer and an active EqRegConfig."
            )
        key = self._setting("image_key", "pixel_values")
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
                model,
                x.to(device),
                layers=layers,
                **self._group(),
                fields=self._setting("fields", "regular"),
                layouts=self._setting("layouts", "auto"),
                prefix_tokens=self._setting("prefix_tokens", None),
                include_output=self.include_output,
                input_key=input_key,
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
        if self._setting("layers", None) is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "EquivarianceEvalCallback: no layers to measure (pass layers=... or train with an "
                    "active EQ-Reg first); skipping.",
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
