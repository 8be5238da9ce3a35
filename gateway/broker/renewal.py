"""Renewing internal users' certificates before they expire.

:meth:`Renewer.run` (scheduled, e.g. every few hours) looks for addresses whose *newest*
certificate enrolled by the gateway (source ``pki``, private key held) expires within
``cmcgate.enrolment.renewDaysBeforeExpiry`` days (default 30) and enrols each again through
the :class:`~gateway.broker.enrolment.Enroller`:

* with a **new key** (like a SwissSign renewal: a fresh Full PKI Request, not a re-key of
  the old pair), from the key pool when there is one;
* with the old certificate's CN as display name, so a Gold subject stays the same;
* the old certificate and key stay in the store and remain valid until they expire — mail
  encrypted to the old certificate can still be read; :meth:`CertStore.best_for_signing`
  picks the newest one for signing from the moment it is stored.

An address counts as renewed once a ``pki`` certificate stored later with a notAfter no
earlier exists, so runs are idempotent.  Failures (CA down, refused, pending approval) are
logged and returned in the :class:`RenewalReport`; the next run tries again (a pending one
is finished by :meth:`Enroller.poll_pending`).  ``cmcgate gateway certs list
--expiring-within DAYS`` shows what is due.

:func:`schedule` adds the broker's periodic jobs to an APScheduler ``BackgroundScheduler``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cmc.errors import TemporaryFailure
from config.errors import CmcgateError
from config.model import EnrolmentSettings
from gateway.broker.enrolment import Enroller, EnrolmentPending
from gateway.certs.models import CertificateRecord, RevocationStatus, Source
from gateway.certs.store import CertStore

log = logging.getLogger("cmcgate.gateway.renewal")


@dataclass
class RenewalReport:
    """What one run did: ``renewed`` maps address -> new serial, ``failed`` address -> why."""

    due: list[str] = field(default_factory=list)
    renewed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


class Renewer:
    """Renews the gateway's own users' certificates through ``enroller``."""

    def __init__(
        self,
        store: CertStore,
        enroller: Enroller,
        settings: EnrolmentSettings | None = None,
        *,
        internal_domains: Sequence[str] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.enroller = enroller
        self.settings = settings or enroller.settings
        self.internal_domains = tuple(d.lower().rstrip(".") for d in internal_domains)
        self.clock = clock or (lambda: datetime.now(UTC))

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.settings.renew_days_before_expiry)

    def _internal(self, email: str) -> bool:
        if not self.internal_domains:
            return True
        domain = email.rpartition("@")[2]
        return any(domain == d or domain.endswith("." + d) for d in self.internal_domains)

    def due(self, now: datetime | None = None) -> dict[str, CertificateRecord]:
        """Address -> the certificate to renew (its newest ``pki`` one), soonest first."""
        at = now or self.clock()
        expiring = self.store.find(source=Source.PKI, expiring_within=self.window, at=at)
        found: dict[str, CertificateRecord] = {}
        for record in sorted(expiring, key=lambda r: r.not_after):
            if record.key_label is None:
                continue
            for email in record.emails:
                if email in found or not self._internal(email):
                    continue
                newest = self._newest(email)
                if newest is not None and newest.fingerprint == record.fingerprint:
                    found[email] = record
        return found

    def _newest(self, email: str) -> CertificateRecord | None:
        mine = [
            r
            for r in self.store.find(email=email, source=Source.PKI)
            if r.key_label is not None and r.revocation is not RevocationStatus.REVOKED
        ]
        return max(mine, key=lambda r: (r.not_after, r.added_at)) if mine else None

    def run(self, now: datetime | None = None) -> RenewalReport:
        """Renew everything due at ``now``; never raises for one address's trouble."""
        at = now or self.clock()
        report = RenewalReport()
        try:
            due = self.due(at)
        except CmcgateError as exc:
            log.error("renewal: cannot list expiring certificates: %s", exc)
            report.failed["*"] = str(exc)
            return report
        report.due = list(due)
        for email, old in due.items():
            try:
                identity = self.enroller.renew(email, old, at)
            except EnrolmentPending:
                report.pending.append(email)
                log.info("renewal of %s is waiting for approval at the CA", email)
                continue
            except (TemporaryFailure, CmcgateError, OSError) as exc:
                report.failed[email] = f"{type(exc).__name__}: {exc}"
                log.error("renewal of %s (serial %s, expires %s) failed, retried next run: %s",
                          email, old.serial, old.not_after.isoformat(), exc)  # fmt: skip
                continue
            report.renewed[email] = format(identity.cert.serial_number, "x")
            log.info("renewed %s: serial %s replaces %s (expires %s)", email,
                     report.renewed[email], old.serial, old.not_after.isoformat())  # fmt: skip
        return report


def schedule(
    scheduler: Any,
    enroller: Enroller,
    renewer: Renewer | None = None,
    *,
    poll_seconds: int = 300,
    renew_seconds: int = 6 * 3600,
    on_report: Callable[[RenewalReport], object] | None = None,
) -> None:
    """Add the broker's jobs to an APScheduler scheduler (not started here); ``on_report``
    gets every renewal run's report (the gateway counts it in its metrics)."""
    scheduler.add_job(enroller.poll_pending, "interval", seconds=poll_seconds,
                      id="enrolment-poll", coalesce=True, max_instances=1)  # fmt: skip
    if renewer is not None:

        def renew() -> None:
            report = renewer.run()
            if on_report is not None:
                on_report(report)

        scheduler.add_job(renew, "interval", seconds=renew_seconds,
                          id="renewal", coalesce=True, max_instances=1,
                          next_run_time=datetime.now(UTC))  # fmt: skip
