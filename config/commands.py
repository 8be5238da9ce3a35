"""``cmcgate config ...`` commands."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config", help="check and show configuration files"
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
