"""One runner for every training recipe: the shared steps exist once, a task supplies what differs.

    result = run_recipe(DerainRecipe(), args, eqreg_config)      # -> RunResult

The steps, in order (each written only here):

1. refuse a bad output folder and what cannot work later (trackers installed, checkpoint there, push
   possible) - :func:`~eqreg_hf.tasks.conventions.preflight`, before anything expensive;
2. seed, build the model (``recipe.build_model``), write ``layers="auto"`` out as the network's own taps for
   the group's field size (:func:`resolve_layers`: t channels for C_t, 2t for D_t);
3. the data (``recipe.load_data``) and the task's checks (``recipe.check``);
4. the evaluation under the run's own group (:func:`evaluation_group`; ``recipe.evaluation``);
5. an engine: the Accelerate loop (:func:`eqreg_hf.tasks.engines.fit_loop`; Adam, cosine decay to 1 %,
   crops sampled with replacement) or the recipe's Trainer (``recipe.fit_trainer``);
6. the final evaluation, trackers closed, one :class:`RunResult`;
7. save on the main process only (``recipe.save``), then push.

A task is a :class:`Recipe` subclass (see docs/design.md, "How to add a task").
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import check_output_dir
from eqreg_hf.core.unwrap import unwrap_model
from eqreg_hf.tasks import conventions as hf
from eqreg_hf.train.loop import TrainHistory

__all__ = [
    "Recipe",
    "RunResult",
    "run_recipe",
    "resolve_layers",
    "evaluation_group",
    "is_main_process",
    "uses_transformers",
    "write_run_folder",
    "dataset_facts",
    "tap_names",
]

_OLD_AUTO = "model"  # the old spelling of layers="auto" (FutureWarning)


@dataclass
class RunResult:
    """What every recipe returns.

    Attributes:
        model: the trained network (unwrapped: no DDP / compile wrapper).
        metrics: the final evaluation (task metrics, ``equivariance_error``, ``train_time_s``, ...).
        report: the per-layer :class:`~eqreg_hf.EquivarianceReport` under :attr:`eval_group`.
        history: ``logs`` (loss windows) and ``evals`` (one row per evaluation).
        eqreg_config: the EQ-Reg settings with the layers written out (None: no EQ-Reg).
        train_time_s: training wall time without the periodic evaluations.
        eval_group: the group the equivariance error is measured under ("C4", "D4", ...).
        info: task facts (e.g. ``degradation``, ``image_size``, ``taps``, ``dataset``).
        output_dir / hub_url: the saved Hub folder and the pushed commit, when there are.
    """

    model: nn.Module
    metrics: dict[str, float]
    report: Any
    history: TrainHistory
    eqreg_config: EqRegConfig | None
    train_time_s: float
    eval_group: str = "C4"
    info: dict[str, Any] = field(default_factory=dict)
    output_dir: str | None = None
    hub_url: str | None = None

    @property
    def degradation(self) -> dict[str, Any] | None:
        """The restoration run's forward model (``info["degradation"]``)."""
        return self.info.get("degradation")

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one evaluation key, e.g. ``result.curve("eval_psnr")``."""
        rows = [row for row in self.history.evals if key in row]
        return [int(row["step"]) for row in rows], [float(row[key]) for row in rows]


class Recipe:
    """What a task supplies to :func:`run_recipe`. Override the hooks; the defaults are the common case.

    Required: :meth:`build_model`, :meth:`load_data`, :meth:`evaluation`, :meth:`save`, and either
    :meth:`train_data` + :meth:`task_loss` (the Accelerate loop) or :meth:`fit_trainer` (a Trainer).
    """

    name = "train"  # the command; the trackers' default run name
    what = "a model"  # the push's commit message: "Upload <what> trained with eqreg-hf"

    def hub_dir(self, args: Any) -> str | None:
        """The Hub folder the run saves (None: none)."""
        return args.output_dir

    def run_dir(self, args: Any) -> str | None:
        """Checkpoints and tracker logs: ``--run-dir``, else ``<output_dir>-run``."""
        return hf.loop_run_dir(args)

    def build_model(self, args: Any) -> nn.Module:
        raise NotImplementedError

    def load_data(self, args: Any, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any]:
        """(training data, held-out data), loading what is not given."""
        raise NotImplementedError

    def check(self, args: Any, model: nn.Module, eqreg_config: EqRegConfig | None, data: tuple) -> None:
        """Refuse what cannot train correctly, before training (default: nothing)."""

    def evaluation(self, args: Any, model: nn.Module, data: tuple, group: str) -> Any:
        """An object with ``final(model, step) -> (metrics, report)``, called as ``(model, step) -> dict``
        for the periodic evaluation, with ``seconds`` (time spent evaluating) and ``history`` (rows or
        None)."""
        raise NotImplementedError

    def uses_trainer(self, model: nn.Module) -> bool:
        return False

    def train_data(self, args: Any, train: Any) -> tuple[Any, Any]:
        """(map dataset of training items, collate function) for the loop engine."""
        raise NotImplementedError

    def task_loss(self, args: Any, model: nn.Module) -> Any:
        return torch.nn.functional.mse_loss

    def fit_trainer(self, run: Run) -> TrainHistory:
        raise NotImplementedError

    def info(self, args: Any, model: nn.Module) -> dict[str, Any]:
        """Task facts for :attr:`RunResult.info` (e.g. the degradation, the input size); default: none."""
        return {}

    def tracker_images(self, model: nn.Module, evaluation: Any, report: Any) -> dict[str, Any]:
        """Figures for the trackers at the end (default: the per-layer equivariance plot)."""
        return {"eval/equivariance_per_layer": report.plot} if report is not None and len(report) else {}

    def finish(self, model: nn.Module, args: Any) -> None:
        """Undo what the task switched on for training (default: nothing)."""

    def save(self, result: RunResult, args: Any) -> str:
        raise NotImplementedError


@dataclass
class Run:
    """One run in progress, as the engines see it."""

    recipe: Recipe
    args: Any
    model: nn.Module
    eqreg_config: EqRegConfig | None
    data: tuple[Any, Any]
    evaluation: Any
    accelerator: Any = None
    desc: str = "train"


def resolve_layers(model: nn.Module, config: EqRegConfig | None) -> EqRegConfig | None:
    """``layers="auto"`` written out as ``model.eqreg_layers(<field size>)`` for a network that names its
    taps.

    The field size is the group's: t channels for C_t, 2t for D_t (a network refuses a width it does not
    divide). Other models keep ``"auto"`` (the core's policy). ``layers="model"``, the old spelling, is read
    as ``"auto"`` with a ``FutureWarning``.

    Example:
        >>> from eqreg_hf.tasks.derain.networks import FastDerainer
        >>> resolve_layers(FastDerainer(channels=8, num_blocks=1), EqRegConfig(group_order=2)).layers
        ['body.0.conv1', 'body.0.conv2']
    """
    if config is None:
        return None
    if config.layers == _OLD_AUTO:
        warnings.warn(
            'layers="model" is now spelled layers="auto" (the same taps: the network\'s own '
            'eqreg_layers(t)); pass "auto" ("model" will stop being accepted).',
            FutureWarning,
            stacklevel=2,
        )
        config = dataclasses.replace(config, layers="auto")
    if config.layers == "auto" and callable(getattr(model, "eqreg_layers", None)):
        return dataclasses.replace(config, layers=model.eqreg_layers(config.group_spec.size))
    return config


def evaluation_group(args: Any, eqreg_config: EqRegConfig | None) -> str:
    """The group a run is measured under: ``args.eval_group``, else EQ-Reg's own group, else C4."""
    given = getattr(args, "eval_group", None)
    if given:
        return given
    if eqreg_config is not None and eqreg_config.group_spec.size > 1:
        return eqreg_config.group_spec.name
    return "C4"


def uses_transformers(model: nn.Module | None) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (checked without importing transformers)."""
    import sys

    modeling = sys.modules.get("transformers.modeling_utils")
    return modeling is not None and isinstance(unwrap_model(model), modeling.PreTrainedModel)


def is_main_process(accelerator: Any) -> bool:
    if accelerator is not None:
        return bool(accelerator.is_main_process)
    from accelerate.state import PartialState

    return PartialState().is_main_process


def run_recipe(
    recipe: Recipe,
    args: Any,
    eqreg_config: EqRegConfig | None = None,
    *,
    model: nn.Module | None = None,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    accelerator: Any = None,
    save: bool = True,
    desc: str = "train",
) -> RunResult:
    """Train with (or without) EQ-Reg, evaluate under the run's group, save and push: every recipe's skeleton.

    Args:
        recipe: the task (:class:`Recipe`).
        args: the task's arguments (a :class:`~eqreg_hf.tasks.conventions.HFRunArguments` subclass).
        eqreg_config: EQ-Reg settings (None or weight 0: no EQ-Reg term).
        model: a network to train instead of ``recipe.build_model(args)``.
        train_dataset, eval_dataset: data instead of the task's own loading.
        accelerator: an ``accelerate.Accelerator`` for the loop engine.
        save: write the Hub folder (if the task has one) at the end, on the main process only.
        desc: progress-bar label.
    """
    folder = recipe.hub_dir(args) if save else None
    if folder:
        check_output_dir(folder, "output_dir")  # before training, not after it
    hf.preflight(args, folder, recipe.run_dir(args), trainer=recipe.uses_trainer(model))
    torch.manual_seed(args.seed)
    model = recipe.build_model(args) if model is None else model
    eqreg_config = resolve_layers(model, eqreg_config)
    data = recipe.load_data(args, train_dataset, eval_dataset)
    recipe.check(args, model, eqreg_config, data)
    group = evaluation_group(args, eqreg_config)
    evaluation = recipe.evaluation(args, model, data, group)
    run = Run(recipe, args, model, eqreg_config, data, evaluation, accelerator, desc)
    start = time.perf_counter()
    try:
        if recipe.uses_trainer(model):
            history = recipe.fit_trainer(run)
        else:
            from eqreg_hf.tasks.engines import fit_loop

            history = fit_loop(run)
    finally:
        recipe.finish(model, args)
    train_time = time.perf_counter() - start - getattr(evaluation, "seconds", 0.0)
    model = unwrap_model(model)  # evaluate and save the network, not a DDP / compile wrapper
    metrics, report = evaluation.final(model, history.steps or getattr(args, "max_steps", 0))
    metrics["train_time_s"] = history.train_time_s = train_time
    metrics["time_per_step_s"] = train_time / max(1, history.steps or getattr(args, "max_steps", 1))
    metrics["eval_time_s"] = getattr(evaluation, "seconds", 0.0)
    if getattr(evaluation, "history", None) is not None:
        history.evals = evaluation.history
    weights = history.series("eqreg_weight")
    if weights:
        metrics["eqreg_weight"] = weights[-1]  # the λ of the last logged step
    if eqreg_config is not None and eqreg_config.auto_weight and weights:
        metrics["final_eqreg_weight"] = weights[-1]  # where weight="auto" settled
    hf.end_loop_run(
        run.accelerator, history, metrics, report, recipe.tracker_images(model, evaluation, report)
    )
    info = recipe.info(args, model)
    result = RunResult(model, metrics, report, history, eqreg_config, train_time, group, info)
    if folder and is_main_process(run.accelerator):
        result.output_dir = recipe.save(result, args)
        result.hub_url = hf.push_trained(args, result.output_dir, recipe.what)  # after a successful run
    return result


def write_run_folder(
    result: RunResult,
    directory: Any,
    facts: Any,
    log: dict[str, Any] | None = None,
    preprocessing: Any = None,
) -> str:
    """The Hub folder of a finished run: :func:`eqreg_hf.hub.write_hub_folder` with the card ``facts``
    (:class:`~eqreg_hf.hub.card.CardFacts`; the λ a ``weight="auto"`` run settled on is added to its
    training settings), plus ``training_log.json`` (loss windows, evaluations, metrics and ``log``). A run
    without EQ-Reg saves a weight-0 config, so every folder loads and pushes alike."""
    import os

    from eqreg_hf.core.io import atomic_write_json
    from eqreg_hf.hub import write_hub_folder

    if "final_eqreg_weight" in result.metrics:
        settled = {"final_eqreg_weight": result.metrics["final_eqreg_weight"]}
        facts = dataclasses.replace(facts, training={**(facts.training or {}), **settled})
    config = result.eqreg_config if result.eqreg_config is not None else EqRegConfig(weight=0.0)
    path = write_hub_folder(result.model, directory, facts, eqreg_config=config, preprocessing=preprocessing)
    entries = {"logs": result.history.logs, "evals": result.history.evals, "metrics": result.metrics}
    atomic_write_json(os.path.join(path, "training_log.json"), {**entries, **(log or {})}, indent=1)
    return path


def dataset_facts(source: str, name: str, **fields: Any) -> dict[str, Any]:
    """A card's dataset entry: its display ``name`` and ``fields``, and ``id`` when ``source`` is a Hub
    dataset id (an ``owner/name`` that is not a local path)."""
    import os

    entry = {"name": name, **fields}
    if "/" in source and not os.path.exists(source):
        entry["id"] = source
    return entry


def tap_names(model: nn.Module, eqreg_config: EqRegConfig | None) -> list[str]:
    """The layers EQ-Reg taps on ``model`` (logged with their settings), or [] when it is off."""
    if eqreg_config is None or not eqreg_config.active:
        return []
    import logging

    from eqreg_hf.core.regularizer import EqReg

    with EqReg(model, eqreg_config) as probe:
        logging.getLogger(__name__).info("%s", probe.describe())
        return probe.tap_names
