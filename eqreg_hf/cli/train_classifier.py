"""``eqreg-hf train-classifier``: fine-tune a timm (or transformers) classifier with EQ-Reg.

    eqreg-hf train-classifier --model resnet18 --dataset shapes --max-steps 300 \\
        --eqreg.weight 0.1 --eqreg.group-order 4 --eqreg.layers auto

Flags for the run come from :class:`eqreg_hf.tasks.classify.recipe.ClassifierArgs`, the ``--eqreg.*`` flags
from :class:`eqreg_hf.EqRegConfig` (both generated from the dataclasses, so they never drift).
"""

from __future__ import annotations

import argparse
import logging

from eqreg_hf.cli.eqreg_args import add_eqreg_arguments, eqreg_config_from_args
from eqreg_hf.cli.flags import add_dataclass_arguments, dataclass_from_args

__all__ = ["register", "run"]


def register(subparsers) -> argparse.ArgumentParser:
    from eqreg_hf.tasks.classify.recipe import ClassifierArgs

    parser = subparsers.add_parser(
        "train-classifier",
        help="Fine-tune a timm / transformers classifier with EQ-Reg (shapes offline, or CIFAR-100).",
        description="Fine-tune an image classifier with EQ-Reg through the transformers Trainer; report "
        "top-1 accuracy and the layer-wise equivariance error; save a Hub folder. Plain baseline: "
        "--eqreg.weight 0; rotation-augmentation baseline: add --rotation-augment.",
    )
    add_dataclass_arguments(parser, ClassifierArgs)
    add_eqreg_arguments(parser, defaults={"weight": 0.1})
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from eqreg_hf.cli.training import train_or_report
    from eqreg_hf.tasks.classify.recipe import ClassifierArgs, train_classifier

    # A bad value raises ValueError here (the dataclasses validate on construction); the eqreg-hf entry
    # point prints it as one line and exits with 2.
    run_args = dataclass_from_args(ClassifierArgs, args)
    eqreg = eqreg_config_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = train_or_report(
        "train-classifier",
        lambda: train_classifier(run_args, eqreg),
        f"{run_args.output_dir}/model",
        run_args.hub_model_id,
    )
    if result is None:
        return 1
    m, taps = result.metrics, result.info.get("taps", [])
    print(f"\ninput size {result.info.get('image_size')}, taps: {', '.join(taps) or '(none: EQ-Reg off)'}")
    print(f"top-1 accuracy       {m.get('eval_accuracy', float('nan')):.4f}")
    print(
        f"equivariance error   {m.get('eval_equiv_error', float('nan')):.4f}  (mean over taps, "
        f"{result.eval_group})"
    )
    for k, v in m.items():
        if k.startswith("eval_equiv_error/"):
            print(f"  {k[len('eval_equiv_error/') :]:<32s} {v:.4f}")
    if result.output_dir:
        print(f"model folder: {result.output_dir}  (push with: eqreg-hf push {result.output_dir} USER/NAME)")
    if result.hub_url:
        print(f"pushed to https://huggingface.co/{run_args.hub_model_id}: {result.hub_url}")
    return 0
