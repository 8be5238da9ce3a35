"""The SMTP front and relay against hostile or unusual peers, on real sockets (issue 13)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.properties import loads
from gateway.devservices import SmtpSink, free_port
from gateway.smtp.relay import NextHop
from gateway.smtp.server import GatewayHandler, pass_through, start_front
from gateway.smtp.service import next_hop
from tests.gateway.certs import make_ca, tls_server_files

MESSAGE = b"From: alice@example.org\r\nTo: bob@partner.example\r\nSubject: hi\r\n\r\nhello\r\n"


class Front:
    """An in-process gateway front built from properties (the next hop as configured)."""

    def __init__(self, tmp: Path, props: str, **front: Any) -> None:
        self.config = loads(props, tmp / "gateway.properties")
        self.handler = GatewayHandler(next_hop(self.config))
        self.port = free_port()
        front.setdefault("max_message_size", 1_000_000)
        self.controller = start_front(self.handler, "127.0.0.1", self.port, **front)

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=30)


@pytest.fixture
def make_front(tmp_path: Path) -> Iterator[Callable[..., Front]]:
    fronts: list[Front] = []

    def make(props: str, **front: Any) -> Front:
        fronts.append(Front(tmp_path, props, **front))
        return fronts[-1]

    yield make
    for front in fronts:
        front.controller.stop()


@pytest.fixture
def tls_sink(tmp_path: Path) -> Iterator[tuple[SmtpSink, Path]]:
    """A next hop offering STARTTLS with a self-signed certificate (and that certificate)."""
    cert, key = tls_server_files(tmp_path, stem="next-hop")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = SmtpSink(tls_context=context).start()
    try:
        yield sink, cert
    finally:
        sink.stop()


# -- nextHopTls=required verifies the next hop's certificate (item 3) ----------------------
def test_required_tls_without_ca_file_refuses_a_self_signed_next_hop(make_front, tls_sink):
    sink, _ = tls_sink
    front = make_front(
        f"cmcgate.gateway.nextHop=127.0.0.1:{sink.port}\ncmcgate.gateway.nextHopTls=required\n"
    )
    with front.client() as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE)
    assert refused.value.smtp_code == 451  # temporary: the MTA in front keeps the mail
    assert sink.received() == []


def test_required_tls_with_the_ca_file_delivers_over_tls(make_front, tls_sink):
    sink, cert = tls_sink
    front = make_front(
        f"cmcgate.gateway.nextHop=127.0.0.1:{sink.port}\ncmcgate.gateway.nextHopTls=required\n"
        f"cmcgate.gateway.nextHopCaFile={cert}\n"
    )
    with front.client() as client:
        assert client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE) == {}
    [received] = sink.received()
    assert received.tls


def test_required_tls_refuses_a_next_hop_certified_by_another_ca(make_front, tmp_path):
    other_ca = make_ca("Some Other CA", kind="ec")
    cert, key = tls_server_files(tmp_path, ca=make_ca("Next Hop CA", kind="ec"), stem="hop")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with SmtpSink(tls_context=context) as sink:
        front = make_front(
            f"cmcgate.gateway.nextHop=127.0.0.1:{sink.port}\ncmcgate.gateway.nextHopTls=required\n"
            f"cmcgate.gateway.nextHopCaFile={other_ca.write(tmp_path)}\n"
        )
        with front.client() as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE)
        assert refused.value.smtp_code == 451
        assert sink.received() == []


class Wire:
    """A raw SMTP session: bytes out, reply lines in (for what smtplib will not send)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        lines = []
        while True:
            line = self.file.readline()
            lines.append(line)
            if not line or line[3:4] != b"-":
                return b"".join(lines)

    def command(self, line: bytes | str) -> bytes:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _no_internals(reply: bytes) -> None:
    for word in (b"Error: (", b"Exception", b"Traceback", b"codec", b"ValueError"):
        assert word not in reply, reply


UTF8_MESSAGE = (
    "From: Jürgen <jürgen@example.org>\r\nTo: bøb@partner.example\r\nSubject: grüße\r\n"
    "\r\nhallo\r\n"
).encode()


def pass_through_front(make_front: Callable[..., Front], sink: SmtpSink) -> Front:
    return make_front(f"cmcgate.gateway.nextHop=127.0.0.1:{sink.port}\n")


# -- SMTPUTF8 as RFC 6531 wants it, no Python internals in replies (item 5) -----------------
def test_non_ascii_addresses_with_smtputf8_are_relayed_with_smtputf8(make_front):
    with SmtpSink(smtputf8=True) as sink:
        wire = Wire(pass_through_front(make_front, sink).port)
        assert b"SMTPUTF8" in wire.command("EHLO client.example")
        assert wire.command("MAIL FROM:<jürgen@example.org> SMTPUTF8").startswith(b"250")
        assert wire.command("RCPT TO:<bøb@partner.example>").startswith(b"250")
        assert wire.command("DATA").startswith(b"354")
        assert wire.command(UTF8_MESSAGE + b".").startswith(b"250")
        wire.close()
        [received] = sink.received()
    assert received.smtputf8
    assert received.mail_from == "jürgen@example.org"
    assert received.rcpt_tos == ("bøb@partner.example",)
    assert received.content == UTF8_MESSAGE


def test_non_ascii_addresses_without_smtputf8_get_553_5_6_7(make_front, smtp_sink):
    wire = Wire(pass_through_front(make_front, smtp_sink).port)
    wire.command("EHLO client.example")
    reply = wire.command("MAIL FROM:<jürgen@example.org>")
    assert reply.startswith(b"553 5.6.7"), reply
    _no_internals(reply)
    assert wire.command("MAIL FROM:<alice@example.org>").startswith(b"250")
    reply = wire.command("RCPT TO:<bøb@partner.example>")
    assert reply.startswith(b"553 5.6.7"), reply
    _no_internals(reply)
    assert wire.command("RCPT TO:<bob@partner.example>").startswith(b"250")
    wire.close()


def test_smtputf8_towards_a_next_hop_without_it(make_front, smtp_sink):
    """The next hop does not offer SMTPUTF8: what needs it is refused for good (5.6.7, as
    Postfix bounces it); an all-ASCII message is relayed without the parameter."""
    wire = Wire(pass_through_front(make_front, smtp_sink).port)
    wire.command("EHLO client.example")
    reply = wire.command("MAIL FROM:<jürgen@example.org> SMTPUTF8")
    assert reply.startswith(b"553 5.6.7"), reply
    assert wire.command("MAIL FROM:<alice@example.org> SMTPUTF8").startswith(b"250")
    reply = wire.command("RCPT TO:<bøb@partner.example>")
    assert reply.startswith(b"553 5.6.7"), reply
    assert wire.command("RCPT TO:<bob@partner.example>").startswith(b"250")
    wire.command("DATA")
    reply = wire.command(UTF8_MESSAGE + b".")  # UTF-8 in the header needs SMTPUTF8 too
    assert reply.startswith(b"554 5.6.7"), reply
    assert wire.command("MAIL FROM:<alice@example.org> SMTPUTF8").startswith(b"250")
    assert wire.command("RCPT TO:<bob@partner.example>").startswith(b"250")
    wire.command("DATA")
    assert wire.command(MESSAGE + b".").startswith(b"250")
    wire.close()
    [received] = smtp_sink.received()
    assert not received.smtputf8 and received.content == MESSAGE


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a\x00b@example.org>",
        b"MAIL FROM:<alice@example.org>\x00",
        b"MAIL FROM:<a\x1bb@example.org> SMTPUTF8",
        b"NOOP\x00",
        b"MAIL\x00 FROM:<alice@example.org>",
        b"EHLO client\x7f.example",
        b"MAIL FROM:<\xff\xfe@example.org> SMTPUTF8",  # not UTF-8
    ],
)
def test_control_characters_and_bad_utf8_in_commands_get_501(make_front, smtp_sink, line):
    wire = Wire(pass_through_front(make_front, smtp_sink).port)
    wire.command("EHLO client.example")
    reply = wire.command(line)
    assert reply.startswith(b"501 5.5.2"), reply
    assert b"\x00" not in reply and b"\x1b" not in reply and b"\x7f" not in reply
    _no_internals(reply)
    assert wire.command("NOOP").startswith(b"250")  # the session goes on
    wire.close()


def test_a_failure_inside_the_handler_is_a_generic_451(make_front, smtp_sink, caplog):
    front = pass_through_front(make_front, smtp_sink)

    def broken(session: Any) -> bool:
        raise RuntimeError("detail from /etc/cmcgate that the client must not see")

    front.handler.may_relay = broken  # type: ignore[method-assign]
    wire = Wire(front.port)
    wire.command("EHLO client.example")
    reply = wire.command("MAIL FROM:<alice@example.org>")
    wire.close()
    assert reply.startswith(b"451 4.3.0"), reply
    assert b"RuntimeError" not in reply and b"/etc/cmcgate" not in reply
    assert "detail from /etc/cmcgate" in caplog.text  # the log has it


# -- session cap and idle timeout (item 7) -------------------------------------------------
def _until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _greeting(port: int) -> tuple[bytes, bytes]:
    """The first reply of a new connection, and what follows it before the server closes
    (b"" when it closed right after the reply; b"open" when it is still waiting)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        first = sock.makefile("rb").readline()
        sock.settimeout(1.0)
        try:
            rest = sock.recv(100)
        except TimeoutError:
            rest = b"open"
    return first, rest


def test_sessions_over_the_cap_get_421_and_are_disconnected(make_front, smtp_sink):
    front = make_front(f"cmcgate.gateway.nextHop=127.0.0.1:{smtp_sink.port}\n", max_sessions=2)
    first, second = Wire(front.port), Wire(front.port)
    assert first.greeting.startswith(b"220") and second.greeting.startswith(b"220")
    reply, rest = _greeting(front.port)
    assert reply.startswith(b"421 4.7.0"), reply
    assert rest == b""  # disconnected
    # The two sessions at the cap still work, and the size limit still holds in them.
    first.command("EHLO client.example")
    assert first.command("MAIL FROM:<alice@example.org>").startswith(b"250")
    assert first.command("RCPT TO:<bob@partner.example>").startswith(b"250")
    assert first.command("DATA").startswith(b"354")
    assert first.command(b"x" * 1_100_000 + b"\r\n.").startswith(b"552")
    assert first.command("QUIT").startswith(b"221")
    first.close()
    # A slot is free again once the server has seen the QUIT connection go.
    assert _until(lambda: _greeting(front.port)[0].startswith(b"220"))
    second.command("EHLO client.example")
    second.command("MAIL FROM:<alice@example.org>")
    second.command("RCPT TO:<bob@partner.example>")
    second.command("DATA")
    assert second.command(MESSAGE + b".").startswith(b"250")
    second.close()
    assert len(smtp_sink.received()) == 1


def test_an_idle_client_gets_421_and_is_disconnected(make_front, smtp_sink):
    front = make_front(
        f"cmcgate.gateway.nextHop=127.0.0.1:{smtp_sink.port}\n", idle_timeout=1, max_sessions=1
    )
    wire = Wire(front.port)
    wire.command("EHLO client.example")
    # Nothing more is sent: the server speaks first (the 30 s socket timeout is the bound).
    assert wire.reply().startswith(b"421 4.4.2")
    assert wire.file.readline() == b""  # and closes
    wire.close()
    assert _until(lambda: _greeting(front.port)[0].startswith(b"220"))  # its slot is free


def test_data_trickling_in_keeps_the_session_and_slow_work_is_not_idleness(tmp_path):
    """DATA arrives in blocks 0.3 s apart for 3 s against an idle timeout of 1.5 s, and the
    pipeline then takes 3 s: neither is the client being idle."""

    async def slow(transaction: Any) -> Any:
        await asyncio.sleep(3)
        return await pass_through(transaction)

    with SmtpSink() as sink:
        handler = GatewayHandler(NextHop("127.0.0.1", sink.port, starttls=False), slow)
        port = free_port()
        controller = start_front(
            handler, "127.0.0.1", port, max_message_size=10**6, idle_timeout=1.5
        )
        try:
            wire = Wire(port)
            wire.command("EHLO client.example")
            wire.command("MAIL FROM:<alice@example.org>")
            wire.command("RCPT TO:<bob@partner.example>")
            assert wire.command("DATA").startswith(b"354")
            wire.sock.sendall(MESSAGE)
            for _ in range(10):
                time.sleep(0.3)
                wire.sock.sendall(b"more text\r\n")
            reply = wire.command(b".")
            wire.close()
        finally:
            controller.stop()
        assert reply.startswith(b"250"), reply
        assert sink.received()[0].content.endswith(b"more text\r\n" * 10)


def test_a_failed_starttls_handshake_is_one_log_line_and_the_front_goes_on(
    make_front, smtp_sink, tmp_path, caplog
):
    cert, key = tls_server_files(tmp_path, stem="front")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    front = make_front(f"cmcgate.gateway.nextHop=127.0.0.1:{smtp_sink.port}\n", tls_context=context)
    wire = Wire(front.port)
    wire.command("EHLO client.example")
    assert wire.command("STARTTLS").startswith(b"220")
    wire.sock.sendall(b"this is no TLS client hello\r\n" * 4)
    assert wire.file.readline() == b""  # the server closes
    wire.close()
    assert _until(lambda: "STARTTLS failed" in caplog.text)
    assert "Traceback" not in caplog.text and "SMTP session failed" not in caplog.text
    with front.client() as client:
        client.starttls(context=ssl._create_unverified_context())
        assert client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE) == {}
