"""``cmcgate demo``: the end-to-end path on embedded defaults."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the end-to-end demo on embedded defaults"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("demo: nothing to run yet")
    return 0
