"""What the gateway's log tells an operator: start and stop, every refusal with the recipient
and the reason, the next hop being unreachable as a warning, and each line once."""

from __future__ import annotations

import ipaddress
import logging
import re
import smtplib
from collections import Counter
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink, free_port
from gateway.smtp.relay import NextHop
from gateway.smtp.server import FrontSettings, GatewayHandler, start_front
from tests.gateway.test_service import GatewayProcess, configure_gateway, message

ENCRYPT_OR_REJECT = (
    "cmcgate.policy.sign=never\n"
    "cmcgate.policy.encrypt=mandatory\n"
    "cmcgate.policy.missingCertificate=reject\n"
)
_PREFIX = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<who>\[worker \d+\] )?\S+: "
)


def messages(log: str) -> list[tuple[str, str]]:
    """(level, message with its worker tag) of every line; printed lines have level ''."""
    found = []
    for line in log.splitlines():
        match = _PREFIX.match(line)
        if match is None:
            found.append(("", line))
        else:
            found.append((match["level"], (match["who"] or "") + line[match.end() :]))
    return found


def assert_no_line_twice(log: str) -> None:
    twice = [text for text, n in Counter(text for _, text in messages(log)).items() if n > 1]
    assert twice == [], f"logged more than once: {twice}"


def lines_with(log: str, *words: str) -> list[tuple[str, str]]:
    return [(level, text) for level, text in messages(log) if all(w in text for w in words)]


def test_the_log_of_a_running_gateway_explains_every_refusal_once(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    config, port = configure_gateway(tmp_path, smtp_sink, ENCRYPT_OR_REJECT)
    smtp_sink.reject["nobody@partner.example"] = "550 5.1.1 no such user here"
    gateway = GatewayProcess(config, port).start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            # encryption mandatory, no certificate for bob: refused by the policy
            with pytest.raises(smtplib.SMTPDataError) as policy:
                client.send_message(message())
            assert policy.value.smtp_code == 550
            # a recipient the next hop does not know
            assert client.mail("alice@example.org")[0] == 250
            assert client.rcpt("nobody@partner.example")[0] == 550
            client.rset()
            # larger than cmcgate.gateway.maxMessageSize (40M), said in advance
            client.ehlo()
            assert client.mail("alice@example.org", ["SIZE=99999999999"])[0] == 552
        smtp_sink.stop()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo()
            assert client.mail("alice@example.org")[0] == 451
    finally:
        assert gateway.stop() == 0
    log = config.with_suffix(".log").read_text()

    assert lines_with(log, "cmcgate gateway started", f"127.0.0.1:{port}")
    [(level, refused)] = lines_with(log, "reply=550")
    assert "<bob@partner.example>: no encryption certificate" in refused and level == "WARNING"
    assert lines_with(log, "RCPT TO:<nobody@partner.example>", "550 5.1.1 no such user here")
    assert lines_with(log, "refused: 552")
    [(level, down)] = lines_with(log, "next hop", "not reachable")
    assert level == "WARNING" and f"127.0.0.1:{smtp_sink.port}" in down
    assert messages(log)[-1] == ("INFO", "cmcgate gateway stopped")
    assert_no_line_twice(log)


def test_a_client_that_may_not_relay_is_refused_with_a_reason_in_the_log(
    smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    only_elsewhere = FrontSettings(allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    handler = GatewayHandler(NextHop("127.0.0.1", smtp_sink.port, timeout=10), front=only_elsewhere)
    controller = start_front(handler, "127.0.0.1", port, max_message_size=10**6)
    try:
        with caplog.at_level(logging.INFO, logger="cmcgate"):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo()
                assert client.mail("alice@example.org")[0] == 554
    finally:
        controller.stop()
    refusals = [r for r in caplog.records if "554" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    text = refusals[0].getMessage()
    assert "client=127.0.0.1" in text and "MAIL FROM:<alice@example.org>" in text
    assert "allowedNetworks" in text and refusals[0].levelno == logging.WARNING
    assert smtp_sink.received() == []
