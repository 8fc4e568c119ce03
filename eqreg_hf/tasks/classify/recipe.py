"""Fine-tune an image classifier (timm or transformers) with EQ-Reg and report accuracy + equivariance.

The library side of ``eqreg-hf train-classifier`` and ``scripts/bench_classifier.py``::

    from eqreg_hf import EqRegConfig
    from eqreg_hf.tasks.classify.recipe import ClassifierArgs, train_classifier
    result = train_classifier(ClassifierArgs(model="resnet18", dataset="shapes", max_steps=200),
                              EqRegConfig(layers="auto", group_order=4, weight=0.1))
    result["metrics"]["eval_accuracy"], result["metrics"]["eval_equiv_error"]

Data: ``"shapes"`` (generated offline, rotation-sensitive, :func:`eqreg_hf.data.load_shapes`) or
``"cifar100"`` (the Hub's ``uoft-cs/cifar100`` or a local copy, :func:`eqreg_hf.data.load_cifar100`).
Training: :class:`eqreg_hf.EqRegTrainer` (one stacked forward of ``[x; R_k x]``, labels copied for the
rotated half); evaluation: top-1 accuracy (torchmetrics) and the layer-wise equivariance error
(:class:`eqreg_hf.callbacks.EquivarianceEvalCallback`, plus the invariance of the logits as ``output``).
The trained model is written as a Hub folder (weights, config, ``eqreg_config.json``, model card).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.core.io import atomic_write_json, check_output_dir
from eqreg_hf.core.unwrap import model_device
from eqreg_hf.data.splits import check_disjoint
from eqreg_hf.data.transforms import RandomRot90  # noqa: F401 (the augmentation baseline; importable here)
from eqreg_hf.tasks import conventions as hf
from eqreg_hf.tasks.validation import check_choice, check_non_negative, check_positive_ints

__all__ = [
    "ClassifierArgs",
    "train_classifier",
    "load_classification_data",
    "aligned_input_size",
    "compare_classifiers",
    "comparison_table",
    "COMPARISON",
    "RandomRot90",
    "DATASETS",
]

logger = logging.getLogger(__name__)

DATASETS = ("shapes", "cifar100")
LABELS = ("fine", "coarse")
_POSITIVE = ("batch_size", "logging_steps", "equiv_eval_batches")
_POSITIVE_OR_NONE = ("train_samples", "eval_samples", "eval_steps")


@dataclass
class ClassifierArgs(hf.HFRunArguments):
    """Settings of one classification fine-tuning run (the EQ-Reg settings live in :class:`EqRegConfig`)."""

    model: str = field(
        default="resnet18",
        metadata={"help": "timm model name, or 'hf:<config.json, folder or id>' for a transformers model."},
    )
    dataset: str = field(
        default="shapes",
        metadata={
            "help": f"One of {list(DATASETS)} ('shapes' is generated "
            "offline; 'cifar100' from the Hub or --data-path)."
        },
    )
    data_path: str | None = field(
        default=None, metadata={"help": "Local CIFAR-100 copy (parquet, save_to_disk folder or imagefolder)."}
    )
    label: str = field(default="fine", metadata={"help": "'fine' or 'coarse' labels (CIFAR-100)."})
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Input size. Default: the size nearest to 32 at which every tap is aligned (exact rot90)."
        },
    )
    train_samples: int | None = field(
        default=None,
        metadata={"help": "Training images (shapes: generated; cifar: first N). Default: 2000 / all."},
    )
    eval_samples: int | None = field(default=None, metadata={"help": "Test images. Default: 500 / all."})
    shapes_train_angle: float = field(
        default=180.0,
        metadata={
            "help": "Shapes only: training orientations in [-a, a] degrees (0 = upright only; the test set always "
            "uses all orientations)."
        },
    )
    rotation_augment: bool = field(
        default=False, metadata={"help": "Rotate each training image by a random multiple of 90 degrees."}
    )
    pretrained: bool = field(default=True, metadata={"help": "Start from pretrained weights when available."})
    max_steps: int = field(default=-1, metadata={"help": "Training steps (overrides epochs when > 0)."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    batch_size: int = field(
        default=64, metadata={"help": "Images per step (before EQ-Reg's rotated copies)."}
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    seed: int = field(default=0, metadata={"help": "Seed of the model init, data order and shapes data."})
    output_dir: str = field(
        default="runs/classifier",
        metadata={"help": "Where logs, results.json and the model folder (<output_dir>/model) go."},
    )
    save_model: bool = field(default=True, metadata={"help": "Write the Hub folder <output_dir>/model."})
    equiv_eval_batches: int = field(default=4, metadata={"help": "Eval batches for the equivariance error."})
    logging_steps: int = field(default=20, metadata={"help": "Log every N steps."})
    eval_steps: int | None = field(
        default=None,
        metadata={
            "help": "Also evaluate (accuracy, equivariance error) every N steps (default: only at the end)."
        },
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})
    model_kwargs: dict = field(
        default_factory=dict,
        metadata={"help": "More model constructor arguments (JSON), e.g. '{\"drop_path_rate\": 0.1}'."},
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse bad values (called on construction): the message names the value, the choices and the fix."""
        check_choice(
            "dataset",
            self.dataset,
            DATASETS,
            "For your own data use EqRegTrainer directly (see docs/classification.md).",
        )
        check_choice("label", self.label, LABELS)
        self.check_conventions()  # report_to, save_steps, push_to_hub / hub_model_id
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError(
                f"Nothing to train: max_steps={self.max_steps} and epochs={self.epochs}; set one > 0."
            )
        check_positive_ints(self, _POSITIVE + _POSITIVE_OR_NONE, optional=_POSITIVE_OR_NONE)
        check_non_negative(self, ("learning_rate", "weight_decay", "epochs"))
        check_non_negative(self, ("warmup_steps", "num_workers", "seed"), integer=True)
        if not (isinstance(self.shapes_train_angle, (int, float)) and 0 <= self.shapes_train_angle <= 180):
            raise ValueError(
                f"shapes_train_angle={self.shapes_train_angle!r} is not valid: use a number of degrees in "
                "[0, 180] (0 = upright only, 180 = every orientation)."
            )
        if not isinstance(self.model_kwargs, dict) or not all(isinstance(k, str) for k in self.model_kwargs):
            raise ValueError(
                f"model_kwargs={self.model_kwargs!r} is not valid: give a JSON object of constructor "
                "arguments, e.g. '{\"drop_path_rate\": 0.1}'."
            )
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size={self.image_size} is too small; use at least 8 (e.g. 32 or 33).")


def load_classification_data(args: ClassifierArgs, image_size: int | None) -> tuple[Any, Any, int, dict]:
    """(train dataset, test dataset, number of classes, dataset card info) in CIFAR's schema."""
    from eqreg_hf.data import load_cifar100, load_shapes, num_classes

    if args.dataset == "shapes":
        size = image_size or 32
        n_train = args.train_samples or 2000
        n_test = args.eval_samples or 500
        train = load_shapes(
            "train",
            num_samples=n_train,
            size=size,
            seed=args.seed,
            max_angle=args.shapes_train_angle,
            progress=args.progress,
        )
        test = load_shapes(
            "test", num_samples=n_test, size=size, seed=args.seed, max_angle=180.0, progress=args.progress
        )
        info = {
            "name": "eqreg-hf shapes (generated)",
            "id": None,
            "split": "test",
            "config": f"{size}px, train angles +-{args.shapes_train_angle:g}, test angles +-180",
        }
    else:
        train = load_cifar100("train", path=args.data_path, label=args.label)
        test = load_cifar100("test", path=args.data_path, label=args.label)
        check_disjoint(train, test, "train", "test", args.data_path or "uoft-cs/cifar100")
        if args.train_samples:
            train = train.select(range(min(args.train_samples, len(train))))
        if args.eval_samples:
            test = test.select(range(min(args.eval_samples, len(test))))
        info = {
            "name": "CIFAR-100",
            "id": "uoft-cs/cifar100" if args.data_path is None else None,
            "split": "test",
            "config": args.label,
        }
    return train, test, num_classes(train, args.label), info


@torch.no_grad()
def aligned_input_size(model: nn.Module, size: int, config: EqRegConfig, radius: int = 8) -> int | None:
    """The input size nearest to ``size`` at which every tap of ``config`` has a symmetric sampling grid.

    At such a size a 90° rotation of each tapped map lines up exactly with the map of the rotated input
    (see the alignment notes in docs/design.md), so EQ-Reg can reach 0. Ties go to the larger size. Returns
    None when no size within ``radius`` is aligned or the model only accepts its own size (ViT).

    Example:
        >>> import timm
        >>> aligned_input_size(timm.create_model("resnet18"), 32, EqRegConfig())
        33
    """
    from eqreg_hf.core.alignment import AlignmentTracer
    from eqreg_hf.core.layouts import feature_to_nchw
    from eqreg_hf.core.selection import resolve_taps
    from eqreg_hf.core.taps import FeatureTaps

    # any non-trivial group: the taps are what matters here (C2 when the config's group is trivial)
    cfg = (
        dataclasses.replace(config, weight=1.0)
        if config.group_spec.size > 1
        else dataclasses.replace(config, weight=1.0, group=None, group_order=2)
    )
    specs = resolve_taps(model, cfg)
    was_training = model.training
    model.eval()
    try:
        with FeatureTaps(model, specs, clone=False) as taps:
            for cand in sorted(
                range(max(8, size - radius), size + radius + 1), key=lambda c: (abs(c - size), -c)
            ):
                tracer = AlignmentTracer(model, (cand, cand))
                taps.arm()
                try:
                    model(torch.zeros(1, 3, cand, cand, device=model_device(model)))
                except Exception:  # e.g. a ViT built for one size: keep the size asked for
                    tracer.remove()
                    taps.disarm()
                    return None
                feats = taps.take()
                tracer.remove()
                ok = True
                for spec in specs:
                    if not feats.get(spec.name):
                        continue
                    f, layout = feature_to_nchw(feats[spec.name][0][1][:1], spec, (cand, cand))
                    if layout == "vector":
                        continue
                    res = tracer.check(tuple(f.shape[-2:]))
                    if res is not None and not res[0]:
                        ok = False
                        break
                if ok:
                    return cand
    finally:
        model.train(was_training)
    return None


def _is_transformers(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.")


def _compute_metrics(eval_pred) -> dict[str, float]:
    from eqreg_hf.tasks.metrics import top1_accuracy

    logits = eval_pred.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return {"accuracy": top1_accuracy(torch.as_tensor(logits), torch.as_tensor(eval_pred.label_ids))}


def _cross_entropy(outputs: Any, labels: torch.Tensor) -> torch.Tensor:
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs
    return F.cross_entropy(logits, labels)


def train_classifier(args: ClassifierArgs, eqreg: EqRegConfig | None = None) -> dict[str, Any]:
    """Fine-tune ``args.model`` on ``args.dataset`` with EQ-Reg ``eqreg``; evaluate; save.

    ``total = CE(f([x; R_k x]), [y; y]) + λ Σ_l d(T_k F_l(x), F_l(R_k x))`` (Bai et al., CVPR 2025) with
    ``eqreg.weight = λ``; ``weight=0`` is the plain baseline (add ``rotation_augment=True`` for the
    augmentation baseline).

    Args:
        args: :class:`ClassifierArgs`.
        eqreg: EQ-Reg settings (None = ``EqRegConfig(weight=0)``, a plain run that still measures the
            equivariance of the auto taps).

    Returns:
        ``{"metrics": {eval_accuracy, eval_equiv_error, eval_equiv_error/<tap>, ...}, "image_size",
        "taps", "model_dir" (or None), "log_history", "args", "eqreg"}``; also written to
        ``<output_dir>/results.json``.
    """
    from transformers import set_seed

    args.validate()  # again: the fields may have been changed since construction
    eqreg = eqreg if eqreg is not None else EqRegConfig(weight=0.0)
    check_output_dir(args.output_dir, "output_dir")  # before the model, the data and the training
    hf.preflight(
        args,
        os.path.join(args.output_dir, "model") if args.save_model else None,
        args.output_dir,
        trainer=True,
    )
    set_seed(args.seed)
    model, image_size, (train_ds, test_ds, data_info) = _model_and_data(args, eqreg)
    train_ds, test_ds = _with_transforms(args, model, image_size, train_ds, test_ds)
    os.makedirs(args.output_dir, exist_ok=True)  # only once the model and the data are there
    trainer, callback = _make_trainer(args, eqreg, model, train_ds, test_ds)
    taps = _tap_names(model, eqreg)
    trainer.train(resume_from_checkpoint=hf.trainer_checkpoint(args, args.output_dir))
    metrics = trainer.evaluate()
    hf.report_trainer_images(
        trainer, callback.last_report
    )  # the equivariance plot to the trackers; close them
    if eqreg.auto_weight:  # where the automatic λ settled, for the card
        metrics["final_eqreg_weight"] = next(
            (h["eqreg_weight"] for h in reversed(trainer.state.log_history) if "eqreg_weight" in h), None
        )
    model_dir = (
        _save_model(args, eqreg, trainer.model, metrics, callback.last_report, image_size, data_info)
        if args.save_model
        else None
    )
    result = {
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        "image_size": image_size,
        "taps": taps,
        "model_dir": model_dir,
        "log_history": trainer.state.log_history,
        "args": dataclasses.asdict(args),
        "eqreg": eqreg.to_dict(),
        "hub_url": hf.push_trained(args, model_dir, "a classifier")
        if model_dir
        else None,  # after a successful run
    }
    atomic_write_json(os.path.join(args.output_dir, "results.json"), result, indent=2, sort_keys=True)
    return result


def _model_and_data(args: ClassifierArgs, eqreg: EqRegConfig) -> tuple[nn.Module, int, tuple[Any, Any, dict]]:
    """The model, the input size (aligned for the taps unless given) and (train, test, dataset card info).

    The model is built before the data (the built-in datasets' class counts are known), so that the
    input size can be chosen for its taps; it is rebuilt only if the data has another class count.
    """
    from eqreg_hf.data import SHAPE_NAMES
    from eqreg_hf.tasks.classify.networks import create_classifier

    n_classes_hint = len(SHAPE_NAMES) if args.dataset == "shapes" else (100 if args.label == "fine" else 20)
    size_hint = args.image_size or 32
    model = create_classifier(
        args.model, n_classes_hint, pretrained=args.pretrained, image_size=size_hint, **args.model_kwargs
    )
    image_size = args.image_size
    if image_size is None:
        image_size = aligned_input_size(model, 32, eqreg) or 32
        logger.info("Input size %d: nearest to 32 where every tap is aligned.", image_size)
    train_ds, test_ds, n_classes, data_info = load_classification_data(args, image_size)
    if n_classes != n_classes_hint:
        model = create_classifier(
            args.model, n_classes, pretrained=args.pretrained, image_size=size_hint, **args.model_kwargs
        )
    return model, image_size, (train_ds, test_ds, data_info)


def _with_transforms(
    args: ClassifierArgs, model: nn.Module, image_size: int, train_ds: Any, test_ds: Any
) -> tuple[Any, Any]:
    """The datasets with the model's preprocessing (and the rotation-augmentation baseline's turns)."""
    from eqreg_hf.data import classification_transform

    # Shapes are generated at the right size and orientation: no crop / flip. CIFAR gets timm's training
    # augmentation with a milder crop (32-pixel images).
    common = _preprocessing(args, image_size)
    test_tf = classification_transform(model, train=False, **common)
    if args.dataset == "shapes":
        train_tf = classification_transform(model, train=False, **common)
    else:
        train_tf = classification_transform(model, train=True, scale=(0.35, 1.0), **common)
    if args.rotation_augment:
        train_tf = RandomRot90(train_tf, seed=args.seed)
    return train_ds.with_transform(train_tf), test_ds.with_transform(test_tf)


def _preprocessing(args: ClassifierArgs, image_size: int) -> dict[str, Any]:
    """The arguments of ``classification_transform`` the run trains and evaluates with (saved with the model)."""
    return dict(label=args.label, input_size=image_size, data_config={"crop_pct": 1.0})


def _training_arguments(args: ClassifierArgs) -> Any:
    """``transformers.TrainingArguments`` of the run (cosine schedule; --save-steps checkpoints; --report-to)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(args.batch_size, 64),
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lr_scheduler_type="cosine",
        logging_steps=args.logging_steps,
        eval_strategy="steps" if args.eval_steps else "no",
        eval_steps=args.eval_steps,
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to=args.report_to_list() or "none",
        run_name=hf.run_name(args, "train-classifier"),
        project=hf.TRACKER_PROJECT,
        remove_unused_columns=False,
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=args.num_workers,
        disable_tqdm=not args.progress,
    )


def _make_trainer(
    args: ClassifierArgs, eqreg: EqRegConfig, model: nn.Module, train_ds: Any, test_ds: Any
) -> tuple[Any, Any]:
    """An :class:`EqRegTrainer` and the callback that measures the equivariance error at evaluation."""
    from eqreg_hf.callbacks import EquivarianceEvalCallback
    from eqreg_hf.train.trainer import EqRegTrainer

    training_args = _training_arguments(args)
    measure_order = eqreg.group_order if eqreg.group_order > 1 else 4
    callback = EquivarianceEvalCallback(
        num_batches=args.equiv_eval_batches,
        max_images=16,
        layers=eqreg.layers,
        group_order=measure_order,
        fields=eqreg.fields,
        layouts=eqreg.layouts,
        prefix_tokens=eqreg.prefix_tokens,
        include_output=True,
    )
    trainer = EqRegTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=test_ds,
        eqreg=eqreg,
        task_loss=None if _is_transformers(model) else _cross_entropy,
        compute_metrics=_compute_metrics,
        callbacks=[callback],
    )
    return trainer, callback


def _tap_names(model: nn.Module, eqreg: EqRegConfig) -> list[str]:
    """The layers EQ-Reg taps (logged with their settings), or [] when it is off."""
    if not eqreg.active:
        return []
    from eqreg_hf.core.regularizer import EqReg

    with EqReg(model, eqreg) as probe:
        logger.info("%s", probe.describe())
        return probe.tap_names


def _save_model(
    args: ClassifierArgs,
    eqreg: EqRegConfig,
    model: nn.Module,
    metrics: dict[str, Any],
    report: Any,
    image_size: int,
    data_info: dict,
) -> str:
    """The trained model as a Hub folder ``<output_dir>/model`` with its card; returns the folder."""
    from eqreg_hf.data import classification_transform
    from eqreg_hf.hub import write_hub_folder

    # the evaluation preprocessing goes into the folder, so timm's / transformers' loaders see what training saw
    preprocessing = classification_transform(
        model, train=False, **_preprocessing(args, image_size)
    ).data_config
    training = {
        "dataset": args.dataset,
        "image_size": image_size,
        "max_steps": args.max_steps,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "rotation_augment": args.rotation_augment,
        "seed": args.seed,
        "pretrained": args.pretrained,
    }
    if metrics.get("final_eqreg_weight") is not None:
        training["final_eqreg_weight"] = metrics["final_eqreg_weight"]
    card_metrics = {"accuracy": metrics.get("eval_accuracy")}
    if not math.isnan(metrics.get("eval_equiv_error", math.nan)):
        card_metrics["equivariance_error"] = metrics["eval_equiv_error"]
    return write_hub_folder(
        model,
        os.path.join(args.output_dir, "model"),
        task="classification",
        eqreg_config=eqreg,
        metrics=card_metrics,
        dataset=data_info,
        training=training,
        preprocessing=preprocessing,
        equivariance_report={k: v for k, v in (report or {}).items() if k != "output"},
    )


# Variants of the comparison in docs/classification.md: (name, rotation_augment, EQ-Reg on)
COMPARISON = (("plain", False, False), ("rotation augmentation", True, False), ("EQ-Reg", False, True))


def compare_classifiers(
    args: ClassifierArgs,
    eqreg: EqRegConfig,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    variants: tuple = COMPARISON,
) -> dict[str, list[dict[str, float]]]:
    """Train each variant (plain / rotation augmentation / EQ-Reg) once per seed; collect the metrics.

    The plain and augmentation runs use ``eqreg`` with ``weight=0`` (same taps measured, no loss term).

    Returns:
        ``{variant: [{"accuracy", "equiv_error", "output_error", "seconds"} per seed]}``.
    """
    import time

    rows: dict[str, list[dict[str, float]]] = {}
    for name, augment, on in variants:
        for seed in seeds:
            run = dataclasses.replace(
                args,
                seed=seed,
                rotation_augment=augment,
                output_dir=os.path.join(args.output_dir, _slug(name), f"seed{seed}"),
            )
            cfg = dataclasses.replace(eqreg, seed=seed, weight=eqreg.weight if on else 0.0)
            start = time.time()
            m = train_classifier(run, cfg)["metrics"]
            rows.setdefault(name, []).append(
                {
                    "accuracy": m.get("eval_accuracy", math.nan),
                    "equiv_error": m.get("eval_equiv_error", math.nan),
                    "output_error": m.get("eval_equiv_error/output", math.nan),
                    "seconds": time.time() - start,
                }
            )
            logger.info("%s seed %d: %s", name, seed, rows[name][-1])
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def comparison_table(rows: dict[str, list[dict[str, float]]]) -> str:
    """Markdown table, mean ± std (sample std over seeds) of accuracy and equivariance errors."""

    def stat(values: list[float]) -> str:
        t = torch.tensor(values, dtype=torch.float64)
        std = float(t.std()) if len(values) > 1 else 0.0
        return f"{float(t.mean()):.3f} ± {std:.3f}"

    lines = [
        "| training | top-1 accuracy | equivariance error (stages) | logit invariance error | seeds |",
        "|---|---|---|---|---|",
    ]
    for name, runs in rows.items():
        lines.append(
            f"| {name} | {stat([r['accuracy'] for r in runs])} | {stat([r['equiv_error'] for r in runs])} "
            f"| {stat([r['output_error'] for r in runs])} | {len(runs)} |"
        )
    return "\n".join(lines)
