"""`cmcgate.gateway.workers=2`: one supervisor, two worker processes on one port."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink, free_port
from tests.gateway.test_gateway_log import assert_no_line_twice, lines_with
from tests.gateway.test_service import (
    PASS_THROUGH,
    SIGN_AND_ENCRYPT,
    GatewayProcess,
    import_alice_and_bob,
    message,
    run_on_a_taken_port,
    write_config,
    write_keys_passphrase,
)


def children(pid: int) -> set[int]:
    done = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return {int(line) for line in done.stdout.split()}


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped in this container does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_for(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


class Workers:
    def __init__(self, tmp: Path, sink: SmtpSink) -> None:
        self.tmp, self.sink = tmp, sink
        self.metrics_port = free_port()
        self.config = tmp / "gateway.properties"
        self.process = GatewayProcess(self.config, free_port())
        self.write(SIGN_AND_ENCRYPT)

    def write(self, policy: str) -> None:
        extra = f"cmcgate.gateway.workers=2\ncmcgate.metrics.listen=127.0.0.1:{self.metrics_port}\n"
        write_config(self.config, self.process.port, self.sink.port, self.tmp, policy + extra)

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def send(self, count: int) -> None:
        for _ in range(count):  # a new connection each: the kernel picks the worker
            with smtplib.SMTP("127.0.0.1", self.process.port, timeout=30) as client:
                assert client.send_message(message()) == {}

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text(errors="replace")

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )


@pytest.fixture
def workers(tmp_path: Path, smtp_sink: SmtpSink) -> Iterator[Workers]:
    write_keys_passphrase(tmp_path)
    setup = Workers(tmp_path, smtp_sink)
    import_alice_and_bob(setup.config, tmp_path, "Workers Test CA")
    setup.process.start()
    assert wait_for(lambda: "with 2 workers" in setup.log())
    try:
        yield setup
    finally:
        pids = children(setup.pid) if setup.process.proc is not None else set()
        assert setup.process.stop() in (0, None)
        assert not any(alive(pid) for pid in pids), "a worker outlived the supervisor"


def test_both_workers_serve_the_port_and_metrics_add_up(workers: Workers, smtp_sink) -> None:
    assert len(children(workers.pid)) == 2
    workers.send(30)
    received = smtp_sink.received()
    assert len(received) == 30
    assert all(b"application/pkcs7-mime" in m.content for m in received)
    log = workers.log()
    for index in (0, 1):  # 30 connections hashed over two sockets: both got some
        assert any(f"[worker {index}]" in line and "queue_id=" in line for line in log.splitlines())
    assert workers.metric("cmcgate_messages_total") == 30


def test_sighup_reaches_every_worker(workers: Workers, smtp_sink) -> None:
    workers.write(PASS_THROUGH)
    workers.process.signal(signal.SIGHUP)
    assert wait_for(lambda: workers.log().count("configuration applied") == 2)
    workers.send(10)
    assert all(b"pkcs7" not in m.content for m in smtp_sink.received())


def test_a_worker_that_dies_is_restarted(workers: Workers, smtp_sink) -> None:
    before = children(workers.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len(children(workers.pid)) == 2 and victim not in children(workers.pid))
    assert wait_for(lambda: "exited with -9: restarting" in workers.log())  # log may lag the fork
    assert wait_for(lambda: workers.log().count("cmcgate gateway started") == 4)
    workers.send(10)
    assert len(smtp_sink.received()) == 10


def test_workers_that_cannot_start_stop_the_gateway_with_an_error(
    tmp_path: Path, smtp_sink: SmtpSink
) -> None:
    """The port is taken by a socket without SO_REUSEPORT: no restart loop, an exit code."""
    write_keys_passphrase(tmp_path)
    setup = Workers(tmp_path, smtp_sink)
    done = run_on_a_taken_port(setup.config, setup.process.port)
    assert done.returncode != 0
    assert "while starting: stopping" in done.stderr


def test_workers_stop_when_the_supervisor_is_killed(workers: Workers) -> None:
    pids = children(workers.pid)
    assert workers.process.proc is not None
    workers.process.proc.kill()
    workers.process.proc.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in pids), 15)
    workers.process.proc = None  # nothing left for the fixture to stop


def test_supervisor_and_workers_each_log_start_and_stop_once(workers: Workers) -> None:
    workers.send(6)
    assert workers.process.stop() == 0
    log = workers.log()
    assert len(lines_with(log, "cmcgate gateway started", "with 2 workers")) == 1
    assert len(lines_with(log, "cmcgate gateway stopped (2 workers)")) == 1
    for index in (0, 1):
        assert len(lines_with(log, f"[worker {index}] cmcgate gateway started")) == 1
        assert len(lines_with(log, f"[worker {index}] cmcgate gateway stopped")) == 1
    assert len(lines_with(log, "queue_id=", "reply=250")) == 6
    assert_no_line_twice(log)
