"""DNS domain pre-validation (SwissSign RA manual 3.7.1/3.7.2, S/MIME BR 3.2.2.4.7).

An account requests a domain and gets a random token (256 bits, URL-safe base64); it
publishes the token as a TXT record at ``<ra.domains.txt_label>.<domain>``; a check finds
it through DNS and marks the domain VALIDATED for ``ra.domains.validation_days``. While it is
validated, the CA issues for addresses in the domain and its subdomains without a mailbox
challenge (:meth:`ca.authority_checks.OrderChecks.email_validated`).

Like the manual's "Generate new validation token", requesting a domain again gives it a new
token. A token is good for ``token_days`` (BR: a random value is used within its validity
period): a pending domain whose token is older becomes EXPIRED, and a validated domain is
re-validated by the scheduler's checks only while its token is live, so it lapses (EXPIRED)
at ``valid_until`` unless the account asks for a new token and publishes it. A validated
domain whose TXT record disappears stays validated until ``valid_until`` (the BR allow the
reuse of a validation); the check records the miss in ``last_error``.

Every change is audited (event ``domain``); the checks are blocking DNS lookups, run from
threads (:func:`schedule_domain_checks`, the REST layer's executor).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import dns.exception
import dns.name

from ca.periodic import add_periodic
from ca.ra.context import RaContext
from ca.ra.dns import DnsUnavailable, make_resolver, txt_strings
from ca.ra.errors import RaError
from ca.store.domains import DomainStatus, DomainView, UnknownDomain
from config.errors import CmcgateError
from config.values import is_number

__all__ = [
    "DomainError",
    "DomainService",
    "DomainStatus",
    "DomainView",
    "DnsUnavailable",
    "InvalidDomain",
    "UnknownAccount",
    "UnknownDomain",
    "normalise_domain",
    "schedule_domain_checks",
]

log = logging.getLogger(__name__)
_LDH = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class DomainError(RaError):
    """A domain request or check was refused."""

    status = 400


class InvalidDomain(DomainError):
    """Not a domain name the RA can validate."""

    status = 400


class UnknownAccount(DomainError):
    status = 404


def normalise_domain(text: str) -> str:
    """Lower case, IDNA A-labels (IDNA 2008, UTS 46 mapping), no trailing dot; at least two
    labels of letters, digits and hyphens, and not an IP address. InvalidDomain otherwise."""
    raw = str(text).strip().rstrip(".")
    if not raw or len(raw) > 253 or any(c.isspace() for c in raw):
        raise InvalidDomain(f"{text!r} is not a domain name")
    try:
        name = dns.name.from_unicode(raw + ".", idna_codec=dns.name.IDNA_2008_Practical)
        ascii_name = name.to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise InvalidDomain(f"{text!r} is not a domain name: {exc}") from None
    labels = ascii_name.split(".")
    if len(labels) < 2 or not all(_LDH.match(label) for label in labels):
        raise InvalidDomain(
            f"{text!r} is not a domain name that can be validated (two or more labels of"
            " letters, digits and hyphens)"
        )
    if is_number(labels[-1]):
        raise InvalidDomain(f"{text!r} is an address, not a domain name")
    return ascii_name


class DomainService:
    """Request, check, list and delete the DNS-validated domains of the RA's accounts."""

    def __init__(self, ca: RaContext) -> None:
        self.ca = ca

    @property
    def _settings(self) -> Any:
        return self.ca.settings.ra.domains

    def _account(self, account: str) -> str:
        if self.ca.settings.account(account) is None:
            raise UnknownAccount(f"unknown account {account!r}")
        return account

    def request(self, account: str, domain: str, *, by: str) -> DomainView:
        """A new random token for ``domain``, to be published as TXT at ``record_name``."""
        account = self._account(account)
        name = normalise_domain(domain)
        now = self.ca.clock()
        return self.ca.store.request_domain(
            account, name,
            token=secrets.token_urlsafe(32),
            record_name=f"{self._settings.txt_label}.{name}",
            token_expires_at=now + timedelta(days=self._settings.token_days),
            by=by, now=now,
        )  # fmt: skip

    def get(self, account: str, domain: str) -> DomainView:
        return self.ca.store.get_domain(self._account(account), normalise_domain(domain))

    def list(
        self, account: str | None = None, status: DomainStatus | str | None = None
    ) -> list[DomainView]:
        if account is not None:
            self._account(account)
        if status is not None:
            try:
                status = DomainStatus(str(status).upper())
            except ValueError:
                choices = ", ".join(s.value for s in DomainStatus)
                raise DomainError(f"unknown domain status {status!r}: {choices}") from None
        return self.ca.store.find_domains(account=account, status=status)

    def delete(self, account: str, domain: str, *, by: str) -> DomainView:
        """Forget the domain: addresses in it need a validation again."""
        account = self._account(account)
        return self.ca.store.delete_domain(
            account, normalise_domain(domain), by=by, now=self.ca.clock()
        )

    def check(self, account: str, domain: str, *, by: str) -> DomainView:
        """Look the token up in DNS now; raises DnsUnavailable (503) when DNS cannot say,
        after recording the failure on the domain."""
        view = self.get(account, domain)
        return self._check(view, by=by, resolver=make_resolver(self.ca.settings.ra.dns))

    def _check(self, view: DomainView, *, by: str, resolver: Any) -> DomainView:
        store, now = self.ca.store, self.ca.clock()
        key = (view.account, view.domain)
        validated = view.status is DomainStatus.VALIDATED and _live(view.valid_until, now)
        if view.token_expires_at <= now:
            if validated:
                return view  # no renewal with a stale token; it lapses at valid_until
            if view.status is DomainStatus.EXPIRED:
                return view
            return store.update_domain(
                *key, by=by, action="expired", now=now, status=DomainStatus.EXPIRED,
                last_error=f"the token expired at {view.token_expires_at.isoformat()}:"
                " request a new one",
            )  # fmt: skip
        try:
            values = txt_strings(resolver, view.record_name)
        except DnsUnavailable as exc:
            store.update_domain(*key, by=by, action="check_failed", now=now,
                                last_checked_at=now, last_error=str(exc))  # fmt: skip
            raise
        if view.token in (v.strip() for v in values):
            until = now + timedelta(days=self._settings.validation_days)
            return store.update_domain(
                *key, by=by, action="validated", now=now, status=DomainStatus.VALIDATED,
                validated_at=now, valid_until=until, last_checked_at=now, last_error=None,
            )  # fmt: skip
        miss = (
            f"TXT {view.record_name}: the token was not found"
            if not values
            else f"TXT {view.record_name}: {len(values)} record(s), none with the token"
        )
        if view.status is DomainStatus.VALIDATED and not validated:
            return store.update_domain(*key, by=by, action="expired", now=now,
                                       status=DomainStatus.EXPIRED, last_checked_at=now,
                                       last_error=miss)  # fmt: skip
        return store.update_domain(*key, by=by, action="not_found", now=now,
                                   last_checked_at=now, last_error=miss)  # fmt: skip

    def check_due(self, *, by: str = "scheduler") -> int:
        """The scheduler's run: lapsed validations and stale tokens become EXPIRED, pending
        domains with a live token and validated ones (to renew them) are looked up. Returns
        how many domains were looked at or expired; DNS failures are logged and recorded."""
        now = self.ca.clock()
        resolver = None
        done = 0
        for view in self.ca.store.find_domains():
            if view.status is DomainStatus.EXPIRED:
                continue
            if view.status is DomainStatus.VALIDATED and not _live(view.valid_until, now):
                self.ca.store.update_domain(
                    view.account, view.domain, by=by, action="expired", now=now,
                    status=DomainStatus.EXPIRED,
                    last_error="the validation lapsed: request a new token",
                )  # fmt: skip
                done += 1
                continue
            if view.token_expires_at <= now and view.status is DomainStatus.VALIDATED:
                continue
            try:
                resolver = resolver or make_resolver(self.ca.settings.ra.dns)
                self._check(view, by=by, resolver=resolver)
            except CmcgateError as exc:
                log.warning("domain check of %s (%s) failed: %s", view.domain, view.account, exc)
            done += 1
        return done


def _live(until: datetime | None, now: datetime) -> bool:
    return until is not None and until > now


def schedule_domain_checks(scheduler: Any, get_ca: Callable[[], RaContext]) -> None:
    """Add the domain re-check job to a CA service's APScheduler, every
    ``ra.domains.check_minutes`` (manual: validated domains are re-checked regularly)."""
    try:
        minutes = int(get_ca().settings.ra.domains.check_minutes)
    except Exception:  # noqa: BLE001 - the CA is not open yet: the default interval
        minutes = 60

    add_periodic(scheduler, "ra-domain-checks", "domain check run",
                 lambda: DomainService(get_ca()).check_due(), minutes=minutes)  # fmt: skip
