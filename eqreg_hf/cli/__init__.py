"""The ``eqreg-hf`` command: one sub-command per module in :mod:`eqreg_hf.cli`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace, returns an exit code).

A user error (a bad flag value, a missing or corrupt input, an output path that cannot be written) ends
in exit code 2 and one line on stderr, ``eqreg-hf <command>: error: <what, the choices, the fix>``, with no
traceback (``EQREG_DEBUG=1`` shows it); argparse's own errors are printed the same way.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from eqreg_hf.cli.flags import add_config_argument, parse_args_with_config

# (module under eqreg_hf.cli); a module that is missing is simply not offered.
COMMANDS = ["demo", "train_derain", "train_restore", "train_classifier", "measure", "push", "app", "space"]


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors (unknown flag, a value of the wrong type) in one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        if os.environ.get("EQREG_DEBUG"):
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: object) -> str:
    """An error message on one line (a multi-line message from a library is joined)."""
    return " ".join(str(message).split())


# Exceptions that mean "the input is wrong" (their messages say what and how to fix it), not "the code is".
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="eqreg-hf",
        description="EQ-Reg: soft rotation equivariance for Hugging Face vision training.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"eqreg_hf.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"eqreg_hf.cli.{name}":
                continue
            raise
        module.register(sub)
    for command_parser in sub.choices.values():
        add_config_argument(command_parser)  # every command takes --config FILE (YAML / JSON of its flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_with_config(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        # Bad input: the messages already name the value, the choices and the fix; a traceback adds
        # nothing for a command-line user. EQREG_DEBUG=1 shows it.
        if os.environ.get("EQREG_DEBUG"):
            raise
        print(f"eqreg-hf {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
