"""Opening the gateway's certificate store and users' key store.

From the gateway properties file (:func:`open_from_config`, through
:func:`config.properties.load`: ``cmcgate.store.dsn`` and the ``cmcgate.keys.*`` family), or
from explicit settings (:func:`open_stores`, what ``--store``/``--keys-dir`` give).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ca.keys import backend_from_settings
from config.closing import Closing
from config.errors import CmcgateError
from gateway.certs.keystore import KeyStore
from gateway.certs.store import CertStore

if TYPE_CHECKING:
    from config.model import Config


class StoreConfigError(CmcgateError):
    """The settings do not say where the gateway's certificates or keys are."""


@dataclass(frozen=True)
class StoreSettings:
    """Where the certificate store is, and which key backend holds users' keys (if any)."""

    dsn: str
    key_backend: str | None = None
    key_settings: Mapping[str, str | int] = field(default_factory=dict)


@dataclass
class GatewayStores(Closing):
    """An open certificate store and, if configured, the key store. Close when done."""

    certs: CertStore
    keys: KeyStore | None = None

    def require_keys(self) -> KeyStore:
        if self.keys is None:
            raise StoreConfigError(
                "no key backend configured for users' keys (--keys-dir, or"
                " cmcgate.keys.backend in the properties file)"
            )
        return self.keys

    def close(self) -> None:
        try:
            if self.keys is not None:
                self.keys.close()
        finally:
            self.certs.close()


def open_stores(settings: StoreSettings) -> GatewayStores:
    keys = None
    if settings.key_backend is not None:
        keys = KeyStore(backend_from_settings(settings.key_backend, **dict(settings.key_settings)))
    try:
        return GatewayStores(CertStore.open(settings.dsn), keys)
    except BaseException:
        if keys is not None:
            keys.close()
        raise


def open_from_config(path: str | os.PathLike[str], *, keys: bool = True) -> GatewayStores:
    """The stores the gateway properties file at ``path`` names (ConfigError if invalid).

    ``keys=False``: the certificate store alone, for read-only commands (no key passphrase,
    no HSM PIN is read).
    """
    from config.properties import load

    return stores_for(load(path), keys=keys)


def stores_for(config: Config, *, keys: bool = True) -> GatewayStores:
    """The stores a loaded configuration names: certificates always, keys when configured
    (and wanted)."""
    if not keys:
        return open_stores(StoreSettings(dsn=config.store.dsn))
    keys_settings = config.keys
    return open_stores(
        StoreSettings(
            dsn=config.store.dsn,
            key_backend=None if keys_settings is None else keys_settings.kind,
            key_settings={} if keys_settings is None else keys_settings.backend_kwargs(),
        )
    )
