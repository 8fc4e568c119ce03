"""``eqreg-hf train-derain``: train a derainer (FastDerainer or RCDNet) with EQ-Reg.

Every field of :class:`~eqreg_hf.tasks.derain.recipe.DerainTrainingArguments` is a ``--flag`` and every
field of :class:`~eqreg_hf.EqRegConfig` an ``--eqreg.flag`` (both generated from the
dataclasses and their ``help`` metadata, so the command never drifts from the library):

    eqreg-hf train-derain --model rcdnet --num-stages 4 --dataset Rain100L --data-dir ~/data \\
        --eqreg.group-order 2 --eqreg.weight 0.1 --eqreg.distance mse --output-dir runs/rcdnet
"""

from __future__ import annotations

import argparse
from typing import Any

from eqreg_hf.cli.eqreg_args import PREFIX, add_eqreg_arguments, eqreg_config_from_args
from eqreg_hf.cli.flags import add_dataclass_arguments, dataclass_from_args


def register(subparsers: Any) -> None:
    from eqreg_hf.tasks.derain.recipe import DEFAULT_DISTANCE, DEFAULT_WEIGHT, DerainTrainingArguments

    parser = subparsers.add_parser(
        "train-derain",
        help="Train a derainer (fast CNN or RCDNet) with EQ-Reg on a rain benchmark.",
        description="Train a derainer with EQ-Reg; evaluates PSNR/SSIM (Y and RGB) on full held-out images "
        "and the layer-wise equivariance error, and saves a Hub folder (--output-dir).",
    )
    add_dataclass_arguments(parser.add_argument_group("training"), DerainTrainingArguments)
    add_eqreg_arguments(
        parser,
        title="EQ-Reg (see docs/derain.md, 'Choosing λ')",
        defaults={"layers": "auto", "weight": DEFAULT_WEIGHT, "distance": DEFAULT_DISTANCE},
        help_extra={
            "layers": "'auto': the network's own taps, eqreg_layers(t) (RCDNet: its B-net convs; fast: "
            "its body convs; 'model' is the old spelling). Lists: comma-separated or JSON."
        },
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqreg_hf.cli.training import eqreg_or_baseline, print_saved, train_or_report
    from eqreg_hf.tasks.derain.recipe import DerainTrainingArguments, train_derainer

    train_args = dataclass_from_args(DerainTrainingArguments, args)
    cfg = eqreg_config_from_args(args, PREFIX)
    result = train_or_report(
        "train-derain",
        lambda: train_derainer(train_args, eqreg_or_baseline(cfg, train_args)),
        train_args.output_dir,
        train_args.hub_model_id,
    )
    if result is None:
        return 1
    m = result.metrics
    print(
        f"{train_args.model} on {train_args.dataset} ({train_args.eval_split}): "
        f"PSNR-Y {m['psnr_y']:.2f} dB, SSIM-Y {m['ssim_y']:.4f}, PSNR-RGB {m['psnr_rgb']:.2f} dB, "
        f"SSIM-RGB {m['ssim_rgb']:.4f}, equivariance error {m['equivariance_error']:.4f} "
        f"(rainy input: {m['rainy_psnr_y']:.2f} dB), {result.train_time_s:.0f} s"
    )
    print(result.report.table())
    print_saved(result.output_dir, result.hub_url, train_args.hub_model_id)
    return 0
