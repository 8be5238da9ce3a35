"""The ``cmcgate`` command line: one entry point, one subcommand group per package.

Each package contributes ``register(subparsers)`` that adds its group; a leaf command sets
``func`` to a callable taking the parsed arguments and returning the exit status.  Errors
derived from :class:`config.errors.CmcgateError` are printed as one line and exit 2; no
traceback reaches the user.  A reader that goes away early (``cmcgate ... | head``) ends
the command quietly with status 141, as a Unix tool killed by SIGPIPE would (see
:func:`_stdout_gone`).
"""

from __future__ import annotations

import argparse
import importlib
import os
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
    try:
        try:
            status = _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError as exc:
        if not _stdout_gone():
            print(f"cmcgate: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return SIGPIPE_STATUS
    return status


def _run(argv: Sequence[str] | None) -> int:
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


#: what a shell reports for a command ended by SIGPIPE (128 + 13)
SIGPIPE_STATUS = 141


def _stdout_gone() -> bool:
    """Whether standard output is a pipe nobody reads any more; if so, point it at
    /dev/null, so that the flush at interpreter exit does not complain about it again.

    Only a broken standard output is quiet: a broken pipe to anything else (a socket, a
    subprocess) is an error like any other.
    """
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR is always reported: set when the reader is gone
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False
    if gone:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    return gone


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
