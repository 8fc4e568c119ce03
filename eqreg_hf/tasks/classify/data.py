"""The data of a classification run: the built-in shapes or CIFAR-100, with the model's preprocessing."""

from __future__ import annotations

from typing import Any

from torch import nn

from eqreg_hf.data.splits import check_disjoint
from eqreg_hf.data.transforms import RandomRot90
from eqreg_hf.tasks.classify.arguments import ClassifierArgs

__all__ = ["load_classification_data", "with_transforms", "preprocessing"]


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


def with_transforms(
    args: ClassifierArgs, model: nn.Module, image_size: int, train_ds: Any, test_ds: Any
) -> tuple[Any, Any]:
    """The datasets with the model's preprocessing (and the rotation-augmentation baseline's turns)."""
    from eqreg_hf.data import classification_transform

    # Shapes are generated at the right size and orientation: no crop / flip. CIFAR gets timm's training
    # augmentation with a milder crop (32-pixel images).
    common = preprocessing(args, image_size)
    test_tf = classification_transform(model, train=False, **common)
    if args.dataset == "shapes":
        train_tf = classification_transform(model, train=False, **common)
    else:
        train_tf = classification_transform(model, train=True, scale=(0.35, 1.0), **common)
    if args.augment == "C4":
        train_tf = RandomRot90(train_tf, seed=args.seed)
    return train_ds.with_transform(train_tf), test_ds.with_transform(test_tf)


def preprocessing(args: ClassifierArgs, image_size: int) -> dict[str, Any]:
    """The arguments of ``classification_transform`` the run trains and evaluates with (saved with the
    model)."""
    return dict(label=args.label, input_size=image_size, data_config={"crop_pct": 1.0})
