"""The pipeline's view of certificates and keys: what it asks (:class:`Certificates`) and gets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.smime.sign import SignKey


@dataclass(frozen=True)
class SigningIdentity:
    """An internal sender's signing key (HSM handles included), certificate and chain."""

    key: SignKey
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class DecryptionKey:
    """One of an internal recipient's keys (RSA or EC) and the certificate it belongs to."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate


class Certificates(Protocol):
    """What the pipeline needs from the certificate and key stores.

    Lookups that may be slow or fail (LDAP, CMC enrolment) raise
    :class:`cmc.errors.TemporaryFailure`; the message is then refused with 451.
    """

    async def encryption_certificate(self, email: str) -> x509.Certificate | None: ...

    async def signing_identity(
        self, email: str, display_name: str | None = None
    ) -> SigningIdentity | None:
        """``display_name``: the From header's name for ``email`` (a Gold enrolment's CN)."""
        ...

    async def decryption_keys(self, email: str) -> Sequence[DecryptionKey]: ...

    async def harvest(self, certificates: Sequence[x509.Certificate], source: str) -> None: ...
