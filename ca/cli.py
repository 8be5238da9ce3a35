"""``cmcgate ca ...`` commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ca", help="ca commands (see `cmcgate ca --help`)"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
