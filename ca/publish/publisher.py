"""Publishes issued certificates to an LDAP directory and removes revoked ones.

The CA queues a ``PUBLISH`` job per address when it issues a certificate of a product with
``publish_ldap: true`` (and ``ca.ldap`` is configured), and an ``UNPUBLISH`` job per address
when it revokes one (:mod:`ca.store.jobs`).  :meth:`LdapPublisher.run_due` works those jobs off;
``cmcgate ca serve`` runs it every :data:`PUBLISH_INTERVAL_SECONDS`, ``cmcgate ca publish``
once (for cron, or after an outage).

Publish: every entry under ``ca.ldap.base_dn`` (whole subtree) whose ``mail`` is the address
gets the certificate's DER as a value of ``userCertificate;binary`` (MODIFY_ADD; a value that is
there already counts as done).  No such entry: ``mail=<address>,<base_dn>`` is created as an
``inetOrgPerson`` (``cn`` = the address, ``sn`` = its local part).  A certificate revoked or
expired by the time its job runs is not published (the job succeeds, the audit says why).
Unpublish: the value is removed from every entry with that ``mail`` (MODIFY_DELETE; a missing
value or entry counts as done); entries are never deleted.
The directory writing itself is :class:`ca.publish.ldapwrite.DirectoryWriter` (shared with the
gateway, which publishes the certificates it enrols from an external PKI).

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
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ca.periodic import add_periodic
from ca.publish.ldapwrite import DirectorySession, DirectoryWriter, LdapUnavailable, PublishError
from ca.settings.types import LdapSettings
from ca.store.audit import AuditEvent, append_audit
from ca.store.jobs import DEFAULT_BACKOFF, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BACKOFF
from ca.store.model import CertificateStatus, JobKind, JobStatus, JobView
from config.errors import CmcgateError

if TYPE_CHECKING:
    from ca.authority import CertificateAuthority
    from ca.store.orders import Store

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_SECONDS = 10
STALE_AFTER = timedelta(minutes=15)
ACTOR = "ldap-publisher"
UNLIMITED_ATTEMPTS = 2**31 - 1


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
        session: DirectorySession | None = None
        try:
            while run.handled < self.max_jobs:
                limit = min(self.batch, self.max_jobs - run.handled)
                jobs = self.store.claim_due_jobs(now, limit=limit)
                if not jobs:
                    break
                for index, job in enumerate(jobs):
                    try:
                        if session is None:
                            session = self._connect()
                        outcome = self._do(session, job, now)
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
            if session is not None:
                session.close()
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
    def _do(self, session: DirectorySession, job: JobView, now: datetime | None) -> _Outcome:
        cert = self.store.get_certificate(job.serial, now=now)
        if job.kind is JobKind.UNPUBLISH:
            return _Outcome(*session.unpublish(job.email, cert.der))
        if cert.status is not CertificateStatus.VALID:
            entries = session.find(job.email)
            return _Outcome(f"not published: certificate {cert.status.value}", entries)
        return _Outcome(*session.publish(job.email, cert.der))

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

    def _connect(self) -> DirectorySession:
        """A bound session; :class:`LdapUnavailable` when that is impossible now."""
        return DirectoryWriter(
            self.settings.url,
            self.settings.base_dn,
            bind_dn=self.settings.bind_dn,
            password=self._password,
            connect_timeout=self.connect_timeout,
            receive_timeout=self.receive_timeout,
        ).connect()


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

    add_periodic(scheduler, "ldap-publish", "LDAP publication run",
                 lambda: publish_due(current_ca()), seconds=PUBLISH_INTERVAL_SECONDS)  # fmt: skip


def cmd_publish(args: Any) -> int:
    from ca.settings.loader import load_ca_settings
    from ca.store.orders import Store

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
