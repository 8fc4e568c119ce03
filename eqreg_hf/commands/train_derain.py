"""``eqreg-hf train-derain``: train a derainer (FastDerainer or RCDNet) with EQ-Reg.

Every field of :class:`~eqreg_hf.derain.DerainTrainingArguments` is a ``--flag`` and every
field of :class:`~eqreg_hf.EqRegConfig` an ``--eqreg.flag`` (both generated from the
dataclasses and their ``help`` metadata, so the command never drifts from the library):

    eqreg-hf train-derain --model rcdnet --num-stages 4 --dataset Rain100L --data-dir ~/data \\
        --eqreg.group-order 2 --eqreg.weight 0.1 --eqreg.distance mse --output-dir runs/rcdnet
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any

from ..config import EqRegConfig

EQREG_PREFIX = "eqreg."


def _parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"Expected a boolean (true/false), got {text!r}.")


def _parse_any(text: str) -> Any:
    """Free-form values (layers, fields, layer_weights, ...): JSON, a comma-separated list, or a string.

    ``'{"body.*": 0.5}'`` -> dict, ``'["a","b"]'`` or ``a,b`` -> list, ``null``/``none`` -> None,
    ``3`` -> 3, anything else -> the string.
    """
    s = text.strip()
    if s.lower() in ("none", "null"):
        return None
    if s[:1] in "[{" or s.lstrip("-").replace(".", "", 1).isdigit():
        try:
            return json.loads(s)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(f"Could not parse {text!r} as JSON: {err}.") from err
    if "," in s:
        return [part.strip() for part in s.split(",") if part.strip()]
    return s


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("none", "null") else int(text)


def _converter(tp: Any) -> Any:
    if isinstance(tp, str):  # postponed annotations ("from __future__ import annotations")
        tp = {"int": int, "float": float, "str": str, "bool": bool, "int | None": "optint",
              "str | None": "optstr"}.get(tp, Any)
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    if tp == "optint":
        return _optional_int
    if tp == "optstr":
        return str
    origin_args = typing.get_args(tp)
    if origin_args and type(None) in origin_args:
        inner = [a for a in origin_args if a is not type(None)]
        if inner == [int]:
            return _optional_int
        if inner == [str]:
            return str
    return _parse_any


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    prefix: str = "",
    defaults: dict[str, Any] | None = None,
    skip: tuple[str, ...] = (),
    help_extra: dict[str, str] | None = None,
) -> None:
    """Add one ``--{prefix}{field-name}`` flag per dataclass field, with its type, default and help.

    Args:
        parser: an ``argparse`` parser or argument group.
        cls: the dataclass (e.g. :class:`EqRegConfig`).
        prefix: flag prefix, e.g. ``"eqreg."`` gives ``--eqreg.group-order``.
        defaults: defaults that differ from the dataclass's own.
        skip: fields not offered on the command line.
        help_extra: text appended to a field's help.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_dataclass_arguments(p, EqRegConfig, "eqreg.")
        >>> vars(p.parse_args(["--eqreg.group-order", "2"]))["eqreg.group_order"]
        2
    """
    defaults = defaults or {}
    help_extra = help_extra or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        flag = "--" + prefix + f.name.replace("_", "-")
        convert = _converter(f.type)
        # bare `--flag` means true for booleans; `--flag false` also works
        extra = {"nargs": "?", "const": True} if convert is _parse_bool else {}
        text = " ".join(filter(None, [f.metadata.get("help", ""), help_extra.get(f.name, "")]))
        parser.add_argument(
            flag,
            dest=prefix + f.name,
            type=convert,
            default=default,
            metavar=f.name.upper(),
            help=f"{text} (default: {default!r})".replace("%", "%%"),  # argparse %-formats help strings
            **extra,
        )


def dataclass_from_args(cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any) -> Any:
    """Build ``cls`` from the flags :func:`add_dataclass_arguments` added (plus ``overrides``)."""
    values = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls) if hasattr(args, prefix + f.name)}
    values.update(overrides)
    return cls(**values)


def register(subparsers: Any) -> None:
    from ..derain import DEFAULT_DISTANCE, DEFAULT_WEIGHT, MODEL_TAPS, DerainTrainingArguments

    parser = subparsers.add_parser(
        "train-derain",
        help="Train a derainer (fast CNN or RCDNet) with EQ-Reg on a rain benchmark.",
        description="Train a derainer with EQ-Reg; evaluates PSNR/SSIM (Y and RGB) on full held-out images "
                    "and the layer-wise equivariance error, and saves a Hub folder (--output-dir).",
    )
    add_dataclass_arguments(parser.add_argument_group("training"), DerainTrainingArguments)
    add_dataclass_arguments(
        parser.add_argument_group("EQ-Reg (see docs/derain.md, 'Choosing λ')"),
        EqRegConfig,
        EQREG_PREFIX,
        defaults={"layers": MODEL_TAPS, "weight": DEFAULT_WEIGHT, "distance": DEFAULT_DISTANCE},
        help_extra={"layers": f"{MODEL_TAPS!r}: the network's default taps (RCDNet: its B-net convs; fast: its "
                              "body convs). Lists: comma-separated or JSON."},
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..derain import DerainTrainingArguments, train_derainer

    train_args = dataclass_from_args(DerainTrainingArguments, args)
    cfg = dataclass_from_args(EqRegConfig, args, EQREG_PREFIX)
    result = train_derainer(train_args, cfg if cfg.active else None)
    m = result.metrics
    print(
        f"{train_args.model} on {train_args.dataset} ({train_args.eval_split}): "
        f"PSNR-Y {m['psnr_y']:.2f} dB, SSIM-Y {m['ssim_y']:.4f}, PSNR-RGB {m['psnr_rgb']:.2f} dB, "
        f"SSIM-RGB {m['ssim_rgb']:.4f}, equivariance error {m['equivariance_error']:.4f} "
        f"(rainy input: {m['rainy_psnr_y']:.2f} dB), {result.train_time_s:.0f} s"
    )
    print(result.report.table())
    if result.output_dir:
        print(f"saved to {result.output_dir}")
    return 0
