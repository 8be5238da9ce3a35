"""``cmcgate cmc ...`` commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "cmc", help="cmc commands (see `cmcgate cmc --help`)"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
