"""SMTP wire handling of message content: reading DATA in large chunks, dot-stuffing.

aiosmtpd reads DATA one line at a time (a ``readuntil`` per line, a bytes object per line,
a join at the end) behind a 2 KB flow-control window, and aiosmtplib runs two
whole-message regular expressions before it sends.  For a 25 MB attachment that was most of
the gateway's time and half of its memory.  Here both directions work on large blocks:

* :func:`read_data` reads up to the end mark with ``readuntil(b"\\r\\n.")`` — it stops only
  at lines that start with a dot — removes the transparency dots (RFC 5321 §4.5.2) as it
  goes, and builds one buffer.  Anything the client pipelined after the end mark stays in
  the reader for the command loop.
* :func:`dot_stuff` adds the transparency dots with one ``bytes.replace`` (after making
  bare CRs and LFs CRLF, so nothing can end the DATA early at the next hop).

The front's :class:`FrontSMTP` is aiosmtpd's protocol with ``DATA`` replaced and every
command line checked before aiosmtpd parses it (:class:`_CheckedCommands`: control characters
and invalid UTF-8 get ``501 5.5.2``, not an exception text); the other commands, STARTTLS and
AUTH stay aiosmtpd's.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, AnyStr

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, Envelope, syntax

from gateway.smtp.auth import AuthenticatingSMTP

log = logging.getLogger("cmcgate.gateway")

#: Refusals aiosmtpd logs itself (unrecognised and bogus commands), not logged again here.
_SELF_LOGGED = ("500", "502")

#: Reader window during DATA: ``readuntil`` hands over at most this much per call, and the
#: transport stops reading from the socket at twice this much buffered.
CHUNK = 1 << 18

END_MARK = b".\r\n"


class DataTooLarge(Exception):  # noqa: N818 - control flow inside this module only
    """The client sent more than the size limit (everything up to the end mark was read)."""


async def read_data(reader: asyncio.StreamReader, limit: int | None) -> bytes:
    """Read message content after ``354`` up to the end mark; returns it un-stuffed.

    Raises :class:`DataTooLarge` when the content exceeds ``limit`` (the rest is read and
    discarded first, so the session stays in step), and ``asyncio.IncompleteReadError``
    when the connection ends before the end mark.

    The pieces go into a ``BytesIO``, whose ``getvalue()`` hands its buffer over without a
    copy: the message exists once, not as a buffer plus a ``bytes`` copy of it.
    """
    out = io.BytesIO()
    too_large = False

    def keep(piece: bytes | memoryview) -> None:
        nonlocal too_large
        if too_large:
            return
        out.write(piece)
        if limit and out.tell() > limit:
            too_large = True
            out.seek(0)
            out.truncate()

    # Where the bytes read so far end: at a line start (after CRLF, or nothing read yet),
    # right after a CR, right after a dot that starts a line, or anywhere else in a line.
    at_line_start, after_cr, after_dot = True, False, False
    while True:
        if after_dot:
            try:
                piece = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                piece = await reader.readexactly(exc.consumed)
            else:
                if piece == b"\r\n":
                    break  # CRLF . CRLF: the end mark
            after_dot = False
        elif at_line_start or after_cr:
            piece = await reader.readexactly(1)
            if at_line_start and piece == b".":
                at_line_start, after_dot = False, True
                continue  # the transparency dot itself is dropped
        else:
            # The last byte read is not a CR, so a CRLF "." cannot straddle what was read.
            try:
                piece = await reader.readuntil(b"\r\n.")
            except asyncio.LimitOverrunError as exc:
                # No line starts with a dot in the buffered window; take all of it but
                # the last two bytes, which may begin one.
                piece = await reader.readexactly(exc.consumed)
            else:
                keep(memoryview(piece)[:-1])
                at_line_start, after_cr, after_dot = False, False, True
                continue
        keep(piece)
        at_line_start = piece.endswith(b"\r\n") or (after_cr and piece == b"\n")
        after_cr = piece.endswith(b"\r")
    if too_large:
        raise DataTooLarge()
    return out.getvalue()


_LINE_END = re.compile(rb"\r\n|\r|\n")


def crlf_canonical(content: bytes) -> bool:
    """Every CR and every LF of ``content`` is part of a CRLF (three C-speed counts)."""
    lf = content.count(b"\n")
    return lf == content.count(b"\r") and lf == content.count(b"\r\n")


def dot_stuff(content: bytes) -> bytes:
    """``content`` made transparent for DATA (RFC 5321 §4.5.2), ending in CRLF.

    The end mark (:data:`END_MARK`) is not included.  A bare CR or LF becomes CRLF first
    (as aiosmtplib does): passed on raw, a ``LF . CRLF`` that this front read as content
    could end the DATA early at a lenient next hop and smuggle what follows in as commands.
    A missing final CRLF is added.  Canonical content without lines that start with a dot
    (base64 and almost all mail) is returned without a copy.
    """
    if not crlf_canonical(content):
        content = _LINE_END.sub(b"\r\n", content)
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed


#: C0 controls and DEL: never part of an SMTP command (RFC 5321 §4.1.1), and NUL or ESC
#: passed on would reach the next hop (aiosmtplib refuses them with an exception).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_CHARACTER = "501 5.5.2 Syntax error: control character in command"
BAD_UTF8 = "501 5.5.2 Syntax error: invalid UTF-8 in command"

Command = Callable[[str | None], Awaitable[None]]


def _command_problem(text: str | None) -> str | None:
    if not text:
        return None
    if _CONTROL.search(text):
        return CONTROL_CHARACTER
    if not text.isascii():
        try:
            text.encode("utf-8")  # aiosmtpd decoded with surrogateescape: bad bytes remain
        except UnicodeEncodeError:
            return BAD_UTF8
    return None


class _CheckedCommands(dict[str, Command]):
    """aiosmtpd's table of command methods, each checked by :func:`_command_problem` first.

    aiosmtpd looks a command up with ``get``; a command name with a control character gets
    the 501 (instead of an echo of itself in ``500 command not recognized``).
    """

    def __init__(self, protocol: SMTP, methods: dict[str, Command]) -> None:
        super().__init__({name: self._checked(protocol, m) for name, m in methods.items()})
        self._protocol = protocol

    @staticmethod
    def _checked(protocol: SMTP, method: Command) -> Command:
        @functools.wraps(method)  # keeps aiosmtpd's HELP attributes
        async def checked(arg: str | None) -> None:
            problem = _command_problem(arg)
            if problem is None:
                await method(arg)
            else:
                await protocol.push(problem)

        return checked

    def get(self, command: str, default: Any = None) -> Any:  # type: ignore[override]
        if _CONTROL.search(command):
            return self._refuse
        return super().get(command, default)

    async def _refuse(self, arg: str | None) -> None:
        await self._protocol.push(CONTROL_CHARACTER)


class SessionSlots:
    """How many sessions a front serves at once (used on its event loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def give(self) -> None:
        self.active -= 1


#: Postfix's smtpd_junk_command_limit: a session cannot be kept open by NOOPs for ever.
JUNK_COMMAND_LIMIT = 100


class FrontSMTP(AuthenticatingSMTP):
    """aiosmtpd's SMTP with DATA read in blocks and command lines checked (see module doc).

    Limits (Postfix ``smtpd_client_connection_count_limit`` and ``smtpd_timeout`` style):
    beyond ``slots`` sessions a connection gets ``421 4.7.0`` and is closed; a client that
    sends nothing for aiosmtpd's ``timeout`` seconds gets ``421 4.4.2`` and is closed.  The
    timeout counts the client's time only: it restarts while DATA arrives and stops while
    the gateway works on a command (pipeline, next hop).
    """

    # Also the reader's flow-control window; command lines are still limited by
    # aiosmtpd's command_size_limit (512).
    line_length_limit = CHUNK

    def __init__(self, handler: Any, *, slots: SessionSlots | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("command_call_limit", _junk_limits())
        super().__init__(handler, **kwargs)
        self._smtp_methods = _CheckedCommands(self, self._smtp_methods)
        self._slots = slots
        self._holds_slot = False
        self._refused = False
        self._in_data = False
        self._last_progress = 0.0

    async def push(self, status: AnyStr) -> None:
        """Every refusal aiosmtpd makes itself (size, syntax, TLS, AUTH) is logged once; the
        handler logs its own and marks them in ``session.cmcgate_logged``."""
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        session = self.session
        logged = getattr(session, "cmcgate_logged", None)
        if session is not None and logged is not None:
            session.cmcgate_logged = None  # type: ignore[attr-defined]
        if text[:1] in ("4", "5") and text != logged and not text.startswith(_SELF_LOGGED):
            peer = getattr(session, "peer", None)
            sender = getattr(self.envelope, "mail_from", None)
            log.info(
                "client=%s refused: %s%s",
                peer[0] if isinstance(peer, tuple) else peer,
                text,
                f" (from=<{sender}>)" if sender is not None else "",
            )
        await super().push(status)

    # -- session count and idle timeout ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and self._slots is not None:  # not the STARTTLS call
            if not self._slots.take():
                self._refused = True
                log.warning(
                    "%r refused: %d sessions already", transport.get_extra_info("peername"),
                    self._slots.limit,
                )  # fmt: skip
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(
                    f"421 4.7.0 {self.hostname} Error: too many sessions, try again later\r\n"
                    .encode()
                )  # fmt: skip
                transport.close()
                return
            self._holds_slot = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return  # aiosmtpd never saw this connection
        try:
            super().connection_lost(error)
        finally:
            if self._holds_slot and self._slots is not None:
                self._holds_slot = False
                self._slots.give()

    def _timeout_cb(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if not transport.is_closing():
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode())
        super()._timeout_cb()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_data:
            self._data_arrived()

    def _data_arrived(self) -> None:
        """Message content is coming in: the client is not idle (the timer is restarted at
        most 10 times per timeout, not for every packet)."""
        now = self.loop.time()
        if now - self._last_progress >= self._timeout_duration / 10:
            self._last_progress = now
            self._reset_timeout()

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        # The client waits for the gateway now: its idle time does not run.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            if self.transport is not None:
                self._reset_timeout()

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's naming
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        envelope: Envelope | None = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            self._in_data = True
            data = await read_data(self._reader, self.data_size_limit)
        except DataTooLarge:
            await self.push("552 5.3.4 Error: Too much mail data")
            self._set_post_data_state()
            return
        except asyncio.IncompleteReadError:
            # The client went away without the end mark: nothing was accepted.
            self._writer.close()
            return
        finally:
            self._in_data = False
        envelope.content = envelope.original_content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class FrontController(Controller):
    """aiosmtpd's threaded controller serving :class:`FrontSMTP`.

    ``reuse_port``: the listening socket shares its port with the other worker processes
    (``SO_REUSEPORT``; the kernel spreads connections over them).  aiosmtpd's start-up
    self-test connects to the port, which may then reach another worker (and takes one of
    the ``max_sessions`` slots for a moment); instead the protocol factory is run once on
    the loop, which is what the test checks.
    """

    def __init__(
        self,
        handler: Any,
        *,
        reuse_port: bool = False,
        max_sessions: int = 100,
        **kwargs: Any,
    ) -> None:
        self.reuse_port = reuse_port
        self.slots = SessionSlots(max_sessions)
        super().__init__(handler, **kwargs)

    def factory(self) -> Any:
        return FrontSMTP(self.handler, slots=self.slots, **self.SMTP_kwargs)

    # aiosmtpd's documented extension points ("overridden by subclasses"):
    def _create_server(self) -> Any:
        return self.loop.create_server(
            self._factory_invoker,
            host=self.hostname,
            port=self.port,
            ssl=self.ssl_context,
            reuse_port=self.reuse_port or None,
        )

    def _trigger_server(self) -> None:
        self.loop.call_soon_threadsafe(self._factory_invoker)


def _junk_limits() -> dict[str, int]:
    limits = dict.fromkeys(("NOOP", "VRFY", "EXPN", "HELP"), JUNK_COMMAND_LIMIT)
    # "*" is every other command: MAIL, RCPT, DATA, RSET unlimited on a pooled connection.
    return {**limits, "*": 1 << 62}
