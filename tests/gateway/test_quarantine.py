"""Held messages: durable files an operator lists, shows, releases over SMTP or deletes."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink
from gateway.quarantine import (
    NotInQuarantine,
    Quarantine,
    QuarantineError,
    register_quarantine,
    release_to,
)
from gateway.smtp.message import Transaction
from gateway.smtp.relay import NextHop

MESSAGE = (
    b"From: alice@example.org\r\nTo: bob@partner.example\r\nSubject: s\r\n\r\nsecret \xc3\xa4\r\n"
)


def transaction(content: bytes = MESSAGE) -> Transaction:
    return Transaction(
        "QID1", "127.0.0.1", "alice@example.org", ("bob@partner.example", "c@p.example"), content
    )


def test_a_held_message_is_one_private_file_with_envelope_and_exact_bytes(tmp_path: Path):
    quarantine = Quarantine(tmp_path / "q")
    ident = quarantine.hold(transaction(), ["bob@partner.example"], "no certificate")
    files = list((tmp_path / "q").iterdir())
    assert [f.name for f in files] == [f"{ident}.held"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "q").stat().st_mode) == 0o700
    envelope, content = quarantine.get(ident)
    assert content == MESSAGE
    assert envelope.recipients == ("bob@partner.example",)
    assert (envelope.sender, envelope.queue_id, envelope.reason) == (
        "alice@example.org",
        "QID1",
        "no certificate",
    )
    assert envelope.size == len(MESSAGE)


def test_list_shows_every_held_message_and_ignores_half_written_ones(tmp_path: Path):
    quarantine = Quarantine(tmp_path)
    first = quarantine.hold(transaction(), ["bob@partner.example"], "r1")
    second = quarantine.hold(transaction(b"x: y\r\n\r\n"), ["c@p.example"], "r2")
    (tmp_path / ".20260101T000000Z-000000000000.tmp").write_bytes(b"{garbage")
    assert sorted(h.id for h in quarantine.list()) == sorted([first, second])
    assert Quarantine(tmp_path / "missing").list() == []


def test_release_gives_the_transaction_back_and_delete_removes_it(tmp_path: Path):
    quarantine = Quarantine(tmp_path)
    ident = quarantine.hold(transaction(), ["bob@partner.example"], "no certificate")
    released = quarantine.release(ident)
    assert released.recipients == ("bob@partner.example",)
    assert released.content == MESSAGE and released.sender == "alice@example.org"
    quarantine.delete(ident)
    assert quarantine.list() == []
    with pytest.raises(NotInQuarantine):
        quarantine.get(ident)
    with pytest.raises(NotInQuarantine):
        quarantine.delete(ident)


@pytest.mark.parametrize("ident", ["../etc/passwd", "", "20260101T000000Z-xyz", "a/b"])
def test_ids_that_are_not_quarantine_ids_are_refused(tmp_path: Path, ident: str):
    with pytest.raises(NotInQuarantine):
        Quarantine(tmp_path).get(ident)


def test_a_damaged_file_is_reported_not_crashed_on(tmp_path: Path):
    quarantine = Quarantine(tmp_path)
    ident = quarantine.hold(transaction(), ["bob@partner.example"], "r")
    (tmp_path / f"{ident}.held").write_bytes(b"not json\nbody")
    with pytest.raises(QuarantineError, match="damaged"):
        quarantine.get(ident)


async def test_release_to_the_next_hop_delivers_and_only_then_deletes(
    tmp_path: Path, smtp_sink: SmtpSink
):
    quarantine = Quarantine(tmp_path)
    ident = quarantine.hold(transaction(), ["bob@partner.example"], "r")
    smtp_sink.data_reply = "451 4.3.0 try later"
    reply = await release_to(quarantine, ident, NextHop("127.0.0.1", smtp_sink.port, timeout=5))
    assert reply.code == 451 and [h.id for h in quarantine.list()] == [ident]
    smtp_sink.data_reply = None
    reply = await release_to(quarantine, ident, NextHop("127.0.0.1", smtp_sink.port, timeout=5))
    assert reply.ok and quarantine.list() == []
    [message] = smtp_sink.received()
    assert message.rcpt_tos == ("bob@partner.example",) and message.content == MESSAGE


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cmcgate gateway")
    register_quarantine(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_operator_lists_shows_releases_and_deletes_from_the_command_line(
    tmp_path: Path, smtp_sink: SmtpSink, capsys: pytest.CaptureFixture[str]
):
    quarantine = Quarantine(tmp_path)
    kept = quarantine.hold(transaction(), ["bob@partner.example"], "no certificate")
    sent = quarantine.hold(transaction(), ["c@p.example"], "no certificate")
    assert run_cli("quarantine", "list", "--dir", str(tmp_path), "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert {h["id"] for h in listed} == {kept, sent}
    assert run_cli("quarantine", "list", "--dir", str(tmp_path)) == 0
    assert kept in capsys.readouterr().out
    assert run_cli("quarantine", "show", "--dir", str(tmp_path), "--raw", kept) == 0
    assert capsys.readouterr().out.encode() == MESSAGE
    hop = f"127.0.0.1:{smtp_sink.port}"
    assert run_cli("quarantine", "release", "--dir", str(tmp_path), "--next-hop", hop, sent) == 0
    assert [m.rcpt_tos for m in smtp_sink.received()] == [("c@p.example",)]
    assert run_cli("quarantine", "delete", "--dir", str(tmp_path), kept) == 0
    assert quarantine.list() == []


def test_release_refused_by_the_next_hop_keeps_the_message_and_says_so(
    tmp_path: Path, smtp_sink: SmtpSink
):
    ident = Quarantine(tmp_path).hold(transaction(), ["bob@partner.example"], "r")
    smtp_sink.reject["bob@partner.example"] = "550 5.1.1 unknown"
    hop = f"127.0.0.1:{smtp_sink.port}"
    with pytest.raises(QuarantineError, match="stays held"):
        run_cli("quarantine", "release", "--dir", str(tmp_path), "--next-hop", hop, ident)
    assert [h.id for h in Quarantine(tmp_path).list()] == [ident]
