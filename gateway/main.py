"""The ``cmcgate`` command line root: one entry point, one subcommand group per package.

Each group lives in its package's ``cli`` module, whose ``register(subparsers)`` adds the
group; a leaf command sets ``func`` to a callable taking the parsed arguments and returning
the exit status.  The root knows the groups by module *name* and imports only the one the
command line asks for, so ``cmcgate --help`` and ``cmcgate --version`` load none of them
(and no package's layering depends on this table: it is a plug-in list, not an import).

Errors derived from :class:`config.errors.CmcgateError` are printed as one line and exit with
their code; no traceback reaches the user.  A closed stdout (``cmcgate ... | head``) ends the
command quietly, as Unix tools do.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata

#: group -> (module with ``register``, one-line help), in the order ``--help`` lists them.
GROUPS: dict[str, tuple[str, str]] = {
    "config": ("config.commands", "check and show configuration files"),
    "cmc": ("cmc.cli", "CMC messages (RFC 5272): build requests, inspect files"),
    "ca": ("ca.cli", "the bundled CA"),
    "gateway": ("gateway.cli", "the S/MIME SMTP gateway (run, certs, quarantine, passwd)"),
}


def version() -> str:
    try:
        return metadata.version("cmcgate")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _chosen_group(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in GROUPS else None
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the group named in ``argv`` (if any) is loaded and registered fully."""
    parser = argparse.ArgumentParser(
        prog="cmcgate",
        description="S/MIME mail gateway that brokers certificates over CMC.",
    )
    parser.add_argument("--version", action="version", version=f"cmcgate {version()}")
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    chosen = _chosen_group(argv)
    for name, (module_name, help_text) in GROUPS.items():
        if name == chosen:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
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
    from config.errors import CmcgateError

    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
    func = getattr(args, "func", None)
    if func is None:
        # A group without a leaf command: show that group's help.
        parser.parse_args([*arguments, "--help"])
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
