"""The SMTP AUTH users file (scrypt hashes) and AUTH on a real in-process front."""

from __future__ import annotations

import base64
import hashlib
import smtplib
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink, free_port
from gateway.smtp.auth import AuthUsersError, ScryptHash, load_users, set_password
from gateway.smtp.relay import NextHop
from gateway.smtp.server import FrontSettings, GatewayHandler, start_front

MESSAGE = b"From: alice@example.org\r\nTo: bob@partner.example\r\nSubject: hi\r\n\r\nhello\r\n"


def test_a_hash_line_is_scrypt_as_rfc_7914_computes_it(tmp_path: Path) -> None:
    users = tmp_path / "users"
    set_password(users, "alice", "pässword".encode())
    name, _, text = users.read_text().strip().partition(":")
    assert name == "alice"
    prefix, ln_r_p, salt, key = text.split("$")[1:]
    assert (prefix, ln_r_p) == ("scrypt", "ln=15,r=8,p=1")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    expected = hashlib.scrypt(
        "pässword".encode(), salt=base64.b64decode(pad(salt)), n=1 << 15, r=8, p=1,
        maxmem=1 << 26, dklen=32,
    )  # fmt: skip
    assert base64.b64decode(pad(key)) == expected
    loaded = load_users(users)
    assert loaded.check("alice", "pässword".encode())
    assert not loaded.check("alice", b"password")
    assert not loaded.check("bob", "pässword".encode())


def test_set_password_replaces_and_removes_lines_and_keeps_comments(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("# relay clients\n")
    assert not set_password(users, "mta1", b"one")
    assert not set_password(users, "mta2", b"two")
    assert set_password(users, "mta1", b"uno")
    assert set_password(users, "mta2", None)
    lines = users.read_text().splitlines()
    assert lines[0] == "# relay clients" and [line.partition(":")[0] for line in lines] == [
        "# relay clients",
        "mta1",
    ]
    loaded = load_users(users)
    assert loaded.check("mta1", b"uno") and not loaded.check("mta1", b"one")
    assert users.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("alice\n", 2, "expected NAME:HASH"),
        ("alice:secret\n", 2, "alice: not a $scrypt$"),
        (f"alice:{ScryptHash(15, 8, 1, b'x' * 16, b'y' * 32)}\n" * 2, 3, "appears twice"),
        ("alice:$scrypt$ln=30,r=8,p=1$" + "A" * 22 + "$" + "B" * 43 + "\n", 2, "out of range"),
    ],
)
def test_a_bad_users_file_names_its_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    users = tmp_path / "users"
    users.write_text("# users\n" + text)
    with pytest.raises(AuthUsersError) as error:
        load_users(users)
    assert str(error.value).startswith(f"{users}:{line}: ")
    assert problem in str(error.value)


def test_a_missing_users_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AuthUsersError, match="SMTP users file: No such file or directory"):
        load_users(tmp_path / "nope")


def test_allow_plaintext_auth_offers_auth_without_tls(tmp_path: Path) -> None:
    users = tmp_path / "users"
    set_password(users, "mta1", b"one")
    front = FrontSettings(
        allowed_networks=(), users=load_users(users), auth_over_plaintext=True
    )  # nobody may relay without AUTH
    with SmtpSink() as sink:
        handler = GatewayHandler(NextHop("127.0.0.1", sink.port, starttls=False), front=front)
        port = free_port()
        controller = start_front(handler, "127.0.0.1", port, max_message_size=10**6)
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.example")
                assert client.has_extn("auth")
                code, _ = client.docmd("MAIL", "FROM:<alice@example.org>")
                assert code == 554
                client.rset()
                client.login("mta1", "one")
                client.sendmail("alice@example.org", ["bob@partner.example"], MESSAGE)
        finally:
            controller.stop()
        assert len(sink.received()) == 1
