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
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from cmc.errors import TemporaryFailure
from gateway.keystore import KeyStore, KeyStoreError
from gateway.pipeline import DecryptionKey, SigningIdentity, is_ca
from gateway.smime.sign import SignKey
from gateway.store import CertStore
from gateway.store_models import Source, StoreError, UnusableCertificate

T = TypeVar("T")


class StoreCertificates:
    """Answers the pipeline from the gateway's certificate store and users' key store."""

    def __init__(self, store: CertStore, keys: KeyStore) -> None:
        self.store = store
        self.keys = keys

    async def _call(self, func: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(func)
        except UnusableCertificate:
            raise
        except (StoreError, KeyStoreError) as exc:
            raise TemporaryFailure(f"certificate store: {exc}") from exc

    async def encryption_certificate(self, email: str) -> x509.Certificate | None:
        record = await self._call(lambda: self.store.best_for_encryption(email))
        return None if record is None else record.certificate

    async def signing_identity(self, email: str) -> SigningIdentity | None:
        def load() -> SigningIdentity | None:
            record = self.store.best_for_signing(email)
            if record is None:
                return None
            key = cast(SignKey, self.keys.key_for(record))
            return SigningIdentity(key, record.certificate, tuple(self.store.chain_for(record)))

        return await self._call(load)

    async def decryption_keys(self, email: str) -> Sequence[DecryptionKey]:
        def load() -> list[DecryptionKey]:
            found = []
            for record in self.store.find(email=email):
                if record.key_label is None or record.key_algorithm != "rsa":
                    continue
                key = self.keys.key_for(record)
                if isinstance(key, rsa.RSAPrivateKey):
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
                    self.store.add(cert, Source.HARVESTED)
                except UnusableCertificate:
                    continue  # no e-mail address: nothing to index it by

        await self._call(store)
