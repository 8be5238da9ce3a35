"""The pipeline's :class:`~gateway.pipeline.Certificates` over CertStore and KeyStore.

The stores are synchronous (SQLAlchemy, PKCS#11): every call runs in a worker thread so the
SMTP front keeps serving other connections.  A store failure (database locked or down) or a
missing private key is a :class:`cmc.errors.TemporaryFailure`: the message is refused with
451 and stays with the client until an operator fixes it.  Key backend/HSM errors pass
through as they are (the pipeline answers those with 451 too).

Not here yet: fetching unknown recipients' certificates from LDAP/CMC and enrolling internal
senders — the certificate broker will wrap this adapter and add them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cmc.errors import TemporaryFailure
from gateway.certs.keystore import KeyStore, KeyStoreError
from gateway.certs.models import Source, StoreError, UnusableCertificate
from gateway.certs.store import CertStore
from gateway.certs.view import DecryptionKey, SigningIdentity
from gateway.pipeline import is_ca
from gateway.smime.sign import SignKey

T = TypeVar("T")


class StoreCertificates:
    """Answers the pipeline from the gateway's certificate store and users' key store.

    Positive answers for signing identities and encryption certificates are kept in memory
    for ``cache_seconds`` (default 60 s): three to four store queries per message were ~70%
    of a sign+encrypt message's CPU (docs/performance.md).  Misses are never cached, so an
    imported or enrolled certificate is used at once; a certificate removed or marked revoked
    in the store may still be used for up to ``cache_seconds`` (not one chosen by a cached
    answer after it expired: :meth:`_cached` checks the validity period on every hit).
    """

    def __init__(self, store: CertStore, keys: KeyStore, *, cache_seconds: float = 60.0) -> None:
        self.store = store
        self.keys = keys
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}

    def _cached(self, kind: str, email: str) -> Any:
        hit = self._cache.get((kind, email.lower()))
        if hit is None or hit[0] < time.monotonic():
            return None
        cert = hit[1] if kind == "encrypt" else hit[1].cert
        if cert.not_valid_after_utc <= datetime.now(UTC):
            return None
        return hit[1]

    def _remember(self, kind: str, email: str, value: Any) -> Any:
        if value is not None and self.cache_seconds > 0:
            self._cache[(kind, email.lower())] = (time.monotonic() + self.cache_seconds, value)
        return value

    def forget(self, email: str | None = None) -> None:
        """Drop cached answers (for one address, or all)."""
        if email is None:
            self._cache.clear()
        else:
            for kind in ("encrypt", "sign"):
                self._cache.pop((kind, email.lower()), None)

    async def _call(self, func: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(func)
        except UnusableCertificate:
            raise
        except (StoreError, KeyStoreError) as exc:
            raise TemporaryFailure(f"certificate store: {exc}") from exc

    async def encryption_certificate(self, email: str) -> x509.Certificate | None:
        cached = self._cached("encrypt", email)
        if cached is not None:
            return cast(x509.Certificate, cached)
        record = await self._call(lambda: self.store.best_for_encryption(email))
        return self._remember("encrypt", email, None if record is None else record.certificate)

    async def signing_identity(
        self, email: str, display_name: str | None = None
    ) -> SigningIdentity | None:
        """The stored identity for ``email``, whatever name it was issued with."""

        def load() -> SigningIdentity | None:
            record = self.store.best_for_signing(email)
            if record is None:
                return None
            key = cast(SignKey, self.keys.key_for(record))
            return SigningIdentity(key, record.certificate, tuple(self.store.chain_for(record)))

        cached = self._cached("sign", email)
        if cached is not None:
            return cast(SigningIdentity, cached)
        return self._remember("sign", email, await self._call(load))

    async def decryption_keys(self, email: str) -> Sequence[DecryptionKey]:
        def load() -> list[DecryptionKey]:
            found = []
            for record in self.store.find(email=email):
                if record.key_label is None or record.key_algorithm not in ("rsa", "ec"):
                    continue
                key = self.keys.key_for(record)
                if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                    found.append(DecryptionKey(key, record.certificate))
            return found

        return await self._call(load)

    async def harvest(self, certificates: Sequence[x509.Certificate], source: str) -> None:
        """Store end-entity certificates as harvested, CA certificates as chain material."""

        def store() -> None:
            leaves = [c for c in certificates if not is_ca(c)]
            self.store.add_chain([c for c in certificates if is_ca(c)])
            for cert in leaves:
                try:
                    record = self.store.add(cert, Source.HARVESTED)
                except UnusableCertificate:
                    continue  # no e-mail address: nothing to index it by
                for address in record.emails:
                    self.forget(address)

        await self._call(store)
