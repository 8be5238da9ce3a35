"""The real services the other tests stand on start, work and stop cleanly."""

from __future__ import annotations

import smtplib

import ldap3
import pytest

from gateway.devservices import Slapd, SmtpSink, port_is_closed, slapd_available


def test_slapd_adds_and_reads_back_an_inetorgperson(slapd: Slapd) -> None:
    dn = f"cn=Alice Example,{slapd.suffix}"
    with slapd.connection() as conn:
        assert conn.add(
            dn,
            ["inetOrgPerson"],
            {"cn": "Alice Example", "sn": "Example", "mail": "alice@example.org"},
        ), conn.result
    # Read back over a fresh, anonymous-free bind to be sure it was stored by slapd.
    with slapd.connection() as conn:
        conn.search(slapd.suffix, "(mail=alice@example.org)", attributes=["cn", "mail"])
        assert [str(e.entry_dn) for e in conn.entries] == [dn]
        assert conn.entries[0].mail.value == "alice@example.org"


def test_slapd_keeps_its_data_across_pause_and_restart(slapd: Slapd) -> None:
    with slapd.connection() as conn:
        conn.add(f"ou=people,{slapd.suffix}", ["organizationalUnit"], {"ou": "people"})
    port = slapd.port
    slapd.pause()
    assert port_is_closed("127.0.0.1", port)
    with pytest.raises(ldap3.core.exceptions.LDAPException):
        slapd.connection()
    slapd.start()
    assert slapd.port == port
    with slapd.connection() as conn:
        conn.search(slapd.suffix, "(ou=people)")
        assert len(conn.entries) == 1


@pytest.mark.skipif(not slapd_available(), reason="slapd is not installed (run `make deps`)")
def test_slapd_starts_and_stops_cleanly_twenty_times_in_a_row() -> None:
    for _ in range(20):
        server = Slapd().start()
        port, workdir, process = server.port, server.workdir, server.process
        with server.connection() as conn:
            assert conn.bound
        server.stop()
        assert process is not None and process.poll() is not None, "slapd process left running"
        assert port_is_closed("127.0.0.1", port), f"port {port} still open"
        assert workdir is not None and not workdir.exists(), "temp dir left behind"


def test_smtp_sink_records_a_message_sent_over_a_real_socket(smtp_sink: SmtpSink) -> None:
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        refused = client.sendmail(
            "alice@example.org", ["bob@partner.example"], b"Subject: hi\r\n\r\nhello\r\n"
        )
    assert refused == {}
    [message] = smtp_sink.received()
    assert message.mail_from == "alice@example.org"
    assert message.rcpt_tos == ("bob@partner.example",)
    assert b"hello" in message.content


def test_smtp_sink_rejects_the_recipients_it_is_told_to(smtp_sink: SmtpSink) -> None:
    smtp_sink.reject["carol@partner.example"] = "550 5.1.1 no such user"
    with smtplib.SMTP(smtp_sink.host, smtp_sink.port, timeout=10) as client:
        refused = client.sendmail(
            "alice@example.org",
            ["bob@partner.example", "carol@partner.example"],
            b"Subject: hi\r\n\r\nhello\r\n",
        )
    assert refused == {"carol@partner.example": (550, b"5.1.1 no such user")}
    [message] = smtp_sink.received()
    assert message.rcpt_tos == ("bob@partner.example",)


def test_smtp_sink_starts_and_stops_cleanly_twenty_times_in_a_row() -> None:
    for _ in range(20):
        sink = SmtpSink().start()
        port = sink.port
        with smtplib.SMTP(sink.host, port, timeout=10) as client:
            assert client.noop()[0] == 250
        sink.stop()
        assert port_is_closed("127.0.0.1", port)
