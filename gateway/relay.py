"""The next hop, spoken to in step with the client (Postfix ``smtpd_proxy_filter`` style).

The gateway opens its next-hop transaction when the client sends MAIL FROM, forwards each
RCPT TO and mirrors the next hop's reply, and answers the client's DATA only with the next
hop's answer to the transformed message.  No home-made queue: until the next hop says 250,
the client keeps the mail (RFC 5321 §6.1: the receiver takes responsibility only with 250).

Every failure to reach the next hop is temporary (4xx) for the client.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiosmtplib

from config.errors import CmcgateError


@dataclass(frozen=True)
class Reply:
    """An SMTP reply to hand back to the client, e.g. ``Reply(250, "2.0.0 OK")``."""

    code: int
    text: str

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


NEXT_HOP_DOWN = Reply(451, "4.4.1 next hop not reachable, try again later")
NEXT_HOP_LOST = Reply(451, "4.4.2 connection to next hop lost, try again later")


class RelayError(CmcgateError):
    """The next hop could not be used; :attr:`reply` is what the client gets."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.line)
        self.reply = reply


@dataclass(frozen=True)
class NextHop:
    """Where transformed mail goes: host, port, timeouts and TLS."""

    host: str
    port: int = 25
    timeout: float = 60.0
    #: ``None``: STARTTLS when offered; ``True``: required; ``False``: never.
    starttls: bool | None = None
    tls_context: ssl.SSLContext | None = None
    local_hostname: str | None = None


def _reply_of(exc: aiosmtplib.SMTPResponseException) -> Reply:
    return Reply(exc.code, exc.message.replace("\r", " ").replace("\n", " ").strip() or "")


class NextHopTransaction:
    """One connection to the next hop, carrying one or more mail transactions."""

    def __init__(self, next_hop: NextHop) -> None:
        self.next_hop = next_hop
        self._smtp: aiosmtplib.SMTP | None = None

    async def open(self) -> None:
        hop = self.next_hop
        smtp = aiosmtplib.SMTP(
            hostname=hop.host,
            port=hop.port,
            timeout=hop.timeout,
            start_tls=hop.starttls,
            tls_context=hop.tls_context,
            local_hostname=hop.local_hostname,
            validate_certs=hop.tls_context is not None,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPResponseException as exc:
            raise RelayError(_temporary(_reply_of(exc))) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            raise RelayError(NEXT_HOP_DOWN) from None
        self._smtp = smtp

    async def mail(self, sender: str, options: list[str] | None = None) -> Reply:
        smtp = self._require()
        try:
            response = await smtp.mail(sender, options=options or [])
        except aiosmtplib.SMTPResponseException as exc:
            return _reply_of(exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            raise RelayError(NEXT_HOP_LOST) from None
        return Reply(response.code, response.message)

    async def rcpt(self, recipient: str, options: list[str] | None = None) -> Reply:
        smtp = self._require()
        try:
            response = await smtp.rcpt(recipient, options=options or [])
        except aiosmtplib.SMTPResponseException as exc:
            return _reply_of(exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            raise RelayError(NEXT_HOP_LOST) from None
        return Reply(response.code, response.message)

    async def data(self, message: bytes) -> Reply:
        smtp = self._require()
        try:
            response = await smtp.data(message)
        except aiosmtplib.SMTPResponseException as exc:
            return _reply_of(exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            raise RelayError(NEXT_HOP_LOST) from None
        return Reply(response.code, response.message)

    async def rset(self) -> None:
        smtp = self._require()
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            raise RelayError(NEXT_HOP_LOST) from None

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            smtp.close()

    def _require(self) -> aiosmtplib.SMTP:
        if self._smtp is None:
            raise RelayError(NEXT_HOP_LOST)
        return self._smtp


def _temporary(reply: Reply) -> Reply:
    """A greeting refusal (554) still means: keep the mail and retry later."""
    if reply.temporary:
        return reply
    return Reply(451, f"4.4.1 next hop refused the connection: {reply.code} {reply.text}")
