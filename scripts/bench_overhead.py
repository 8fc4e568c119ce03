"""Cost of an EQ-Reg training step vs a plain step (time and peak memory ratios), for the README.

    python scripts/bench_overhead.py [--repeats 15] [--device cpu] [--models fastderainer rcdnet vit]

Each row times three steps interleaved in one process: plain (batch b), the "stacked-batch floor"
(a plain step on the b + m images an EQ-Reg step pushes through the network), and EQ-Reg.

Targets (ratios): full <= 2.05x (the rotated half alone is 2.0x), rotated_fraction 0.25 <= 1.3x,
weight 0 <= 1.01x, peak memory <= 2.05x.
"""

from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from eqreg_hf import EqRegConfig
from eqreg_hf.train.cost import MIN_PASSES, StepCost, measure_step_cost, memory_bandwidth_gbs, tap_bytes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="Image side (default 64).")
    ap.add_argument(
        "--models",
        nargs="+",
        default=list(MODELS),
        choices=list(MODELS),
        help="Which networks (default: all).",
    )
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, device "
        f"{args.device}, threads {torch.get_num_threads()}, batch {args.batch}, {args.size}x{args.size}, "
        f"repeats {args.repeats}\n"
    )
    bandwidth = memory_bandwidth_gbs(device=args.device)
    print(f"elementwise bandwidth (z = x + y, 64 MB): {bandwidth:.1f} GB/s\n")
    print(StepCost.HEADER)
    floors = []
    for key in args.models:
        name, model, layers, make_batch, loss = MODELS[key](args)
        model = model.to(args.device)
        settings = [
            ("full (fraction 1.0)", EqRegConfig(layers=layers, weight=0.1, rotated_fraction=1.0)),
            ("full, capture=recompute", EqRegConfig(layers=layers, weight=0.1, capture="recompute")),
            ("fraction 0.5", EqRegConfig(layers=layers, weight=0.1, rotated_fraction=0.5)),
            ("fraction 0.25", EqRegConfig(layers=layers, weight=0.1, rotated_fraction=0.25)),
            ("weight 0", EqRegConfig(layers=layers, weight=0.0)),
        ]
        costs = []
        for label, cfg in settings:
            costs.append(
                measure_step_cost(
                    model, make_batch, loss, cfg, repeats=args.repeats, label=f"{name}, {label}"
                )
            )
            print(costs[-1].row(), flush=True)
        nbytes = tap_bytes(model, settings[0][1], make_batch()[0].to(args.device))  # full fraction
        floor_ms = MIN_PASSES * nbytes / (bandwidth * 1e9) * 1e3
        floors.append(
            f"{name}: taps hold {nbytes / 2**20:.0f} MB per step; {MIN_PASSES} passes over them at "
            f"{bandwidth:.1f} GB/s take >= {floor_ms:.1f} ms = {floor_ms / costs[0].plain_ms:.2f}x of a "
            "plain step"
        )
    print(
        "\nMemory-traffic floor of the distance at full fraction (any exact implementation, however fused):"
    )
    print("\n".join("  " + f for f in floors))


def _fast_derainer(args):
    from eqreg_hf.tasks.derain.networks import FastDerainer

    net = FastDerainer()
    return (f"FastDerainer {args.size}x{args.size}", net, net.eqreg_layers(4), _images(args), F.mse_loss)


def _rcdnet(args):
    from eqreg_hf.tasks.derain.networks import RCDNet

    net = RCDNet(num_stages=2)  # the paper's network, 2 of its 17 stages (the cost ratio is per stage)
    return (f"RCDNet (2 stages) {args.size}x{args.size}", net, net.eqreg_layers(4), _images(args), F.mse_loss)


def _vit(args):
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=args.size, num_classes=10)
    return (
        f"ViT-Tiny/16 {args.size}x{args.size}",
        vit,
        [f"blocks.{i}" for i in range(len(vit.blocks))],
        lambda: (torch.rand(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))),
        F.cross_entropy,
    )


def _images(args):
    return lambda: (
        torch.rand(args.batch, 3, args.size, args.size),
        torch.rand(args.batch, 3, args.size, args.size),
    )


MODELS = {"fastderainer": _fast_derainer, "rcdnet": _rcdnet, "vit": _vit}


if __name__ == "__main__":
    main()
