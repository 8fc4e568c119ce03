"""``eqreg-hf demo``: EQ-Reg vs plain training vs rotation augmentation, offline, on a CPU.

Trains the FastDerainer on the built-in synthetic rain benchmark (real photographs shipped
with scikit-image) three ways, prints the table and writes plots and the EQ-Reg checkpoint.

Train a small derainer three ways (plain, rotation augmentation, EQ-Reg) on synthetic rain over
scikit-image's photographs; print PSNR/SSIM on held-out photos, the equivariance error and the time;
write the EQ-Reg checkpoint, a per-layer equivariance plot and example crops.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    from eqreg_hf.tasks.derain.demo import DEMO_STEPS

    parser = subparsers.add_parser(
        "demo",
        help=(
            "Offline demo: plain vs rotation augmentation vs EQ-Reg deraining on built-in data "
            "(a few CPU minutes)."
        ),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"Optimizer steps per run (default: {DEMO_STEPS}; 2 with --quick).",
    )
    parser.add_argument("--output-dir", default="eqreg-demo", help="Output folder (default: ./eqreg-demo).")
    parser.add_argument(
        "--quick", action="store_true", help="A tiny network on tiny images (seconds; for tests)."
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bars.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eqreg_hf.tasks.derain.demo import run_demo

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps} is not valid: give a positive number of optimizer steps.")
    run_demo(output_dir=args.output_dir, steps=args.steps, quick=args.quick, progress=not args.no_progress)
    return 0
