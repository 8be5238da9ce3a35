"""Mail notifications of the RA service (manual 3.5.1 sent notifications and resend, 3.4.5
additional renewal emails, 3.8.1 mute).

Every mail is a row in ``notifications`` before it is sent and says afterwards whether it
went out (SENT), did not (FAILED, with the SMTP error: resend it later) or was not sent
because its recipient muted notifications (MUTED). A mail outage is recorded, never raised:
it must not fail an order. Expiry warnings go out once per certificate, threshold (e.g. 30 and
7 days) and recipient, however often the job runs.

In ``cmcgate ca serve`` (``background=True``) an order confirmation is recorded during the
issuance and sent by a small background outbox: the CMC or REST answer does not wait for the
SMTP server (up to its 30 s timeout per step when it hangs). The PIN, link and challenge mails
stay synchronous: their callers must know whether they left.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509

from ca.periodic import add_periodic
from ca.ra.context import RaContext
from ca.ra.errors import RaError
from ca.ra.mailer import Mailer, MailError, build_message
from ca.ra.templates import render, template
from ca.store.model import (
    CertificateStatus,
    OrderView,
    StoreConflict,
    StoreError,
    UnknownCertificate,
    normalise_serial,
)
from ca.store.notifications import NotificationStatus, NotificationView, UnknownNotification
from ca.store.orders import Store
from config.errors import CmcgateError

log = logging.getLogger(__name__)
#: the background outbox of order confirmations: two SMTP sessions at a time, at most
#: :data:`OUTBOX_LIMIT` mails waiting (more stay FAILED "not sent yet", to be resent)
OUTBOX_LIMIT = 200
_OUTBOX = ThreadPoolExecutor(2, thread_name_prefix="ra-mail")
_OUTBOX_SLOTS = threading.BoundedSemaphore(OUTBOX_LIMIT)
_QUEUED: set[Future[object]] = set()
_QUEUED_LOCK = threading.Lock()


def _forget(future: Future[object]) -> None:
    with _QUEUED_LOCK:
        _QUEUED.discard(future)


def drain_outbox(timeout: float | None = None) -> None:
    """Wait (at most ``timeout`` seconds) until every queued mail was tried: ``ca serve``
    before it closes its authorities; tests before they look at the rows."""
    with _QUEUED_LOCK:
        queued = list(_QUEUED)
    wait(queued, timeout=timeout)


_EMAIL_RE = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z0-9-]{2,63}$")
#: how many additional renewal emails one certificate may have
MAX_RENEWAL_EMAILS = 20
#: the expiry warning job runs this often, and once this long after the service starts
EXPIRY_CHECK_HOURS = 24
EXPIRY_FIRST_RUN = timedelta(minutes=2)


class NotifyError(RaError):
    """Bad input to the notification service (an address, an unknown notification)."""


class UnknownNotificationError(NotifyError):
    status = 404


def check_email(email: str) -> str:
    """A plain ``local@domain`` address, lower-cased; NotifyError otherwise."""
    value = email.strip()
    if not _EMAIL_RE.match(value):
        raise NotifyError(f"{email[:100]!r} is not a mail address")
    return value.lower()


class Notifier:
    """Renders, records and sends the RA's mails; see the module docstring."""

    def __init__(
        self, ca: RaContext, mailer: Mailer | None = None, *, background: bool = False
    ) -> None:
        self.ca = ca
        self.mailer = mailer or Mailer(ca.settings.ra.mail)
        #: order confirmations and expiry warnings go out only to a configured mail server
        self.notifying = mailer is not None or ca.settings.ra.mail_configured
        #: order confirmations are delivered by :data:`_OUTBOX` (``ca serve``: a slow or hung
        #: SMTP server must not hold the CMC/REST answer of the issuance for its timeout)
        self.background = background

    @property
    def store(self) -> Store:
        return self.ca.store

    def _now(self) -> datetime:
        return self.ca.clock().astimezone(UTC)

    # -- sending ----------------------------------------------------------------------------
    def send(
        self,
        kind: str,
        recipient: str,
        *,
        order_id: str | None = None,
        serial: int | str | None = None,
        reference: str | None = None,
        later: bool = False,
        **fields: Any,
    ) -> NotificationView:
        """Render ``kind`` with ``fields`` (``order_id`` and ``serial`` are fields too),
        record it and send it to ``recipient`` (``later``: from the background outbox; the
        row returned is the one recorded, "not sent yet").

        Muted recipients get no mail of a mutable kind (the row says MUTED); an SMTP
        failure leaves the row FAILED with the error (returned, not raised).
        ``reference``: a key that makes this mail once-only (StoreConflict if used before).
        """
        address = check_email(recipient)
        known = {"order_id": order_id, "serial": None if serial is None else str(serial)}
        values = {k: v for k, v in known.items() if v is not None} | fields
        subject, body = render(kind, values)
        kept = render(kind, values, redact=True)[1] if template(kind).secret else body
        muted = template(kind).mutable and self.store.is_muted(address)
        status = NotificationStatus.MUTED if muted else NotificationStatus.FAILED
        row = self.store.add_notification(
            kind, address, subject, kept, status=status, order_id=order_id, serial=serial,
            reference=reference, last_error=None if muted else "not sent yet", now=self._now(),
        )  # fmt: skip
        if muted:
            return row
        if later:
            return self._later(row, body)
        return self._deliver(row, actor="ca", event="sent", body=body)

    def _deliver(
        self, row: NotificationView, *, actor: str, event: str, body: str | None = None
    ) -> NotificationView:
        """Send ``row`` (``body``: the text with its secrets, when the row withholds them)."""
        message = build_message(
            self.mailer.sender, row.recipient, row.subject, body or row.body, now=self._now()
        )
        error: str | None = None
        try:
            self.mailer.send(message)
        except MailError as exc:
            error = str(exc)
            log.warning("notification %d (%s) to %s not sent: %s",
                        row.id, row.kind, row.recipient, error)  # fmt: skip
        return self.store.record_delivery(
            row.id, error=error, actor=actor, event=event, now=self._now()
        )

    def resend(self, notification_id: int, *, by: str) -> NotificationView:
        """Send a recorded notification again (the same subject and text, a new message);
        also one that was MUTED: the operator asks for it explicitly."""
        try:
            row = self.store.get_notification(int(notification_id))
        except UnknownNotification as exc:
            raise UnknownNotificationError(str(exc)) from None
        if template(row.kind).secret:
            raise NotifyError(
                f"notification {row.id} ({row.kind}) carried a secret that is not stored: "
                "send a new one (an email challenge's resend makes a new code)",
                status=409,
            )
        return self._deliver(row, actor=by, event="resent")

    def list(
        self,
        *,
        order_id: str | None = None,
        serial: int | str | None = None,
        recipient: str | None = None,
        status: NotificationStatus | str | None = None,
    ) -> list[NotificationView]:
        wanted = None
        if status is not None:
            try:
                wanted = NotificationStatus(str(status).upper())
            except ValueError:
                raise NotifyError(f"unknown notification status {str(status)[:40]!r}") from None
        return self.store.find_notifications(
            order_id=order_id, serial=None if serial is None else _serial(serial),
            recipient=recipient, status=wanted,
        )  # fmt: skip

    # -- mute (manual 3.8.1) ----------------------------------------------------------------
    def mute(self, email: str, *, by: str) -> None:
        self.store.set_muted(check_email(email), True, by=by, now=self._now())

    def unmute(self, email: str, *, by: str) -> None:
        self.store.set_muted(check_email(email), False, by=by, now=self._now())

    def muted(self, email: str) -> bool:
        return self.store.is_muted(email)

    # -- additional renewal emails (manual 3.4.5) -------------------------------------------
    def set_renewal_emails(self, serial: int | str, emails: Sequence[str],
                           *, by: str) -> tuple[str, ...]:  # fmt: skip
        """Replace the certificate's additional renewal emails (an empty list clears them)."""
        addresses = tuple(check_email(e) for e in emails)
        if len(set(addresses)) > MAX_RENEWAL_EMAILS:
            raise NotifyError(f"at most {MAX_RENEWAL_EMAILS} renewal emails per certificate")
        try:
            certificate = self.store.get_certificate(_serial(serial))
        except UnknownCertificate as exc:
            raise UnknownNotificationError(str(exc)) from None
        return self.store.replace_renewal_emails(
            certificate.serial, addresses, by=by, now=self._now()
        )

    def renewal_emails(self, serial: int | str) -> tuple[str, ...]:
        return self.store.get_renewal_emails(_serial(serial))

    # -- events -----------------------------------------------------------------------------
    def order_issued(self, order: OrderView, certificate: x509.Certificate) -> None:
        """The order confirmation to the certificate's addresses (``ca.on_issued``)."""
        if not self.notifying:
            return
        serial = format(certificate.serial_number, "x")
        for email in dict.fromkeys(e.lower() for e in order.emails):
            try:
                self.send(
                    "order_confirmation", email, order_id=order.id, serial=serial,
                    product=order.product, emails=order.emails, status=order.status.value,
                    later=self.background,
                )  # fmt: skip
            except CmcgateError as exc:  # a bad address must not undo an issued order
                log.warning("order confirmation for %s to %r: %s", order.id, email, exc)

    def _later(self, row: NotificationView, body: str) -> NotificationView:
        """Hand ``row`` to the outbox; a full outbox leaves it FAILED ("not sent yet") for a
        resend, as an SMTP outage would."""
        if not _OUTBOX_SLOTS.acquire(blocking=False):
            log.warning("notification %d to %s not sent: the mail queue is full",
                        row.id, row.recipient)  # fmt: skip
            return row

        def deliver() -> object:
            try:
                return self._deliver(row, actor="ca", event="sent", body=body)
            except Exception as exc:  # noqa: BLE001 - logged; the row says "not sent yet"
                log.error("notification %d not delivered: %s", row.id, exc)
                return None
            finally:
                _OUTBOX_SLOTS.release()

        future = _OUTBOX.submit(deliver)
        with _QUEUED_LOCK:
            _QUEUED.add(future)
        future.add_done_callback(_forget)
        return row

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the queued mails were tried (:func:`drain_outbox`)."""
        drain_outbox(timeout)

    def expiry_warnings(self, now: datetime | None = None) -> int:
        """Warn about valid certificates expiring within each ``expiry_warning_days``;
        returns how many mails were sent. Recipients: the certificate's addresses and its
        additional renewal emails. Each (certificate, threshold, recipient) gets one mail
        ever; one that FAILED is tried again by the next run."""
        if not self.notifying:
            return 0
        at = (now or self._now()).astimezone(UTC)
        sent = 0
        days_list = sorted(self.ca.settings.ra.notifications.expiry_warning_days)
        seen: set[str] = set()
        for days in days_list:  # smallest window first: a cert near expiry gets that warning
            for cert in self.store.find_certificates(
                expiring_within=timedelta(days=days), status=CertificateStatus.VALID, now=at
            ):
                if cert.serial in seen:
                    continue
                seen.add(cert.serial)
                left = max(0, (cert.not_after - at).days)
                extra = self.store.get_renewal_emails(cert.serial)
                recipients = dict.fromkeys([e.lower() for e in cert.emails] + list(extra))
                for email in recipients:
                    sent += self._warn(cert.serial, cert.subject, cert.not_after, days, left, email)
        return sent

    def _warn(self, serial: str, subject: str, not_after: datetime, threshold: int, left: int,
              email: str) -> int:  # fmt: skip
        reference = f"expiry:{serial}:{threshold}:{email}"[:200]
        known = self.store.notification_by_reference(reference)
        if known is not None:
            if known.status is not NotificationStatus.FAILED:
                return 0
            return int(self._deliver(known, actor="ca", event="resent").status
                       is NotificationStatus.SENT)  # fmt: skip
        try:
            row = self.send(
                "expiry_warning", email, serial=serial, reference=reference, subject=subject,
                not_after=not_after.strftime("%Y-%m-%d %H:%M UTC"), days=left,
            )  # fmt: skip
        except StoreConflict:  # another run recorded it first
            return 0
        except CmcgateError as exc:
            log.warning("expiry warning for %s to %r: %s", serial, email, exc)
            return 0
        return int(row.status is NotificationStatus.SENT)


def _serial(serial: int | str) -> str:
    try:
        return normalise_serial(serial)
    except StoreError:
        raise NotifyError(f"{str(serial)[:80]!r} is not a certificate serial number") from None


def schedule_expiry_warnings(scheduler: Any, get_ca: Callable[[], RaContext]) -> None:
    """Daily expiry warnings on ``cmcgate ca serve``'s scheduler, first shortly after start."""

    def run() -> None:
        count = Notifier(get_ca()).expiry_warnings()
        if count:
            log.info("sent %d certificate expiry warning(s)", count)

    add_periodic(scheduler, "expiry-warnings", "expiry warnings", run, hours=EXPIRY_CHECK_HOURS,
                 next_run_time=datetime.now(UTC) + EXPIRY_FIRST_RUN)  # fmt: skip
