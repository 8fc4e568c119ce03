"""What EQ-Reg buys on deraining: plain vs rotation augmentation vs EQ-Reg (λ sweep) vs strict C4.

    python scripts/bench_quality.py                          # the full default sweep (hours on 2 CPU cores)
    python scripts/bench_quality.py --seeds 0 1 --steps 60 \\
        --lambdas fro=1e-6,1e-5 relative=1e-4,1e-3          # a smaller one
    python scripts/bench_quality.py --quick                  # tiny network, seconds (what the test runs)

Writes (default --out-dir docs/results, --name quality): quality.json (every run; rewritten after each run, so a
killed sweep leaves a usable file; rerunning the same command skips finished runs),
quality_table.md, quality_psnr_vs_lambda.png, quality_layers_c4.png. The logic lives in
eqreg_hf.bench_quality.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from eqreg_hf.bench_quality import (DEFAULT_LAMBDAS, QualitySettings, format_quality_tables, run_quality_benchmark,
                                    write_report_files)


def parse_lambdas(items: list[str]) -> dict[str, list[float]]:
    """``["fro=1e-6,1e-5", "relative=1e-3"]`` -> ``{"fro": [1e-6, 1e-5], "relative": [1e-3]}``."""
    out: dict[str, list[float]] = {}
    for item in items:
        dist, sep, values = item.partition("=")
        if not sep or not values:
            raise SystemExit(f"--lambdas item {item!r} is not DISTANCE=λ1,λ2 (e.g. fro=1e-6,1e-5 relative=1e-3).")
        try:
            out[dist] = [float(v) for v in values.split(",") if v]
        except ValueError:
            raise SystemExit(f"--lambdas item {item!r}: the λ values must be numbers (e.g. fro=1e-6,1e-5).") from None
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds (default 0 1 2).")
    ap.add_argument("--steps", type=int, default=None, help="Steps per run (default 150; 2 with --quick).")
    ap.add_argument("--lambdas", nargs="+", default=None, metavar="DIST=λ,λ",
                    help="EQ-Reg weights per distance (default: "
                         + " ".join(f"{d}={','.join(f'{w:g}' for w in ws)}" for d, ws in DEFAULT_LAMBDAS.items()) + ").")
    ap.add_argument("--groups", type=int, nargs="+", default=[4, 2], help="Group orders of the EQ-Reg runs (default 4 2).")
    ap.add_argument("--no-strict", action="store_true", help="Leave out the strictly C4-equivariant network.")
    ap.add_argument("--crop-size", type=int, default=None, help="Training crop size (default: the demo's, 48).")
    ap.add_argument("--batch-size", type=int, default=None, help="Crops per batch (default: the demo's, 8).")
    ap.add_argument("--equiv-images", type=int, default=1, help="Held-out images for the equivariance error.")
    ap.add_argument("--quick", action="store_true", help="Tiny network and 32x32 images (seconds; for tests).")
    ap.add_argument("--out-dir", default="docs/results", help="Folder of the table and plots (default docs/results).")
    ap.add_argument("--name", default="quality", help="File name prefix of the JSON, table and plots (default quality).")
    ap.add_argument("--output", default=None, help="The JSON file (default OUT_DIR/NAME.json).")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    lambdas = parse_lambdas(args.lambdas) if args.lambdas else {d: list(v) for d, v in DEFAULT_LAMBDAS.items()}
    steps = args.steps if args.steps is not None else (2 if args.quick else 150)
    settings = QualitySettings(seeds=args.seeds, steps=steps, lambdas=lambdas, groups=args.groups,
                               strict=not args.no_strict, quick=args.quick, crop_size=args.crop_size,
                               batch_size=args.batch_size, equiv_images=args.equiv_images)
    output = args.output or os.path.join(args.out_dir, f"{args.name}.json")
    command = "python scripts/bench_quality.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    payload = run_quality_benchmark(settings, output, command=command.strip(), progress=not args.no_progress)
    files = write_report_files(payload, args.out_dir, prefix=args.name)
    print(format_quality_tables(payload))
    print("Wrote " + ", ".join([output] + files))
    return payload


if __name__ == "__main__":
    main()
