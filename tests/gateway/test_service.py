"""`cmcgate gateway run` as a real process: config file, certs CLI, SIGHUP reload, crash safety."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink, free_port, port_is_closed, wait_for_port
from tests.gateway.certs import make_ca, openssl

CMCGATE = str(Path(sys.executable).parent / "cmcgate")


class GatewayProcess:
    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        log = open(self.config.with_suffix(".log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [CMCGATE, "gateway", "run", "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_for_port("127.0.0.1", self.port, 30, self.proc)
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code


def write_config(path: Path, port: int, sink_port: int, tmp: Path, policy: str) -> None:
    path.write_text(
        f"cmcgate.gateway.listen=127.0.0.1:{port}\n"
        f"cmcgate.gateway.nextHop=127.0.0.1:{sink_port}\n"
        "cmcgate.gateway.nextHopTls=off\n"
        "cmcgate.gateway.internalDomains=example.org\n"
        "cmcgate.gateway.maxMessageSize=40M\n"
        f"{policy}"
        f"cmcgate.store.dsn=sqlite:///{tmp / 'gateway.db'}\n"
        "cmcgate.keys.backend=software\n"
        f"cmcgate.keys.directory={tmp / 'keys'}\n"
        f"cmcgate.keys.passphraseFile={tmp / 'keys.pass'}\n"
        f"cmcgate.gateway.stateDir={tmp / 'state'}\n"
    )


SIGN_AND_ENCRYPT = "cmcgate.policy.sign=always\ncmcgate.policy.encrypt=allow\n"
PASS_THROUGH = "cmcgate.policy.sign=never\ncmcgate.policy.encrypt=never\n"


def write_keys_passphrase(tmp: Path) -> None:
    (tmp / "keys.pass").write_text("keys-passphrase\n")
    os.chmod(tmp / "keys.pass", 0o600)


def configure_gateway(tmp: Path, sink: SmtpSink, policy: str) -> tuple[Path, int]:
    """The keys' passphrase file and ``gateway.properties`` in ``tmp`` for a gateway on a
    free port relaying to ``sink`` with ``policy``; (the config file, the port)."""
    write_keys_passphrase(tmp)
    port = free_port()
    config = tmp / "gateway.properties"
    write_config(config, port, sink.port, tmp, policy)
    return config, port


def run_on_a_taken_port(config: Path, port: int) -> subprocess.CompletedProcess[str]:
    """``cmcgate gateway run`` while a socket without SO_REUSEPORT listens on its port."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        return subprocess.run(
            [CMCGATE, "gateway", "run", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip


def import_alice_and_bob(config: Path, tmp: Path, ca_name: str) -> tuple[object, Path, Path]:
    """alice's certificate and key, bob's certificate, imported with ``cmcgate gateway certs
    import`` into ``config``'s store; (the CA, bob's certificate file, bob's key file)."""
    ca = make_ca(ca_name, kind="rsa")
    alice = ca.issue("alice@example.org", kind="rsa")
    bob = ca.issue("bob@partner.example", kind="rsa")
    alice_cert, alice_key = alice.write(tmp)
    bob_cert, bob_key = bob.write(tmp)
    for args in (
        ["--email", "alice@example.org", "--cert", str(alice_cert), "--key", str(alice_key)],
        ["--email", "bob@partner.example", "--cert", str(bob_cert)],
    ):
        done = subprocess.run(
            [CMCGATE, "gateway", "certs", "import", "--config", str(config), *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    return ca, bob_cert, bob_key


@pytest.fixture
def setup(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[tuple[GatewayProcess, Path, object]]:
    config, port = configure_gateway(tmp_path, smtp_sink, SIGN_AND_ENCRYPT)
    pki = import_alice_and_bob(config, tmp_path, "Service Test CA")
    gateway = GatewayProcess(config, port).start()
    try:
        yield gateway, tmp_path, pki
    finally:
        gateway.stop()


def message(size: int = 0) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@partner.example"
    msg["Subject"] = "report"
    msg.set_content("Hello Bob\n")
    if size:
        msg.add_attachment(os.urandom(size), maintype="application", subtype="octet-stream")
    return msg


def test_running_gateway_signs_encrypts_and_reloads_policy_on_sighup(setup, smtp_sink) -> None:
    gateway, tmp, (ca, bob_cert, bob_key) = setup
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
        assert client.send_message(message()) == {}
    [first] = smtp_sink.received()
    assert b"application/pkcs7-mime" in first.content
    inner = openssl("cms", "-decrypt", "-recip", bob_cert, "-inkey", bob_key, data=first.content)
    ca_file = ca.write(tmp)
    openssl("cms", "-verify", "-CAfile", ca_file, data=inner)

    write_config(gateway.config, gateway.port, smtp_sink.port, tmp, PASS_THROUGH)
    gateway.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
            assert client.send_message(message()) == {}
        if b"pkcs7" not in smtp_sink.received()[-1].content:
            break
        time.sleep(0.3)
    assert b"pkcs7" not in smtp_sink.received()[-1].content, "policy not reloaded"


def test_bad_config_on_sighup_keeps_the_running_one(setup, smtp_sink) -> None:
    gateway, _, _ = setup
    gateway.config.write_text(gateway.config.read_text() + "cmcgate.policy.sing=always\n")
    gateway.signal(signal.SIGHUP)
    time.sleep(1)
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=30) as client:
        assert client.send_message(message()) == {}
    assert b"application/pkcs7-mime" in smtp_sink.received()[-1].content


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def test_gateway_killed_after_data_before_reply_loses_nothing_and_resend_delivers_once(
    setup, smtp_sink
) -> None:
    gateway, _, _ = setup
    raw = message(size=20 * 1024 * 1024).as_bytes().replace(b"\n", b"\r\n")
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=60)
    try:
        assert _reply(sock).startswith(b"220")
        for command in (b"EHLO client.example", b"MAIL FROM:<alice@example.org>",
                        b"RCPT TO:<bob@partner.example>", b"DATA"):  # fmt: skip
            sock.sendall(command + b"\r\n")
            assert _reply(sock)[:1] in (b"2", b"3"), command
        sock.sendall(raw + b"\r\n.\r\n")
        time.sleep(0.1)  # the gateway is transforming 20 MB: far from its reply
        gateway.signal(signal.SIGKILL)
        try:
            answer = _reply(sock)
        except OSError:
            answer = b""
        assert not answer.startswith(b"250"), "sender must not get 250 from a killed gateway"
    finally:
        sock.close()
    assert gateway.proc is not None
    gateway.proc.wait(timeout=30)
    assert port_is_closed("127.0.0.1", gateway.port)
    assert smtp_sink.received() == [], "nothing may reach the next hop unacknowledged"
    gateway.proc = None
    gateway.start()  # the MTA in front retries later
    with smtplib.SMTP("127.0.0.1", gateway.port, timeout=120) as client:
        assert client.send_message(message(size=20 * 1024 * 1024)) == {}
    assert len(smtp_sink.received()) == 1
