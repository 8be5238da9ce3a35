"""``cmcgate ca ...`` commands of the RA service; each feature module registers its own."""

from __future__ import annotations

import importlib
from typing import Any

#: modules with a ``register(sub)`` that adds ``cmcgate ca`` subcommands
_COMMAND_MODULES: tuple[str, ...] = (
    "ca.ra.auth_cli",
    "ca.ra.keygen_cli",
    "ca.ra.domains_cli",
    "ca.ra.notify_cli",
)


def register_ra_commands(sub: Any) -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
