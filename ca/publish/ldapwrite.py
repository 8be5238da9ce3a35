"""Writing certificates into an LDAP directory: the part shared by the CA and the gateway.

The CA's publication jobs (:mod:`ca.publish.publisher`) and the gateway's publication of the
certificates it enrols (:mod:`gateway.broker.publication`) write the same way; it lives in ``ca/``
because the CA must run without the gateway, while the gateway imports ``ca`` already.

:class:`DirectoryWriter` knows the directory (URL, base DN, bind DN, where the password comes
from, timeouts); :meth:`DirectoryWriter.connect` gives a bound :class:`DirectorySession`:

* :meth:`~DirectorySession.find`: every entry under the base DN (whole subtree) whose
  ``mail`` is the address;
* :meth:`~DirectorySession.create`: ``mail=<address>,<base_dn>`` as an ``inetOrgPerson``
  (``cn`` = the address, ``sn`` = its local part) holding the certificate; an entry created
  meanwhile by someone else gets the value added instead;
* :meth:`~DirectorySession.change`: MODIFY_ADD / MODIFY_DELETE of one
  ``userCertificate;binary`` value (a value already there, or already gone, counts as done);
* :meth:`~DirectorySession.publish` / :meth:`~DirectorySession.unpublish` combine them.
  Entries are never deleted.

Errors: :class:`LdapUnavailable` when the directory cannot be reached, times out, is
busy/unavailable, refuses the bind, or the password cannot be read (wait for it and retry);
:class:`PublishError` when it answered and refused the operation.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable
from typing import Any

from config.closing import Closing
from config.errors import CmcgateError
from config.redact import redact_url

CERT_ATTRIBUTE = "userCertificate;binary"
PERSON_CLASSES = ("top", "person", "organizationalPerson", "inetOrgPerson")
_NO_SUCH_ATTRIBUTE = 16
_VALUE_EXISTS = 20
_ALREADY_EXISTS = 68
_UNAVAILABLE_CODES = frozenset({51, 52})  # busy, unavailable


class PublishError(CmcgateError):
    """A publication could not be done now (the directory refused it)."""


class LdapUnavailable(PublishError):
    """The directory cannot be reached or bound to: every publication waits for it."""


class DirectoryWriter:
    """An LDAP directory that certificates are written to.

    ``password``: called at each :meth:`connect`; returns the bind password (None: bind
    anonymously, ``bind_dn`` unused) or raises :class:`LdapUnavailable`.  ``ldaps://`` URLs
    verify the server's certificate against the system's trust store.
    """

    def __init__(
        self,
        url: str,
        base_dn: str,
        *,
        bind_dn: str | None = None,
        password: Callable[[], str | None] | None = None,
        connect_timeout: float = 5,
        receive_timeout: float = 10,
    ) -> None:
        self.url = url
        self.base_dn = base_dn
        self.bind_dn = bind_dn
        self.password = password or (lambda: None)
        self.connect_timeout = connect_timeout
        # ldap3 packs the receive timeout into SO_RCVTIMEO: it must be a whole number
        self.receive_timeout = max(1, math.ceil(receive_timeout))

    def connect(self) -> DirectorySession:
        """A bound session; :class:`LdapUnavailable` when that is impossible now."""
        import ldap3
        from ldap3.core.exceptions import LDAPException

        password = self.password()
        url = self.url
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED) if url.lower().startswith("ldaps:") else None
        try:
            server = ldap3.Server(
                url, connect_timeout=self.connect_timeout, get_info=ldap3.NONE, tls=tls
            )
            conn = ldap3.Connection(
                server,
                user=self.bind_dn if password is not None else None,
                password=password,
                receive_timeout=self.receive_timeout,
                raise_exceptions=False,
                auto_bind=ldap3.AUTO_BIND_NONE,
            )
            conn.open()
            bound = conn.bind()
        except LDAPException as exc:
            raise LdapUnavailable(f"cannot reach {redact_url(url)}: {exc}") from None
        if not bound:
            message = f"bind as {self.bind_dn} to {redact_url(url)} refused: {describe(conn)}"
            _quietly_unbind(conn)
            raise LdapUnavailable(message)
        return DirectorySession(conn, self.base_dn)

    def publish(self, email: str, der: bytes) -> tuple[str, ...]:
        """Connect, add ``der`` to ``email``'s entries (creating one if none), disconnect."""
        with self.connect() as session:
            return session.publish(email, der)[1]

    def unpublish(self, email: str, der: bytes) -> tuple[str, ...]:
        """Connect, remove ``der`` from ``email``'s entries, disconnect."""
        with self.connect() as session:
            return session.unpublish(email, der)[1]


class DirectorySession(Closing):
    """One bound connection (a context manager that unbinds)."""

    def __init__(self, conn: Any, base_dn: str) -> None:
        self.conn = conn
        self.base_dn = base_dn

    def close(self) -> None:
        _quietly_unbind(self.conn)

    def publish(self, email: str, der: bytes) -> tuple[str, tuple[str, ...]]:
        """(what happened, the entries) after adding ``der`` to ``email``'s entries."""
        entries = self.find(email)
        if not entries:
            return "entry created", (self.create(email, der),)
        return _join({self.change(dn, "add", der) for dn in entries}), entries

    def unpublish(self, email: str, der: bytes) -> tuple[str, tuple[str, ...]]:
        """(what happened, the entries) after removing ``der`` from ``email``'s entries."""
        entries = self.find(email)
        results = {self.change(dn, "delete", der) for dn in entries}
        return _join(results) or "no entry", entries

    def find(self, email: str) -> tuple[str, ...]:
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        conn, base = self.conn, self.base_dn
        _call(conn, conn.search, base, f"(mail={escape_filter_chars(email)})",
              search_scope=ldap3.SUBTREE, attributes=[ldap3.NO_ATTRIBUTES])  # fmt: skip
        if (conn.result or {}).get("result") != 0:  # search() is False for no entries too
            raise PublishError(f"search for mail={email} under {base}: {describe(conn)}")
        found = [r["dn"] for r in conn.response or () if r.get("type") == "searchResEntry"]
        return tuple(sorted(found))

    def create(self, email: str, der: bytes) -> str:
        from ldap3.utils.dn import escape_rdn

        conn = self.conn
        dn = f"mail={escape_rdn(email)},{self.base_dn}"
        local = email.rpartition("@")[0] or email
        attributes = {"cn": email, "sn": local, "mail": email, CERT_ATTRIBUTE: der}
        if _call(conn, conn.add, dn, list(PERSON_CLASSES), attributes):
            return dn
        if conn.result.get("result") == _ALREADY_EXISTS:  # created meanwhile by another worker
            self.change(dn, "add", der)
            return dn
        raise PublishError(f"add {dn}: {describe(conn)}")

    def change(self, dn: str, action: str, der: bytes) -> str:
        """``action`` "add" or "delete" one value: "added"/"already present"/"removed"/...."""
        import ldap3

        conn = self.conn
        op = ldap3.MODIFY_ADD if action == "add" else ldap3.MODIFY_DELETE
        if _call(conn, conn.modify, dn, {CERT_ATTRIBUTE: [(op, [der])]}):
            return "added" if action == "add" else "removed"
        code = conn.result.get("result")
        if action == "add" and code == _VALUE_EXISTS:
            return "already present"
        if action == "delete" and code == _NO_SUCH_ATTRIBUTE:
            return "not present"
        raise PublishError(f"modify ({action}) {CERT_ATTRIBUTE} of {dn}: {describe(conn)}")


def _call(conn: Any, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
    """Run one ldap3 operation; connection trouble becomes :class:`LdapUnavailable`."""
    from ldap3.core.exceptions import (
        LDAPCommunicationError,
        LDAPException,
        LDAPResponseTimeoutError,
        LDAPStartTLSError,
    )

    try:
        ok = bool(operation(*args, **kwargs))
    except (LDAPCommunicationError, LDAPResponseTimeoutError, LDAPStartTLSError) as exc:
        raise LdapUnavailable(f"connection to the directory lost: {exc}") from None
    except LDAPException as exc:
        raise PublishError(f"LDAP: {exc}") from None
    if not ok and (conn.result or {}).get("result") in _UNAVAILABLE_CODES:
        raise LdapUnavailable(f"the directory is unavailable: {describe(conn)}")
    return ok


def describe(conn: Any) -> str:
    """The last result of ``conn`` for a message: ``description (code): message``."""
    result = conn.result or {}
    text = f"{result.get('description', 'error')} ({result.get('result', '?')})"
    message = str(result.get("message") or "").strip()
    return f"{text}: {message}" if message else text


def _join(results: set[str]) -> str:
    return ", ".join(sorted(results))


def _quietly_unbind(conn: Any) -> None:
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001, S110 - closing a connection that may be dead already
        pass


__all__ = [
    "CERT_ATTRIBUTE",
    "DirectorySession",
    "DirectoryWriter",
    "LdapUnavailable",
    "PublishError",
]
