"""Export small escnn regular-field networks to plain torch: the test fixtures of the dihedral groups.

Run it in a virtual environment of its own (escnn pins numpy<2 through lie_learn, which the rest of the
stack does not want; building escnn needs a Fortran compiler)::

    apt-get install -y gfortran                       # py3nj, an escnn dependency, compiles Fortran
    python -m venv ESCNN_VENV && ESCNN_VENV/bin/pip install escnn     # ESCNN_VENV: any folder of your choice
    ESCNN_VENV/bin/python scripts/export_escnn_fixtures.py --out tests/fixtures

It builds three nets with escnn — strictly D4-equivariant (``flipRot2dOnR2(4)``), strictly
D2-equivariant (``flipRot2dOnR2(2)``) and C4-only (``rot2dOnR2(4)``, rotations but not flips) — each
``lift (3 trivial -> 2 regular fields) -> ReLU -> conv (regular -> regular) -> ReLU -> conv (regular -> 3
trivial)`` with 3×3 kernels, exports them to ``nn.Sequential`` of ``nn.Conv2d`` / ``nn.ReLU`` with
``.export()`` and writes

* ``escnn_nets.pt``: ``{net name: state_dict}`` (float32, loadable with ``torch.load(weights_only=True)``);
* ``escnn_nets.json``: for each net its group, field size and layers (name, type, shapes, field type),
  plus the versions that made them, so the tests rebuild the modules without escnn.

escnn's regular fields are field-major with channel ``s·t + r`` (flip s, rotation r) — the layout
docs/design.md pins — so the tests can read these nets with ``EqRegConfig(group=...)`` directly.
"""

from __future__ import annotations

import argparse
import json
import os

import torch


def build(group: str, fields: int, seed: int):
    """(escnn network in eval mode, its plain-torch export) for ``group`` in {"D4", "D2", "C4"}."""
    from escnn import gspaces
    from escnn import nn as enn

    torch.manual_seed(seed)
    n = int(group[1:])
    gspace = gspaces.flipRot2dOnR2(N=n) if group.startswith("D") else gspaces.rot2dOnR2(N=n)
    image = enn.FieldType(gspace, 3 * [gspace.trivial_repr])
    regular = enn.FieldType(gspace, fields * [gspace.regular_repr])
    net = enn.SequentialModule(
        enn.R2Conv(image, regular, 3, padding=1),
        enn.ReLU(regular),
        enn.R2Conv(regular, regular, 3, padding=1),
        enn.ReLU(regular),
        enn.R2Conv(regular, enn.FieldType(gspace, 3 * [gspace.trivial_repr]), 3, padding=1),
    )
    net.eval()
    return net, net.export()


def describe(plain: torch.nn.Sequential, last: str) -> list[dict]:
    """One entry per layer: what the tests need to rebuild it (the last conv's output is trivial)."""
    layers = []
    for name, module in plain.named_children():
        entry = {
            "name": name,
            "type": type(module).__name__,
            "field": "trivial" if name == last else "regular",
        }
        if isinstance(module, torch.nn.Conv2d):
            entry.update(
                in_channels=module.in_channels,
                out_channels=module.out_channels,
                kernel_size=list(module.kernel_size),
                stride=list(module.stride),
                padding=list(module.padding),
                bias=module.bias is not None,
            )
        elif not isinstance(module, torch.nn.ReLU):
            raise TypeError(
                f"export() gave a {type(module).__name__}; the fixtures hold Conv2d and ReLU only."
            )
        layers.append(entry)
    return layers


def check(net, plain, group: str) -> float:
    """Largest |escnn - export| on a random image: the export is the same function."""
    from escnn import nn as enn

    x = torch.randn(2, 3, 11, 11)
    with torch.no_grad():
        ours = plain(x)
        theirs = net(enn.GeometricTensor(x, net.in_type)).tensor
    err = float((ours - theirs).abs().max())
    if err > 1e-5:
        raise RuntimeError(f"{group}: the exported net differs from escnn's by {err:.2e}.")
    return err


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join("tests", "fixtures"), help="folder of the fixtures")
    p.add_argument("--seed", type=int, default=0, help="torch seed of each net's initial weights")
    args = p.parse_args(argv)
    import escnn

    nets = {"D4": 2, "D2": 2, "C4": 2}  # regular fields per hidden layer: 16, 8 and 8 channels
    weights, spec = (
        {},
        {
            "made_by": "scripts/export_escnn_fixtures.py",
            "escnn": escnn.__version__,
            "torch": torch.__version__.split("+")[0],
            "seed": args.seed,
            "nets": {},
        },
    )
    for group, fields in nets.items():
        net, plain = build(group, fields, args.seed)
        last = list(dict(plain.named_children()))[-1]
        err = check(net, plain, group)
        weights[group] = {k: v.detach().clone().contiguous() for k, v in plain.state_dict().items()}
        t = int(group[1:])
        spec["nets"][group] = {
            "group": group,
            "field_size": 2 * t if group.startswith("D") else t,
            "fields": fields,
            "layers": describe(plain, last),
        }
        print(
            f"{group}: {sum(v.numel() for v in weights[group].values())} parameters, export error {err:.1e}"
        )
    os.makedirs(args.out, exist_ok=True)
    torch.save(weights, os.path.join(args.out, "escnn_nets.pt"))
    with open(os.path.join(args.out, "escnn_nets.json"), "w", encoding="utf-8") as fh:
        json.dump(spec, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
