"""Zero-loss relay: the client gets 250 only when the next hop accepted the message."""

from __future__ import annotations

import ipaddress
import smtplib
from collections.abc import Iterator, Sequence

import pytest

from gateway.devservices import SmtpSink, free_port
from gateway.smtp.message import Copy, MessageRefused, Pipeline, Transaction
from gateway.smtp.relay import NextHop, Reply
from gateway.smtp.server import FrontSettings, GatewayHandler, pass_through, start_front

MESSAGE = b"From: alice@example.org\r\nTo: bob@partner.example\r\nSubject: hi\r\n\r\nhello\r\n"


class Gateway:
    def __init__(self, next_hop_port: int, pipeline: Pipeline, front: FrontSettings, size: int):
        self.port = free_port()
        self.handler = GatewayHandler(
            NextHop("127.0.0.1", next_hop_port, timeout=5), pipeline, front
        )
        self.controller = start_front(self.handler, "127.0.0.1", self.port, max_message_size=size)

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=10)


@pytest.fixture
def make_gateway(smtp_sink: SmtpSink) -> Iterator:
    gateways: list[Gateway] = []

    def make(
        pipeline: Pipeline = pass_through,
        front: FrontSettings | None = None,
        next_hop_port: int | None = None,
        size: int = 1_000_000,
    ) -> Gateway:
        gateway = Gateway(next_hop_port or smtp_sink.port, pipeline, front or FrontSettings(), size)
        gateways.append(gateway)
        return gateway

    yield make
    for gateway in gateways:
        gateway.controller.stop()


def test_message_is_delivered_and_acknowledged_with_the_next_hops_reply(make_gateway, smtp_sink):
    gateway = make_gateway()
    with gateway.client() as client:
        client.ehlo()
        code, text = client.docmd("MAIL FROM:<alice@example.org>")
        assert code == 250
        assert client.docmd("RCPT TO:<bob@partner.example>")[0] == 250
        code, text = client.data(MESSAGE)
    assert (code, text) == (250, b"2.0.0 OK: queued")  # the sink's own reply, mirrored
    [message] = smtp_sink.received()
    assert message.content == MESSAGE
    assert message.rcpt_tos == ("bob@partner.example",)


def test_next_hop_down_gives_4xx_and_nothing_is_delivered(make_gateway):
    gateway = make_gateway(next_hop_port=free_port())
    with gateway.client() as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE)
    assert 400 <= refused.value.smtp_code < 500


def test_next_hop_refusing_data_is_mirrored_and_nothing_kept(make_gateway, smtp_sink):
    smtp_sink.data_reply = "452 4.3.1 insufficient system storage"
    gateway = make_gateway()
    with gateway.client() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE)
    assert refused.value.smtp_code == 452
    assert smtp_sink.received() == []


def test_recipient_refused_by_next_hop_is_mirrored_other_delivered_once(make_gateway, smtp_sink):
    smtp_sink.reject["carol@partner.example"] = "550 5.1.1 <carol@partner.example>: unknown"
    gateway = make_gateway()
    with gateway.client() as client:
        refused = client.sendmail(
            "alice@example.org", ["bob@partner.example", "carol@partner.example"], MESSAGE
        )
    assert refused == {"carol@partner.example": (550, b"5.1.1 <carol@partner.example>: unknown")}
    [message] = smtp_sink.received()
    assert message.rcpt_tos == ("bob@partner.example",)


def test_open_relay_probe_from_a_client_outside_allowed_networks_is_refused(
    make_gateway, smtp_sink
):
    front = FrontSettings(allowed_networks=(ipaddress.ip_network("192.0.2.0/24"),))
    gateway = make_gateway(front=front)
    with gateway.client() as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("spammer@elsewhere.example", ["victim@partner.example"], MESSAGE)
    assert refused.value.smtp_code == 554
    assert smtp_sink.received() == []


def test_oversized_message_gets_552(make_gateway, smtp_sink):
    gateway = make_gateway(size=10_000)
    big = MESSAGE + (b"x" * 78 + b"\r\n") * 250
    with gateway.client() as client:
        client.ehlo()
        client.docmd("MAIL FROM:<alice@example.org>")
        client.docmd("RCPT TO:<bob@partner.example>")
        code, _ = client.data(big)
    assert code == 552
    assert smtp_sink.received() == []


def test_pipeline_refusal_reaches_the_client_and_nothing_is_sent(make_gateway, smtp_sink):
    async def refuse(transaction: Transaction) -> Sequence[Copy]:
        raise MessageRefused(Reply(550, "5.7.1 encryption mandatory but no certificate"))

    gateway = make_gateway(pipeline=refuse)
    with gateway.client() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE)
    assert refused.value.smtp_code == 550
    assert smtp_sink.received() == []


def test_pipeline_crash_is_a_temporary_failure_never_a_loss(make_gateway, smtp_sink):
    async def crash(transaction: Transaction) -> Sequence[Copy]:
        raise RuntimeError("bug")

    gateway = make_gateway(pipeline=crash)
    with gateway.client() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE)
    assert refused.value.smtp_code == 451
    assert smtp_sink.received() == []


def test_recipients_with_different_policies_get_separate_copies(make_gateway, smtp_sink):
    async def split(transaction: Transaction) -> Sequence[Copy]:
        return [
            Copy((r,), transaction.content.replace(b"hello", f"hello {r}".encode()))
            for r in transaction.recipients
        ]

    gateway = make_gateway(pipeline=split)
    with gateway.client() as client:
        assert client.sendmail("alice@example.org", ["b@x.example", "c@y.example"], MESSAGE) == {}
    received = sorted(smtp_sink.received(), key=lambda m: m.rcpt_tos)
    assert [m.rcpt_tos for m in received] == [("b@x.example",), ("c@y.example",)]
    assert b"hello b@x.example" in received[0].content
    assert b"hello c@y.example" in received[1].content
