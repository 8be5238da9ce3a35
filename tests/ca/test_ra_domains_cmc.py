"""Over real CMC/HTTPS: an address outside the account's validated domains is refused
(badIdentity) until the account validates the domain through DNS; CAA forbidding this CA is
refused (badIdentity) too. DNS answers come from scripts/devdns.py on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ca.init import initialise
from ca.keys import KeyType
from ca.ra.domains import DomainService, DomainStatus
from ca.service.http import CaService, ServiceThread
from cmc.client import CmcClient
from cmc.client_config import client_from_config
from cmc.errors import CMCFailure
from config.properties import load
from tests.ca.test_cmc_server import ACCOUNT, PASSWORD, _csr, _free_port, _service_cli, _write_props
from tests.fixtures.dns import DnsServer

DOMAIN = "cmc-kunde.ch"


@dataclass
class Served:
    service: CaService
    props: Path
    dns: DnsServer

    def client(self) -> CmcClient:
        pki = load(self.props).pki
        assert pki is not None
        return client_from_config(pki)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("cmc-domains")
    dns = DnsServer(tmp).start()
    directory = tmp / "ca"
    http_port = _free_port()
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id="example-silver",
        organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    doc = yaml.safe_load(ca_yaml.read_text())
    doc["ra"] = {
        "dns": {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout_seconds": 2},
        "caa_identities": ["ca.cmcgate.test"],
    }
    ca_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    service = CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
    thread = ServiceThread(service)
    thread.start()
    try:
        (tmp / "p12.pass").write_bytes(PASSWORD + b"\n")
        assert _service_cli(["access-cert", "--dir", str(directory), "--account", ACCOUNT,
                             "--out", str(tmp / "gw.p12"),
                             "--password-file", str(tmp / "p12.pass")]) == 0  # fmt: skip
        issuer = service.ca.issuing_cert.subject.rfc4514_string()
        url = f"/ws/cmc?account={ACCOUNT}&product=example-silver&validity=1y"
        props = _write_props(tmp, "gw", service.https_port, url, tmp / "gw.p12", issuer)
        yield Served(service, props, dns)
    finally:
        thread.stop()
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
