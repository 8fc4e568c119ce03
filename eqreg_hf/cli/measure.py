"""``eqreg-hf measure``: layer-wise equivariance report (table + PNG) of any model on one image.

    eqreg-hf measure resnet18                                   # timm name, built-in photo, auto taps
    eqreg-hf measure runs/classifier/model --output eq.png      # a saved folder (timm / transformers / ours)
    eqreg-hf measure fast --size 96 --group-order 4             # the library's derainers: fast, rcdnet, strict-c4
    eqreg-hf measure convnext_atto --image cat.jpg --layers "stages.*"

For each tapped layer l it prints ``mean_k ||T_k F_l(x) - F_l(R_k x)|| / ||F_l(R_k x)||`` (0 = exactly
equivariant, about 1.4 = unrelated maps), and the same for the output (invariance of logits, or
equivariance of a restored image).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.io import atomic_write_text

__all__ = ["register", "run", "load_any_model", "load_image", "measure_model", "DEFAULT_SIZE"]

DEFAULT_SIZE = {"classifier": 224, "derain": 128}


def load_any_model(source: str, pretrained: bool = True) -> tuple[nn.Module, str]:
    """Model from a saved folder, a derainer name (``fast``, ``rcdnet``, ``strict-c4``), ``hf:<...>`` or a
    timm name; returns ``(model in eval mode, "classifier" | "derain")``."""
    from eqreg_hf.tasks.derain.networks import MODELS

    if os.path.isdir(source):
        from eqreg_hf.hub import load_folder

        model, _ = load_folder(source)
        is_derain = type(model).__module__.endswith("tasks.derain.networks")
        return model.eval(), "derain" if is_derain else "classifier"
    if source in MODELS:
        return MODELS[source]().eval(), "derain"
    from eqreg_hf.tasks.classify.networks import HF_PREFIX, create_classifier, create_timm_classifier

    if source.startswith(HF_PREFIX):
        return create_classifier(source, 1000, pretrained=pretrained).eval(), "classifier"
    try:
        model = create_timm_classifier(source, None, pretrained=pretrained)
    except ValueError as err:
        raise ValueError(f"{err} (Or pass a saved folder, or one of the derainers {sorted(MODELS)}.)") from None
    return model.eval(), "classifier"


def load_image(path: str | None, size: int | tuple[int, int], model: nn.Module | None = None,
               normalize: bool = True) -> torch.Tensor:
    """``[1, 3, H, W]`` float image: ``path`` (any PIL-readable file) or scikit-image's astronaut photo,
    resized to ``size``; normalised with the timm data config of ``model`` when ``normalize``."""
    from PIL import Image

    if path is None:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No image at {path!r}; pass a PNG/JPEG path or omit --image for the "
                                    "built-in photo.")
        img = Image.open(path)
    h, w = (size, size) if isinstance(size, int) else size
    img = img.convert("RGB").resize((w, h), Image.BICUBIC)
    x = torch.from_numpy(__import__("numpy").asarray(img).copy()).permute(2, 0, 1).float().div(255.0)
    if normalize and model is not None:
        from timm.data import resolve_data_config

        cfg = resolve_data_config(model=model) if hasattr(model, "pretrained_cfg") else {}
        mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(3, 1, 1)
        std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(3, 1, 1)
        x = (x - mean) / std
    return x.unsqueeze(0)


def measure_model(
    source: str, image: str | None = None, size: int | None = None, layers: Any = "auto", group_order: int = 4,
    pretrained: bool = True, include_output: bool = True,
):
    """Load ``source``, pick the input size (aligned near the model's default unless ``size``), and return
    ``(EquivarianceReport, model, input size)``.

    Example:
        >>> rep, _, size = measure_model("fast", size=33, pretrained=False)  # doctest: +SKIP
        >>> print(rep.table())  # doctest: +SKIP
    """
    from eqreg_hf.tasks.classify.recipe import aligned_input_size
    from eqreg_hf.core.config import EqRegConfig
    from eqreg_hf.core.measure import equivariance_error

    model, family = load_any_model(source, pretrained=pretrained)
    if size is None:
        base = DEFAULT_SIZE[family]
        if family == "classifier":
            cfg_size = getattr(model, "pretrained_cfg", {}).get("input_size") if hasattr(model, "pretrained_cfg") \
                else None
            base = int(cfg_size[-1]) if cfg_size else base
            img_size = getattr(getattr(model, "config", None), "image_size", None)
            base = int(img_size) if isinstance(img_size, int) else base
        cfg = EqRegConfig(layers=layers, group_order=group_order)
        size = aligned_input_size(model, base, cfg) or base
    x = load_image(image, size, model, normalize=(family == "classifier"))
    input_key = "pixel_values" if type(model).__module__.startswith("transformers.") else None
    report = equivariance_error(model, x, layers=layers, group_order=group_order, include_output=include_output,
                                input_key=input_key)
    return report, model, size


def _layers_arg(text: str) -> Any:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [p.strip() for p in text.split(",") if p.strip()] if "," in text else text


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "measure",
        help="Layer-wise equivariance report + plot of a timm model, a saved folder or a derainer.",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="timm name (e.g. resnet18), 'hf:<config or folder>', a saved folder, "
                                      "or a derainer: fast, rcdnet, strict-c4.")
    parser.add_argument("--image", default=None, help="Image file (default: scikit-image's astronaut photo).")
    parser.add_argument("--size", type=int, default=None,
                        help="Input size (default: the aligned size nearest to the model's own, e.g. 225 for "
                             "ResNets, 224 for ConvNeXt/ViT, 128 for derainers).")
    parser.add_argument("--layers", type=_layers_arg, default="auto",
                        help="'auto', a module name, a glob ('stages.*') or a comma-separated list.")
    parser.add_argument("--group-order", type=int, default=4, help="t of C_t (2 and 4 exact, others interpolated).")
    parser.add_argument("--output", default=None, help="Write a PNG plot here (e.g. eq.png).")
    parser.add_argument("--json", default=None, help="Write the report as JSON here.")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="Random weights for timm names (default: pretrained when available).")
    parser.add_argument("--no-output", dest="include_output", action="store_false",
                        help="Do not measure the model output (logits / restored image).")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        report, _, size = measure_model(args.model, image=args.image, size=args.size, layers=args.layers,
                                        group_order=args.group_order, pretrained=args.pretrained,
                                        include_output=args.include_output)
    except (ValueError, FileNotFoundError) as err:
        print(f"eqreg-hf measure: error: {err}", file=sys.stderr)
        return 2
    print(report.table())
    if args.output:
        path = report.plot(args.output, title=f"{args.model}: equivariance error per layer (C{args.group_order}, "
                                               f"{size}x{size})")
        print(f"plot: {path}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"model": args.model, **report.to_dict()}, indent=2))
        print(f"json: {args.json}")
    return 0
