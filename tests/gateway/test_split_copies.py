"""A message split into copies is delivered once per recipient, even when the next hop
refuses a later copy for a while; split copies keep the client's ``BODY=8BITMIME``."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink, free_port
from gateway.quarantine import Quarantine
from gateway.smtp.deferred import DeferredQueue, retry_due
from gateway.smtp.message import Copy, Transaction
from gateway.smtp.relay import NextHop
from gateway.smtp.server import GatewayHandler, start_front
from tests.gateway.test_service import (
    PASS_THROUGH,
    GatewayProcess,
    configure_gateway,
)

# 8-bit body: the client says BODY=8BITMIME, and so must every copy the gateway sends on.
MESSAGE = (
    "From: alice@example.org\r\nTo: b@x.example, c@y.example\r\nSubject: Grüße\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Zürich\r\n"
).encode()
RECIPIENTS = ["b@x.example", "c@y.example"]


async def one_copy_per_recipient(transaction: Transaction) -> Sequence[Copy]:
    return [
        Copy((r,), transaction.content.replace(b"Z\xc3\xbcrich", f"Zürich for {r}".encode()))
        for r in transaction.recipients
    ]


class Gateway:
    def __init__(self, sink: SmtpSink, deferred: DeferredQueue | None) -> None:
        self.port = free_port()
        self.next_hop = NextHop("127.0.0.1", sink.port, timeout=10)
        self.handler = GatewayHandler(self.next_hop, one_copy_per_recipient, deferred=deferred)
        self.controller = start_front(self.handler, "127.0.0.1", self.port, max_message_size=10**6)

    def send(self, recipients: Sequence[str] = RECIPIENTS) -> dict:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            return client.sendmail(
                "alice@example.org", list(recipients), MESSAGE, mail_options=["BODY=8BITMIME"]
            )


@pytest.fixture
def deferred(tmp_path: Path) -> DeferredQueue:
    return DeferredQueue(tmp_path / "deferred")


@pytest.fixture
def gateway(smtp_sink: SmtpSink, deferred: DeferredQueue) -> Iterator[Gateway]:
    running = Gateway(smtp_sink, deferred)
    yield running
    running.controller.stop()


def copies_for(sink: SmtpSink, recipient: str) -> list:
    return [m for m in sink.received() if recipient in m.rcpt_tos]


def test_split_copies_carry_body_8bitmime(gateway, smtp_sink):
    assert gateway.send() == {}
    received = smtp_sink.received()
    assert sorted(m.rcpt_tos for m in received) == [("b@x.example",), ("c@y.example",)]
    for copy in received:
        assert "BODY=8BITMIME" in copy.mail_options, copy.mail_options
        assert "Zürich for".encode() in copy.content


def test_a_later_copy_refused_for_a_while_is_deferred_and_each_recipient_gets_it_once(
    gateway, smtp_sink, deferred, tmp_path
):
    smtp_sink.data_reply_once["c@y.example"] = "451 4.3.0 mailbox busy, try later"

    assert gateway.send() == {}, "the gateway has every copy: b's delivered, c's deferred"

    assert len(copies_for(smtp_sink, "b@x.example")) == 1
    assert copies_for(smtp_sink, "c@y.example") == []
    [held] = deferred.copies()
    assert held.recipients == ("c@y.example",) and held.mail_options == ("BODY=8BITMIME",)

    replies = asyncio.run(retry_due(deferred, lambda: gateway.next_hop, Quarantine(tmp_path)))

    assert [reply.code for reply in replies.values()] == [250]
    [late] = copies_for(smtp_sink, "c@y.example")
    assert "Zürich for c@y.example".encode() in late.content
    assert late.mail_options == ("BODY=8BITMIME",)
    assert len(copies_for(smtp_sink, "b@x.example")) == 1, "b must not get it twice"
    assert deferred.copies() == []


def test_a_deferred_copy_the_next_hop_still_refuses_waits_and_is_tried_again(
    gateway, smtp_sink, deferred, tmp_path
):
    smtp_sink.data_reply_once["c@y.example"] = "451 4.3.0 mailbox busy, try later"
    assert gateway.send() == {}
    smtp_sink.data_reply_once["c@y.example"] = "452 4.2.2 still busy"
    clock = [1000.0]
    quarantine = Quarantine(tmp_path / "quarantine")

    def retry() -> dict:
        return asyncio.run(
            retry_due(deferred, lambda: gateway.next_hop, quarantine, now=lambda: clock[0])
        )

    assert [r.code for r in retry().values()] == [452]
    assert retry() == {}, "not due again before its back-off has passed"
    clock[0] += 3600
    assert [r.code for r in retry().values()] == [250]
    assert len(copies_for(smtp_sink, "c@y.example")) == 1
    assert len(copies_for(smtp_sink, "b@x.example")) == 1
    assert quarantine.list() == []


def test_a_deferred_copy_refused_permanently_goes_to_the_quarantine(
    gateway, smtp_sink, deferred, tmp_path
):
    smtp_sink.data_reply_once["c@y.example"] = "451 4.3.0 mailbox busy, try later"
    assert gateway.send() == {}
    smtp_sink.data_reply_once["c@y.example"] = "554 5.7.1 content refused"
    quarantine = Quarantine(tmp_path / "quarantine")

    replies = asyncio.run(retry_due(deferred, lambda: gateway.next_hop, quarantine))

    assert [r.code for r in replies.values()] == [554]
    assert deferred.copies() == []
    [held] = quarantine.list()
    assert held.recipients == ("c@y.example",)
    assert "554 5.7.1 content refused" in held.reason
    assert "Zürich for c@y.example".encode() in quarantine.get(held.id)[1]


def test_the_first_copy_refused_is_a_4xx_and_nothing_is_delivered_or_deferred(
    gateway, smtp_sink, deferred
):
    smtp_sink.data_reply_once["b@x.example"] = "451 4.3.0 mailbox busy, try later"

    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send()

    assert refused.value.smtp_code == 451
    assert smtp_sink.received() == []
    assert deferred.copies() == []


def test_when_the_deferred_queue_cannot_write_the_client_gets_the_4xx(smtp_sink, tmp_path):
    (tmp_path / "not-a-directory").write_text("")
    broken = DeferredQueue(tmp_path / "not-a-directory")
    gateway = Gateway(smtp_sink, broken)
    smtp_sink.data_reply_once["c@y.example"] = "451 4.3.0 mailbox busy, try later"
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            gateway.send()
    finally:
        gateway.controller.stop()
    assert refused.value.smtp_code == 451, "250 only once the copy is durable"
    assert len(copies_for(smtp_sink, "b@x.example")) == 1
    assert copies_for(smtp_sink, "c@y.example") == []


def test_the_running_gateway_retries_a_deferred_copy_by_itself(tmp_path, smtp_sink):
    """`cmcgate gateway run`: an internal and an external recipient get separate copies
    (inbound and outbound treatment); the inbound one is refused once and then delivered by
    the gateway's own retry, while the client got 250 once and sent the message once."""
    config, port = configure_gateway(tmp_path, smtp_sink, PASS_THROUGH)
    smtp_sink.data_reply_once["carol@example.org"] = "451 4.2.1 mailbox busy, try later"
    gateway = GatewayProcess(config, port).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            refused = client.sendmail(
                "alice@example.org", ["bob@partner.example", "carol@example.org"],
                MESSAGE, mail_options=["BODY=8BITMIME"],
            )  # fmt: skip
        assert refused == {}
        deadline = time.monotonic() + 60  # safety bound: the retry loop looks every 5 s
        while not copies_for(smtp_sink, "carol@example.org") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        gateway.stop()
    [late] = copies_for(smtp_sink, "carol@example.org")
    assert late.mail_options == ("BODY=8BITMIME",)
    assert len(copies_for(smtp_sink, "bob@partner.example")) == 1
    assert list((tmp_path / "state" / "deferred").glob("*.copy")) == []
