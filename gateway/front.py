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

The front's :class:`FrontSMTP` is aiosmtpd's protocol with only ``DATA`` replaced; every
other command, STARTTLS, AUTH and the limits stay aiosmtpd's.  It also logs each refusal
aiosmtpd makes itself (size, syntax, TLS and AUTH requirements); the handler logs its own
refusals and marks them in ``session.cmcgate_logged``, so nothing is logged twice.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import Any, AnyStr

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, Envelope

#: Reader window during DATA: ``readuntil`` hands over at most this much per call, and the
#: transport stops reading from the socket at twice this much buffered.
CHUNK = 1 << 18

END_MARK = b".\r\n"

log = logging.getLogger("cmcgate.gateway")

#: Refusals aiosmtpd logs itself (unrecognised and bogus commands), not logged again here.
_SELF_LOGGED = ("500", "502")


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


class FrontSMTP(SMTP):
    """aiosmtpd's SMTP with DATA read in blocks (see module doc)."""

    # Also the reader's flow-control window; command lines are still limited by
    # aiosmtpd's command_size_limit (512).
    line_length_limit = CHUNK

    async def push(self, status: AnyStr) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        session = self.session
        logged = getattr(session, "cmcgate_logged", None)
        if session is not None and logged is not None:
            session.cmcgate_logged = None  # type: ignore[attr-defined]
        if text[:1] in ("4", "5") and text != logged and not text.startswith(_SELF_LOGGED):
            peer = getattr(session, "peer", None)
            envelope = self.envelope
            sender = getattr(envelope, "mail_from", None)
            log.info(
                "client=%s refused: %s%s",
                peer[0] if isinstance(peer, tuple) else peer,
                text,
                f" (from=<{sender}>)" if sender is not None else "",
            )
        await super().push(status)

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
            data = await read_data(self._reader, self.data_size_limit)
        except DataTooLarge:
            await self.push("552 5.3.4 Error: Too much mail data")
            self._set_post_data_state()
            return
        except asyncio.IncompleteReadError:
            # The client went away without the end mark: nothing was accepted.
            self._writer.close()
            return
        envelope.content = envelope.original_content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class FrontController(Controller):
    """aiosmtpd's threaded controller serving :class:`FrontSMTP`.

    ``reuse_port``: the listening socket shares its port with the other worker processes
    (``SO_REUSEPORT``; the kernel spreads connections over them).  aiosmtpd's start-up
    self-test connects to the port, which may then reach another worker; instead the
    protocol factory is run once on the loop, which is what the test checks.
    """

    def __init__(self, handler: Any, *, reuse_port: bool = False, **kwargs: Any) -> None:
        self.reuse_port = reuse_port
        super().__init__(handler, **kwargs)

    def factory(self) -> Any:
        return FrontSMTP(self.handler, **self.SMTP_kwargs)

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
        if self.reuse_port:
            self.loop.call_soon_threadsafe(self._factory_invoker)
        else:
            super()._trigger_server()
