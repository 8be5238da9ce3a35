"""What the RA services need of :class:`ca.authority.CertificateAuthority`: its store, its
settings and its clock (:class:`RaContext`); the CLIs that open only ca.yaml and the
database (no HSM login) give them a :class:`StoreContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ca.settings.types import CaSettings
from ca.store.orders import Store


class RaContext(Protocol):
    @property
    def store(self) -> Store: ...
    @property
    def settings(self) -> CaSettings: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...


@dataclass
class StoreContext:
    """An :class:`RaContext` without the CA's keys (``cmcgate ca domain``, ``notification``)."""

    store: Store
    settings: CaSettings
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
