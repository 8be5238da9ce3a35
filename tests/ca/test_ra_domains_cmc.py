"""Over real CMC/HTTPS: an address outside the account's validated domains is refused
(badIdentity) until the account validates the domain through DNS; CAA forbidding this CA is
refused (badIdentity) too. DNS answers come from scripts/devdns.py on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ca.ra.domains import DomainService, DomainStatus
from cmc.errors import CMCFailure
from tests.ca.ra_cmc_support import CmcServed, served_cmc_ca
from tests.ca.test_cmc_server import ACCOUNT, _csr
from tests.fixtures.dns import DnsServer

DOMAIN = "cmc-kunde.ch"


@dataclass
class Served(CmcServed):
    dns: DnsServer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("cmc-domains")
    dns = DnsServer(tmp).start()

    def with_dns(doc: dict[str, Any]) -> None:
        doc["ra"] = {
            "dns": {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout_seconds": 2},
            "caa_identities": ["ca.cmcgate.test"],
        }

    try:
        with served_cmc_ca(tmp, "example-silver", with_dns) as cmc:
            yield Served(cmc.service, cmc.props, dns)
    finally:
        dns.stop()


def test_an_address_is_refused_until_its_domain_is_validated_through_dns(served: Served) -> None:
    csr, key = _csr(f"bob@{DOMAIN}")
    with served.client() as client, pytest.raises(CMCFailure) as refused:
        client.enroll(csr, key)
    assert refused.value.fail_info == "badIdentity"
    domains = DomainService(served.service.ca)
    view = domains.request(ACCOUNT, DOMAIN, by="operator")
    served.dns.add(view.record_name, "TXT", f'"{view.token}"')
    assert domains.check(ACCOUNT, DOMAIN, by="operator").status is DomainStatus.VALIDATED
    csr, key = _csr(f"bob@{DOMAIN}")
    with served.client() as client:
        result = client.enroll(csr, key)
    assert result.certificate.public_key() == key.public_key()


def test_caa_forbidding_this_ca_is_refused_as_bad_identity(served: Served) -> None:
    served.dns.add("example.org", "CAA", '0 issuemail "other.ca"')
    try:
        csr, key = _csr("carol@example.org")
        with served.client() as client, pytest.raises(CMCFailure) as refused:
            client.enroll(csr, key)
        assert refused.value.fail_info == "badIdentity"
        failed = [o for o in served.service.ca.store.find_orders(status="FAILED")
                  if o.emails == ("carol@example.org",)]  # fmt: skip
        assert failed and "CAA" in (failed[-1].failure_reason or "")
    finally:
        served.dns.remove("example.org", "CAA")


def test_ca_serve_schedules_the_domain_checks(served: Served) -> None:
    scheduler = served.service._scheduler
    assert scheduler is not None and scheduler.get_job("ra-domain-checks") is not None
