"""A private, throwaway Postfix instance and Postfix's SMTP test tools, for benchmarks.

:class:`PostfixInstance` writes its own ``main.cf`` and ``master.cf`` into a temporary
config directory (``postfix -c DIR``), with its queue and data directories beside it: it
listens on ``127.0.0.1:PORT`` only, relays everything to ``[127.0.0.1]:RELAY_PORT``
(``relayhost``) for clients in ``127.0.0.0/8`` and delivers nothing locally.  The system's
own Postfix (``/etc/postfix``) is neither read nor touched.  Needs root (``postfix start``)
and the ``postfix`` user and ``postdrop`` group that Debian's package creates.

:class:`SmtpSink` runs ``smtp-sink`` until it has received a given number of messages, so
"the sink exited" is "every message arrived"; :func:`smtp_source` runs ``smtp-source``.

:func:`ensure_postfix` installs Debian's ``postfix`` package when one of the tools is
missing (benchmarks install what they need; tests never call it).

    .venv/bin/python bench/postfix_instance.py     # smoke test: 100 messages through it
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

TOOLS = ("postfix", "smtp-source", "smtp-sink", "postconf")
SBIN = Path("/usr/sbin")


class PostfixError(RuntimeError):
    """The Postfix instance or one of the test tools failed."""


def tool(name: str) -> str:
    found = shutil.which(name) or (str(SBIN / name) if (SBIN / name).exists() else None)
    if found is None:
        raise PostfixError(f"{name} not found: install Debian's postfix package")
    return found


def ensure_postfix() -> None:
    """Install Debian's ``postfix`` package (non-interactively) if a tool is missing."""
    if all(shutil.which(t) or (SBIN / t).exists() for t in TOOLS):
        return
    if os.geteuid() != 0:
        raise PostfixError("postfix is not installed and installing it needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing Debian's postfix package (smtp-source, smtp-sink) ...", file=sys.stderr)
    install = ["apt-get", "install", "-y", "-q", "postfix"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise PostfixError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


# -- the private instance -------------------------------------------------------------------
#: Every service Postfix's daemons expect; nothing chrooted (no copies of /etc needed).
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# A throwaway Postfix instance for benchmarks (bench/postfix_instance.py).
compatibility_level = 3.6
config_directory = {config}
queue_directory = {queue}
data_directory = {data}
command_directory = {command_directory}
daemon_directory = {daemon_directory}
meta_directory = {config}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = localdomain
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
relayhost = [127.0.0.1]:{relay_port}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
local_transport = error:5.1.1 no local delivery in the benchmark instance
local_recipient_maps =
alias_maps =
alias_database =
biff = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtp_dns_support_level = disabled
disable_dns_lookups = yes
maillog_file = {maillog}
maillog_file_prefixes = {base}
message_size_limit = {message_size_limit}
"""


class PostfixInstance:
    """``postfix -c DIR`` with its own config, queue and data directories under ``base``."""

    def __init__(
        self,
        base: Path,
        port: int,
        relay_port: int,
        *,
        hostname: str = "bench.localdomain",
        message_size_limit: int = 64 * 1024 * 1024,
        extra_main_cf: str = "",
        extra_master_cf: str = "",
    ) -> None:
        self.extra_main_cf = extra_main_cf
        self.extra_master_cf = extra_master_cf
        self.base = Path(base)
        self.port = port
        self.relay_port = relay_port
        self.hostname = hostname
        self.message_size_limit = message_size_limit
        self.config = self.base / "etc"
        self.queue = self.base / "spool"
        self.data = self.base / "lib"
        self.maillog = self.base / "maillog"
        self._started = False

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [tool("postfix"), "-c", str(self.config), *args], capture_output=True, text=True
        )
        if check and done.returncode != 0:
            raise PostfixError(
                f"postfix -c {self.config} {' '.join(args)} failed ({done.returncode}):"
                f" {(done.stderr or done.stdout).strip()}"
            )
        return done

    def write_config(self) -> None:
        for directory in (self.config, self.queue, self.data):
            directory.mkdir(parents=True, exist_ok=True)
        # The postfix user must reach the queue through the temporary directory.
        for directory in (self.base, *self.base.parents):
            if directory == Path("/"):
                break
            mode = directory.stat().st_mode
            if not mode & 0o001:
                os.chmod(directory, mode | 0o001)
        shutil.chown(self.data, "postfix", "postfix")
        self.maillog.touch()
        os.chmod(self.maillog, 0o644)
        postconf = tool("postconf")

        def default(name: str) -> str:
            out = subprocess.run([postconf, "-dh", name], capture_output=True, text=True)
            return out.stdout.strip()

        values = {
            "config": self.config,
            "queue": self.queue,
            "data": self.data,
            "hostname": self.hostname,
            "relay_port": self.relay_port,
            "maillog": self.maillog,
            "base": self.base,
            "message_size_limit": self.message_size_limit,
            "command_directory": default("command_directory") or "/usr/sbin",
            "daemon_directory": default("daemon_directory") or "/usr/lib/postfix/sbin",
        }
        (self.config / "main.cf").write_text(MAIN_CF.format(**values) + self.extra_main_cf)
        listen = f"127.0.0.1:{self.port}"
        master = MASTER_CF.format(listen=listen) + self.extra_master_cf
        (self.config / "master.cf").write_text(master)
        # postfix-files (the list `postfix check` sets permissions from) lives in meta_directory.
        meta = Path(default("meta_directory") or "/etc/postfix")
        for name in ("postfix-files", "dynamicmaps.cf"):
            if (meta / name).exists():
                shutil.copy(meta / name, self.config / name)
        files_d = meta / "postfix-files.d"
        if files_d.is_dir():
            shutil.copytree(files_d, self.config / "postfix-files.d", dirs_exist_ok=True)
        dynamicmaps_d = meta / "dynamicmaps.cf.d"
        if dynamicmaps_d.is_dir():
            shutil.copytree(dynamicmaps_d, self.config / "dynamicmaps.cf.d", dirs_exist_ok=True)

    def check(self) -> None:
        self._postfix("check")

    def start(self) -> None:
        self._started = True
        self._postfix("start")
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._postfix("stop", check=False)
            # `postfix stop` returns before master has gone; wait for its pid file to go.
            pid_file = self.queue / "pid" / "master.pid"
            deadline = time.monotonic() + 10
            while pid_file.exists() and time.monotonic() < deadline:
                try:
                    os.kill(int(pid_file.read_text().split()[0]), 0)
                except (OSError, ValueError, IndexError):
                    break
                time.sleep(0.1)

    def flush(self) -> None:
        """``postfix flush``: retry deferred mail now."""
        self._postfix("flush")

    def queue_is_empty(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop", "hold"):
            directory = self.queue / sub
            if directory.is_dir() and any(p.is_file() for p in directory.rglob("*")):
                return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Self:
        self.write_config()
        self.check()
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- smtp-sink and smtp-source ------------------------------------------------------------
class SmtpSink:
    """``smtp-sink -c 127.0.0.1:PORT``; :meth:`wait_for` polls its message counter.

    (``smtp-sink -M COUNT`` would exit after the COUNT-th message, but before answering its
    final ".", so the client sees the connection lost: the running counter is used instead.)
    """

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        args = [tool("smtp-sink"), "-4", "-c", "-m", "512"]
        if os.geteuid() == 0:
            args += ["-u", "postfix"]
        args += [f"127.0.0.1:{self.port}", "1024"]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        return self

    def counted(self) -> int:
        """Messages received so far (the ``mesg=N`` of smtp-sink's last counter line)."""
        try:
            with open(self.log, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 256))
                tail = log.read()
        except OSError:
            return 0
        found = re.findall(rb"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0

    def wait_for(self, count: int, timeout: float) -> bool:
        """True once the sink has received ``count`` messages in all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.counted() >= count:
                return True
            if self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(0.002)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def smtp_source_args(
    port: int,
    *,
    messages: int,
    sessions: int = 8,
    length: int | None = 10240,
    sender: str = "alice@example.org",
    recipient: str = "bob@example.net",
    message_file: Path | None = None,
) -> list[str]:
    args = [tool("smtp-source"), "-4", "-s", str(sessions), "-m", str(messages)]
    args += ["-f", sender, "-t", recipient, "-M", "bench.localdomain", "-S", "bench"]
    if message_file is not None:
        args += ["-F", str(message_file)]
    elif length is not None:
        args += ["-l", str(length)]
    return [*args, f"127.0.0.1:{port}"]


def smtp_source(port: int, *, timeout: float = 300, **kwargs: object) -> None:
    """Run smtp-source to completion; it aborts (non-zero) on any unexpected reply."""
    done = subprocess.run(
        smtp_source_args(port, **kwargs),  # type: ignore[arg-type]
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise PostfixError(
            f"smtp-source failed ({done.returncode}): {(done.stderr or done.stdout).strip()}"
        )


def _smoke() -> None:
    ensure_postfix()
    count = 100
    with tempfile.TemporaryDirectory(prefix="cmcgate-postfix-") as tmp:
        sink_port, port = free_port(), free_port()
        sink = SmtpSink(sink_port, Path(tmp) / "sink.log").start()
        try:
            with PostfixInstance(Path(tmp) / "postfix", port, sink_port) as postfix:
                start = time.perf_counter()
                smtp_source(port, messages=count)
                if not sink.wait_for(count, 60):
                    raise PostfixError(
                        f"sink got {sink.counted()} of {count};\n{postfix.log_tail()}"
                    )
                elapsed = time.perf_counter() - start
        finally:
            sink.stop()
    print(f"private Postfix relayed {count} messages in {elapsed:.2f}s ({count / elapsed:.0f}/s)")


if __name__ == "__main__":
    _smoke()
