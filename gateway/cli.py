"""``cmcgate gateway ...`` commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateway", help="gateway commands (see `cmcgate gateway --help`)"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
