"""Fine-tune an image classifier (timm or transformers) with EQ-Reg and report accuracy + equivariance.

The library side of ``eqreg-hf train-classifier`` and ``scripts/bench_classifier.py``::

    result = train_classifier(ClassifierArgs(model="resnet18", dataset="shapes", max_steps=200),
                              EqRegConfig(layers="auto", group_order=4, weight=0.1))
    result.metrics["eval_accuracy"], result.metrics["eval_equiv_error"]

Data: :mod:`eqreg_hf.tasks.classify.data` (shapes or CIFAR-100). Training: ``EqRegTrainer`` through the shared
runner (:func:`~eqreg_hf.tasks.runner.run_recipe`); evaluation: top-1, the layer-wise equivariance error
under the run's group (``EquivarianceEvalCallback``, with the logits' invariance as ``output``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import atomic_write_json, check_output_dir
from eqreg_hf.data.transforms import RandomRot90  # noqa: F401 (the augmentation baseline; importable here)
from eqreg_hf.tasks import conventions as hf
from eqreg_hf.tasks.classify.arguments import DATASETS, ClassifierArgs
from eqreg_hf.tasks.classify.data import load_classification_data, preprocessing, with_transforms
from eqreg_hf.tasks.classify.input_size import aligned_input_size
from eqreg_hf.tasks.engines import TrainerEvaluation
from eqreg_hf.tasks.metrics import trainer_accuracy
from eqreg_hf.tasks.runner import Recipe, RunResult, run_recipe, tap_names, write_run_folder
from eqreg_hf.train.loop import TrainHistory

__all__ = [
    "ClassifierArgs",
    "ClassifyRecipe",
    "train_classifier",
    "load_classification_data",
    "aligned_input_size",
    "RandomRot90",
    "DATASETS",
]

logger = logging.getLogger(__name__)


class ClassifyRecipe(Recipe):
    """Classification fine-tuning through ``EqRegTrainer``: the model's input size is chosen for its taps."""

    name, what = "train-classifier", "a classifier"

    def __init__(self, eqreg_config: EqRegConfig):
        self.eqreg_config, self.data, self.image_size = eqreg_config, None, None

    def hub_dir(self, args: ClassifierArgs) -> str | None:
        return os.path.join(args.output_dir, "model") if args.save_model else None

    def run_dir(self, args: ClassifierArgs) -> str | None:
        return args.output_dir

    def uses_trainer(self, model: nn.Module | None) -> bool:
        return True

    def build_model(self, args: ClassifierArgs) -> nn.Module:
        """The model, before the data (the built-in datasets' class counts are known), so that the input size
        can be chosen for its taps; rebuilt only if the data has another class count."""
        from transformers import set_seed

        from eqreg_hf.data import SHAPE_NAMES
        from eqreg_hf.tasks.classify.networks import create_classifier

        set_seed(args.seed)
        hint = len(SHAPE_NAMES) if args.dataset == "shapes" else (100 if args.label == "fine" else 20)
        common = dict(pretrained=args.pretrained, image_size=args.image_size or 32, **args.model_kwargs)
        model = create_classifier(args.model, hint, **common)
        self.image_size = args.image_size or aligned_input_size(model, 32, self.eqreg_config) or 32
        if args.image_size is None:
            logger.info("Input size %d: nearest to 32 where every tap is aligned.", self.image_size)
        train, test, n_classes, info = load_classification_data(args, self.image_size)
        if n_classes != hint:
            model = create_classifier(args.model, n_classes, **common)
        self.data = (*with_transforms(args, model, self.image_size, train, test), info)
        return model

    def load_data(self, args: ClassifierArgs, train: Any, test: Any) -> tuple[Any, Any]:
        return self.data[0], self.data[1]

    def evaluation(
        self, args: ClassifierArgs, model: nn.Module, data: tuple, group: str
    ) -> TrainerEvaluation:
        from eqreg_hf.callbacks import EquivarianceEvalCallback
        from eqreg_hf.core.groups import as_group

        measured = dataclasses.replace(self.eqreg_config, group=group, group_order=as_group(group).t)
        callback = EquivarianceEvalCallback(
            eqreg=measured, num_batches=args.equiv_eval_batches, max_images=16, include_output=True
        )
        return TrainerEvaluation(callback)

    def info(self, args: ClassifierArgs, model: nn.Module) -> dict[str, Any]:
        taps = tap_names(model, self.eqreg_config)
        return {"image_size": self.image_size, "taps": taps, "dataset": self.data[2]}

    def fit_trainer(self, run: Any) -> TrainHistory:
        from eqreg_hf.tasks.engines import training_arguments
        from eqreg_hf.train.trainer import EqRegTrainer

        args = run.args
        os.makedirs(args.output_dir, exist_ok=True)  # only once the model and the data are there
        training = training_arguments(
            args,
            args.output_dir,
            hf.run_name(args, self.name),
            num_train_epochs=args.epochs,
            per_device_eval_batch_size=max(args.batch_size, 64),
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
            eval_strategy="steps" if args.eval_steps else "no",
            eval_steps=args.eval_steps,
            data_seed=args.seed,
            dataloader_num_workers=args.num_workers,
        )
        transformers_model = type(run.model).__module__.startswith("transformers.")
        trainer = EqRegTrainer(
            model=run.model,
            args=training,
            train_dataset=run.data[0],
            eval_dataset=run.data[1],
            eqreg=run.eqreg_config,
            task_loss=None if transformers_model else _cross_entropy,
            compute_metrics=trainer_accuracy,
            callbacks=[run.evaluation.callback],
        )
        run.evaluation.trainer = trainer
        trainer.train(resume_from_checkpoint=hf.trainer_checkpoint(args, args.output_dir))
        return TrainHistory(logs=trainer.state.log_history, steps=trainer.state.global_step)

    def save(self, result: RunResult, args: ClassifierArgs) -> str:
        from eqreg_hf.data import classification_transform
        from eqreg_hf.hub.card import CardFacts

        # the evaluation preprocessing goes in the folder: timm's / transformers' loaders see training's
        size = result.info["image_size"]
        data_config = classification_transform(
            result.model, train=False, **preprocessing(args, size)
        ).data_config
        keys = "dataset max_steps epochs batch_size learning_rate weight_decay augment seed".split()
        training = {"image_size": size, "pretrained": args.pretrained, **{k: getattr(args, k) for k in keys}}
        metrics = {"accuracy": result.metrics.get("eval_accuracy")}
        if not math.isnan(result.metrics.get("eval_equiv_error", math.nan)):
            metrics["equivariance_error"] = result.metrics["eval_equiv_error"]
        report = {k: v for k, v in (result.report or {}).items() if k != "output"}
        facts = CardFacts(
            task="classification",
            metrics=metrics,
            dataset=result.info["dataset"],
            training=training,
            equivariance_report=report,
            equivariance_group=result.eval_group,
        )
        return write_run_folder(result, self.hub_dir(args), facts, preprocessing=data_config)


def _cross_entropy(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs["logits"] if isinstance(outputs, dict) else outputs, labels)


def train_classifier(args: ClassifierArgs, eqreg_config: EqRegConfig | None = None) -> RunResult:
    """Fine-tune ``args.model`` on ``args.dataset`` with EQ-Reg; evaluate under the run's group; save.

    ``total = CE(f([x; R_k x]), [y; y]) + λ Σ_l d(T_k F_l(x), F_l(R_k x))`` (Bai et al., CVPR 2025);
    ``eqreg_config=None`` (or weight 0) is the plain baseline that still measures the auto taps
    (``augment="C4"`` for the augmentation baseline).

    Returns:
        A :class:`~eqreg_hf.tasks.runner.RunResult`: ``metrics`` (eval_accuracy, eval_equiv_error,
        eval_equiv_error/<tap>, ...), ``info`` (image_size, taps, dataset), ``history.logs`` (the Trainer's
        log history), ``output_dir`` (the Hub folder or None); also written to ``<output_dir>/results.json``.
    """
    args.validate()  # again: the fields may have been changed since construction
    check_output_dir(args.output_dir, "output_dir")  # the run folder too, before the model and the data
    eqreg_config = eqreg_config if eqreg_config is not None else EqRegConfig(weight=0.0)
    result = run_recipe(ClassifyRecipe(eqreg_config), args, eqreg_config)
    summary = {
        "metrics": {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))},
        **{k: result.info[k] for k in ("image_size", "taps")},
        "model_dir": result.output_dir,
        "log_history": result.history.logs,
        "args": dataclasses.asdict(args),
        "eqreg": eqreg_config.to_dict(),
        "eval_group": result.eval_group,
        "hub_url": result.hub_url,
    }
    atomic_write_json(os.path.join(args.output_dir, "results.json"), summary, indent=2, sort_keys=True)
    return result
