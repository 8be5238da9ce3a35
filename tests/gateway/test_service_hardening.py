"""`cmcgate gateway run` as a real process: failed reloads, start-up errors, STARTTLS and AUTH."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink, free_port
from tests.gateway.test_service import (
    CMCGATE,
    PASS_THROUGH,
    GatewayProcess,
    message,
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
    assert wait_for(lambda: "2 workers listening" in setup.log())
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
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", plain.process.port))
        squatter.listen()
        done = subprocess.run(
            [CMCGATE, "gateway", "run", "--config", str(plain.config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
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
