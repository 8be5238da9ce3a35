"""The RA's outgoing mail: RFC 5322 text messages handed to one SMTP server (``ra.mail``).

Messages are built here (:func:`build_message`) and sent by :class:`Mailer` over smtplib:
STARTTLS when ``ra.mail.starttls`` (certificate verified against the system trust store),
AUTH when ``username``/``password_file`` are set, a timeout on every step. Any failure is a
:class:`MailError` (temporary, HTTP 503): the caller records it and may resend later; a mail
outage never fails an order (:mod:`ca.ra.notify`).
"""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr

from ca.settings.ra import MailSettings
from config.errors import CmcgateError

#: seconds for connecting and for each SMTP command
SMTP_TIMEOUT = 30.0


class MailError(CmcgateError):
    """The SMTP server could not be reached or did not accept the message (try again later)."""

    status = 503


def build_message(
    sender: str, recipient: str, subject: str, body: str, *, now: datetime | None = None
) -> EmailMessage:
    """A UTF-8 text/plain message with Date, Message-ID and ``Auto-Submitted:
    auto-generated`` (RFC 3834: no auto-replies to it); non-ASCII headers are RFC 2047
    encoded by the ``SMTP`` policy when the message is serialised."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = format_datetime(now or datetime.now(UTC))
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body, charset="utf-8")
    return message


def address_of(header_value: str) -> str:
    """The bare address of ``Name <addr>`` (what goes into MAIL FROM)."""
    return parseaddr(header_value)[1] or header_value


class Mailer:
    """Sends one message per SMTP session (the RA's mails are few and independent)."""

    def __init__(self, settings: MailSettings, *, timeout: float = SMTP_TIMEOUT) -> None:
        self.settings = settings
        self.timeout = timeout

    @property
    def sender(self) -> str:
        return self.settings.sender

    def _password(self) -> str:
        path = self.settings.password_file
        assert path is not None
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise MailError(f"cannot read the SMTP password file {path}: {exc.strerror}") from None

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` to the SMTP server; MailError when it is not accepted."""
        s = self.settings
        recipients = [a.addr_spec for a in _addresses(message, "To")]
        if not recipients:
            raise MailError("the message names no recipient")
        try:
            with smtplib.SMTP(s.host, s.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if s.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if s.username is not None:
                    smtp.login(s.username, self._password())
                refused = smtp.send_message(
                    message, from_addr=address_of(s.sender), to_addrs=recipients
                )
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            detail = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            raise MailError(f"SMTP {s.host}:{s.port} answered {exc.smtp_code} {detail}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailError(f"SMTP {s.host}:{s.port} refused {', '.join(exc.recipients)}") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise MailError(f"SMTP {s.host}:{s.port}: {text}") from None
        if refused:
            raise MailError(f"SMTP {s.host}:{s.port} refused {', '.join(refused)}")


def _addresses(message: EmailMessage, name: str) -> tuple[Address, ...]:
    header = message[name]
    return tuple(getattr(header, "addresses", ()) or ())
