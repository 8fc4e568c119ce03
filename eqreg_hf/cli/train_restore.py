"""``eqreg-hf train-restore``: train a restorer (denoising, inpainting, super-resolution) with EQ-Reg.

Every field of :class:`~eqreg_hf.tasks.restore.recipe.RestoreTrainingArguments` is a ``--flag`` and every
field of :class:`~eqreg_hf.EqRegConfig` an ``--eqreg.flag`` (both generated from the dataclasses):

    eqreg-hf train-restore --task denoise --train-size 1 --max-steps 500 --eval-every 50 \\
        --eqreg.group C4 --eqreg.weight 1e-3 --output-dir runs/denoise-eqreg
    eqreg-hf train-restore --task sr --scale 2 --model swin2sr --quick --output-dir runs/sr-quick

EQ-Reg is off unless ``--eqreg.weight`` is given (> 0 or ``auto``); the baselines are flags of their own
(``--augment C4``, ``--ei-weight 0.1``, ``--model strict-c4``). Self-supervised inpainting, from masked and
Poisson-noisy measurements only (deepinv's REI losses; EQ-Reg composes with them):

    eqreg-hf train-restore --supervision self --task inpaint --poisson-gain 0.05 --selfsup-loss rei \
        --eqreg.group C4 --eqreg.weight auto --eqreg.distance relative --output-dir runs/inpaint-rei-eqreg
"""

from __future__ import annotations

import argparse
from typing import Any

from eqreg_hf.cli.eqreg_args import PREFIX, add_eqreg_arguments, eqreg_config_from_args
from eqreg_hf.cli.flags import add_dataclass_arguments, dataclass_from_args

# Off by default, so that the command is also the plain baseline. What was measured (docs/restoration.md):
# --eqreg.weight auto --eqreg.distance relative matched the best swept λ (1e-6, relative) within 0.01 dB.
_EQREG_DEFAULTS = {"layers": "auto", "weight": 0.0, "distance": "mse"}


def register(subparsers: Any) -> None:
    from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments

    parser = subparsers.add_parser(
        "train-restore",
        help="Train a restorer (denoise / inpaint / sr; DnCNN, strict C4/D4 or Swin2SR) with EQ-Reg; "
        "--supervision self: inpainting from measurements only.",
        description="Train a restorer on degraded photos with EQ-Reg or a baseline; evaluates PSNR/SSIM "
        "(RGB) on whole held-out images and the layer-wise equivariance error, and saves a Hub folder "
        "(--output-dir).",
    )
    add_dataclass_arguments(parser.add_argument_group("training"), RestoreTrainingArguments)
    add_eqreg_arguments(
        parser,
        title="EQ-Reg (off unless --eqreg.weight is set)",
        defaults=_EQREG_DEFAULTS,
        help_extra={
            "layers": "'auto': the network's own taps (DnCNN / strict nets: eqreg_layers(t)), Swin2SR's "
            "stage outputs. Lists: comma-separated or JSON.",
            "weight": "0 (the default here) trains without EQ-Reg; 'auto' with --eqreg.distance relative is "
            "the measured choice (docs/restoration.md).",
        },
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqreg_hf.cli.training import eqreg_or_baseline, print_saved, train_or_report
    from eqreg_hf.tasks.restore.recipe import RestoreTrainingArguments, method_name, train_restorer

    train_args = dataclass_from_args(RestoreTrainingArguments, args)
    cfg = eqreg_config_from_args(args, PREFIX)
    cfg = eqreg_or_baseline(cfg, train_args)
    result = train_or_report(
        "train-restore",
        lambda: train_restorer(train_args, cfg),
        train_args.output_dir,
        train_args.hub_model_id,
    )
    if result is None:
        return 1
    print(
        _metrics_table(
            result.metrics,
            f"{train_args.model} ({method_name(train_args, cfg)}), "
            f"{_degradation_words(result.degradation)}, held-out {train_args.source}",
        )
    )
    if len(result.report):
        print(result.report.table())
    print_saved(result.output_dir, result.hub_url, train_args.hub_model_id)
    return 0


_ROWS = (
    ("psnr", "PSNR held out (dB)", ".2f"),
    ("ssim", "SSIM held out", ".4f"),
    ("degraded_psnr", "PSNR of the degraded input (dB)", ".2f"),
    ("train_psnr", "PSNR training images (dB)", ".2f"),
    ("equivariance_error", "equivariance error (taps)", ".4f"),
    ("output_equivariance_error", "equivariance error (output)", ".4f"),
    ("train_time_s", "training time (s)", ".1f"),
    ("time_per_step_s", "time per step (s)", ".4f"),
)


def _degradation_words(d: dict[str, Any]) -> str:
    """``denoise σ=25/255``, ``inpaint 50% missing``, ``sr ×2`` (+ the noise, when there is any: Gaussian σ or
    Poisson γ)."""
    text = {"inpaint": f"inpaint {100 * d['mask_ratio']:g}% missing", "sr": f"sr ×{d.get('scale')}"}.get(
        d["task"], d["task"]
    )
    if d.get("poisson_gain"):
        return f"{text} Poisson γ={d['poisson_gain']:g}"
    return f"{text} σ={255 * d['sigma']:.3g}/255" if d.get("sigma", 0) > 0 else text


def _metrics_table(metrics: dict[str, float], title: str) -> str:
    """The run's metrics as an aligned two-column table under ``title``."""
    rows = [(label, format(metrics[key], fmt)) for key, label, fmt in _ROWS if key in metrics]
    rows = [(label, value) for label, value in rows if value != "nan"]  # e.g. no clean training image
    width = max(len(label) for label, _ in rows)
    return "\n".join([title] + [f"  {label:<{width}}  {value:>10}" for label, value in rows])
