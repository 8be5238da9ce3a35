"""The ``cmcgate`` command line: one entry point, one subcommand group per package.

Each package contributes ``register(subparsers)`` that adds its group; a leaf command sets
``func`` to a callable taking the parsed arguments and returning the exit status.  Errors
derived from :class:`config.errors.CmcgateError` are printed as one line and exit 2; no
traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from config.errors import CmcgateError

#: Modules that contribute a subcommand group, in the order ``--help`` lists them.
GROUPS = ("config.commands", "cmc.cli", "ca.cli", "gateway.cli", "gateway.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmcgate",
        description="S/MIME mail gateway that brokers certificates over CMC.",
    )
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for name in GROUPS:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A group without a leaf command: show that group's help.
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except CmcgateError as exc:
        print(f"cmcgate: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
