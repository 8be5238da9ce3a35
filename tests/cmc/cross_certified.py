"""Hostile certificate bundles: CA certificates that all certify each other.

``k`` keys, and for every pair (i, j) a CA certificate for key i signed by key j, all under
one name: every certificate in the bundle is a valid issuer of every other one signed by the
same key, so a path search that tries everything explores ``k ** depth`` paths, none of
which reaches a trust anchor. This is what a signed mail can carry in its ``certificates``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOSTILE_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cross Certified"),
        x509.NameAttribute(NameOID.COMMON_NAME, "Mesh CA"),
    ]
)


@functools.cache
def _key(index: int) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Mesh:
    keys: tuple[ec.EllipticCurvePrivateKey, ...]
    certificates: tuple[x509.Certificate, ...]
    name: x509.Name
    not_before: datetime

    def issue(self, email: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """An S/MIME end-entity certificate for ``email`` signed by the mesh's first key."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(self.not_before)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.keys[0].public_key()),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .sign(self.keys[0], hashes.SHA256())
        )
        return key, cert


def cross_certified(
    count: int,
    *,
    not_before: datetime,
    name: x509.Name = HOSTILE_NAME,
    claimed_key_id: bytes | None = None,
) -> Mesh:
    """``count`` CA certificates under ``name`` certifying each other (see the module doc).

    ``claimed_key_id`` puts that subjectKeyIdentifier into every certificate (impostors of a
    real CA copy its SKI); by default each carries its own key's.
    """
    size = math.isqrt(count - 1) + 1
    keys = tuple(_key(i) for i in range(size))
    certificates = []
    for n in range(count):
        subject_key, issuer_key = keys[n // size], keys[n % size]
        key_id = (
            claimed_key_id
            or x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()).digest
        )
        certificates.append(
            _builder(not_before)
            .subject_name(name)
            .issuer_name(name)
            .public_key(subject_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier(key_id), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
            .sign(issuer_key, hashes.SHA256())
        )
    return Mesh(keys, tuple(certificates), name, not_before)


def _builder(not_before: datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=365))
    )
