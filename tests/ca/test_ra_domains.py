"""DNS domain pre-validation (RA manual 3.7.1/3.7.2) through a real DNS server on loopback.

The CA resolves with dnspython against scripts/devdns.py (``ra.dns`` in ca.yaml); records are
published by rewriting the server's zone file. Issuance is checked through the authority and,
once, over real CMC/HTTPS.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest

from ca.authority import CertificateAuthority, OrderRefused
from ca.ra.dns import DnsUnavailable
from ca.ra.domains import (
    DomainService,
    DomainStatus,
    InvalidDomain,
    UnknownAccount,
    UnknownDomain,
    normalise_domain,
)
from ca.settings.default import dump_default_ca_yaml
from ca.settings.loader import parse_ca_settings
from ca.settings.yamlnodes import SettingsError
from ca.store.audit import audit_records
from ca.store.model import OrderStatus
from gateway.main import main as cli_main
from tests.ca.ra_support import Clock, Context, csr_der, dead_dns, make_ca
from tests.fixtures.dns import DnsServer

ACCOUNT, OTHER = "example.ra", "other.ra"


@pytest.fixture(scope="module")
def dns_zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def authority(
    tmp_path_factory: pytest.TempPathFactory, dns_zone: DnsServer, clock: Clock
) -> Iterator[CertificateAuthority]:
    ca = make_ca(
        tmp_path_factory.mktemp("ca") / "ca", dns_zone.port, email_domains=("example.org",),
        caa_identities=("ca.cmcgate.test",), clock=clock, extra_accounts=(OTHER,),
    )  # fmt: skip
    try:
        yield ca
    finally:
        ca.close()


@pytest.fixture
def service(authority: CertificateAuthority, clock: Clock) -> Iterator[DomainService]:
    clock.reset()
    yield DomainService(authority)
    clock.reset()


def _publish(dns_zone: DnsServer, view: object) -> None:
    dns_zone.add(view.record_name, "TXT", f'"{view.token}"')  # type: ignore[attr-defined]


def _submit(ca: CertificateAuthority, email: str, account: str = ACCOUNT) -> object:
    return ca.submit(csr_der(email), account, "silver", requested_by="test")


def test_a_request_gives_a_random_token_and_the_record_to_publish(service: DomainService) -> None:
    first = service.request(ACCOUNT, "Shop.Example.", by="alice")
    assert first.domain == "shop.example" and first.status is DomainStatus.PENDING
    assert first.record_name == "_cmcgate-challenge.shop.example"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", first.token)  # >= 256 bits, URL-safe
    assert first.token_expires_at - first.requested_at == timedelta(days=30)
    again = service.request(ACCOUNT, "shop.example", by="alice")
    assert again.token != first.token and again.status is DomainStatus.PENDING
    assert service.get(ACCOUNT, "shop.example").token == again.token
    actions = [r.details["action"] for r in audit_records(service.ca.store, event_type="domain")
               if r.subject == "shop.example"]  # fmt: skip
    assert actions == ["requested", "new_token"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Bücher.Example", "xn--bcher-kva.example"), ("MAIL.Example.ORG.", "mail.example.org")],
)
def test_domain_names_are_normalised(text: str, expected: str) -> None:
    assert normalise_domain(text) == expected


@pytest.mark.parametrize(
    "text", ["", "localhost", "a..example", "-a.example", "1.2.3.4", "exa mple.org", "_x.example",
             "a" * 64 + ".example", "user@example.org"],
)  # fmt: skip
def test_bad_domain_names_are_refused_with_status_400(service: DomainService, text: str) -> None:
    with pytest.raises(InvalidDomain) as refused:
        service.request(ACCOUNT, text, by="alice")
    assert refused.value.status == 400
    assert service.list(ACCOUNT, "pending") == [
        v for v in service.list(ACCOUNT) if v.status is DomainStatus.PENDING
    ]


def test_unknown_accounts_and_domains_are_404(service: DomainService) -> None:
    with pytest.raises(UnknownAccount) as account:
        service.request("nobody.ra", "x.example", by="alice")
    with pytest.raises(UnknownDomain) as domain:
        service.check(ACCOUNT, "never-requested.example", by="alice")
    assert account.value.status == domain.value.status == 404


def test_without_the_record_or_with_a_wrong_token_the_domain_stays_pending(
    service: DomainService, dns_zone: DnsServer
) -> None:
    view = service.request(ACCOUNT, "pending.example", by="alice")
    checked = service.check(ACCOUNT, "pending.example", by="alice")
    assert checked.status is DomainStatus.PENDING and checked.last_checked_at is not None
    assert "not found" in (checked.last_error or "")
    dns_zone.add(view.record_name, "TXT", '"not-the-token"')
    checked = service.check(ACCOUNT, "pending.example", by="alice")
    assert checked.status is DomainStatus.PENDING
    assert "none with the token" in (checked.last_error or "")
    assert not service.ca.store.domain_validated(ACCOUNT, "pending.example")


def test_the_published_token_validates_the_domain_and_its_addresses_are_issued(
    service: DomainService, dns_zone: DnsServer, authority: CertificateAuthority
) -> None:
    with pytest.raises(OrderRefused) as refused:
        _submit(authority, "bob@customer-ag.ch")
    assert refused.value.category == "bad_identity"
    failed = authority.store.get_order(refused.value.order_id or "")
    assert failed.status is OrderStatus.FAILED
    assert "outside the account's validated domains" in (failed.failure_reason or "")
    view = service.request(ACCOUNT, "customer-ag.ch", by="alice")
    _publish(dns_zone, view)
    validated = service.check(ACCOUNT, "customer-ag.ch", by="alice")
    assert validated.status is DomainStatus.VALIDATED and validated.last_error is None
    assert validated.valid_until is not None and validated.validated_at is not None
    assert validated.valid_until - validated.validated_at == timedelta(days=30)
    for email in ("bob@customer-ag.ch", "carol@eu.customer-ag.ch"):
        result = _submit(authority, email)
        assert result.certificate is not None  # type: ignore[attr-defined]
        assert result.order.status is OrderStatus.ISSUED  # type: ignore[attr-defined]
    with pytest.raises(OrderRefused) as other:  # validated for example.ra, not for other.ra
        _submit(authority, "dave@customer-ag.ch", OTHER)
    assert other.value.category == "bad_identity"


def test_a_validation_lapses_after_validation_days(
    service: DomainService, dns_zone: DnsServer, authority: CertificateAuthority, clock: Clock
) -> None:
    view = service.request(ACCOUNT, "lapsing.example", by="alice")
    _publish(dns_zone, view)
    assert service.check(ACCOUNT, "lapsing.example", by="alice").status is DomainStatus.VALIDATED
    account = authority.settings.account(ACCOUNT)
    assert account is not None
    assert authority.email_validated(account, "eve@lapsing.example")
    dns_zone.remove(view.record_name)
    clock.shift(days=29)  # the record is gone, the validation stands until valid_until
    missed = service.check(ACCOUNT, "lapsing.example", by="alice")
    assert missed.status is DomainStatus.VALIDATED and "not found" in (missed.last_error or "")
    clock.shift(days=30, minutes=1)
    assert not authority.email_validated(account, "eve@lapsing.example")
    assert service.check_due() >= 1
    lapsed = service.get(ACCOUNT, "lapsing.example")
    assert lapsed.status is DomainStatus.EXPIRED and "lapsed" in (lapsed.last_error or "")


def test_a_stale_token_expires_and_a_new_one_is_needed(
    service: DomainService, dns_zone: DnsServer, clock: Clock
) -> None:
    view = service.request(ACCOUNT, "stale.example", by="alice")
    _publish(dns_zone, view)
    clock.shift(days=31)
    expired = service.check(ACCOUNT, "stale.example", by="alice")
    assert expired.status is DomainStatus.EXPIRED and "request a new one" in (
        expired.last_error or ""
    )
    fresh = service.request(ACCOUNT, "stale.example", by="alice")
    assert fresh.status is DomainStatus.PENDING and fresh.token != view.token
    _publish(dns_zone, fresh)
    assert service.check(ACCOUNT, "stale.example", by="alice").status is DomainStatus.VALIDATED


def test_check_due_validates_pending_domains_and_renews_validated_ones(
    service: DomainService, dns_zone: DnsServer, clock: Clock
) -> None:
    a = service.request(OTHER, "due-a.example", by="alice")
    b = service.request(OTHER, "due-b.example", by="alice")
    service.request(OTHER, "due-c.example", by="alice")
    _publish(dns_zone, a)
    _publish(dns_zone, b)
    assert service.check_due() >= 3
    states = {v.domain: v for v in service.list(OTHER)}
    assert states["due-a.example"].status is DomainStatus.VALIDATED
    assert states["due-b.example"].status is DomainStatus.VALIDATED
    assert states["due-c.example"].status is DomainStatus.PENDING
    first_until = states["due-a.example"].valid_until
    clock.shift(days=2)
    service.check_due()
    renewed = service.get(OTHER, "due-a.example")
    assert first_until is not None and renewed.valid_until is not None
    assert renewed.valid_until - first_until >= timedelta(days=2)
    assert [v.domain for v in service.list(OTHER, "validated")] == [
        "due-a.example", "due-b.example"
    ]  # fmt: skip


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dns_failure_is_temporary_and_changes_nothing_but_the_note(
    service: DomainService, authority: CertificateAuthority, clock: Clock
) -> None:
    service.request(ACCOUNT, "unreachable.example", by="alice")
    broken = DomainService(Context(authority.store, dead_dns(authority.settings, _dead_port()),
                                   clock))  # fmt: skip
    with pytest.raises(DnsUnavailable) as failed:
        broken.check(ACCOUNT, "unreachable.example", by="alice")
    assert failed.value.status == 503
    after = service.get(ACCOUNT, "unreachable.example")
    assert after.status is DomainStatus.PENDING and after.last_error
    assert broken.check_due() >= 1  # logged, not raised


def test_a_deleted_domain_no_longer_validates_its_addresses(
    service: DomainService, dns_zone: DnsServer
) -> None:
    view = service.request(ACCOUNT, "deleted.example", by="alice")
    _publish(dns_zone, view)
    service.check(ACCOUNT, "deleted.example", by="alice")
    assert service.ca.store.domain_validated(ACCOUNT, "x.deleted.example")
    service.delete(ACCOUNT, "deleted.example", by="alice")
    assert not service.ca.store.domain_validated(ACCOUNT, "x.deleted.example")
    with pytest.raises(UnknownDomain):
        service.get(ACCOUNT, "deleted.example")


def test_the_cli_prints_the_record_an_owner_publishes_as_is(
    authority: CertificateAuthority, dns_zone: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = str(authority.settings.ca.directory)
    assert cli_main(["ca", "domain", "request", "--dir", directory, ACCOUNT, "cli.example"]) == 0
    out = capsys.readouterr().out
    record = next(line for line in out.splitlines() if " IN TXT " in line)
    name, ttl, _in, rdtype, rdata = record.split(None, 4)
    dns_zone.add(name, rdtype, rdata, int(ttl))
    assert cli_main(["ca", "domain", "check", "--dir", directory, ACCOUNT, "cli.example"]) == 0
    assert "VALIDATED" in capsys.readouterr().out
    assert cli_main(["ca", "domain", "list", "--dir", directory, "--account", ACCOUNT,
                     "--json"]) == 0  # fmt: skip
    rows = {r["domain"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cli.example"]["status"] == "VALIDATED"
    assert cli_main(["ca", "domain", "delete", "--dir", directory, ACCOUNT, "cli.example"]) == 0
    assert cli_main(["ca", "domain", "check", "--dir", directory, ACCOUNT, "cli.example"]) != 0
    assert "has not requested" in capsys.readouterr().err


def test_the_scheduler_job_is_registered_with_the_configured_interval(
    authority: CertificateAuthority,
) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from ca.ra.domains import schedule_domain_checks

    scheduler = BackgroundScheduler(timezone="UTC")
    schedule_domain_checks(scheduler, lambda: authority)
    job = scheduler.get_job("ra-domain-checks")
    assert job is not None and job.trigger.interval == timedelta(minutes=60)


@pytest.mark.parametrize(
    ("ra_block", "message"),
    [
        ("ra:\n  challenge_hours: 48\n", "challenge_hours must be between 1 and 24"),
        ("ra:\n  domains: {token_days: 31}\n", "token_days must be between 1 and 30"),
    ],
)
def test_random_values_cannot_be_configured_to_outlive_the_br_limits(
    ra_block: str, message: str
) -> None:
    """S/MIME BR 3.2.2.2: a mailbox random value is valid for at most 24 hours; BR 3.2.2.1
    (TLS BR 3.2.2.4.7 by reference): a domain's DNS random value for at most 30 days."""
    with pytest.raises(SettingsError) as refused:
        parse_ca_settings(dump_default_ca_yaml() + ra_block)
    assert message in str(refused.value)
