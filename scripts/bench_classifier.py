"""Plain vs rotation augmentation vs EQ-Reg on the offline shapes dataset (the table in docs/classification.md).

    python scripts/bench_classifier.py --model regnetx_002 --max-steps 300 --seeds 0 1 2 --eqreg.weight 0.1

Trains each variant once per seed with eqreg_hf.classify.train_classifier, then prints a markdown table
(mean ± std over seeds) of top-1 accuracy, the stage-wise equivariance error and the logit invariance error,
and writes it with all numbers to <output-dir>/bench.json and <output-dir>/bench.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

import torch

from eqreg_hf.classify import ClassifierArgs, compare_classifiers, comparison_table
from eqreg_hf.commands._eqreg_args import add_eqreg_arguments, eqreg_config_from_args
from eqreg_hf.commands.train_classifier import add_dataclass_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(parser, ClassifierArgs)
    add_eqreg_arguments(parser, defaults={"weight": 0.1})
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a "
                                                                 "shared small CPU)")
    parser.set_defaults(model="regnetx_002", max_steps=300, batch_size=32, shapes_train_angle=45.0,
                        pretrained=False, save_model=False, progress=False, output_dir="runs/bench_classifier")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    names = {f.name for f in dataclasses.fields(ClassifierArgs)}
    run = ClassifierArgs(**{k: v for k, v in vars(args).items() if k in names})
    eqreg = eqreg_config_from_args(args)
    rows = compare_classifiers(run, eqreg, seeds=args.seeds)
    table = comparison_table(rows)
    command = "python scripts/bench_classifier.py " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(run.output_dir, exist_ok=True)
    with open(os.path.join(run.output_dir, "bench.json"), "w", encoding="utf-8") as fh:
        json.dump({"command": command, "runs": rows, "args": dataclasses.asdict(run), "eqreg": eqreg.to_dict()},
                  fh, indent=2)
    with open(os.path.join(run.output_dir, "bench.md"), "w", encoding="utf-8") as fh:
        fh.write(f"`{command}`\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
