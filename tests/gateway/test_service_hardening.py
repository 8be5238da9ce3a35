"""`cmcgate gateway run` as a real process: failed reloads, start-up errors, STARTTLS and AUTH."""

from __future__ import annotations

import signal
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink, free_port
from gateway.smtp.auth import set_password
from tests.gateway.certs import make_ca, tls_server_files
from tests.gateway.test_service import (
    CMCGATE,
    PASS_THROUGH,
    GatewayProcess,
    message,
    run_on_a_taken_port,
    write_config,
    write_keys_passphrase,
)
from tests.gateway.test_workers import Workers, children, wait_for

NOT_RELOADED = "configuration not reloaded"


class Plain:
    """A pass-through gateway process; ``extra`` properties are added to its file."""

    def __init__(self, tmp: Path, sink: SmtpSink) -> None:
        write_keys_passphrase(tmp)
        self.tmp, self.sink = tmp, sink
        self.config = tmp / "gateway.properties"
        self.process = GatewayProcess(self.config, free_port())

    def write(self, extra: str = "") -> Plain:
        write_config(self.config, self.process.port, self.sink.port, self.tmp, PASS_THROUGH + extra)
        return self

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text(errors="replace")

    def send(self, count: int = 1) -> None:
        for _ in range(count):
            with smtplib.SMTP("127.0.0.1", self.process.port, timeout=30) as client:
                assert client.send_message(message()) == {}


@pytest.fixture
def plain(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[Plain]:
    gateway = Plain(tmp_path, smtp_sink)
    try:
        yield gateway
    finally:
        gateway.process.stop()


# -- a reload that fails keeps the running configuration (issue 13, item 10) ---------------
def test_sighup_naming_a_missing_ca_file_keeps_the_gateway_running(plain: Plain, smtp_sink):
    plain.write().process.start()
    plain.write(f"cmcgate.gateway.nextHopCaFile={plain.tmp / 'missing-ca.pem'}\n")
    plain.process.signal(signal.SIGHUP)
    assert wait_for(lambda: NOT_RELOADED in plain.log())
    assert plain.process.proc is not None and plain.process.proc.poll() is None
    plain.send()
    assert len(smtp_sink.received()) == 1
    refused = [line for line in plain.log().splitlines() if NOT_RELOADED in line]
    assert len(refused) == 1, refused
    assert "missing-ca.pem" in refused[0]
    assert "Traceback" not in plain.log()


@pytest.fixture
def workers(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[Workers]:
    write_keys_passphrase(tmp_path)
    setup = Workers(tmp_path, smtp_sink)
    setup.write(PASS_THROUGH)
    setup.process.start()
    assert wait_for(lambda: "with 2 workers" in setup.log())
    try:
        yield setup
    finally:
        assert setup.process.stop() in (0, None)


def test_sighup_naming_a_missing_ca_file_keeps_the_workers_running(workers: Workers, smtp_sink):
    before = children(workers.pid)
    workers.write(PASS_THROUGH + f"cmcgate.gateway.nextHopCaFile={workers.tmp / 'nope.pem'}\n")
    workers.process.signal(signal.SIGHUP)
    assert wait_for(lambda: NOT_RELOADED in workers.log())
    workers.send(6)
    assert len(smtp_sink.received()) == 6
    assert children(workers.pid) == before, "no worker died and was restarted"
    refused = [line for line in workers.log().splitlines() if NOT_RELOADED in line]
    assert len(refused) == 1, refused
    assert "restarting" not in workers.log() and "Traceback" not in workers.log()


# -- one-line start-up errors (item 17) ----------------------------------------------------
def test_gateway_run_on_a_port_in_use_fails_with_one_line(plain: Plain) -> None:
    plain.write()
    done = run_on_a_taken_port(plain.config, plain.process.port)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"cmcgate: cannot listen on 127.0.0.1:{plain.process.port}: Address already in use"
    ]


# -- session cap and idle timeout from the properties (item 7) ------------------------------
def test_max_sessions_and_idle_timeout_apply_to_the_running_gateway(plain: Plain, smtp_sink):
    plain.write("cmcgate.gateway.maxSessions=1\ncmcgate.gateway.idleTimeout=2\n").process.start()
    port = plain.process.port
    # A probe that just closed may hold the one slot for a moment: connect until admitted.
    idle = None
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        reader = sock.makefile("rb")
        if reader.readline().startswith(b"220"):
            idle = sock
            break
        sock.close()
        time.sleep(0.1)
    assert idle is not None
    with idle:
        over = _first_reply(port)
        assert over.startswith(b"421 4.7.0"), over
        assert reader.readline().startswith(b"421 4.4.2")  # the idle one is sent away
        assert reader.readline() == b""
    assert wait_for(lambda: _sent(plain))
    assert len(smtp_sink.received()) == 1


def _first_reply(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        return sock.makefile("rb").readline()


def _sent(plain: Plain) -> bool:
    """One message sent; False when the gateway said 421 at the greeting (slot still held)."""
    try:
        plain.send()
    except smtplib.SMTPConnectError as exc:
        assert exc.smtp_code == 421
        return False
    return True


# -- STARTTLS and SMTP AUTH (item 4) -------------------------------------------------------
def passwd(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CMCGATE, "gateway", "passwd", *args, *(["--password-stdin"] if password else [])],
        input=(password + "\n") if password else None,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def auth_gateway(plain: Plain) -> Iterator[tuple[Plain, ssl.SSLContext]]:
    """STARTTLS with a certificate of a test CA, users alice and bob, relaying only for
    authenticated clients (127.0.0.1 is not an allowed network here)."""
    ca = make_ca("Front TLS CA", kind="ec")
    cert, key = tls_server_files(plain.tmp, ca=ca, stem="front")
    users = plain.tmp / "smtp-users"
    done = passwd("--users-file", str(users), "alice", password="alice-secret")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"alice: password set ({users})\n"
    set_password(users, "bob", b"bob-secret")  # the same, without another interpreter start
    assert users.stat().st_mode & 0o777 == 0o600
    plain.write(
        f"cmcgate.gateway.tlsCertificate={cert}\ncmcgate.gateway.tlsKey={key}\n"
        f"cmcgate.gateway.authUsersFile={users}\ncmcgate.gateway.allowedNetworks=192.0.2.0/24\n"
    ).process.start()
    client_context = ssl.create_default_context(cafile=str(ca.write(plain.tmp)))
    yield plain, client_context


def test_auth_is_offered_only_after_starttls_and_lets_a_user_relay(auth_gateway, smtp_sink):
    gateway, tls = auth_gateway
    with smtplib.SMTP("127.0.0.1", gateway.process.port, timeout=30) as client:
        client.ehlo("client.example")
        assert client.has_extn("starttls") and not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNlLXNlY3JldA==")[0] == 538
        assert client.docmd("MAIL", "FROM:<alice@example.org>")[0] == 554  # not allowed
        client.starttls(context=tls)
        client.ehlo("client.example")
        assert client.has_extn("auth")
        assert set(client.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong:
            client.login("alice", "bob-secret")
        assert wrong.value.smtp_code == 535
        client.login("alice", "alice-secret")
        assert client.send_message(message()) == {}
    assert len(smtp_sink.received()) == 1
    assert "AUTH failed for 'alice'" in gateway.log() and "AUTH ok for alice" in gateway.log()
    assert "bob-secret" not in gateway.log() and "alice-secret" not in gateway.log()


def test_auth_login_mechanism_and_unknown_users(auth_gateway, smtp_sink):
    gateway, tls = auth_gateway
    with smtplib.SMTP("127.0.0.1", gateway.process.port, timeout=30) as client:
        client.starttls(context=tls)
        client.ehlo("client.example")
        client.user, client.password = "mallory", "bob-secret"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("LOGIN", client.auth_login)
        client.user, client.password = "bob", "bob-secret"
        assert client.auth("LOGIN", client.auth_login)[0] == 235
        assert client.send_message(message()) == {}
    assert len(smtp_sink.received()) == 1


def test_require_auth_refuses_mail_before_auth_and_a_reload_reads_the_users_again(
    auth_gateway, smtp_sink
):
    gateway, tls = auth_gateway
    users = gateway.tmp / "smtp-users"
    gateway.config.write_text(gateway.config.read_text() + "cmcgate.gateway.requireAuth=true\n")
    assert set_password(users, "bob", None)  # removed
    assert not set_password(users, "carol", b"carol-secret")  # added
    gateway.process.signal(signal.SIGHUP)
    assert wait_for(lambda: "configuration applied" in gateway.log())
    with smtplib.SMTP("127.0.0.1", gateway.process.port, timeout=30) as client:
        client.starttls(context=tls)
        client.ehlo("client.example")
        assert client.docmd("MAIL", "FROM:<alice@example.org>")[0] == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("bob", "bob-secret")  # removed
        client.login("carol", "carol-secret")
        assert client.send_message(message()) == {}
    assert len(smtp_sink.received()) == 1


def test_without_users_file_auth_is_neither_offered_nor_accepted(plain: Plain) -> None:
    plain.write().process.start()
    with smtplib.SMTP("127.0.0.1", plain.process.port, timeout=30) as client:
        client.ehlo("client.example")
        assert not client.has_extn("auth")
        code, text = client.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNlLXNlY3JldA==")
        assert (code, text) == (503, b"5.5.1 Error: authentication not enabled")


def test_users_file_without_starttls_is_a_configuration_error(plain: Plain) -> None:
    users = plain.tmp / "smtp-users"
    set_password(users, "alice", b"alice-secret")
    plain.write(f"cmcgate.gateway.authUsersFile={users}\n")
    done = subprocess.run(
        [CMCGATE, "gateway", "run", "--config", str(plain.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "AUTH is offered only after STARTTLS" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broken_users_file_stops_the_start_with_its_line(plain: Plain) -> None:
    users = plain.tmp / "smtp-users"
    users.write_text("# SMTP users\nalice:{PLAIN}alice-secret\n")
    plain.write(f"cmcgate.gateway.authUsersFile={users}\ncmcgate.gateway.allowPlaintextAuth=true\n")
    done = subprocess.run(
        [CMCGATE, "gateway", "run", "--config", str(plain.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"cmcgate: {users}:2: alice: not a $scrypt$ln=..,r=..,p=..$salt$key hash"
    ]
