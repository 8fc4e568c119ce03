"""``eqreg-hf measure``: layer-wise equivariance report (table + PNG) of any model on one image.

    eqreg-hf measure resnet18                                   # timm name, built-in photo, auto taps
    eqreg-hf measure runs/classifier/model --output eq.png      # a saved folder (timm / transformers / ours)
    eqreg-hf measure fast --size 96 --group-order 4             # the library's derainers:
                                                                #   fast, rcdnet, strict-c4
    eqreg-hf measure convnext_atto --image cat.jpg --layers "stages.*"

For each tapped layer l it prints ``mean_k ||T_k F_l(x) - F_l(R_k x)|| / ||F_l(R_k x)||`` (0 = exactly
equivariant, about 1.4 = unrelated maps), and the same for the output (invariance of logits, or
equivariance of a restored image).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch
from torch import nn

from eqreg_hf.core.io import atomic_write_text, check_output_file

__all__ = ["register", "run", "load_any_model", "load_image", "measure_model", "DEFAULT_SIZE"]

DEFAULT_SIZE = {"classifier": 224, "derain": 128}


def load_any_model(source: str, pretrained: bool = True) -> tuple[nn.Module, str]:
    """Model from a saved folder, a derainer name (``fast``, ``rcdnet``, ``strict-c4``), ``hf:<...>`` or a
    timm name; returns ``(model in eval mode, "classifier" | "derain")`` ("derain": image in, image out)."""
    model, family, _ = _load(source, pretrained)
    return model, family


def _load(source: str, pretrained: bool) -> tuple[nn.Module, str, Any]:
    """``load_any_model`` plus, for a saved folder, ``(its EqRegConfig, the group its card was measured
    under)``; None otherwise."""
    from eqreg_hf.tasks.derain.networks import MODELS

    if os.path.isdir(source):
        from eqreg_hf.hub import load_folder
        from eqreg_hf.hub.card_facts import saved_task

        saved = saved_task(source)
        try:
            model, config = load_folder(source)
        except (ValueError, FileNotFoundError):
            raise
        except (
            Exception
        ) as err:  # truncated weights, a config the framework refuses, ...: the folder is bad input
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise ValueError(
                f"Cannot load the model folder {source!r} ({type(err).__name__}: {first}); re-save it "
                "with eqreg_hf.hub.save_folder(model, folder)."
            ) from err
        if saved["task"] is not None:  # the card names it: every restoration task is image in, image out
            is_image = saved["task"] != "classification"
        else:
            is_image = type(model).__module__.endswith(("tasks.derain.networks", "tasks.restore.networks"))
        return model.eval(), "derain" if is_image else "classifier", (config, saved["equivariance_group"])
    if source in MODELS:
        return MODELS[source]().eval(), "derain", None
    from eqreg_hf.tasks.classify.networks import HF_PREFIX, create_classifier, create_timm_classifier

    if source.startswith(HF_PREFIX):
        return create_classifier(source, 1000, pretrained=pretrained).eval(), "classifier", None
    try:
        model = create_timm_classifier(source, None, pretrained=pretrained)
    except ValueError as err:
        raise ValueError(
            f"{err} (Or pass a saved folder, or one of the derainers {sorted(MODELS)}.)"
        ) from None
    return model.eval(), "classifier", None


def _folder_settings(saved: Any, layers: Any, group_order: int | None, group: str | None) -> tuple:
    """``(layers, group_order, group)`` to measure with: what was given, else a saved folder's own (its
    EqRegConfig's taps and group, :func:`~eqreg_hf.hub.card_facts.saved_group`), else auto taps under C4."""
    if saved is not None and group is None and group_order is None:
        from eqreg_hf.hub.card_facts import saved_group

        group = saved_group(*saved)
    if saved is not None and layers is None and saved[0] is not None and isinstance(saved[0].layers, list):
        layers = list(saved[0].layers)
    if group is None and group_order is None:
        group_order = 4
    return ("auto" if layers is None else layers), (None if group is not None else group_order), group


def load_image(
    path: str | None, size: int | tuple[int, int], model: nn.Module | None = None, normalize: bool = True
) -> torch.Tensor:
    """``[1, 3, H, W]`` float image: ``path`` (any PIL-readable file) or scikit-image's astronaut photo,
    resized to ``size``; normalised with the timm data config of ``model`` when ``normalize``."""
    from PIL import Image

    if path is None:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    else:
        from eqreg_hf.data.rain_layouts import check_image_file

        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"No image at {path!r}; pass a PNG/JPEG path or omit --image for the built-in photo."
            )
        check_image_file(path)  # a corrupt or truncated file: one line naming it
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
    source: str,
    image: str | None = None,
    size: int | None = None,
    layers: Any = None,
    group_order: int | None = None,
    pretrained: bool = True,
    include_output: bool = True,
    group: str | None = None,
):
    """Load ``source``, pick the input size (aligned near the model's default unless ``size``), and return
    ``(EquivarianceReport, model, input size)``. ``group`` ("C4", "D4", ...) replaces ``group_order``
    when given. Not given, a saved folder is measured on its own taps under its own group (its
    ``EqRegConfig``'s; a baseline's: the group its card was measured under); anything else on ``"auto"``
    taps under C4.

    Example:
        >>> rep, _, size = measure_model("fast", size=33, pretrained=False)  # doctest: +SKIP
        >>> print(rep.table())  # doctest: +SKIP
    """
    from eqreg_hf.core.config import EqRegConfig
    from eqreg_hf.core.measure import equivariance_error
    from eqreg_hf.tasks.classify.recipe import aligned_input_size

    model, family, saved = _load(source, pretrained)
    layers, group_order, group = _folder_settings(saved, layers, group_order, group)
    if size is None:
        base = DEFAULT_SIZE[family]
        if family == "classifier":
            cfg_size = (
                getattr(model, "pretrained_cfg", {}).get("input_size")
                if hasattr(model, "pretrained_cfg")
                else None
            )
            base = int(cfg_size[-1]) if cfg_size else base
            img_size = getattr(getattr(model, "config", None), "image_size", None)
            base = int(img_size) if isinstance(img_size, int) else base
        cfg = EqRegConfig(layers=layers, group_order=group_order, group=group)
        size = aligned_input_size(model, base, cfg) or base
    fit_input_size(model, size, source)
    x = load_image(image, size, model, normalize=(family == "classifier"))
    input_key = "pixel_values" if type(model).__module__.startswith("transformers.") else None
    try:
        report = equivariance_error(
            model,
            x,
            EqRegConfig(layers=layers, group_order=group_order, group=group),
            include_output=include_output,
            input_key=input_key,
        )
    except (
        AssertionError,
        RuntimeError,
    ) as err:  # a model's own size check (timm asserts) or a size mismatch
        if isinstance(err, RuntimeError) and "size" not in str(err):
            raise
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{source} cannot run at {size}x{size}: {first_line} {_sizes_hint(model)}") from err
    return report, model, size


def _sizes_hint(model: nn.Module) -> str:
    """What sizes a model takes, as far as it says: the size it was built for and its patch size."""
    built = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    said = ([f"it was built for {built[-2]}x{built[-1]}"] if built else []) + (
        [f"its patch size is {patch[0]}"] if patch else []
    )
    return f"({'; '.join(said)}); pass a --size it accepts." if said else "Pass a --size the model accepts."


def fit_input_size(model: nn.Module, size: int, source: str = "the model") -> None:
    """timm models built for one input size (ViT, DeiT, Swin, ...: a fixed patch grid) are resized to
    ``size`` with ``set_input_size`` (position embeddings resampled, as timm does for other resolutions);
    a size the model cannot take is a one-line ``ValueError`` naming the sizes it accepts."""
    pe = getattr(model, "patch_embed", None)
    fixed = getattr(pe, "img_size", None)
    if (
        fixed is None
        or tuple(fixed) == (size, size)
        or not getattr(pe, "strict_img_size", False)
        or getattr(model, "dynamic_img_size", False)
    ):
        return
    patch = tuple(getattr(pe, "patch_size", (1, 1)))
    if size < max(patch) or not hasattr(model, "set_input_size"):
        raise ValueError(
            f"{source} takes {fixed[0]}x{fixed[1]} inputs"
            + (
                f" (or, resized, any size >= its patch size {patch[0]})"
                if hasattr(model, "set_input_size")
                else ""
            )
            + f"; --size {size} does not fit. Pass --size {fixed[0]}."
        )
    try:
        model.set_input_size(img_size=(size, size))
    except Exception as err:  # timm raises assorted errors for grids its windows cannot tile
        raise ValueError(
            f"{source} cannot be resized to {size}x{size} ({type(err).__name__}: {err}); it was built for "
            f"{fixed[0]}x{fixed[1]}: pass --size {fixed[0]} or a multiple of its patch size {patch[0]} that "
            "its layers accept."
        ) from None


def positive_int(text: str) -> int:
    """An integer flag that must be >= 1 (sizes, group orders)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


positive_int.__name__ = "positive int"


def _layers_arg(text: str) -> Any:
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [p.strip() for p in text.split(",") if p.strip()] if "," in text else text


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "measure",
        help="Layer-wise equivariance report + plot of a timm model, a saved folder or a derainer.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        help="timm name (e.g. resnet18), 'hf:<config or folder>', a saved folder, "
        "or a derainer: fast, rcdnet, strict-c4.",
    )
    parser.add_argument("--image", default=None, help="Image file (default: scikit-image's astronaut photo).")
    parser.add_argument(
        "--size",
        type=positive_int,
        default=None,
        help="Input size (default: the aligned size nearest to the model's own, e.g. 225 for "
        "ResNets, 224 for ConvNeXt/ViT, 128 for derainers).",
    )
    parser.add_argument(
        "--layers",
        type=_layers_arg,
        default=None,
        help="'auto', a module name, a glob ('stages.*') or a comma-separated list (default: a saved "
        "folder's own taps, else 'auto').",
    )
    parser.add_argument(
        "--group-order",
        type=positive_int,
        default=None,
        help="t of C_t (2 and 4 exact, others interpolated; default: a saved folder's own group, else 4).",
    )
    parser.add_argument(
        "--group",
        default=None,
        help="The group by name instead: C<t> or D<t> (e.g. D4: rotations "
        "and mirror images). Replaces --group-order.",
    )
    parser.add_argument("--output", default=None, help="Write a PNG plot here (e.g. eq.png).")
    parser.add_argument("--json", default=None, help="Write the report as JSON here.")
    parser.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="Random weights for timm names (default: pretrained when available).",
    )
    parser.add_argument(
        "--no-output",
        dest="include_output",
        action="store_false",
        help="Do not measure the model output (logits / restored image).",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    # A bad value raises ValueError / FileNotFoundError; the eqreg-hf entry point prints it in one line,
    # exit 2.
    if args.output:
        check_output_file(args.output, "--output")
    if args.json:
        check_output_file(args.json, "--json")
    report, _, size = measure_model(
        args.model,
        image=args.image,
        size=args.size,
        layers=args.layers,
        group_order=args.group_order,
        pretrained=args.pretrained,
        include_output=args.include_output,
        group=args.group,
    )
    print(report.table())
    if args.output:
        path = report.plot(
            args.output, title=f"{args.model}: equivariance error per layer ({report.group}, {size}x{size})"
        )
        print(f"plot: {path}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"model": args.model, **report.to_dict()}, indent=2))
        print(f"json: {args.json}")
    return 0
