"""Small X.509 building blocks the tests share (key usages, self-signed CAs, e-mail CSRs)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID


def key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_agreement: bool = False,
    ca: bool = False,
) -> x509.KeyUsage:
    """A KeyUsage with only the named bits (``ca``: keyCertSign and cRLSign) set."""
    sign, enc, agree = digital_signature, key_encipherment, key_agreement
    return x509.KeyUsage(sign, False, enc, False, agree, ca, ca, False, False)


def self_signed_ca(
    key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    valid: tuple[dt.datetime, dt.datetime],
    usage: x509.KeyUsage,
) -> x509.Certificate:
    """A self-signed CA certificate (critical BasicConstraints and KeyUsage, SKI)."""
    public = key.public_key()
    builder = x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
    builder = builder.public_key(public).serial_number(x509.random_serial_number())
    builder = builder.not_valid_before(valid[0]).not_valid_after(valid[1])
    ca = x509.BasicConstraints(ca=True, path_length=None)
    builder = builder.add_extension(ca, critical=True).add_extension(usage, critical=True)
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    return builder.add_extension(ski, critical=False).sign(key, hashes.SHA256())


def email_csr(
    key: CertificateIssuerPrivateKeyTypes, email: str, *also: str, cn: str | None = None
) -> x509.CertificateSigningRequest:
    """A CSR with the address as CN (or ``cn``) and it and ``also`` as rfc822Name SANs,
    signed by ``key``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or email)])
    san = x509.SubjectAlternativeName([x509.RFC822Name(e) for e in (email, *also)])
    builder = x509.CertificateSigningRequestBuilder().subject_name(name)
    return builder.add_extension(san, critical=False).sign(key, hashes.SHA256())


def email_csr_der(
    email: str,
    *also: str,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    cn: str | None = None,
) -> bytes:
    """:func:`email_csr` as DER, with a fresh EC P-256 key unless ``key`` is given."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    return email_csr(key, email, *also, cn=cn).public_bytes(serialization.Encoding.DER)
