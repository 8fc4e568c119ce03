"""``--eqreg.<field>`` command-line flags generated from :class:`~eqreg_hf.EqRegConfig`'s dataclass fields.

Every field of the config becomes one flag with the field's ``help`` metadata and default, so the
commands never drift from the config::

    parser = argparse.ArgumentParser()
    add_eqreg_arguments(parser, defaults={"weight": 0.1})
    args = parser.parse_args(["--eqreg.group-order", "2", "--eqreg.layers", "layer1,layer2"])
    cfg = eqreg_config_from_args(args)          # EqRegConfig(group_order=2, layers=["layer1", "layer2"], ...)

Values of the free-form fields (``layers``, ``fields``, ``layer_weights``, ``layouts``,
``prefix_tokens``) are read as JSON when they look like JSON (``'{"layer1": 2.0}'``, ``'["a", "b"]'``,
``3``, ``null``), as a comma-separated list for ``layers``, and as a plain string otherwise.
Both ``--eqreg.group-order`` and ``--eqreg.group_order`` spell the same flag (switches: kebab-case only).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any

from ..config import EqRegConfig

__all__ = ["add_eqreg_arguments", "eqreg_config_from_args", "PREFIX"]

PREFIX = "eqreg"


def _dest(name: str, prefix: str) -> str:
    return f"{prefix}__{name}"


def _parse_free(field: str):
    def parse(text: str) -> Any:
        s = text.strip()
        if s[:1] in "[{\"" or s in ("null", "true", "false") or _is_number(s):
            try:
                return json.loads(s)
            except json.JSONDecodeError as err:
                raise argparse.ArgumentTypeError(f"--{PREFIX}.{field.replace('_', '-')}: {text!r} is not valid "
                                                 f"JSON ({err.msg}); quote it, e.g. '{{\"layer1\": 2}}'.") from None
        if field == "layers" and "," in s:
            return [p.strip() for p in s.split(",") if p.strip()]
        return s
    parse.__name__ = f"{field} (JSON, list or string)"
    return parse


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def add_eqreg_arguments(
    parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None, prefix: str = PREFIX,
    title: str = "EQ-Reg (see EqRegConfig)",
) -> argparse._ArgumentGroup:
    """Add one ``--<prefix>.<field>`` flag per :class:`EqRegConfig` field to ``parser``.

    Args:
        parser: the (sub)command parser.
        defaults: defaults that differ from the config's own for this command, e.g. ``{"weight": 0.1}``.
        prefix: flag prefix (default "eqreg").
        title: title of the argument group in ``--help``.

    Returns:
        The argument group.
    """
    defaults = dict(defaults or {})
    hints = typing.get_type_hints(EqRegConfig)
    fields = {f.name: f for f in dataclasses.fields(EqRegConfig)}
    unknown = sorted(set(defaults) - set(fields))
    if unknown:
        raise ValueError(f"Unknown EqRegConfig fields in defaults: {unknown}. Valid fields: {sorted(fields)}.")
    base = EqRegConfig()
    group = parser.add_argument_group(title)
    for name, f in fields.items():
        default = defaults.get(name, getattr(base, name))
        kind = hints.get(name)
        # The snake_case spelling is accepted too (not for switches: it would double their --no- forms).
        flags = [f"--{prefix}.{name.replace('_', '-')}"] + \
            ([f"--{prefix}.{name}"] if "_" in name and kind is not bool else [])
        help_text = f.metadata.get("help", "") + f" (default: {json.dumps(default)})"
        kw: dict[str, Any] = {"dest": _dest(name, prefix), "default": default, "help": help_text}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float):
            kw["type"] = kind
            kw["metavar"] = kind.__name__.upper()
        elif kind is str:
            kw["type"] = str
            kw["metavar"] = "STR"
        else:
            kw["type"] = _parse_free(name)
            kw["metavar"] = "VALUE"
        group.add_argument(*flags, **kw)
    return group


def eqreg_config_from_args(args: argparse.Namespace, prefix: str = PREFIX, **overrides: Any) -> EqRegConfig:
    """The :class:`EqRegConfig` described by the ``--<prefix>.*`` flags of ``args`` (plus ``overrides``).

    Raises:
        SystemExit-free ``ValueError`` from the config's own validation, naming the bad value.
    """
    values = {}
    for f in dataclasses.fields(EqRegConfig):
        dest = _dest(f.name, prefix)
        if hasattr(args, dest):
            values[f.name] = getattr(args, dest)
    values.update(overrides)
    return EqRegConfig(**values)
