"""Values of the gateway's certificate store: records, sources, errors, certificate facts.

Pure module (no I/O). :func:`certificate_facts` reads from an ``x509.Certificate`` everything
the store indexes: the e-mail addresses it may be used for (rfc822Name SANs, plus legacy
``emailAddress`` subject attributes, lowercased), and what it may be used for. RFC 8550 lets a
certificate without an extended key usage serve any purpose; the gateway is stricter: a
certificate is usable for S/MIME only if its EKU lists ``emailProtection`` (or
``anyExtendedKeyUsage``). Key usage then decides signing (digitalSignature or
nonRepudiation) and encryption (keyEncipherment for RSA, keyAgreement for EC); a certificate
without a key usage extension may do both.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from config.errors import CmcgateError

#: Public-key algorithms the gateway encrypts to: RSA key transport, ECDH (RFC 5753).
ENCRYPTION_ALGORITHMS = ("rsa", "ec")


class StoreError(CmcgateError):
    """The certificate store refused an operation or could not reach its database."""


class CertificateNotFound(StoreError):
    """No stored certificate has this fingerprint or serial number."""


class AmbiguousCertificate(StoreError):
    """A serial number that several stored certificates (of different issuers) share."""


class UnusableCertificate(StoreError):
    """A certificate the store does not take: a CA certificate, or one without an e-mail."""


class Source(enum.StrEnum):
    """Where a certificate came from, weakest claim first (see :attr:`rank`)."""

    HARVESTED = "harvested"  # from the signature of an inbound message
    LDAP = "ldap"  # looked up in a directory
    IMPORTED = "imported"  # an administrator imported it
    PKI = "pki"  # the gateway enrolled it itself over CMC

    @property
    def rank(self) -> int:
        """Precedence when the same certificate arrives again: the higher rank is kept."""
        return list(Source).index(self)

    @classmethod
    def parse(cls, value: str | Source) -> Source:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            valid = ", ".join(s.value for s in cls)
            raise StoreError(f"unknown certificate source {value!r}: use one of {valid}") from None


class RevocationStatus(enum.StrEnum):
    UNKNOWN = "unknown"
    GOOD = "good"
    REVOKED = "revoked"


@dataclass(frozen=True)
class CertificateFacts:
    """What the store indexes about one certificate."""

    fingerprint: str
    serial: str
    issuer: str
    issuer_hash: str
    subject: str
    subject_hash: str
    emails: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    key_algorithm: str
    can_sign: bool
    can_encrypt: bool
    is_ca: bool


@dataclass(frozen=True)
class CertificateRecord:
    """One stored certificate, as the store hands it out."""

    fingerprint: str  # SHA-256 of the DER, lowercase hex
    serial: str  # lowercase hex, no leading zeros
    issuer: str  # RFC 4514
    subject: str
    emails: tuple[str, ...]  # lowercased, sorted
    source: Source
    not_before: datetime
    not_after: datetime
    key_algorithm: str  # rsa, ec, ed25519, ...
    can_sign: bool
    can_encrypt: bool
    revocation: RevocationStatus
    revocation_checked_at: datetime | None
    revoked_at: datetime | None
    key_label: str | None
    added_at: datetime
    updated_at: datetime
    der: bytes = field(repr=False)

    @property
    def has_private_key(self) -> bool:
        return self.key_label is not None

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def is_valid_at(self, at: datetime) -> bool:
        """Within its validity period at ``at`` and not known to be revoked."""
        in_period = self.not_before <= at <= self.not_after
        return in_period and self.revocation is not RevocationStatus.REVOKED

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601, no DER)."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "fingerprint": self.fingerprint,
            "serial": self.serial,
            "issuer": self.issuer,
            "subject": self.subject,
            "emails": list(self.emails),
            "source": self.source.value,
            "not_before": iso(self.not_before),
            "not_after": iso(self.not_after),
            "key_algorithm": self.key_algorithm,
            "can_sign": self.can_sign,
            "can_encrypt": self.can_encrypt,
            "revocation": self.revocation.value,
            "revocation_checked_at": iso(self.revocation_checked_at),
            "revoked_at": iso(self.revoked_at),
            "has_private_key": self.has_private_key,
            "key_label": self.key_label,
        }


# -- certificate analysis ------------------------------------------------------------------
def serial_hex(serial: int) -> str:
    return format(serial, "x")


def fingerprint_of(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def name_hash(name: x509.Name) -> str:
    return hashlib.sha256(name.public_bytes()).hexdigest()


def normalise_email(email: str) -> str:
    """Trimmed and lowercased; the store compares addresses case-insensitively."""
    norm = str(email).strip().lower()
    if norm.count("@") < 1 or norm.startswith("@") or norm.endswith("@") or " " in norm:
        raise StoreError(f"{email!r} is not an e-mail address")
    return norm


def certificate_emails(cert: x509.Certificate) -> tuple[str, ...]:
    """rfc822Name SANs and subject emailAddress attributes, lowercased, sorted, unique."""
    found: set[str] = set()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found.update(str(v) for v in san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        found.add(str(attr.value))
    return tuple(sorted({e.strip().lower() for e in found if "@" in e}))


def key_algorithm(cert: x509.Certificate) -> str:
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ec"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public, ed448.Ed448PublicKey):
        return "ed448"
    if isinstance(public, dsa.DSAPublicKey):
        return "dsa"
    return "other"


def _extension(cert: x509.Certificate, cls: type[Any]) -> Any:
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def certificate_facts(cert: x509.Certificate) -> CertificateFacts:
    """Everything :class:`CertificateRecord` holds that comes from the certificate itself."""
    algorithm = key_algorithm(cert)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    smime_eku = eku is not None and (
        ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    )
    ku = _extension(cert, x509.KeyUsage)
    if ku is None:
        sign_ku = encrypt_ku = True
    else:
        sign_ku = ku.digital_signature or ku.content_commitment
        encrypt_ku = ku.key_encipherment if algorithm == "rsa" else ku.key_agreement
        if algorithm not in ("rsa", "ec"):
            encrypt_ku = False
    bc = _extension(cert, x509.BasicConstraints)
    return CertificateFacts(
        fingerprint=fingerprint_of(cert),
        serial=serial_hex(cert.serial_number),
        issuer=cert.issuer.rfc4514_string(),
        issuer_hash=name_hash(cert.issuer),
        subject=cert.subject.rfc4514_string(),
        subject_hash=name_hash(cert.subject),
        emails=certificate_emails(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key_algorithm=algorithm,
        can_sign=smime_eku and sign_ku,
        can_encrypt=smime_eku and encrypt_ku,
        is_ca=bool(bc is not None and bc.ca),
    )


# -- identifiers -----------------------------------------------------------------------------
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class CertificateRef:
    """A parsed ``SERIAL|FINGERPRINT`` argument: exactly one of the two is set."""

    fingerprint: str | None = None
    serial: str | None = None


def parse_reference(text: str) -> CertificateRef:
    """A SHA-256 fingerprint (64 hex digits) or a serial number in hex.

    Colons, spaces and a ``0x`` prefix are ignored, case does not matter (``openssl x509
    -serial`` and ``-fingerprint -sha256`` output both work after the ``=``). Serials are at
    most 20 octets (RFC 5280), so 64 digits always mean a fingerprint.
    """
    raw = str(text).strip().lower()
    if "=" in raw:
        raw = raw.split("=", 1)[1]
    norm = raw.replace(":", "").replace(" ", "")
    if norm.startswith("0x"):
        norm = norm[2:]
    if not norm or not _HEX.fullmatch(norm):
        raise StoreError(f"{text!r} is neither a serial number (hex) nor a SHA-256 fingerprint")
    if len(norm) == 64:
        return CertificateRef(fingerprint=norm)
    if len(norm) > 42:
        raise StoreError(f"{text!r} is too long for a serial number and not a SHA-256 fingerprint")
    return CertificateRef(serial=norm.lstrip("0") or "0")


def split_chain(
    certs: list[x509.Certificate], email: str
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """(the end-entity certificate for ``email``, the CA certificates)."""
    facts = [(c, certificate_facts(c)) for c in certs]
    leaves = [c for c, f in facts if not f.is_ca and email in f.emails]
    others = [f for c, f in facts if not f.is_ca and email not in f.emails]
    if not leaves:
        named = sorted({e for _, f in facts for e in f.emails})
        raise UnusableCertificate(
            f"no end-entity certificate for {email} in the file"
            + (f" (it has certificates for {', '.join(named)})" if named else "")
        )
    if len(leaves) > 1 or others:
        raise UnusableCertificate(
            "the file holds several end-entity certificates: import one at a time"
        )
    return leaves[0], [c for c, f in facts if f.is_ca]
