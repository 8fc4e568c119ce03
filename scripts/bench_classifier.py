"""Plain vs rotation augmentation vs EQ-Reg on the offline shapes dataset (docs/classification.md's table).

    python scripts/bench_classifier.py --seeds 0 1 2 --eqreg.weight 0.1       # regnetx_002, 300 steps, 33 px

Trains each variant once per seed with eqreg_hf.tasks.classify.recipe.train_classifier, then prints a markdown
table (mean ± std over seeds) of top-1 accuracy, the stage-wise equivariance error and the logit invariance
error, and writes it with all numbers to <output-dir>/bench.json and <output-dir>/bench.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys

import torch

from eqreg_hf.cli.eqreg_args import add_eqreg_arguments, eqreg_config_from_args
from eqreg_hf.cli.flags import add_dataclass_arguments, dataclass_from_args
from eqreg_hf.tasks.classify.arguments import ClassifierArgs
from eqreg_hf.tasks.classify.compare import COMPARISON, compare_classifiers, comparison_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_dataclass_arguments(parser, ClassifierArgs)
    add_eqreg_arguments(parser, defaults={"weight": 0.1})
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[v[0] for v in COMPARISON],
        help=f"Subset of {[v[0] for v in COMPARISON]} (to run them as parallel processes).",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="BENCH_JSON",
        help="Only merge the bench.json files of earlier (parallel) runs into one table.",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared small CPU)"
    )
    parser.set_defaults(
        model="regnetx_002",
        max_steps=300,
        batch_size=32,
        learning_rate=3e-3,
        shapes_train_angle=45.0,
        pretrained=False,
        save_model=False,
        progress=False,
        output_dir="runs/bench_classifier",
    )
    args = parser.parse_args(argv)
    if args.merge:
        rows, commands = {}, []
        for path in args.merge:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            commands.append(data["command"])
            for name, runs in data["runs"].items():
                rows.setdefault(name, []).extend(runs)
        order = [v[0] for v in COMPARISON]
        rows = dict(sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
        print("\n".join(f"`{c}`" for c in commands) + "\n\n" + comparison_table(rows))
        return 0
    unknown = sorted(set(args.variants) - {v[0] for v in COMPARISON})
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {[v[0] for v in COMPARISON]}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run = dataclass_from_args(ClassifierArgs, args)
    eqreg = eqreg_config_from_args(args)
    variants = tuple(v for v in COMPARISON if v[0] in args.variants)
    rows = compare_classifiers(run, eqreg, seeds=args.seeds, variants=variants)
    table = comparison_table(rows)
    command = "python scripts/bench_classifier.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    os.makedirs(run.output_dir, exist_ok=True)
    with open(os.path.join(run.output_dir, "bench.json"), "w", encoding="utf-8") as fh:
        json.dump(
            {"command": command, "runs": rows, "args": dataclasses.asdict(run), "eqreg": eqreg.to_dict()},
            fh,
            indent=2,
        )
    with open(os.path.join(run.output_dir, "bench.md"), "w", encoding="utf-8") as fh:
        fh.write(f"`{command}`\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
