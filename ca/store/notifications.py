"""Mail notifications of the RA service: the sent-notification list, renewal emails, mutes.

The RA manual shows "the list of sent notifications" under an order's jobs with a resend
button (3.5.1: for when the SMTP server or relay did not deliver), keeps "additional renewal
emails" per certificate (3.4.5, 3.5.4: recipients of expiry/renewal mails, useful for
certificates without an rfc822Name) and lets a user mute notifications (3.8.1).

Three new tables on the shared :class:`ca.store.db.Base`: ``notifications`` (one row per
mail, with status SENT, FAILED or MUTED), ``renewal_emails`` and ``mutes``. A notification's
``reference`` (unique, optional) makes a mail that must go out once per event (an expiry
warning per certificate, threshold and recipient) idempotent across runs and restarts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from ca.store.base import StoreBase, check_text
from ca.store.db import Base, UtcDateTime, utcnow
from ca.store.model import StoreError, normalise_email, normalise_serial
from config.database import view_of


class UnknownNotification(StoreError):
    """No notification with that id."""


class NotificationStatus(enum.StrEnum):
    SENT = "SENT"
    FAILED = "FAILED"
    MUTED = "MUTED"


class NotificationRow(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(String(998))
    body: Mapped[str] = mapped_column(Text)
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.id"), index=True)
    serial: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(200), unique=True)


class RenewalEmailRow(Base):
    __tablename__ = "renewal_emails"
    __table_args__ = (UniqueConstraint("serial", "email"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(64), index=True)
    email: Mapped[str] = mapped_column(String(320))


class MuteRow(Base):
    __tablename__ = "mutes"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    muted_by: Mapped[str] = mapped_column(String(256))
    muted_at: Mapped[datetime] = mapped_column(UtcDateTime())


@dataclass(frozen=True)
class NotificationView:
    id: int
    kind: str
    recipient: str
    subject: str
    body: str
    order_id: str | None
    serial: str | None
    status: NotificationStatus
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None
    reference: str | None


def _view(row: NotificationRow) -> NotificationView:
    return view_of(NotificationView, row, status=NotificationStatus(row.status))


class NotificationsMixin(StoreBase):
    def add_notification(
        self,
        kind: str,
        recipient: str,
        subject: str,
        body: str,
        *,
        status: NotificationStatus,
        order_id: str | None = None,
        serial: int | str | None = None,
        reference: str | None = None,
        last_error: str | None = None,
        now: datetime | None = None,
    ) -> NotificationView:
        """A new notification row (StoreConflict when ``reference`` was recorded before)."""
        check_text("notification kind", kind, 32)
        check_text("recipient", recipient, 320)
        check_text("subject", subject, 998)
        check_text("reference", reference, 200, required=False)
        at = now or utcnow()
        with self.write_session() as session:
            row = NotificationRow(
                kind=kind, recipient=normalise_email(recipient), subject=subject, body=body,
                order_id=order_id, serial=None if serial is None else normalise_serial(serial),
                status=NotificationStatus(status).value, attempts=0, created_at=at,
                sent_at=None, last_error=last_error, reference=reference,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return _view(row)

    def record_delivery(
        self,
        notification_id: int,
        *,
        error: str | None,
        actor: str,
        event: str = "sent",
        now: datetime | None = None,
    ) -> NotificationView:
        """One delivery attempt: SENT (``error`` None) or FAILED with the error; audited as
        ``notification``."""
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = session.get(NotificationRow, notification_id, with_for_update=True)
            if row is None:
                raise UnknownNotification(f"no notification {notification_id}")
            row.attempts += 1
            if error is None:
                row.status, row.sent_at, row.last_error = NotificationStatus.SENT.value, at, None
            else:
                row.status, row.last_error = NotificationStatus.FAILED.value, error[:4000]
            details: dict[str, Any] = {
                "event": event, "id": row.id, "kind": row.kind, "recipient": row.recipient,
                "status": row.status, "attempts": row.attempts,
            }  # fmt: skip
            if error is not None:
                details["error"] = error[:500]
            self._audit(session, "notification", actor, row.order_id or row.serial, details, at)
            session.flush()
            return _view(row)

    def get_notification(self, notification_id: int) -> NotificationView:
        with self.read_session() as session:
            row = session.get(NotificationRow, notification_id)
            if row is None:
                raise UnknownNotification(f"no notification {notification_id}")
            return _view(row)

    def notification_by_reference(self, reference: str) -> NotificationView | None:
        with self.read_session() as session:
            row = session.execute(
                select(NotificationRow).where(NotificationRow.reference == reference)
            ).scalar_one_or_none()
            return None if row is None else _view(row)

    def find_notifications(
        self,
        *,
        order_id: str | None = None,
        serial: int | str | None = None,
        recipient: str | None = None,
        status: NotificationStatus | str | None = None,
        kind: str | None = None,
    ) -> list[NotificationView]:
        """Oldest first, filtered by order, certificate, recipient, status and/or kind."""
        query = select(NotificationRow).order_by(NotificationRow.id)
        if order_id is not None:
            query = query.where(NotificationRow.order_id == order_id)
        if serial is not None:
            query = query.where(NotificationRow.serial == normalise_serial(serial))
        if recipient is not None:
            query = query.where(NotificationRow.recipient == normalise_email(recipient))
        if status is not None:
            try:
                wanted = NotificationStatus(str(status).upper())
            except ValueError:
                raise StoreError(f"unknown notification status {status!r}") from None
            query = query.where(NotificationRow.status == wanted.value)
        if kind is not None:
            query = query.where(NotificationRow.kind == kind)
        with self.read_session() as session:
            return [_view(r) for r in session.execute(query).scalars()]

    # -- mutes (manual 3.8.1) ---------------------------------------------------------------

    def set_muted(self, email: str, muted: bool, *, by: str, now: datetime | None = None) -> bool:
        """Mute or unmute ``email``; True when that changed something. Audited."""
        check_text("email", email, 320)
        check_text("actor", by, 256)
        address = normalise_email(email)
        at = now or utcnow()
        with self.audit_transaction() as session:
            row = session.get(MuteRow, address, with_for_update=True)
            changed = (row is None) == muted
            if muted and row is None:
                session.add(MuteRow(email=address, muted_by=by, muted_at=at))
            elif not muted and row is not None:
                session.delete(row)
            if changed:
                details = {"event": "mute" if muted else "unmute", "email": address}
                self._audit(session, "notification", by, address, details, at)
            return changed

    def is_muted(self, email: str) -> bool:
        with self.read_session() as session:
            return session.get(MuteRow, normalise_email(email)) is not None

    # -- additional renewal emails (manual 3.4.5) -------------------------------------------

    def replace_renewal_emails(
        self, serial: int | str, emails: tuple[str, ...], *, by: str, now: datetime | None = None
    ) -> tuple[str, ...]:
        """The certificate's additional renewal emails become ``emails`` (audited)."""
        key = normalise_serial(serial)
        addresses = tuple(dict.fromkeys(normalise_email(e) for e in emails))
        for address in addresses:
            check_text("email", address, 320)
        at = now or utcnow()
        with self.audit_transaction() as session:
            session.execute(delete(RenewalEmailRow).where(RenewalEmailRow.serial == key))
            for address in addresses:
                session.add(RenewalEmailRow(serial=key, email=address))
            details = {"event": "renewal_emails", "serial": key, "emails": list(addresses)}
            self._audit(session, "notification", by, key, details, at)
        return addresses

    def get_renewal_emails(self, serial: int | str) -> tuple[str, ...]:
        with self.read_session() as session:
            rows = session.execute(
                select(RenewalEmailRow.email)
                .where(RenewalEmailRow.serial == normalise_serial(serial))
                .order_by(RenewalEmailRow.id)
            ).scalars()
            return tuple(rows)
