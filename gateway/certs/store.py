"""The gateway's certificate store: whose certificates the gateway knows, and which to use.

Certificates are indexed by every e-mail address they carry (an address may have several:
the old one and its renewal, an RSA and an EC one...). The choices the mail path asks for are
queries, not scans: :meth:`CertStore.best_for_encryption` and :meth:`CertStore.best_for_signing`
take the certificate valid at the given instant, not revoked, usable for the purpose, with the
newest ``notBefore`` (the most recent renewal). A negative cache remembers recipients for whom
no certificate could be found anywhere, so that the broker does not ask LDAP and the PKI again
for every message.

Adding a certificate is idempotent on (issuer, serial). When it arrives again from another
source the stronger claim is kept (``harvested`` < ``ldap`` < ``imported`` < ``pki``), and the
revocation status already known is kept. Times are timezone-aware UTC; ``at`` defaults to now.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from config.database import view_of
from config.redact import redact_url, scrub
from gateway.certs.db import (
    Base,
    CertificateEmailRow,
    CertificateRow,
    MissingRecipientRow,
    aware_now,
    make_engines,
)
from gateway.certs.extras import ChainCertificates, RecipientCache
from gateway.certs.models import (
    ENCRYPTION_ALGORITHMS,
    AmbiguousCertificate,
    CertificateNotFound,
    CertificateRecord,
    RevocationStatus,
    Source,
    StoreError,
    UnusableCertificate,
    certificate_facts,
    fingerprint_of,
    normalise_email,
    parse_reference,
)


def _record(row: CertificateRow) -> CertificateRecord:
    return view_of(
        CertificateRecord,
        row,
        emails=tuple(sorted(e.email for e in row.emails)),
        source=Source(row.source),
        revocation=RevocationStatus(row.revocation),
    )


class CertStore(ChainCertificates, RecipientCache):
    """Certificates by e-mail address, in SQLite (WAL) or PostgreSQL. Thread-safe."""

    @classmethod
    def open(cls, dsn: str) -> CertStore:
        """Connect to ``dsn`` (``sqlite:///path/gateway.db``, ``postgresql+psycopg://...``)
        and create the tables that are missing."""
        read, write = make_engines(dsn)
        try:
            Base.metadata.create_all(write)
        except SQLAlchemyError as ex:
            read.dispose()
            detail = f"{ex.__class__.__name__}: {getattr(ex, 'orig', ex)}"
            raise StoreError(
                f"cannot open the gateway store {redact_url(dsn)!r}: {scrub(detail, dsn)}"
            ) from ex
        return cls(read, write)

    # -- adding ---------------------------------------------------------------------------
    def add(
        self,
        cert: x509.Certificate,
        source: Source | str,
        key_label: str | None = None,
        *,
        at: datetime | None = None,
    ) -> CertificateRecord:
        """Store ``cert`` (or update the stored copy) and return its record.

        Refuses CA certificates and certificates without an e-mail address. ``key_label``
        records that the gateway holds the private key (pair checked by the caller, see
        :meth:`gateway.certs.keystore.KeyStore.import_for_certificate`). Recipients of ``cert``
        leave the negative cache.
        """
        facts = certificate_facts(cert)
        if facts.is_ca:
            raise UnusableCertificate(f"{facts.subject or facts.fingerprint} is a CA certificate")
        if not facts.emails:
            raise UnusableCertificate(
                f"certificate {facts.serial} ({facts.subject}) carries no e-mail address"
            )
        src = Source.parse(source)
        now = aware_now(at)
        for attempt in (1, 2):
            try:
                with self._session(write=True) as s:
                    row = s.scalars(
                        select(CertificateRow).where(
                            CertificateRow.issuer_hash == facts.issuer_hash,
                            CertificateRow.serial == facts.serial,
                        )
                    ).one_or_none()
                    if row is None:
                        row = CertificateRow(
                            fingerprint=facts.fingerprint,
                            serial=facts.serial,
                            issuer=facts.issuer,
                            issuer_hash=facts.issuer_hash,
                            subject=facts.subject,
                            source=src.value,
                            not_before=facts.not_before,
                            not_after=facts.not_after,
                            key_algorithm=facts.key_algorithm,
                            can_sign=facts.can_sign,
                            can_encrypt=facts.can_encrypt,
                            revocation=RevocationStatus.UNKNOWN.value,
                            key_label=key_label,
                            der=cert.public_bytes(serialization.Encoding.DER),
                            added_at=now,
                            updated_at=now,
                        )
                        row.emails = [CertificateEmailRow(email=e) for e in facts.emails]
                        s.add(row)
                    else:
                        if row.fingerprint != facts.fingerprint:
                            raise StoreError(
                                f"another certificate with issuer {facts.issuer!r} and serial"
                                f" {facts.serial} is stored already ({row.fingerprint})"
                            )
                        if src.rank > Source(row.source).rank:
                            row.source = src.value
                        if key_label is not None:
                            row.key_label = key_label
                        row.updated_at = now
                    s.execute(
                        delete(MissingRecipientRow).where(
                            MissingRecipientRow.email.in_(facts.emails)
                        )
                    )
                    s.flush()
                    return _record(row)
            except IntegrityError as ex:  # a concurrent add of the same certificate won
                if attempt == 2:
                    raise StoreError(f"cannot store certificate {facts.serial}: {ex.orig}") from ex
        raise AssertionError("unreachable")  # pragma: no cover

    def set_key_label(self, reference: str, key_label: str | None) -> CertificateRecord:
        """Record (or, with None, forget) the label of the certificate's private key."""
        return self._update(reference, key_label=key_label)

    # -- looking up -----------------------------------------------------------------------
    def get(self, reference: str) -> CertificateRecord:
        """The certificate with this SHA-256 fingerprint or (hex) serial number."""
        with self._session() as s:
            return _record(self._row(s, reference))

    def _row(self, s: Session, reference: str) -> CertificateRow:
        ref = parse_reference(reference)
        query = select(CertificateRow)
        if ref.fingerprint is not None:
            query = query.where(CertificateRow.fingerprint == ref.fingerprint)
        else:
            query = query.where(CertificateRow.serial == ref.serial)
        rows = list(s.scalars(query))
        if not rows:
            raise CertificateNotFound(
                f"no stored certificate has serial or fingerprint {reference}"
            )
        if len(rows) > 1:
            raise AmbiguousCertificate(
                f"{len(rows)} stored certificates have serial {reference}: use the fingerprint"
                f" ({', '.join(r.fingerprint for r in rows)})"
            )
        return rows[0]

    def get_by_certificate(self, cert: x509.Certificate) -> CertificateRecord | None:
        with self._session() as s:
            fp = fingerprint_of(cert)
            row = s.scalars(select(CertificateRow).where(CertificateRow.fingerprint == fp)).first()
            return None if row is None else _record(row)

    def _valid(self, email: str, at: datetime) -> Select[CertificateRow]:
        return (
            select(CertificateRow)
            .join(CertificateEmailRow)
            .where(
                CertificateEmailRow.email == normalise_email(email),
                CertificateRow.not_before <= at,
                CertificateRow.not_after >= at,
                CertificateRow.revocation != RevocationStatus.REVOKED.value,
            )
            .order_by(
                CertificateRow.not_before.desc(),
                CertificateRow.not_after.desc(),
                CertificateRow.id.desc(),
            )
            .limit(1)
        )

    def best_for_encryption(
        self, email: str, at: datetime | None = None
    ) -> CertificateRecord | None:
        """The newest certificate for ``email`` valid at ``at`` that can be encrypted to
        (emailProtection; keyEncipherment and an RSA key, or keyAgreement and an EC key),
        or None."""
        query = self._valid(email, aware_now(at)).where(
            CertificateRow.can_encrypt.is_(True),
            CertificateRow.key_algorithm.in_(ENCRYPTION_ALGORITHMS),
        )
        with self._session() as s:
            row = s.scalars(query).first()
            return None if row is None else _record(row)

    def best_for_signing(self, email: str, at: datetime | None = None) -> CertificateRecord | None:
        """The newest certificate for ``email`` valid at ``at`` that can sign and whose private
        key the gateway holds, or None."""
        query = self._valid(email, aware_now(at)).where(
            CertificateRow.can_sign.is_(True), CertificateRow.key_label.is_not(None)
        )
        with self._session() as s:
            row = s.scalars(query).first()
            return None if row is None else _record(row)

    def find(
        self,
        email: str | None = None,
        expiring_within: timedelta | None = None,
        source: Source | str | None = None,
        *,
        at: datetime | None = None,
    ) -> list[CertificateRecord]:
        """Stored certificates, filtered; sorted by first e-mail address, then newest first.

        ``expiring_within``: not revoked, not yet expired at ``at``, but expired by
        ``at + expiring_within``.
        """
        query = select(CertificateRow)
        if email is not None:
            query = query.join(CertificateEmailRow).where(
                CertificateEmailRow.email == normalise_email(email)
            )
        if source is not None:
            query = query.where(CertificateRow.source == Source.parse(source).value)
        if expiring_within is not None:
            now = aware_now(at)
            query = query.where(
                CertificateRow.not_after >= now,
                CertificateRow.not_after <= now + expiring_within,
                CertificateRow.revocation != RevocationStatus.REVOKED.value,
            )
        with self._session() as s:
            records = [_record(r) for r in s.scalars(query)]
        records.sort(key=lambda r: (r.emails, -r.not_before.timestamp(), r.fingerprint))
        return records

    def expiring(self, within: timedelta, at: datetime | None = None) -> list[CertificateRecord]:
        """Certificates not revoked that expire between ``at`` and ``at + within``,
        soonest first."""
        records = self.find(expiring_within=within, at=at)
        return sorted(records, key=lambda r: (r.not_after, r.fingerprint))

    # -- changing -------------------------------------------------------------------------
    def remove(self, reference: str) -> CertificateRecord:
        """Delete the certificate and return what was stored (its key is not touched)."""
        with self._session(write=True) as s:
            row = self._row(s, reference)
            record = _record(row)
            s.delete(row)
            return record

    def mark_revoked(
        self,
        reference: str,
        *,
        revoked_at: datetime | None = None,
        at: datetime | None = None,
    ) -> CertificateRecord:
        """Record that the certificate is revoked (as of ``revoked_at``, checked at ``at``)."""
        now = aware_now(at)
        return self._update(
            reference,
            revocation=RevocationStatus.REVOKED.value,
            revocation_checked_at=now,
            revoked_at=aware_now(revoked_at) if revoked_at is not None else now,
        )

    def mark_checked(
        self, reference: str, status: RevocationStatus | str, *, at: datetime | None = None
    ) -> CertificateRecord:
        """Record the outcome of a revocation check (OCSP/CRL) made at ``at``."""
        value = RevocationStatus(status)
        if value is RevocationStatus.REVOKED:
            return self.mark_revoked(reference, at=at)
        return self._update(
            reference, revocation=value.value, revocation_checked_at=aware_now(at), revoked_at=None
        )

    def _update(self, reference: str, **values: Any) -> CertificateRecord:
        with self._session(write=True) as s:
            row = self._row(s, reference)
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = datetime.now(UTC)
            s.flush()
            return _record(row)
