"""The SMTP front and relay against hostile or unusual peers, on real sockets (issue 13)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.properties import loads
from gateway.devservices import SmtpSink, free_port
from gateway.server import GatewayHandler, start_front
from gateway.service import next_hop
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
