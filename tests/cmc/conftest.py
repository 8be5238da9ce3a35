"""A small PKI for the CMC tests: root CA, CMC signing CA, RA/access certificate, users.

Keys are made once per session (RSA generation dominates test time otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def shared_dir() -> Path:
    override = os.environ.get("CMCGATE_SHARED")
    return Path(override) if override else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def interop_dir() -> Path:
    path = shared_dir() / "interop"
    if not path.is_dir():
        pytest.fail(f"interop samples missing at {path} (set CMCGATE_SHARED)")
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cmcgate tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_cert(
    subject: x509.Name,
    public_key: object,
    issuer: x509.Name,
    issuer_key: object,
    *,
    ca: bool,
    not_before: datetime = NOW - timedelta(days=30),
    days: int = 365,
    eku: list[x509.ObjectIdentifier] | None = None,
    email: str | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key),  # type: ignore[arg-type]
            critical=False,
        )
    )
    usage = dict.fromkeys(
        [
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ],
        False,
    )
    usage["digital_signature"] = True
    if ca:
        usage["key_cert_sign"] = usage["crl_sign"] = True
    builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if email:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


@dataclass(frozen=True)
class PkiFixture:
    root_key: rsa.RSAPrivateKey
    root: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    ca: x509.Certificate
    ra_key: ec.EllipticCurvePrivateKey
    ra: x509.Certificate
    stranger_key: rsa.RSAPrivateKey
    stranger: x509.Certificate
    user_rsa: rsa.RSAPrivateKey
    user_ec: ec.EllipticCurvePrivateKey

    def issue(
        self, public_key: object, email: str, *, issuer_key: object = None
    ) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)])
        return make_cert(
            subject,
            public_key,
            self.ca.subject,
            issuer_key or self.ca_key,
            ca=False,
            eku=[ExtendedKeyUsageOID.EMAIL_PROTECTION],
            email=email,
        )


@pytest.fixture(scope="session")
def pki() -> PkiFixture:
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = make_cert(
        _name("Test Root"), root_key.public_key(), _name("Test Root"), root_key, ca=True, days=3650
    )
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = make_cert(_name("Test Issuing CA"), ca_key.public_key(), root.subject, root_key, ca=True)
    ra_key = ec.generate_private_key(ec.SECP256R1())
    ra = make_cert(
        _name("Test RA"),
        ra_key.public_key(),
        ca.subject,
        ca_key,
        ca=False,
        eku=[x509.ObjectIdentifier("1.3.6.1.5.5.7.3.28")],
    )
    stranger_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger = make_cert(
        _name("Stranger CA"), stranger_key.public_key(), _name("Stranger CA"), stranger_key, ca=True
    )
    return PkiFixture(
        root_key,
        root,
        ca_key,
        ca,
        ra_key,
        ra,
        stranger_key,
        stranger,
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    )


def make_csr(key: object, email: str) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, email)]))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
