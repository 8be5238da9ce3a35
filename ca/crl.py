"""CRLs (RFC 5280 §5) signed by the CA key in the HSM, and written atomically for HTTP.

The CRL number is the issuance time in milliseconds: monotonic across restarts and across
several CA processes without shared state (RFC 5280 §5.2.3 only requires it to increase).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from ca.profiles.builder import signature_hash_for
from ca.store.model import RevokedEntry
from config.files import write_atomically as write_atomically  # shared with the gateway


def build_crl(
    issuer: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes,
    entries: Iterable[RevokedEntry],
    *,
    now: datetime,
    next_update: timedelta,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for entry in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_number)
            .revocation_date(entry.revoked_at)
        )
        flag = entry.reason.crl_flag
        if flag is not None:
            revoked = revoked.add_extension(x509.CRLReason(flag), critical=False)
        if entry.invalidity_date is not None:
            revoked = revoked.add_extension(
                x509.InvalidityDate(entry.invalidity_date), critical=False
            )
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(key, signature_hash_for(issuer.public_key()))  # type: ignore[arg-type]
