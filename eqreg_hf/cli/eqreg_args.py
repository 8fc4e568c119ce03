"""``--eqreg.<field>`` command-line flags generated from :class:`~eqreg_hf.EqRegConfig`'s dataclass fields.

Every field of the config becomes one flag with the field's ``help`` metadata and default (through
:mod:`eqreg_hf.cli.flags`, as every command's flags are), so the commands never drift from the config::

    parser = argparse.ArgumentParser()
    add_eqreg_arguments(parser, defaults={"weight": 0.1})
    args = parser.parse_args(["--eqreg.group-order", "2", "--eqreg.layers", "layer1,layer2"])
    cfg = eqreg_config_from_args(args)          # EqRegConfig(group_order=2, layers=["layer1", "layer2"], ...)

Both ``--eqreg.group-order`` and ``--eqreg.group_order`` spell the same flag (switches: kebab-case only,
``--eqreg.include-identity`` / ``--no-eqreg.include-identity`` / ``--eqreg.include-identity false``).
"""

from __future__ import annotations

import argparse
from typing import Any

from eqreg_hf.cli.flags import add_dataclass_arguments, dataclass_from_args
from eqreg_hf.core.config import EqRegConfig

__all__ = ["add_eqreg_arguments", "eqreg_config_from_args", "PREFIX"]

PREFIX = "eqreg"


def add_eqreg_arguments(
    parser: argparse.ArgumentParser,
    defaults: dict[str, Any] | None = None,
    prefix: str = PREFIX,
    title: str = "EQ-Reg (see EqRegConfig)",
    help_extra: dict[str, str] | None = None,
) -> argparse._ArgumentGroup:
    """Add one ``--<prefix>.<field>`` flag per :class:`EqRegConfig` field to ``parser``.

    Args:
        parser: the (sub)command parser.
        defaults: defaults that differ from the config's own for this command, e.g. ``{"weight": 0.1}``.
        prefix: flag prefix (default "eqreg").
        title: title of the argument group in ``--help``.
        help_extra: text appended to a field's help.

    Returns:
        The argument group.
    """
    group = parser.add_argument_group(title)
    add_dataclass_arguments(
        group, EqRegConfig, prefix + ".", defaults=defaults, help_extra=help_extra, snake_aliases=True
    )
    return group


def eqreg_config_from_args(args: argparse.Namespace, prefix: str = PREFIX, **overrides: Any) -> EqRegConfig:
    """The :class:`EqRegConfig` described by the ``--<prefix>.*`` flags of ``args`` (plus ``overrides``).

    Raises:
        ValueError: from the config's own validation, naming the bad value and the choices.
    """
    return dataclass_from_args(EqRegConfig, args, prefix + ".", **overrides)
