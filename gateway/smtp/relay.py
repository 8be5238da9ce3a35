"""The next hop, spoken to in step with the client (Postfix ``smtpd_proxy_filter`` style).

The gateway opens its next-hop transaction when the client sends MAIL FROM, forwards each
RCPT TO and mirrors the next hop's reply, and answers the client's DATA only with the next
hop's answer to the transformed message.  No home-made queue: until the next hop says 250,
the client keeps the mail (RFC 5321 §6.1: the receiver takes responsibility only with 250).

Every failure to reach the next hop is temporary (4xx) for the client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosmtplib

from config.errors import CmcgateError
from gateway.smtp.front import END_MARK, dot_stuff

log = logging.getLogger("cmcgate.gateway")


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
#: What needs SMTPUTF8 (RFC 6531) cannot go to a next hop that does not offer it: refused
#: for good, as Postfix bounces it ("SMTPUTF8 is required, but was not offered").
NO_SMTPUTF8 = Reply(553, "5.6.7 non-ASCII address, and the next hop does not support SMTPUTF8")
NO_SMTPUTF8_HEADER = Reply(
    554, "5.6.7 non-ASCII message header, and the next hop does not support SMTPUTF8"
)
NEXT_HOP_LOST = Reply(451, "4.4.2 connection to next hop lost, try again later")


class RelayError(CmcgateError):
    """The next hop could not be used; :attr:`reply` is what the client gets, :attr:`detail`
    what went wrong (for the log: the client's reply does not say)."""

    def __init__(self, reply: Reply, detail: str = "") -> None:
        super().__init__(reply.line)
        self.reply = reply
        self.detail = detail or reply.line


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


class NextHopPool:
    """Idle next-hop connections kept for the next transaction (as Postfix's smtp does).

    A connection goes back into the pool only between transactions (after DATA's reply,
    after a successful RSET); it is closed with QUIT after ``idle_time`` seconds unused or
    when the pool already holds ``max_idle``.  Used only on the event loop that made it.
    """

    def __init__(self, next_hop: NextHop, *, max_idle: int = 32, idle_time: float = 5.0) -> None:
        self.next_hop = next_hop
        self.max_idle = max_idle
        self.idle_time = idle_time
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []
        self._timer: asyncio.TimerHandle | None = None

    def take(self) -> aiosmtplib.SMTP | None:
        """An idle, still connected connection, or None."""
        while self._idle:
            _, smtp = self._idle.pop()
            if smtp.is_connected:
                return smtp
        return None

    def give(self, smtp: aiosmtplib.SMTP) -> bool:
        """Keep ``smtp`` for reuse; False (caller closes it) when the pool is full."""
        if len(self._idle) >= self.max_idle or not smtp.is_connected:
            return False
        loop = asyncio.get_running_loop()
        self._idle.append((loop.time(), smtp))
        if self._timer is None:
            self._timer = loop.call_later(self.idle_time, self._expire)
        return True

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = None
        cutoff = loop.time() - self.idle_time
        old = [smtp for since, smtp in self._idle if since <= cutoff]
        self._idle = [(since, smtp) for since, smtp in self._idle if since > cutoff]
        for smtp in old:
            loop.create_task(_quit(smtp))
        if self._idle:
            self._timer = loop.call_later(self.idle_time, self._expire)

    def close(self) -> None:
        """Drop every idle connection (QUIT in the background)."""
        for smtp in self._take_all():
            asyncio.get_running_loop().create_task(_quit(smtp))

    async def aclose(self) -> None:
        """QUIT every idle connection and wait for it (before the loop stops)."""
        await asyncio.gather(*(_quit(smtp) for smtp in self._take_all()))

    def _take_all(self) -> list[aiosmtplib.SMTP]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        return [smtp for _, smtp in idle]


class NextHopTransaction:
    """One connection to the next hop, carrying one or more mail transactions.

    With a :class:`NextHopPool` the connection is taken from and given back to the pool; a
    pooled connection that turns out to be gone when MAIL is sent is replaced by a new one
    once, transparently.
    """

    def __init__(self, next_hop: NextHop, pool: NextHopPool | None = None) -> None:
        self.next_hop = next_hop
        self.pool = pool
        self._smtp: aiosmtplib.SMTP | None = None
        self._reused = False
        #: A MAIL was accepted and its transaction not yet ended by DATA or RSET.
        self._in_transaction = False
        #: The client's MAIL parameters (given again for each copy of a split message).
        self.mail_options: list[str] = []
        #: SMTPUTF8 asked for by the client: True when the next hop has it, False when not
        #: (then only all-ASCII addresses and headers go through); None when not asked for.
        self._smtputf8: bool | None = None

    async def open(self) -> None:
        pooled = self.pool.take() if self.pool is not None else None
        if pooled is not None:
            self._smtp, self._reused = pooled, True
            return
        await self._connect()

    async def _connect(self) -> None:
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
            reply = _reply_of(exc)
            raise RelayError(_temporary(reply), f"{self._where()} greeted {reply.line}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RelayError(NEXT_HOP_DOWN, f"{self._where()} not reachable: {_why(exc)}") from None
        self._smtp, self._reused = smtp, False

    async def mail(self, sender: str, options: list[str] | None = None) -> Reply:
        self.mail_options = list(options or [])
        try:
            reply = await self._mail(sender, options)
        except RelayError:
            if not self._reused:
                raise
            reply = NEXT_HOP_LOST
        if self._reused and reply.code in (421, NEXT_HOP_LOST.code):
            # The next hop closed the idle connection (e.g. its own timeout): start afresh.
            self._drop()
            await self._connect()
            reply = await self._mail(sender, options)
        self._reused = False
        self._in_transaction = reply.ok
        return reply

    async def _mail(self, sender: str, options: list[str] | None) -> Reply:
        smtp = self._require()
        options = list(options or [])
        self._smtputf8 = None
        try:
            if any(option.upper() == "SMTPUTF8" for option in options):
                if smtp.is_ehlo_or_helo_needed:
                    await smtp.ehlo()
                self._smtputf8 = smtp.supports_extension("smtputf8")
                if not self._smtputf8:
                    if not sender.isascii():
                        return NO_SMTPUTF8
                    options = [option for option in options if option.upper() != "SMTPUTF8"]
            response = await smtp.mail(sender, options=options, encoding=self._encoding)
        except aiosmtplib.SMTPResponseException as exc:
            return _reply_of(exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RelayError(NEXT_HOP_LOST, self._lost(exc)) from None
        return Reply(response.code, response.message)

    @property
    def _encoding(self) -> str:
        return "utf-8" if self._smtputf8 else "ascii"

    async def rcpt(self, recipient: str, options: list[str] | None = None) -> Reply:
        smtp = self._require()
        if not recipient.isascii() and not self._smtputf8:
            return NO_SMTPUTF8
        try:
            response = await smtp.rcpt(recipient, options=options or [], encoding=self._encoding)
        except aiosmtplib.SMTPResponseException as exc:
            return _reply_of(exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RelayError(NEXT_HOP_LOST, self._lost(exc)) from None
        return Reply(response.code, response.message)

    async def data(self, message: bytes) -> Reply:
        """Send ``message`` and return the next hop's reply to it.

        The content is dot-stuffed by :func:`gateway.smtp.front.dot_stuff` (one ``bytes.replace``
        after bare line ends are made CRLF) and written in 1 MB views, instead of
        aiosmtplib's ``data()``, which runs two whole-message regular expressions first
        (0.45 s for 35 MB).  Commands and replies still go through aiosmtplib.
        """
        smtp = self._require()
        if self._smtputf8 is False and not _header_is_ascii(message):
            return NO_SMTPUTF8_HEADER  # the transaction stays open: close() sends RSET
        try:
            start = await smtp.execute_command(b"DATA")
            if start.code != 354:
                # The transaction stays open at the next hop: close() sends RSET.
                return Reply(start.code, start.message)
            protocol = smtp.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("Connection lost")
            await _write_drained(protocol, dot_stuff(message))
            protocol.write(END_MARK)
            response = await protocol.read_response(timeout=self.next_hop.timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._drop()
            raise RelayError(NEXT_HOP_LOST, self._lost(exc)) from None
        self._in_transaction = False
        return Reply(response.code, response.message.strip())

    async def rset(self) -> None:
        smtp = self._require()
        try:
            await smtp.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RelayError(NEXT_HOP_LOST, self._lost(exc)) from None
        self._in_transaction = False

    async def close(self) -> None:
        """End the session: back into the pool when there is one, QUIT otherwise."""
        smtp = self._smtp
        if smtp is None:
            return
        if self.pool is not None and smtp.is_connected:
            try:
                if self._in_transaction:
                    await self.rset()
                self._smtp = None
                if self.pool.give(smtp):
                    return
            except RelayError:
                pass
        self._smtp = None
        await _quit(smtp)

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _require(self) -> aiosmtplib.SMTP:
        if self._smtp is None:
            raise RelayError(NEXT_HOP_LOST, f"no connection to {self._where()}")
        return self._smtp

    def _where(self) -> str:
        return f"next hop {self.next_hop.host}:{self.next_hop.port}"

    def _lost(self, exc: BaseException) -> str:
        return f"connection to {self._where()} lost: {_why(exc)}"


async def send_copy(
    hop: NextHop | NextHopTransaction,
    sender: str,
    mail_options: Sequence[str],
    recipients: Sequence[str],
    content: bytes,
) -> Reply:
    """One mail transaction (MAIL, each RCPT, DATA); the first refusal or DATA's reply.

    ``hop`` is an open :class:`NextHopTransaction` to use (a refused transaction is reset,
    so the connection can carry the next one), or a :class:`NextHop` to connect to and QUIT
    afterwards.  Not reaching or losing the next hop is a temporary reply, not an exception.
    """
    own = isinstance(hop, NextHop)
    transaction = NextHopTransaction(hop) if isinstance(hop, NextHop) else hop
    try:
        if own:
            await transaction.open()
        reply = await transaction.mail(sender, list(mail_options))
        for recipient in recipients:
            if reply.ok:
                reply = await transaction.rcpt(recipient)
        if reply.ok:
            reply = await transaction.data(content)
        if not reply.ok and not own:
            await transaction.rset()
        return reply
    except RelayError as exc:
        return exc.reply
    finally:
        if own:
            await transaction.close()


#: Content goes to the socket in pieces of this size, each once the previous ones left.
WRITE_CHUNK = 1 << 20


async def _write_drained(protocol: Any, data: bytes) -> None:
    """Write ``data`` without the transport holding a copy of all of it.

    asyncio's transport copies whatever the socket does not take at once into its own
    buffer (a second copy of a 36 MB message).  Views of ``data`` are written one
    :data:`WRITE_CHUNK` at a time, waiting for the transport's flow control (aiosmtplib's
    protocol is an asyncio ``FlowControlMixin``, whose ``_drain_helper`` is what
    ``StreamWriter.drain`` awaits) whenever it says the buffer is full.
    """
    view = memoryview(data)
    if len(view) <= WRITE_CHUNK:
        protocol.write(data)
        return
    if protocol.transport is not None:
        protocol.transport.set_write_buffer_limits(high=2 * WRITE_CHUNK)
    for start in range(0, len(view), WRITE_CHUNK):
        protocol.write(view[start : start + WRITE_CHUNK])
        await protocol._drain_helper()


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _header_is_ascii(message: bytes) -> bool:
    end = _HEADER_END.search(message)
    return message[: end.start() if end else len(message)].isascii()


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        smtp.close()


def _why(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _temporary(reply: Reply) -> Reply:
    """A greeting refusal (554) still means: keep the mail and retry later."""
    if reply.temporary:
        return reply
    return Reply(451, f"4.4.1 next hop refused the connection: {reply.code} {reply.text}")
