"""DATA on the wire: block-wise reading, dot-stuffing, next-hop connection reuse."""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.devservices import SmtpSink, free_port
from gateway.smtp.front import END_MARK, DataTooLarge, crlf_canonical, dot_stuff, read_data
from gateway.smtp.relay import NextHop
from gateway.smtp.server import GatewayHandler, start_front

PIPELINED = b"QUIT\r\n"


def _read(wire: bytes, *, limit: int | None = None, window: int = 16, feed: int = 7):
    """Feed ``wire`` in pieces of ``feed`` bytes to a reader with a ``window`` limit."""

    async def run() -> tuple[bytes | type[Exception], bytes]:
        reader = asyncio.StreamReader(limit=window)
        for at in range(0, len(wire), feed):
            reader.feed_data(wire[at : at + feed])
        reader.feed_eof()
        try:
            result: bytes | type[Exception] = bytes(await read_data(reader, limit))
        except (DataTooLarge, asyncio.IncompleteReadError) as exc:
            result = type(exc)
        return result, await reader.read()

    return asyncio.run(run())


LINE_PIECES = st.sampled_from([b"", b".", b"..", b".x", b"x.", b"\r", b"a\rb", b"abc", b"\xc3\xa9"])
LINES = st.lists(
    st.builds(
        lambda parts, n: b"".join(parts) * n, st.lists(LINE_PIECES, max_size=4), st.integers(1, 9)
    ),
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(lines=LINES, window=st.sampled_from([8, 16, 64, 1 << 18]), feed=st.integers(1, 50))
def test_reading_undoes_stuffing_at_any_chunking(lines, window, feed):
    content = b"".join(line + b"\r\n" for line in lines)
    # Reference stuffing line by line, as RFC 5321 §4.5.2 words it.
    wire = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines)
    if b"\r" not in b"".join(lines):
        assert dot_stuff(content) == wire
    result, rest = _read(wire + END_MARK + PIPELINED, window=window, feed=feed)
    assert result == content
    assert rest == PIPELINED  # what the client pipelined stays for the command loop


def test_empty_message_and_lone_dot_lines():
    assert _read(b".\r\n" + PIPELINED) == (b"", PIPELINED)
    assert _read(b"..\r\n.\r\n") == (b".\r\n", b"")
    assert _read(b"a\r\n...\r\n..x\r\n.\r\n") == (b"a\r\n..\r\n.x\r\n", b"")


def test_a_dot_line_after_a_blank_line_or_a_bare_cr_ends_the_data():
    assert _read(b"h: v\r\n\r\n.\r\n" + PIPELINED) == (b"h: v\r\n\r\n", PIPELINED)
    assert _read(b"a\r\r\n.\r\n") == (b"a\r\r\n", b"")
    # "\r.\r\n" is not the end: the dot does not start a line.
    assert _read(b"a\r.\r\nb\r\n.\r\n") == (b"a\r.\r\nb\r\n", b"")


def test_lines_longer_than_the_window_are_kept_whole():
    long_line = os.urandom(5000).hex().encode()
    wire = b"x" + long_line + b"\r\n.." + long_line + b"\r\n.\r\n"
    expected = b"x" + long_line + b"\r\n." + long_line + b"\r\n"
    assert _read(wire, window=64, feed=1000) == (expected, b"")


def test_over_the_limit_is_refused_after_reading_to_the_end_mark():
    content = b"0123456789\r\n" * 100
    assert _read(content + END_MARK + PIPELINED, limit=1199)[0] is DataTooLarge
    assert _read(content + END_MARK + PIPELINED, limit=1199)[1] == PIPELINED
    assert _read(content + END_MARK, limit=1200) == (content, b"")


def test_connection_lost_before_the_end_mark():
    assert _read(b"a\r\nb\r\n")[0] is asyncio.IncompleteReadError
    assert _read(b"a\r\n.")[0] is asyncio.IncompleteReadError


def test_stuffing_adds_a_missing_final_line_end():
    assert dot_stuff(b".a\r\nb") == b"..a\r\nb\r\n"
    assert dot_stuff(b"") == b""


@pytest.mark.parametrize(
    "content",
    [b"a\n.\r\nMAIL FROM:<x@y>\r\n", b"a\r.\r\nRSET\r\n", b"a\n.\nQUIT\n", b"a\r\n.\nX\r\n"],
)
def test_bare_line_ends_cannot_end_the_data_early(content):
    """SMTP smuggling: a dot between bare CR/LF line ends is stuffed like any other line."""
    wire = dot_stuff(content)
    assert crlf_canonical(wire)
    assert b"\r\n.\r\n" not in b"\r\n" + wire
    # A strict reader gets every line back, with CRLF line ends.
    result, rest = _read(wire + END_MARK)
    assert result == re.sub(rb"\r\n|\r|\n", b"\r\n", content) and rest == b""


# -- through real sockets ------------------------------------------------------------------


@pytest.fixture
def gateway(smtp_sink: SmtpSink) -> Iterator[tuple[int, GatewayHandler]]:
    port = free_port()
    handler = GatewayHandler(NextHop("127.0.0.1", smtp_sink.port, timeout=5))
    controller = start_front(handler, "127.0.0.1", port, max_message_size=10_000_000)
    yield port, handler
    controller.stop()


def _send(port: int, content: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.sendmail("alice@example.org", ["bob@example.net"], content)


def test_awkward_content_arrives_byte_exact(gateway, smtp_sink):
    port, _ = gateway
    content = (
        b"Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\n\r\n"
        + b"a\tb\r\n"
        + (b"z" * 998 + b"\r\n") * 700  # longer than the reader's window
        + b"\r\n\xc3\xa9t\xc3\xa9\r\n..\r\nend\r\n"
    )
    _send(port, content)
    [message] = smtp_sink.received()
    assert message.content == content


def test_next_hop_connections_are_reused_across_client_sessions(gateway, smtp_sink):
    port, _ = gateway
    for n in range(5):
        _send(port, b"Subject: %d\r\n\r\nbody\r\n" % n)
    assert len(smtp_sink.received()) == 5
    assert smtp_sink.sessions == 1


def test_a_pooled_connection_the_next_hop_dropped_is_replaced(gateway, smtp_sink):
    port, _ = gateway
    _send(port, b"Subject: one\r\n\r\nbody\r\n")
    smtp_sink.stop()  # closes the idle pooled connection from the other side
    smtp_sink.start()
    _send(port, b"Subject: two\r\n\r\nbody\r\n")
    assert [m.content.split(b"\r\n")[0] for m in smtp_sink.received()] == [
        b"Subject: one",
        b"Subject: two",
    ]
    assert smtp_sink.sessions == 2


def test_long_lines_are_passed_on_and_the_next_hops_verdict_mirrored(gateway, smtp_sink):
    """The front accepts lines over 1000 octets; the next hop decides (aiosmtpd refuses)."""
    port, _ = gateway
    with pytest.raises(smtplib.SMTPDataError) as refused:
        _send(port, b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\n")
    assert refused.value.smtp_code == 500
    assert smtp_sink.received() == []


def test_bare_line_ends_are_relayed_as_crlf(gateway, smtp_sink):
    port, _ = gateway
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo()
        assert client.mail("alice@example.org")[0] == 250
        assert client.rcpt("bob@example.net")[0] == 250
        assert client.docmd("DATA")[0] == 354
        # Raw on the wire (smtplib's data() would stuff the dot after the bare LF itself).
        client.send(b"Subject: x\r\n\r\na\n.\nb\rc\r\n.\r\n")
        assert client.getreply()[0] == 250
    [message] = smtp_sink.received()
    assert message.content == b"Subject: x\r\n\r\na\r\n.\r\nb\r\nc\r\n"
