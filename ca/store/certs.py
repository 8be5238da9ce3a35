"""Certificates and revocations of :class:`ca.store.orders.Store`."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import ColumnElement, Select, and_, or_, select, update
from sqlalchemy.orm import Session

from ca.store.audit import AuditEvent
from ca.store.base import StoreBase, certificate_view, check_text
from ca.store.db import (
    CertificateEmailRow,
    CertificateRow,
    OrderRow,
    RevocationRow,
    StatusHistoryRow,
    utcnow,
)
from ca.store.model import (
    CertificateStatus,
    CertificateView,
    DuplicateCertificate,
    OrderStatus,
    RevocationReason,
    RevocationRefused,
    RevocationView,
    RevokedEntry,
    StoreError,
    UnknownCertificate,
    UnknownOrder,
    check_subscriber_reason,
    normalise_email,
    normalise_serial,
)
from config.database import view_of


def certificate_emails(cert: x509.Certificate) -> list[str]:
    """rfc822Name SAN entries and subject emailAddress values, lower-cased, de-duplicated."""
    found: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found.extend(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attr.value, str):
            found.append(attr.value)
    out: list[str] = []
    for email in found:
        norm = normalise_email(email)
        if norm and norm not in out:
            out.append(norm)
    return out


class CertificatesMixin(StoreBase):
    def record_certificate(
        self, order_id: str | None, der: bytes, *, now: datetime | None = None
    ) -> CertificateView:
        """Store an issued certificate (parsed from DER) for an order in status ISSUE.

        ``order_id=None`` records a certificate without an order (an import). Audited as
        ``issue`` with the serial in the details.
        """
        try:
            cert = x509.load_der_x509_certificate(der)
            serial = normalise_serial(cert.serial_number)
            subject = cert.subject.rfc4514_string()
            issuer = cert.issuer.rfc4514_string()
            not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
            emails = certificate_emails(cert)
        except ValueError as ex:
            raise StoreError(f"not a DER certificate: {ex}") from ex
        at = now or utcnow()
        with self.audit_transaction() as session:
            if order_id is not None:
                order = session.get(OrderRow, order_id, with_for_update=True)
                if order is None:
                    raise UnknownOrder(f"no order {order_id}")
                if order.status != OrderStatus.ISSUE:
                    raise StoreError(
                        f"order {order_id} is in status {order.status}: a certificate is "
                        "recorded in status ISSUE"
                    )
                has_one = session.execute(
                    select(CertificateRow.id).where(CertificateRow.order_id == order_id)
                ).first()
                if has_one is not None:
                    raise DuplicateCertificate(f"order {order_id} has a certificate already")
            if session.execute(
                select(CertificateRow.id).where(CertificateRow.serial == serial)
            ).first():
                raise DuplicateCertificate(f"a certificate with serial {serial} is stored already")
            row = CertificateRow(
                serial=serial,
                order_id=order_id,
                subject=subject[:1024],
                issuer=issuer[:1024],
                not_before=not_before,
                not_after=not_after,
                status=CertificateStatus.VALID.value,
                der=der,
                recorded_at=at,
            )
            session.add(row)
            session.flush()
            for email in emails:
                session.add(CertificateEmailRow(certificate_id=row.id, email=email[:320]))
            session.flush()
            details = {"serial": serial, "subject": subject, "emails": emails}
            actor = "ca"
            self._audit(session, AuditEvent.ISSUE, actor, order_id or serial, details, at)
            return certificate_view(session, row, at)

    def get_certificate(self, serial: int | str, *, now: datetime | None = None) -> CertificateView:
        key = normalise_serial(serial)
        with self.read_session() as session:
            row = session.execute(
                select(CertificateRow).where(CertificateRow.serial == key)
            ).scalar_one_or_none()
            if row is None:
                raise UnknownCertificate(f"no certificate with serial {key}")
            return certificate_view(session, row, now or utcnow())

    def find_certificates(
        self,
        email: str | None = None,
        expiring_within: timedelta | None = None,
        status: CertificateStatus | None = None,
        *,
        order_id: str | None = None,
        now: datetime | None = None,
    ) -> list[CertificateView]:
        """Certificates by email (case-insensitive), expiry window and/or effective status.

        A VALID certificate past not_after counts as EXPIRED. ``expiring_within`` means
        ``now < not_after <= now + window`` and, without an explicit status, leaves out revoked
        ones (the RA dashboard's "expiring in d days"). Sorted by not_after.
        """
        at = now or utcnow()
        query = select(CertificateRow).order_by(CertificateRow.not_after, CertificateRow.id)
        query = certificate_filters(query, email, expiring_within, status, at)
        if order_id is not None:
            query = query.where(CertificateRow.order_id == order_id)
        if expiring_within is not None and status is None:
            query = query.where(CertificateRow.status != CertificateStatus.REVOKED.value)
        with self.read_session() as session:
            rows = session.execute(query).scalars().all()
            return [certificate_view(session, r, at) for r in rows]

    def mark_expired(self, *, now: datetime | None = None) -> int:
        """Set stored status EXPIRED on VALID certificates past not_after; returns how many."""
        at = now or utcnow()
        with self.write_session() as session:
            result = session.execute(
                update(CertificateRow)
                .where(
                    CertificateRow.status == CertificateStatus.VALID.value,
                    CertificateRow.not_after <= at,
                )
                .values(status=CertificateStatus.EXPIRED.value)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def revoke(
        self,
        serial: int | str,
        reason: RevocationReason | int | str = RevocationReason.UNSPECIFIED,
        *,
        by: str,
        comment: str | None = None,
        invalidity_date: datetime | None = None,
        now: datetime | None = None,
    ) -> RevocationView:
        """Revoke a certificate; its order moves ISSUED -> REVOKED. Audited as ``revoke``.

        certificateHold, removeFromCRL, cACompromise and aACompromise are refused
        (S/MIME BR 7.2.2), as is revoking a certificate twice.
        """
        parsed = RevocationReason.parse(reason)
        check_subscriber_reason(parsed)
        check_text("revoked by", by, 256)
        key = normalise_serial(serial)
        at = now or utcnow()
        with self.audit_transaction() as session:
            cert = session.execute(
                select(CertificateRow).where(CertificateRow.serial == key).with_for_update()
            ).scalar_one_or_none()
            if cert is None:
                raise UnknownCertificate(f"no certificate with serial {key}")
            if cert.status == CertificateStatus.REVOKED.value:
                raise RevocationRefused(f"certificate {key} is revoked already")
            row = RevocationRow(
                certificate_id=cert.id,
                serial=key,
                reason_code=int(parsed),
                reason_name=parsed.rfc_name,
                revoked_at=at,
                invalidity_date=invalidity_date,
                comment=comment,
                revoked_by=by,
            )
            session.add(row)
            cert.status = CertificateStatus.REVOKED.value
            if cert.order_id is not None:
                _order_to_revoked(session, cert.order_id, at, parsed)
            details = {
                "order": cert.order_id,
                "reason": parsed.rfc_name,
                "code": int(parsed),
                "comment": comment,
                "invalidity_date": invalidity_date,
            }
            self._audit(session, AuditEvent.REVOKE, by, key, details, at)
            session.flush()
            return _revocation_view(row)

    def get_revocation(self, serial: int | str) -> RevocationView | None:
        key = normalise_serial(serial)
        with self.read_session() as session:
            row = session.execute(
                select(RevocationRow).where(RevocationRow.serial == key)
            ).scalar_one_or_none()
            return None if row is None else _revocation_view(row)

    def revoked_entries(self) -> list[RevokedEntry]:
        """Every revocation, oldest first, as CRL entries."""
        with self.read_session() as session:
            rows = session.execute(
                select(RevocationRow).order_by(RevocationRow.revoked_at, RevocationRow.id)
            ).scalars()
            return [
                RevokedEntry(
                    serial_number=int(r.serial, 16),
                    revoked_at=r.revoked_at,
                    reason=RevocationReason(r.reason_code),
                    invalidity_date=r.invalidity_date,
                )
                for r in rows
            ]


def _order_to_revoked(
    session: Session, order_id: str, at: datetime, reason: RevocationReason
) -> None:
    order = session.get(OrderRow, order_id, with_for_update=True)
    if order is None or order.status != OrderStatus.ISSUED.value:
        return  # an order that failed after ISSUE keeps FAILED
    session.add(
        StatusHistoryRow(
            order_id=order_id,
            from_status=order.status,
            to_status=OrderStatus.REVOKED.value,
            at=at,
            note=f"certificate revoked: {reason.rfc_name}",
        )
    )
    order.status = OrderStatus.REVOKED.value
    order.updated_at = at


def certificate_filters(
    query: Select[CertificateRow],
    email: str | None,
    expiring_within: timedelta | None,
    status: CertificateStatus | None,
    at: datetime,
) -> Select[CertificateRow]:
    """The certificate searches' common filters: one of the addresses, ``at < not_after <=
    at + expiring_within``, the effective status (a VALID one past not_after is EXPIRED)."""
    if email is not None:
        query = query.where(
            CertificateRow.id.in_(
                select(CertificateEmailRow.certificate_id).where(
                    CertificateEmailRow.email == normalise_email(email)
                )
            )
        )
    if expiring_within is not None:
        query = query.where(
            CertificateRow.not_after > at, CertificateRow.not_after <= at + expiring_within
        )
    if status is not None:
        query = query.where(status_clause(CertificateStatus(status), at))
    return query


def status_clause(status: CertificateStatus, at: datetime) -> ColumnElement[bool]:
    if status is CertificateStatus.REVOKED:
        return CertificateRow.status == CertificateStatus.REVOKED.value
    if status is CertificateStatus.VALID:
        return and_(
            CertificateRow.status == CertificateStatus.VALID.value, CertificateRow.not_after > at
        )
    return or_(
        CertificateRow.status == CertificateStatus.EXPIRED.value,
        and_(
            CertificateRow.status == CertificateStatus.VALID.value, CertificateRow.not_after <= at
        ),
    )


def _revocation_view(row: RevocationRow) -> RevocationView:
    return view_of(RevocationView, row, reason=RevocationReason(row.reason_code))
