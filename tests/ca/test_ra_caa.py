"""CAA ``issuemail`` (RFC 9495 over RFC 8659): the pure evaluation, and the CA's check at
PRE_VALIDATION against records served by the local DNS server (scripts/devdns.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ca.authority import CertificateAuthority, OrderRefused
from ca.ra.caa import (
    CaaRecord,
    check_issuemail,
    evaluate_issuemail,
    issuemail_issuer,
    relevant_caa,
)
from ca.ra.dns import make_resolver
from ca.store.model import OrderStatus
from tests.ca.ra_support import csr_der, dead_dns, make_ca
from tests.fixtures.dns import DnsServer

OURS = "ca.cmcgate.test"
ACCOUNT = "example.ra"
DOMAINS = ("none-ag.ch", "ours-ag.ch", "foreign-ag.ch", "nobody-ag.ch", "parent-ag.ch",
           "critical-ag.ch", "tls-ag.ch", "mixed-ag.ch", "dead-ag.ch")  # fmt: skip


def rec(flags: int, tag: str, value: str) -> CaaRecord:
    return CaaRecord(flags, tag, value)


# -- the pure evaluation -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("records", "allowed"),
    [
        ((), True),
        ((rec(0, "issuemail", OURS),), True),
        ((rec(0, "IssueMail", "CA.CMCGATE.TEST"),), True),
        ((rec(0, "issuemail", f"{OURS}; account=123"),), True),
        ((rec(0, "issuemail", f"  {OURS} ;"),), True),
        ((rec(0, "issuemail", "other.ca"),), False),
        ((rec(0, "issuemail", ";"),), False),
        ((rec(0, "issuemail", ""),), False),
        ((rec(0, "issuemail", "other.ca"), rec(0, "issuemail", OURS)), True),
        ((rec(0, "issue", "other.ca"),), True),
        ((rec(0, "issue", ";"), rec(0, "issuewild", ";")), True),
        ((rec(0, "iodef", "mailto:sec@example.org"),), True),
        ((rec(128, "futuretag", "x"),), False),
        ((rec(128, "futuretag", "x"), rec(0, "issuemail", OURS)), False),
        ((rec(0, "futuretag", "x"), rec(0, "issuemail", OURS)), True),
        ((rec(128, "issuemail", OURS),), True),
        ((rec(0, "issuemail", "ca..cmcgate.test"),), False),
        ((rec(0, "issuemail", f"{OURS}; bad param"),), False),
        ((rec(0, "issuemail", f"sub.{OURS}"),), False),
    ],
)
def test_issuemail_evaluation(records: tuple[CaaRecord, ...], allowed: bool) -> None:
    assert evaluate_issuemail(records, [OURS])[0] is allowed


def test_the_issuer_name_and_parameters_are_parsed() -> None:
    assert issuemail_issuer("CA.Example.NET; accounturi=https://x/1; validationmethods=a") == (
        "ca.example.net"
    )
    assert issuemail_issuer(";") == ""
    with pytest.raises(ValueError, match="not a domain name"):
        issuemail_issuer("-bad.example")


_tags = st.sampled_from(["issue", "issuewild", "iodef", "issuemail", "contactemail", "x-tag"])
_records = st.builds(CaaRecord, st.sampled_from([0, 128]), _tags, st.text(max_size=40))


@given(st.lists(_records, max_size=6))
def test_any_record_set_gets_a_decision_and_a_reason(records: list[CaaRecord]) -> None:
    allowed, reason = evaluate_issuemail(records, [OURS])
    assert reason
    mail = [r for r in records if r.tag == "issuemail"]
    critical_unknown = any(r.critical and r.tag == "x-tag" for r in records)
    if critical_unknown:
        assert not allowed
    elif not mail:
        assert allowed


@given(st.lists(_records, max_size=5), st.sampled_from(["", "; a=b", " ;x=1;y=2"]))
def test_a_record_naming_this_ca_authorises_unless_a_critical_tag_is_unknown(
    records: list[CaaRecord], params: str
) -> None:
    ours = CaaRecord(0, "issuemail", OURS + params)
    allowed, _ = evaluate_issuemail([*records, ours], [OURS])
    assert allowed is not any(r.critical and r.tag == "x-tag" for r in records)


# -- through DNS and the authority ---------------------------------------------------------
@pytest.fixture(scope="module")
def dns_zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def authority(
    tmp_path_factory: pytest.TempPathFactory, dns_zone: DnsServer
) -> Iterator[CertificateAuthority]:
    ca = make_ca(tmp_path_factory.mktemp("ca") / "ca", dns_zone.port, email_domains=DOMAINS,
                 caa_identities=(OURS,))  # fmt: skip
    try:
        yield ca
    finally:
        ca.close()


def _issue(ca: CertificateAuthority, email: str) -> object:
    return ca.submit(csr_der(email), ACCOUNT, "silver", requested_by="test")


def _refused(ca: CertificateAuthority, email: str) -> str:
    with pytest.raises(OrderRefused) as refused:
        _issue(ca, email)
    assert refused.value.category == "bad_identity"
    order = ca.store.get_order(refused.value.order_id or "")
    assert order.status is OrderStatus.FAILED
    history = [c.to_status for c in ca.store.history(order.id)]
    assert OrderStatus.PRE_VALIDATION in history and OrderStatus.ISSUE not in history
    return order.failure_reason or ""


def test_without_caa_records_the_ca_issues(authority: CertificateAuthority) -> None:
    result = _issue(authority, "alice@none-ag.ch")
    assert result.certificate is not None  # type: ignore[attr-defined]


def test_issuemail_naming_this_ca_allows_issuance(
    authority: CertificateAuthority, dns_zone: DnsServer
) -> None:
    dns_zone.add("ours-ag.ch", "CAA", f'0 issuemail "{OURS}; account=42"')
    assert _issue(authority, "bob@ours-ag.ch").certificate is not None  # type: ignore[attr-defined]


def test_issuemail_naming_another_ca_is_refused_with_the_reason_on_the_order(
    authority: CertificateAuthority, dns_zone: DnsServer
) -> None:
    dns_zone.add("foreign-ag.ch", "CAA", '0 issuemail "other.ca"')
    reason = _refused(authority, "carol@foreign-ag.ch")
    assert "foreign-ag.ch" in reason and '0 issuemail "other.ca"' in reason


def test_issuemail_semicolon_forbids_everyone(
    authority: CertificateAuthority, dns_zone: DnsServer
) -> None:
    dns_zone.add("nobody-ag.ch", "CAA", '0 issuemail ";"')
    assert '0 issuemail ";"' in _refused(authority, "dave@nobody-ag.ch")


def test_the_parent_domain_caa_applies_to_a_subdomain(
    authority: CertificateAuthority, dns_zone: DnsServer
) -> None:
    dns_zone.add("parent-ag.ch", "CAA", '0 issuemail "other.ca"')
    assert "CAA of parent-ag.ch" in _refused(authority, "erin@mail.eu.parent-ag.ch")
    dns_zone.add("eu.parent-ag.ch", "CAA", f'0 issuemail "{OURS}"')  # the closest set wins
    assert _issue(authority, "frank@mail.eu.parent-ag.ch").certificate is not None  # type: ignore[attr-defined]


def test_a_critical_unknown_tag_is_refused(
    authority: CertificateAuthority, dns_zone: DnsServer
) -> None:
    dns_zone.add("critical-ag.ch", "CAA", f'0 issuemail "{OURS}"')
    dns_zone.add("critical-ag.ch", "CAA", '128 tbs "unknown"')
    assert "critical CAA property 'tbs'" in _refused(authority, "gina@critical-ag.ch")


def test_issue_tags_alone_do_not_restrict_issuemail(
    authority: CertificateAuthority, dns_zone: DnsServer
) -> None:
    dns_zone.add("tls-ag.ch", "CAA", '0 issue "letsencrypt.org"')
    dns_zone.add("tls-ag.ch", "CAA", '0 issuewild ";"')
    assert _issue(authority, "hugo@tls-ag.ch").certificate is not None  # type: ignore[attr-defined]


def test_every_address_domain_is_checked(
    authority: CertificateAuthority, dns_zone: DnsServer
) -> None:
    dns_zone.add("mixed-ag.ch", "CAA", '0 issuemail "other.ca"')
    with pytest.raises(OrderRefused) as refused:
        authority.submit(csr_der("ida@none-ag.ch", "ida@mixed-ag.ch"), ACCOUNT, "silver",
                         requested_by="test")  # fmt: skip
    assert "mixed-ag.ch" in str(refused.value)


def test_the_lookup_climbs_and_follows_cnames(authority: CertificateAuthority,
                                              dns_zone: DnsServer) -> None:  # fmt: skip
    dns_zone.add("cname-ag.ch", "CNAME", "caa-holder.ch.")
    dns_zone.add("caa-holder.ch", "CAA", f'0 issuemail "{OURS}"')
    resolver = make_resolver(authority.settings.ra.dns)
    owner, records = relevant_caa(resolver, "a.b.cname-ag.ch")
    assert owner == "cname-ag.ch" and [r.tag for r in records] == ["issuemail"]
    decision = check_issuemail(resolver, "a.b.cname-ag.ch", [OURS])
    assert decision.allowed and decision.owner == "cname-ag.ch"
    assert relevant_caa(resolver, "nothing-here.ch") == (None, ())


def _dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dns_failure_issues_nothing_and_is_temporary(authority: CertificateAuthority) -> None:
    broken = CertificateAuthority(
        dead_dns(authority.settings, _dead_port()), authority.store, authority.keys
    )
    with pytest.raises(OrderRefused) as refused:
        broken.submit(csr_der("jan@dead-ag.ch"), ACCOUNT, "silver", requested_by="test")
    assert refused.value.category == "unavailable"
    order = authority.store.get_order(refused.value.order_id or "")
    assert order.certificate_serial is None and "CAA lookup failed" in (order.failure_reason or "")


def test_without_caa_identities_nothing_is_looked_up(authority: CertificateAuthority) -> None:
    from dataclasses import replace

    settings = dead_dns(authority.settings, _dead_port())
    settings = replace(settings, ra=replace(settings.ra, caa_identities=()))
    quiet = CertificateAuthority(settings, authority.store, authority.keys)
    result = quiet.submit(csr_der("kim@dead-ag.ch"), ACCOUNT, "silver", requested_by="test")
    assert result.certificate is not None
