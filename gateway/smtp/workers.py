"""``cmcgate.gateway.workers`` > 1: several gateway processes on one port.

One gateway process uses one core for SMTP, S/MIME and DKIM (the GIL).  With ``workers`` =
N, ``cmcgate gateway run`` becomes a small supervisor that starts N copies of itself
(``cmcgate gateway run --worker I``), each with its own listening socket on the same address
(``SO_REUSEPORT``: the kernel spreads new connections over them), its own stores'
connections and its own event loop.  What must happen once is arranged so:

* background jobs (renewal, the enrolment poll, publication retries, the key-pool refill)
  run in worker 0 only;
* enrolments of one address are serialised across workers by a lock file in the state
  directory (:meth:`gateway.broker.state.StateFiles.locked`); key-pool claims were
  already cross-process (``O_EXCL`` claim files);
* metrics: every worker writes its counters to ``<stateDir>/metrics/`` (prometheus_client's
  multiprocess mode) and the supervisor serves their sum on ``cmcgate.metrics.listen``.

The supervisor passes SIGHUP on (each worker re-reads the file itself; a bad file is
refused by the supervisor first and by every worker), stops the workers with SIGTERM on
SIGTERM/SIGINT, and restarts a worker that dies.  A worker that exits before it reported
itself listening (through a pipe, ``CMCGATE_READY_FD``) could not start — bad key file, port
taken — and stops the whole gateway with its exit code: systemd then shows the failure
instead of a restart loop.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.properties import ConfigHolder
from gateway.smtp.control import READY_FD_VARIABLE, ControlSignals, reload_config
from gateway.smtp.service import check_config

log = logging.getLogger("cmcgate.gateway.workers")

#: least time between two starts of the same worker
RESTART_DELAY_SECONDS = 1.0
STOP_TIMEOUT_SECONDS = 30.0


class Supervisor:
    """The worker processes of one gateway (see module doc)."""

    def __init__(
        self, holder: ConfigHolder, *, quarantine_dir: Path | None, log_level: str
    ) -> None:
        self.holder = holder
        self.config = holder.current
        self.count = self.config.gateway.workers
        self.metrics_dir = self.config.gateway.state_dir / "metrics"
        self.command = [
            sys.executable, "-m", "gateway.main", "gateway", "run",
            "--config", str(holder.path), "--log-level", log_level,
        ]  # fmt: skip
        if quarantine_dir is not None:
            self.command += ["--quarantine-dir", str(quarantine_dir)]
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self._ready_pipes: dict[int, int] = {}  # read ends, until the worker reported
        self._ready: dict[int, bool] = {}

    def start(self) -> None:
        shutil.rmtree(self.metrics_dir, ignore_errors=True)  # counters start at zero
        self.metrics_dir.mkdir(parents=True, mode=0o700)
        for index in range(self.count):
            self._spawn(index)
        if self.config.metrics_listen is not None:
            from prometheus_client import CollectorRegistry, start_http_server
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(self.metrics_dir))
            listen = self.config.metrics_listen
            start_http_server(listen.port, listen.host, registry)

    def _spawn(self, index: int) -> None:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            READY_FD_VARIABLE: str(write_end),
        }
        try:
            self.workers[index] = subprocess.Popen(
                [*self.command, "--worker", str(index)], env=env, pass_fds=(write_end,)
            )
        finally:
            os.close(write_end)
        self._ready_pipes[index] = read_end
        self._ready[index] = False
        self.started[index] = time.monotonic()
        log.info("worker %d started, pid %d", index, self.workers[index].pid)

    def _reported_ready(self, index: int) -> bool:
        """Whether worker ``index`` wrote "ready"; its pipe closes at the first answer (also
        at end of file: a worker that died before it listened stays not ready)."""
        read_end = self._ready_pipes.get(index)
        if read_end is not None:
            try:
                data = os.read(read_end, 16)
            except BlockingIOError:
                return False
            os.close(read_end)
            del self._ready_pipes[index]
            self._ready[index] = data == b"ready"
        return self._ready[index]

    def all_ready(self) -> bool:
        return all([self._reported_ready(index) for index in self.workers])

    def check(self) -> int | None:
        """Restart workers that died; an exit code when the gateway must stop."""
        for index, process in list(self.workers.items()):
            ready = self._reported_ready(index)
            code = process.poll()
            if code is None:
                continue
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(process.pid, str(self.metrics_dir))
            if not ready:
                log.error("worker %d exited with %d while starting: stopping", index, code)
                return code or 1
            if time.monotonic() - self.started[index] < RESTART_DELAY_SECONDS:
                continue  # try again at the next check
            log.error("worker %d (pid %d) exited with %d: restarting", index, process.pid, code)
            self._spawn(index)
        return None

    def signal_all(self, signum: int) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def stop(self) -> None:
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in self.workers.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """True once every worker reported itself listening."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.all_ready():
                return True
            if any(p.poll() is not None for p in self.workers.values()):
                return False
            time.sleep(0.05)
        return False


def supervise(
    holder: ConfigHolder,
    signals: ControlSignals,
    *,
    quarantine_dir: Path | None,
    log_level: str,
) -> int:
    """Run ``cmcgate.gateway.workers`` workers until SIGTERM/SIGINT (see module doc)."""
    supervisor = Supervisor(holder, quarantine_dir=quarantine_dir, log_level=log_level)
    supervisor.start()
    try:
        gw = supervisor.config.gateway
        if supervisor.wait_ready():
            log.info(
                "cmcgate gateway started: listening on %s:%s, next hop %s:%s, with %d workers",
                gw.listen.host, gw.listen.port, gw.next_hop.host, gw.next_hop.port,
                supervisor.count,
            )  # fmt: skip
        while not signals.stop.wait(0.2):
            code = supervisor.check()
            if code is not None:
                return code
            if signals.take_reload() and reload_config(holder, check_config):
                if holder.current.gateway.workers != supervisor.count:
                    log.warning("cmcgate.gateway.workers changes at the next start")
                supervisor.signal_all(signal.SIGHUP)
    finally:
        supervisor.stop()
        log.info("cmcgate gateway stopped (%d workers)", supervisor.count)
    return 0
