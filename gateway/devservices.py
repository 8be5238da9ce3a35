"""Throwaway local services for the demo and the tests: a private slapd and an SMTP sink.

Each service lives in its own temporary directory, listens on a free loopback port and is
stopped (process ended, port closed, directory removed) by ``stop()`` or by leaving the
``with`` block.  They are real programs — OpenLDAP's slapd and an aiosmtpd server — so the
code under test speaks real LDAP and SMTP to them.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.errors import CmcgateError

SLAPD_CANDIDATES = ("/usr/sbin/slapd", "/usr/local/sbin/slapd")
SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema")
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/openldap", "/usr/lib64/openldap")


class ServiceError(CmcgateError):
    """A local service could not be started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen[Any] | None = None
) -> None:
    """Block until ``host:port`` accepts connections, or raise :class:`ServiceError`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServiceError(f"process exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise ServiceError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def port_is_closed(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return False
    except OSError:
        return True


def _first_existing(paths: Iterable[str], what: str) -> str:
    for candidate in paths:
        if Path(candidate).exists():
            return candidate
    raise ServiceError(f"{what} not found (install the Debian package: make deps)")


def slapd_available() -> bool:
    return any(Path(p).exists() for p in SLAPD_CANDIDATES)


@dataclass
class Slapd:
    """A private OpenLDAP server: mdb database, core/cosine/inetOrgPerson schemas.

    The root DN ``cn=admin,<suffix>`` binds with :attr:`admin_password`; the suffix entry
    exists after :meth:`start`.
    """

    suffix: str = "dc=example,dc=org"
    admin_password: str = "admin-secret"  # noqa: S105 - throwaway test directory
    host: str = "127.0.0.1"
    port: int = 0
    workdir: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_dir: bool = field(default=False, repr=False)

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self.suffix}"

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    def _write_config(self, workdir: Path) -> Path:
        schema_dir = Path(_first_existing(SCHEMA_DIRS, "OpenLDAP schema directory"))
        module_dir = _first_existing(MODULE_DIRS, "OpenLDAP module directory")
        (workdir / "db").mkdir(exist_ok=True)
        lines = [
            f"include {schema_dir / name}.schema" for name in ("core", "cosine", "inetorgperson")
        ]
        lines += [
            f"pidfile {workdir / 'slapd.pid'}",
            f"modulepath {module_dir}",
            "moduleload back_mdb",
            "database mdb",
            f'suffix "{self.suffix}"',
            f'rootdn "{self.admin_dn}"',
            f"rootpw {self.admin_password}",
            f"directory {workdir / 'db'}",
            "maxsize 16777216",
            "index mail eq",
        ]
        conf = workdir / "slapd.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> Slapd:
        """Start slapd (again, after :meth:`pause`, on the same port and data)."""
        if self.process is not None:
            return self
        binary = _first_existing(SLAPD_CANDIDATES, "slapd")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="cmcgate-slapd-"))
            self._own_dir = True
        fresh = not (self.workdir / "slapd.conf").exists()
        conf = self._write_config(self.workdir) if fresh else self.workdir / "slapd.conf"
        if not self.port:
            self.port = free_port(self.host)
        log = open(self.workdir / "slapd.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [binary, "-f", str(conf), "-h", f"{self.url}/", "-d", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        try:
            wait_for_port(self.host, self.port, timeout, self.process)
        except ServiceError as exc:
            self.stop()
            raise ServiceError(f"slapd did not start: {exc}") from None
        if fresh:
            self._add_suffix_entry()
        return self

    def _add_suffix_entry(self) -> None:
        import ldap3

        first_rdn = self.suffix.split(",")[0]
        attr, _, value = first_rdn.partition("=")
        with self.connection() as conn:
            if attr.lower() == "dc":
                ok = conn.add(self.suffix, ["dcObject", "organization"], {"dc": value, "o": value})
            else:
                ok = conn.add(self.suffix, ["organization"], {"o": value})
            if (
                not ok
                and conn.result.get("result") != ldap3.core.results.RESULT_ENTRY_ALREADY_EXISTS
            ):
                raise ServiceError(f"slapd: adding {self.suffix} failed: {conn.result}")

    def connection(self) -> Any:
        """An ldap3 connection bound as the root DN (use it in a ``with`` block)."""
        import ldap3

        server = ldap3.Server(self.host, port=self.port, connect_timeout=5)
        return ldap3.Connection(
            server,
            user=self.admin_dn,
            password=self.admin_password,
            auto_bind=True,
            receive_timeout=10,
        )

    def pause(self) -> None:
        """Stop the process but keep the data and port, so :meth:`start` resumes it."""
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Stop the process and remove its directory."""
        self.pause()
        if self._own_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Slapd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the sink received it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    #: the session had switched to TLS (STARTTLS) when the message came
    tls: bool = False
    #: MAIL FROM carried SMTPUTF8
    smtputf8: bool = False
    #: the MAIL FROM parameters, e.g. ``("BODY=8BITMIME",)``
    mail_options: tuple[str, ...] = ()


class SmtpSink:
    """An SMTP server on loopback that records every message it accepts.

    ``reject`` maps a recipient address to the reply it gets at RCPT (for example
    ``"550 5.1.1 no such user"``); ``data_reply`` replaces the reply to DATA (for example
    ``"451 4.3.0 try later"``), in which case nothing is recorded.  ``data_reply_once`` maps a
    recipient to the reply that the DATA of the next transaction including it gets, once.

    ``tls_context`` (server side) offers STARTTLS; ``smtputf8`` offers SMTPUTF8.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_context: Any = None,
        smtputf8: bool = False,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.tls_context = tls_context
        self.smtputf8 = smtputf8
        self.messages: list[ReceivedMessage] = []
        self.reject: dict[str, str] = {}
        self.data_reply: str | None = None
        self.data_reply_once: dict[str, str] = {}
        #: SMTP sessions opened by clients (counted at EHLO/HELO).
        self.sessions = 0
        self._lock = threading.Lock()
        self._controller: Any = None

    # aiosmtpd handler hooks -------------------------------------------------------------
    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self._lock:
            self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.reject.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_reply:
            return self.data_reply
        with self._lock:
            for recipient in envelope.rcpt_tos:
                once = self.data_reply_once.pop(recipient.lower(), None)
                if once:
                    return once
        content = envelope.original_content or envelope.content
        message = ReceivedMessage(
            envelope.mail_from, tuple(envelope.rcpt_tos), bytes(content),
            tls=session.ssl is not None, smtputf8=bool(envelope.smtp_utf8),
            mail_options=tuple(envelope.mail_options),
        )  # fmt: skip
        with self._lock:
            self.messages.append(message)
        return "250 2.0.0 OK: queued"

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        self._controller = Controller(
            self, hostname=self.host, port=self.port, data_size_limit=0, decode_data=False,
            tls_context=self.tls_context, enable_SMTPUTF8=self.smtputf8,
        )  # fmt: skip
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self.messages)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
