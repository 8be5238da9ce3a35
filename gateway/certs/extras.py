"""The store's side tables: CA certificates to send along, and recipients known to be missing.

Both are parts of :class:`gateway.certs.store.CertStore`; they share its engines and transactions.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from gateway.certs.db import ChainCertificateRow, MissingRecipientRow, SessionScope, aware_now
from gateway.certs.models import (
    CertificateRecord,
    StoreError,
    certificate_facts,
    fingerprint_of,
    name_hash,
    normalise_email,
)

MAX_CHAIN_DEPTH = 8


class ChainCertificates(SessionScope):
    """CA certificates that came with imported certificates (table ``gw_chain_certificates``)."""

    def add_chain(self, certs: Iterable[x509.Certificate], *, at: datetime | None = None) -> int:
        """Keep CA certificates that came with a leaf, to send along; returns how many were
        new. Certificates that are not CA certificates are ignored."""
        now = aware_now(at)
        cas = [c for c in certs if certificate_facts(c).is_ca]
        for attempt in (1, 2):
            try:
                return self._add_chain(cas, now)
            except IntegrityError as ex:  # a concurrent import stored one of them first
                if attempt == 2:
                    raise StoreError(f"cannot store chain certificates: {ex.orig}") from ex
        raise AssertionError("unreachable")  # pragma: no cover

    def _add_chain(self, cas: list[x509.Certificate], now: datetime) -> int:
        added = 0
        with self._session(write=True) as s:
            for cert in cas:
                fp = fingerprint_of(cert)
                query = select(ChainCertificateRow.id).where(ChainCertificateRow.fingerprint == fp)
                if s.scalars(query).first() is not None:
                    continue
                s.add(
                    ChainCertificateRow(
                        fingerprint=fp,
                        subject=cert.subject.rfc4514_string(),
                        subject_hash=name_hash(cert.subject),
                        issuer_hash=name_hash(cert.issuer),
                        not_after=cert.not_valid_after_utc,
                        der=cert.public_bytes(serialization.Encoding.DER),
                        added_at=now,
                    )
                )
                s.flush()
                added += 1
        return added

    def chain_for(self, record: CertificateRecord) -> list[x509.Certificate]:
        """The stored CA certificates above ``record``, issuer first, up to a self-signed
        one or a missing link. Of several candidates, the one that verifies and expires last."""
        return self.chain_above(record.certificate)

    def chain_above(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """:meth:`chain_for` of a certificate that need not be in the store."""
        chain: list[x509.Certificate] = []
        current = cert
        with self._session() as s:
            for _ in range(MAX_CHAIN_DEPTH):
                rows = s.scalars(
                    select(ChainCertificateRow)
                    .where(ChainCertificateRow.subject_hash == name_hash(current.issuer))
                    .order_by(ChainCertificateRow.not_after.desc())
                ).all()
                issuer = next((c for c in map(_load, rows) if _issued_by(current, c)), None)
                if issuer is None or issuer in chain:
                    break
                chain.append(issuer)
                if issuer.issuer == issuer.subject:
                    break
                current = issuer
        return chain

    def issuers_above(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Stored CA certificates named as ``cert``'s issuer, theirs, and so on up (matched by
        name only: intermediates for a path builder, which checks the signatures)."""
        found: list[x509.Certificate] = []
        names = {name_hash(cert.issuer)}
        with self._session() as s:
            for _ in range(MAX_CHAIN_DEPTH):
                if not names:
                    break
                rows = s.scalars(
                    select(ChainCertificateRow).where(ChainCertificateRow.subject_hash.in_(names))
                ).all()
                new = [c for c in map(_load, rows) if c not in found]
                found.extend(new)
                names = {name_hash(c.issuer) for c in new if c.issuer != c.subject}
        return found


class RecipientCache(SessionScope):
    """Recipients no certificate could be found for, until when (``gw_missing_recipients``)."""

    def remember_missing(
        self, email: str, ttl: timedelta, *, at: datetime | None = None
    ) -> datetime:
        """Remember that no certificate for ``email`` could be found, for ``ttl``."""
        norm = normalise_email(email)
        until = aware_now(at) + ttl
        for attempt in (1, 2):
            try:
                with self._session(write=True) as s:
                    row = s.get(MissingRecipientRow, norm)
                    if row is None:
                        s.add(MissingRecipientRow(email=norm, until=until))
                    else:
                        row.until = until
                return until
            except IntegrityError as ex:
                if attempt == 2:
                    raise StoreError(f"cannot remember {norm} as missing: {ex.orig}") from ex
        raise AssertionError("unreachable")  # pragma: no cover

    def is_known_missing(self, email: str, at: datetime | None = None) -> bool:
        """Whether ``email`` was remembered as missing and that is still true at ``at``."""
        with self._session() as s:
            row = s.get(MissingRecipientRow, normalise_email(email))
            return row is not None and row.until > aware_now(at)

    def forget_missing(self, email: str) -> None:
        with self._session(write=True) as s:
            s.execute(
                delete(MissingRecipientRow).where(
                    MissingRecipientRow.email == normalise_email(email)
                )
            )

    def purge_missing(self, at: datetime | None = None) -> int:
        """Drop negative-cache entries that have run out; returns how many."""
        with self._session(write=True) as s:
            result = s.execute(
                delete(MissingRecipientRow).where(MissingRecipientRow.until <= aware_now(at))
            )
            return int(getattr(result, "rowcount", 0) or 0)


def _load(row: ChainCertificateRow) -> x509.Certificate:
    return x509.load_der_x509_certificate(row.der)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
