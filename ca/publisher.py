"""Publishes issued certificates to an LDAP directory and removes revoked ones.

The CA queues a ``PUBLISH`` job per address when it issues a certificate of a product with
``publish_ldap: true`` (and ``ca.ldap`` is configured), and an ``UNPUBLISH`` job per address
when it revokes one (:mod:`ca.store_jobs`).  :meth:`LdapPublisher.run_due` works those jobs off;
``cmcgate ca serve`` runs it every :data:`PUBLISH_INTERVAL_SECONDS`, ``cmcgate ca publish``
once (for cron, or after an outage).

Publish: every entry under ``ca.ldap.base_dn`` (whole subtree) whose ``mail`` is the address
gets the certificate's DER as a value of ``userCertificate;binary`` (MODIFY_ADD; a value that is
there already counts as done).  No such entry: ``mail=<address>,<base_dn>`` is created as an
``inetOrgPerson`` (``cn`` = the address, ``sn`` = its local part).  A certificate revoked or
expired by the time its job runs is not published (the job succeeds, the audit says why).
Unpublish: the value is removed from every entry with that ``mail`` (MODIFY_DELETE; a missing
value or entry counts as done); entries are never deleted.

Failures never reach issuance; a job is retried with exponential back-off (1 min doubling,
capped at 6 h):

* the directory cannot be reached, times out, is busy/unavailable, refuses the bind, or its
  password file cannot be read: every claimed job goes RETRY and the run stops; these retries
  are unlimited, so an outage of any length loses nothing;
* the directory answered and refused the operation (no such base DN, invalid DN syntax,
  constraint or object-class violation, insufficient access, ...): the job goes RETRY up to
  ``max_attempts`` (8) and then FAILED, with the LDAP error in ``last_error`` and a ``publish``
  audit record.  Such errors rarely heal by themselves: the FAILED job stays in the store with
  its error for an operator (there is no re-queue command yet).

Every job done (and every job given up) is audited as ``publish`` with the serial as subject.
Jobs left PROCESSING by a process that died are re-queued after :data:`STALE_AFTER`.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ca.audit import AuditEvent, append_audit
from ca.settings_types import LdapSettings
from ca.store_jobs import DEFAULT_BACKOFF, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF
from ca.store_model import CertificateStatus, JobKind, JobStatus, JobView
from config.errors import CmcgateError

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority
    from ca.store import Store

log = logging.getLogger(__name__)

CERT_ATTRIBUTE = "userCertificate;binary"
PERSON_CLASSES = ("top", "person", "organizationalPerson", "inetOrgPerson")
PUBLISH_INTERVAL_SECONDS = 10
STALE_AFTER = timedelta(minutes=15)
ACTOR = "ldap-publisher"
UNLIMITED_ATTEMPTS = 2**31 - 1
_NO_SUCH_ATTRIBUTE = 16
_VALUE_EXISTS = 20
_ALREADY_EXISTS = 68
_UNAVAILABLE_CODES = frozenset({51, 52})  # busy, unavailable


class PublishError(CmcgateError):
    """A publication job could not be done now (the directory refused it)."""


class LdapUnavailable(PublishError):
    """The directory cannot be reached or bound to: every job waits for it."""


@dataclass
class PublishRun:
    """What one :meth:`LdapPublisher.run_due` did."""

    published: int = 0
    unpublished: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.published + self.unpublished + self.retried + self.failed

    def summary(self) -> str:
        return (
            f"published {self.published}, unpublished {self.unpublished}, "
            f"retry {self.retried}, failed {self.failed}"
        )


@dataclass(frozen=True)
class _Outcome:
    result: str
    entries: tuple[str, ...]


class LdapPublisher:
    """Runs the due publication jobs of ``store`` against the directory of ``settings``."""

    def __init__(
        self,
        settings: LdapSettings,
        store: Store,
        *,
        connect_timeout: int = 5,
        receive_timeout: int = 10,
        batch: int = 20,
        max_jobs: int = 500,
        backoff: timedelta = DEFAULT_BACKOFF,
        max_backoff: timedelta = DEFAULT_MAX_BACKOFF,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.settings = settings
        self.store = store
        self.connect_timeout = int(connect_timeout)
        self.receive_timeout = int(receive_timeout)  # ldap3 packs it into SO_RCVTIMEO: an int
        self.batch = batch
        self.max_jobs = max_jobs
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_attempts = max_attempts

    # -- the run ------------------------------------------------------------------------------
    def run_due(self, now: datetime | None = None) -> PublishRun:
        """Claim and do the due jobs (at most ``max_jobs``); never raises for LDAP trouble."""
        run = PublishRun()
        conn: Any = None
        try:
            while run.handled < self.max_jobs:
                limit = min(self.batch, self.max_jobs - run.handled)
                jobs = self.store.claim_due_jobs(now, limit=limit)
                if not jobs:
                    break
                for index, job in enumerate(jobs):
                    try:
                        if conn is None:
                            conn = self._connect()
                        outcome = self._do(conn, job, now)
                    except LdapUnavailable as exc:
                        for waiting in jobs[index:]:
                            self._retry(waiting, str(exc), run, now, outage=True)
                        return run
                    except Exception as exc:  # noqa: BLE001 - the job is retried, never lost
                        text = str(exc) if isinstance(exc, CmcgateError) else repr(exc)
                        self._retry(job, text, run, now, outage=False)
                    else:
                        self._succeed(job, outcome, run, now)
        finally:
            if conn is not None:
                _quietly_unbind(conn)
        return run

    def _succeed(
        self, job: JobView, outcome: _Outcome, run: PublishRun, now: datetime | None
    ) -> None:
        # audit first: a crash in between re-runs the (idempotent) job rather than losing a record
        self._audit(job, outcome.result, outcome.entries)
        self.store.mark_job_success(job.id, now=now)
        if job.kind is JobKind.PUBLISH:
            run.published += 1
        else:
            run.unpublished += 1
        log.info("%s %s <%s>: %s %s", job.kind.value.lower(), job.serial, job.email,
                 outcome.result, ", ".join(outcome.entries))  # fmt: skip

    def _retry(
        self, job: JobView, error: str, run: PublishRun, now: datetime | None, *, outage: bool
    ) -> None:
        view = self.store.mark_job_retry(
            job.id, error, backoff=self.backoff, max_backoff=self.max_backoff,
            max_attempts=UNLIMITED_ATTEMPTS if outage else self.max_attempts, now=now,
        )  # fmt: skip
        what = f"job {job.id} ({job.kind.value.lower()} {job.serial} <{job.email}>)"
        if view.status is JobStatus.FAILED:
            run.failed += 1
            run.errors.append(f"{what}: FAILED after {view.attempts} attempts: {error}")
            self._audit(job, "failed", (), error=error, attempts=view.attempts)
            log.error("%s failed for good: %s", what, error)
        else:
            run.retried += 1
            when = view.next_attempt_at.isoformat(timespec="seconds")
            run.errors.append(f"{what}: RETRY at {when}: {error}")
            log.warning("%s: %s (retry at %s)", what, error, when)

    def _audit(self, job: JobView, result: str, entries: tuple[str, ...], **extra: Any) -> None:
        details = {"job": job.id, "kind": job.kind.value, "email": job.email,
                   "result": result, "entries": list(entries), **extra}  # fmt: skip
        append_audit(self.store, AuditEvent.PUBLISH, ACTOR, job.serial, details)

    # -- one job -----------------------------------------------------------------------------
    def _do(self, conn: Any, job: JobView, now: datetime | None) -> _Outcome:
        cert = self.store.get_certificate(job.serial, now=now)
        entries = self._find(conn, job.email)
        if job.kind is JobKind.UNPUBLISH:
            results = {self._change(conn, dn, "delete", cert.der) for dn in entries}
            return _Outcome(_join(results) or "no entry", entries)
        if cert.status is not CertificateStatus.VALID:
            return _Outcome(f"not published: certificate {cert.status.value}", entries)
        if not entries:
            return _Outcome("entry created", (self._create(conn, job.email, cert.der),))
        results = {self._change(conn, dn, "add", cert.der) for dn in entries}
        return _Outcome(_join(results), entries)

    def _find(self, conn: Any, email: str) -> tuple[str, ...]:
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        base = self.settings.base_dn
        _call(conn, conn.search, base, f"(mail={escape_filter_chars(email)})",
              search_scope=ldap3.SUBTREE, attributes=[ldap3.NO_ATTRIBUTES])  # fmt: skip
        if (conn.result or {}).get("result") != 0:  # search() is False for no entries too
            raise PublishError(f"search for mail={email} under {base}: {_describe(conn)}")
        found = [r["dn"] for r in conn.response or () if r.get("type") == "searchResEntry"]
        return tuple(sorted(found))

    def _create(self, conn: Any, email: str, der: bytes) -> str:
        from ldap3.utils.dn import escape_rdn

        dn = f"mail={escape_rdn(email)},{self.settings.base_dn}"
        local = email.rpartition("@")[0] or email
        attributes = {"cn": email, "sn": local, "mail": email, CERT_ATTRIBUTE: der}
        if _call(conn, conn.add, dn, list(PERSON_CLASSES), attributes):
            return dn
        if conn.result.get("result") == _ALREADY_EXISTS:  # created meanwhile by another worker
            self._change(conn, dn, "add", der)
            return dn
        raise PublishError(f"add {dn}: {_describe(conn)}")

    def _change(self, conn: Any, dn: str, action: str, der: bytes) -> str:
        import ldap3

        op = ldap3.MODIFY_ADD if action == "add" else ldap3.MODIFY_DELETE
        if _call(conn, conn.modify, dn, {CERT_ATTRIBUTE: [(op, [der])]}):
            return "added" if action == "add" else "removed"
        code = conn.result.get("result")
        if action == "add" and code == _VALUE_EXISTS:
            return "already present"
        if action == "delete" and code == _NO_SUCH_ATTRIBUTE:
            return "not present"
        raise PublishError(f"modify ({action}) {CERT_ATTRIBUTE} of {dn}: {_describe(conn)}")

    # -- the connection ----------------------------------------------------------------------
    def _password(self) -> str | None:
        path = self.settings.password_file
        if path is None:
            return None
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise LdapUnavailable(
                f"{path}: cannot read the LDAP password: {exc.strerror}"
            ) from None
        if not lines or not lines[0]:
            raise LdapUnavailable(f"{path}: the LDAP password file is empty")
        return lines[0]

    def _connect(self) -> Any:
        """A bound connection; :class:`LdapUnavailable` when that is impossible now."""
        import ldap3
        from ldap3.core.exceptions import LDAPException

        password = self._password()
        url = self.settings.url
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED) if url.lower().startswith("ldaps:") else None
        try:
            server = ldap3.Server(
                url, connect_timeout=self.connect_timeout, get_info=ldap3.NONE, tls=tls
            )
            conn = ldap3.Connection(
                server,
                user=self.settings.bind_dn if password is not None else None,
                password=password,
                receive_timeout=self.receive_timeout,
                raise_exceptions=False,
                auto_bind=ldap3.AUTO_BIND_NONE,
            )
            conn.open()
            bound = conn.bind()
        except LDAPException as exc:
            raise LdapUnavailable(f"cannot reach {url}: {exc}") from None
        if not bound:
            message = f"bind as {self.settings.bind_dn} to {url} refused: {_describe(conn)}"
            _quietly_unbind(conn)
            raise LdapUnavailable(message)
        return conn


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
        raise LdapUnavailable(f"the directory is unavailable: {_describe(conn)}")
    return ok


def _describe(conn: Any) -> str:
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


# -- the CA service's schedule and the CLI ----------------------------------------------------


def publish_due(ca: CertificateAuthority, now: datetime | None = None) -> PublishRun | None:
    """One scheduled run for an open CA: re-queue stale jobs, run the due ones."""
    settings = ca.settings.ca.ldap
    if settings is None:
        return None
    ca.store.requeue_stale_jobs(STALE_AFTER, now=now)
    return LdapPublisher(settings, ca.store).run_due(now)


def schedule_publisher(scheduler: Any, current_ca: Callable[[], CertificateAuthority]) -> None:
    """Add the publication job to a CA service's APScheduler (reads ca.yaml's ldap each run)."""

    def tick() -> None:
        try:
            publish_due(current_ca())
        except Exception as exc:  # noqa: BLE001 - the scheduler retries at the next interval
            log.error("LDAP publication run failed: %s", exc)

    scheduler.add_job(tick, "interval", seconds=PUBLISH_INTERVAL_SECONDS, id="ldap-publish",
                      coalesce=True, max_instances=1)  # fmt: skip


def cmd_publish(args: Any) -> int:
    from ca.settings import load_ca_settings
    from ca.store import Store

    directory = Path(args.dir or os.environ.get("CMCGATE_CA_DIR") or ".")
    ca_yaml = directory / "ca.yaml"
    if not ca_yaml.exists():
        raise PublishError(f"{ca_yaml}: no CA here (run `cmcgate ca init --dir {directory}`)")
    settings = load_ca_settings(ca_yaml)
    if settings.ca.ldap is None:
        raise PublishError(f"{ca_yaml}: no ca.ldap section, nothing to publish to")
    store = Store.open(settings.ca.database, audit_hmac_key=settings.ca.audit_hmac_key_file)
    try:
        store.create_all()
        store.requeue_stale_jobs(STALE_AFTER)
        run = LdapPublisher(settings.ca.ldap, store).run_due()
    finally:
        store.close()
    print(run.summary())
    for line in run.errors:
        print(line, file=sys.stderr)
    return 1 if run.retried or run.failed else 0


def register_publish_command(sub: Any) -> None:
    """Add ``publish`` to the ``cmcgate ca`` subcommands."""
    p = sub.add_parser("publish", help="run the due LDAP publication jobs once")
    p.add_argument("--dir", help="CA directory (default $CMCGATE_CA_DIR or .)")
    p.set_defaults(func=cmd_publish)


__all__ = [
    "LdapPublisher",
    "LdapUnavailable",
    "PublishError",
    "PublishRun",
    "publish_due",
    "register_publish_command",
    "schedule_publisher",
]
