"""Cost of an EQ-Reg training step vs a plain step (time and peak memory ratios), for the README.

    python scripts/bench_overhead.py [--repeats 15] [--device cpu]

Targets (ratios): full <= 2.05x (the rotated half alone is 2.0x), rotated_fraction 0.25 <= 1.3x,
weight 0 <= 1.01x, peak memory <= 2.05x.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from eqreg_hf import EqRegConfig
from eqreg_hf.benchmark import measure_step_cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)

    from eqreg_hf.models.derain import FastDerainer
    import timm

    setups = []
    derainer = FastDerainer().to(args.device)
    setups.append(("FastDerainer 64x64", derainer, derainer.eqreg_layers(4),
                   lambda: (torch.rand(args.batch, 3, 64, 64), torch.rand(args.batch, 3, 64, 64)),
                   F.mse_loss))
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=10).to(args.device)
    setups.append(("ViT-Tiny/16 64x64", vit, [f"blocks.{i}" for i in range(len(vit.blocks))],
                   lambda: (torch.rand(args.batch, 3, 64, 64), torch.randint(0, 10, (args.batch,))),
                   F.cross_entropy))

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, repeats {args.repeats}\n")
    print("| model / setting | plain ms | EQ-Reg ms | time ratio | plain MB | EQ-Reg MB | memory ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, model, layers, make_batch, loss in setups:
        for label, cfg in [
            ("full (fraction 1.0)", EqRegConfig(layers=layers, weight=0.1, rotated_fraction=1.0)),
            ("full, capture=recompute", EqRegConfig(layers=layers, weight=0.1, capture="recompute")),
            ("fraction 0.5", EqRegConfig(layers=layers, weight=0.1, rotated_fraction=0.5)),
            ("fraction 0.25", EqRegConfig(layers=layers, weight=0.1, rotated_fraction=0.25)),
            ("weight 0", EqRegConfig(layers=layers, weight=0.0)),
        ]:
            cost = measure_step_cost(model, make_batch, loss, cfg, repeats=args.repeats, label=f"{name}, {label}")
            print(cost.row(), flush=True)


if __name__ == "__main__":
    main()
