"""One LDAP directory that recipients' certificates are looked up in (ldap3).

:class:`DirectoryClient` searches ``(mail=<address>)`` (filter-escaped) below the configured
base for ``userCertificate;binary`` / ``userCertificate`` values, over a few bound connections
it reuses (connect and receive timeout: the directory's ``timeout``). A pooled connection that
died (directory restarted) is replaced once; a directory that cannot be reached, refuses the
bind or answers busy/unavailable/noSuchObject raises :class:`DirectoryUnavailable`, a
:class:`cmc.errors.TemporaryFailure`. Thread-safe. Used by :mod:`gateway.certs.lookup`.
"""

from __future__ import annotations

import math
import ssl
import threading
from collections.abc import Sequence
from typing import Any

from cmc.errors import TemporaryFailure
from config.errors import CmcgateError
from config.model import LdapDirectory
from config.redact import redact_url

CERT_ATTRIBUTES = ("userCertificate;binary", "userCertificate")
#: Entries and certificate values read per search; more are ignored.
MAX_ENTRIES = 20
MAX_VALUES = 50
#: LDAP result codes that mean "ask again later", not "nothing there": timeLimitExceeded,
#: adminLimitExceeded, noSuchObject (base missing), invalidCredentials, busy, unavailable,
#: unwillingToPerform, other.
_UNAVAILABLE = {3, 11, 32, 49, 51, 52, 53, 80}


class DirectoryUnavailable(TemporaryFailure):
    """An LDAP directory could not be asked now (down, timeout, busy, bind refused)."""


class DirectoryClient:
    """Searches one LDAP directory over a few reused, bound ldap3 connections. Thread-safe."""

    def __init__(self, settings: LdapDirectory, pool_size: int = 4) -> None:
        self.settings = settings
        self.pool_size = pool_size
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        #: Searches sent to the directory (for tests and benchmarks).
        self.searches = 0

    def certificates(self, email: str) -> list[bytes]:
        """DER values of the certificate attributes of every entry with ``mail=email``."""
        from ldap3 import SUBTREE
        from ldap3.core.exceptions import LDAPException
        from ldap3.utils.conv import escape_filter_chars

        query = f"(mail={escape_filter_chars(email)})"
        for attempt in (1, 2):  # a pooled connection may have died since: one fresh try
            conn = self._acquire()
            try:
                self.searches += 1
                ok = conn.search(
                    self.settings.base, query, search_scope=SUBTREE,
                    attributes=list(CERT_ATTRIBUTES), size_limit=MAX_ENTRIES,
                    time_limit=max(1, int(self.settings.timeout)),
                )  # fmt: skip
                code = (conn.result or {}).get("result", 0)
            except (LDAPException, OSError) as exc:
                _unbind(conn)
                if attempt == 2:
                    raise self._unavailable(f"search failed: {exc}") from None
                continue
            if not ok and code in _UNAVAILABLE:
                _unbind(conn)
                raise self._unavailable(f"search refused: {_describe(conn)}")
            values = _values(conn.response or ())
            self._release(conn)
            return values
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _unbind(conn)

    def _unavailable(self, why: str) -> DirectoryUnavailable:
        return DirectoryUnavailable(
            f"LDAP directory {self.settings.name} ({redact_url(self.settings.url)}): {why}"
        )

    def _acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: Any) -> None:
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        _unbind(conn)

    def _connect(self) -> Any:
        import ldap3
        from ldap3.core.exceptions import LDAPException

        s = self.settings
        try:
            password = s.password.read().decode("utf-8") if s.password is not None else None
        except (CmcgateError, UnicodeDecodeError) as exc:
            raise self._unavailable(f"bind password: {exc}") from None
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED) if s.url.lower().startswith("ldaps:") else None
        try:
            server = ldap3.Server(s.url, connect_timeout=s.timeout, get_info=ldap3.NONE, tls=tls)
            conn = ldap3.Connection(
                server, user=s.bind_dn, password=password, raise_exceptions=False, read_only=True,
                auto_bind=ldap3.AUTO_BIND_NONE,
                receive_timeout=math.ceil(s.timeout),  # ldap3 packs it as an integer
            )  # fmt: skip
            conn.open()
            bound = conn.bind()
        except (LDAPException, OSError) as exc:
            raise self._unavailable(f"cannot connect: {exc}") from None
        if not bound:
            _unbind(conn)
            raise self._unavailable(
                f"bind as {s.bind_dn or 'anonymous'} refused: {_describe(conn)}"
            )
        return conn


def _values(response: Sequence[dict[str, Any]]) -> list[bytes]:
    found: list[bytes] = []
    for entry in response:
        if entry.get("type") != "searchResEntry":
            continue
        for name, values in (entry.get("raw_attributes") or {}).items():
            if name.split(";")[0].lower() != "usercertificate":
                continue
            found += [bytes(v) for v in values if bytes(v) not in found]
    return found[:MAX_VALUES]


def _describe(conn: Any) -> str:
    result = conn.result or {}
    text = f"{result.get('description', 'error')} ({result.get('result', '?')})"
    message = str(result.get("message") or "").strip()
    return f"{text}: {message}" if message else text


def _unbind(conn: Any) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001, S110 - closing a connection that may be dead already
        pass
