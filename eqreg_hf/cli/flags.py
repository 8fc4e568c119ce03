"""Command-line flags generated from dataclasses: one ``--<prefix><field-name>`` per field.

Every command builds its flags here (``train-derain``'s training arguments, ``train-classifier``'s,
and the ``--eqreg.*`` flags of :class:`~eqreg_hf.EqRegConfig`), so types, defaults, help and the
spelling of switches are the same everywhere and never drift from the dataclasses:

* ``bool`` fields are switches: ``--flag``, ``--no-flag``, and ``--flag true|false`` (also yes/no, 1/0);
* ``int`` / ``float`` / ``str`` (and their ``| None`` forms, where ``none`` / ``null`` means None);
* anything else (``layers``, ``fields``, ``layer_weights``, ...) is free-form: JSON when it looks like
  JSON (``'{"layer1": 2.0}'``, ``'["a", "b"]'``, ``3``, ``null``), a list when comma-separated
  (``a,b``), else the string itself.

Example:
    >>> import argparse
    >>> from eqreg_hf import EqRegConfig
    >>> p = argparse.ArgumentParser()
    >>> add_dataclass_arguments(p, EqRegConfig, "eqreg.", defaults={"weight": 0.1})
    >>> ns = p.parse_args(["--eqreg.group-order", "2", "--eqreg.layers", "a,b", "--no-eqreg.rotate-targets"])
    >>> cfg = dataclass_from_args(EqRegConfig, ns, "eqreg.")
    >>> cfg.group_order, cfg.layers, cfg.rotate_targets, cfg.weight
    (2, ['a', 'b'], False, 0.1)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from typing import Any

__all__ = [
    "add_dataclass_arguments",
    "dataclass_from_args",
    "parse_bool",
    "parse_free",
    "add_config_argument",
    "load_config_file",
    "config_file_tokens",
    "parse_args_with_config",
]

_TRUE = ("1", "true", "yes", "y", "on")
_FALSE = ("0", "false", "no", "n", "off")
_NONE = ("none", "null")


def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {text!r}")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def parse_free(text: str) -> Any:
    """Free-form values: JSON when it looks like JSON, a list when comma-separated, else the string.

    ``'{"body.*": 0.5}'`` -> dict, ``'["a","b"]'`` or ``a,b`` -> list, ``null`` / ``none`` -> None,
    ``3`` -> 3, ``true`` -> True, anything else -> the string.
    """
    s = text.strip()
    if s.lower() in _NONE:
        return None
    if _is_number(s) and not math.isfinite(float(s)):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    if s[:1] in '[{"' or s in ("true", "false") or _is_number(s):
        try:
            return json.loads(s)
        except json.JSONDecodeError as err:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not valid JSON ({err.msg}); quote keys and strings, e.g. '{{\"layer1\": 2}}'"
            ) from None
    if "," in s:
        return [part.strip() for part in s.split(",") if part.strip()]
    return s


def finite_float(text: str) -> float:
    """A float flag: NaN and infinity are refused (no setting of this library means anything with them)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


finite_float.__name__ = "float"


def _optional(kind: type):
    def parse(text: str) -> Any:
        return None if text.strip().lower() in _NONE else kind(text)

    parse.__name__ = f"{kind.__name__} or none"
    return parse


class _Switch(argparse.Action):
    """``--flag`` (True), ``--no-flag`` (False) or ``--flag VALUE`` (true/false, yes/no, 1/0)."""

    def __init__(self, option_strings, dest, **kwargs):
        negated = ["--no-" + s[2:] for s in option_strings if s.startswith("--")]
        super().__init__(option_strings + negated, dest, nargs="?", type=parse_bool, **kwargs)
        self._negated = set(negated)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self._negated:
            if values is not None:
                parser.error(f"{option_string} takes no value")
            values = False
        setattr(namespace, self.dest, True if values is None else values)


def _flag_type(kind: Any) -> tuple[Any, str]:
    """(argparse type, metavar) for a resolved type hint."""
    if kind in (int, float, str):
        return (finite_float if kind is float else kind), kind.__name__.upper()
    inner = [a for a in typing.get_args(kind) if a is not type(None)]
    if type(None) in typing.get_args(kind) and len(inner) == 1 and inner[0] in (int, float, str):
        return _optional(finite_float if inner[0] is float else inner[0]), inner[0].__name__.upper()
    return parse_free, "VALUE"


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    prefix: str = "",
    defaults: dict[str, Any] | None = None,
    help_extra: dict[str, str] | None = None,
    snake_aliases: bool = False,
) -> None:
    """Add one ``--{prefix}{field-name}`` flag per field of dataclass ``cls`` (dest ``{prefix}{field_name}``).

    A field's ``metadata={"aliases": ["old_name"]}`` also accepts ``--{prefix}old-name`` for the same
    field (an old spelling kept working after a rename; left out of ``--help``, whose entry for the
    field names it).

    Args:
        parser: an ``argparse`` parser or argument group.
        cls: the dataclass.
        prefix: flag prefix, e.g. ``"eqreg."`` gives ``--eqreg.group-order``.
        defaults: defaults that differ from the dataclass's own (unknown names are refused).
        help_extra: text appended to a field's help.
        snake_aliases: also accept ``--{prefix}{field_name}`` (not for switches).

    Example:
        >>> @dataclasses.dataclass
        ... class Run:
        ...     max_steps: int = dataclasses.field(default=10, metadata={"aliases": ["steps"]})
        >>> p = argparse.ArgumentParser()
        >>> add_dataclass_arguments(p, Run)
        >>> p.parse_args(["--steps", "3"]).max_steps, p.parse_args([]).max_steps
        (3, 10)
    """
    defaults = dict(defaults or {})
    help_extra = help_extra or {}
    fields = dataclasses.fields(cls)
    unknown = sorted(set(defaults) - {f.name for f in fields})
    if unknown:
        raise ValueError(
            f"Unknown {cls.__name__} fields in defaults: {unknown}. Valid fields: "
            f"{sorted(f.name for f in fields)}."
        )
    hints = typing.get_type_hints(cls)
    for f in fields:
        kind = hints.get(f.name, Any)
        flags = ["--" + prefix + f.name.replace("_", "-")]
        if snake_aliases and "_" in f.name and kind is not bool:
            flags.append("--" + prefix + f.name)
        aliases = ["--" + prefix + old.replace("_", "-") for old in f.metadata.get("aliases", ())]
        default = defaults[f.name] if f.name in defaults else _field_default(f)
        text = " ".join(
            filter(
                None,
                [
                    f.metadata.get("help", ""),
                    help_extra.get(f.name, ""),
                    f"Old spelling: {', '.join(aliases)}." if aliases else "",
                ],
            )
        )
        kw = _flag_kwargs(kind, prefix + f.name, default, text)
        parser.add_argument(*flags, **kw)
        if aliases:  # same dest; SUPPRESS keeps it out of --help and leaves the default to the main flag
            parser.add_argument(*aliases, **dict(kw, default=argparse.SUPPRESS, help=argparse.SUPPRESS))


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _flag_kwargs(kind: Any, dest: str, default: Any, text: str) -> dict[str, Any]:
    """``add_argument`` keywords of one field: a switch for ``bool``, else a typed value."""
    shown = (
        json.dumps(default)
        if isinstance(default, (str, int, float, bool, list, dict, type(None)))
        else repr(default)
    )
    kw: dict[str, Any] = {
        "dest": dest,
        "default": default,
        "help": f"{text} (default: {shown})".replace("%", "%%"),
    }  # argparse %-formats help
    if kind is bool:
        return dict(kw, action=_Switch, metavar="BOOL")
    kw["type"], kw["metavar"] = _flag_type(kind)
    return kw


def dataclass_from_args(cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any) -> Any:
    """Build ``cls`` from the flags :func:`add_dataclass_arguments` added (plus ``overrides``).

    The dataclass's own validation runs, so a bad value raises its ``ValueError`` naming the choices.
    """
    values = {
        f.name: getattr(args, prefix + f.name)
        for f in dataclasses.fields(cls)
        if hasattr(args, prefix + f.name)
    }
    values.update(overrides)
    return cls(**values)


# ---------------------------------------------------------------------------- --config FILE
CONFIG_FLAG = "--config"


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` to a command: a YAML or JSON object of its flags (command-line flags win)."""
    parser.add_argument(
        CONFIG_FLAG,
        metavar="FILE",
        default=None,
        dest="config",
        help="YAML or JSON file holding any of this command's flags, e.g. 'max_steps: 300' and "
        "'eqreg: {weight: 0.1}' (or 'eqreg.weight: 0.1'); flags given on the command line win.",
    )


def load_config_file(path: str) -> dict[str, Any]:
    """The mapping in a ``.yaml`` / ``.yml`` / ``.json`` file; a ``ValueError`` naming the file otherwise."""
    import os

    if not os.path.isfile(path):
        raise ValueError(f"--config {path!r}: no such file; give a YAML or JSON file of flags.")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        if path.lower().endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError
        raise ValueError(
            f"--config {path!r} does not parse ({one_line_text(err)}); write a YAML or JSON "
            "object of flags, e.g. 'max_steps: 300'."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {path!r} holds a {type(data).__name__}, not a mapping of flags: write e.g. "
            "'max_steps: 300' (YAML) or '{\"max_steps\": 300}' (JSON)."
        )
    return data


def one_line_text(value: object) -> str:
    return " ".join(str(value).split())


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"eqreg": {"weight": 0.1}}`` -> ``[("eqreg.weight", 0.1)]`` (a nested mapping is a flag prefix)."""
    out = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not name.startswith("--") and not _is_free_dict_key(name):
            out.extend(_flatten(value, name + "."))
        else:
            out.append((name, value))
    return out


_FREE_DICT_KEYS = ("fields", "layouts", "layer_weights", "prefix_tokens", "model_kwargs")


def _is_free_dict_key(name: str) -> bool:
    """Keys whose value is itself a mapping (a free-form flag), not a group of flags."""
    return name.rsplit(".", 1)[-1].replace("-", "_") in _FREE_DICT_KEYS


def _option_index(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every long option of ``parser`` (``--max-steps``, ``--eqreg.group-order``, aliases) -> its action."""
    return {
        opt: action
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--") and not (opt.startswith("--no-") and isinstance(action, _Switch))
    }


def _value_tokens(option: str, action: argparse.Action, value: Any, path: str) -> list[str]:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"--config {path!r}: {option} is a switch; give true or false, not {value!r}.")
        wanted = isinstance(action, argparse._StoreTrueAction)
        return [option] if value == wanted else []
    if action.nargs == 0:
        raise ValueError(f"--config {path!r}: {option} takes no value; leave it out of the file.")
    if isinstance(value, bool):
        return [option, "true" if value else "false"]
    if value is None:
        return [option, "none"]
    if isinstance(value, (list, dict)):
        return [option, json.dumps(value)]
    return [option, str(value)]


def config_file_tokens(
    parser: argparse.ArgumentParser, data: dict[str, Any], path: str = "config"
) -> list[str]:
    """The command-line tokens a config mapping stands for (``{"max_steps": 3}`` -> ``["--max-steps", "3"]``).

    Keys are flag names with or without the dashes, in snake or kebab case; a nested mapping is a prefix
    (``eqreg: {group_order: 2}`` is ``--eqreg.group-order 2``). An unknown key is a ``ValueError`` that
    names it and the valid keys.
    """
    options = _option_index(parser)
    tokens: list[str] = []
    for key, value in _flatten(data):
        bare = str(key).lstrip("-")
        option = next((o for o in ("--" + bare, "--" + bare.replace("_", "-")) if o in options), None)
        if option is None or options[option].dest in ("help", "config"):
            valid = sorted(
                {
                    o[2:].replace("-", "_")
                    for o, a in options.items()
                    if a.dest not in ("help", "config") and a.help != argparse.SUPPRESS
                }
            )
            raise ValueError(
                f"--config {path!r}: unknown key {key!r}; valid keys are the command's flags: "
                f"{', '.join(valid)}."
            )
        tokens += _value_tokens(option, options[option], value, path)
    return tokens


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def parse_args_with_config(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with the flags of a command's ``--config FILE`` read first.

    The file's flags are placed before the command line's, so a flag given on the command line wins
    (argparse keeps the last value). Values go through the same parsing and checks as typed flags. A
    file that is missing, does not parse or names an unknown flag is an error of the command (one
    line, exit code 2).
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    command = getattr(args, "command", None)
    sub = _command_parser(parser, command)
    if not path or sub is None:
        return args
    try:
        tokens = config_file_tokens(sub, load_config_file(path), path)
    except ValueError as err:
        sub.error(str(err))
    at = argv.index(command) + 1
    return parser.parse_args(argv[:at] + tokens + argv[at:])
