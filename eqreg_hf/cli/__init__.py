"""The ``eqreg-hf`` command: one sub-command per module in :mod:`eqreg_hf.cli`.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# (module under eqreg_hf.cli); a module that is missing is simply not offered.
COMMANDS = ["demo", "train_derain", "train_classifier", "measure", "push"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        # Bad input: the messages already name the value, the choices and the fix; a traceback adds
        # nothing for a command-line user. EQREG_DEBUG=1 shows it.
        if os.environ.get("EQREG_DEBUG"):
            raise
        print(f"eqreg-hf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
