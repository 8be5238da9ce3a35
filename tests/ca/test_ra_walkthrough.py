"""The issue's walk-through over the REST API: API key -> JWT -> domain request -> TXT record
on a real local DNS server -> validated -> order -> certificate; CAA issuemail forbidding
this CA refuses the order. DNS answers come from scripts/devdns.py on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.ca.ra_fixtures import ACCOUNT, OTHER, SILVER, RaRunning, csr_pem, start_ra
from tests.fixtures.dns import DnsServer

DOMAIN = "rest-kunde.ch"


@dataclass
class Walk:
    ra: RaRunning
    dns: DnsServer
    token: str


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    tmp = tmp_path_factory.mktemp("ra-walk")
    dns = DnsServer(tmp).start()
    ra_yaml = (f"ra:\n  dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout_seconds: 2}}\n"
               "  caa_identities: [ca.cmcgate.test]\n")  # fmt: skip
    ra = start_ra(tmp, ra_yaml=ra_yaml)
    try:
        key = ra.user("walker", {ACCOUNT: ["read", "issue", "domains"], OTHER: ["read"]})
        yield Walk(ra, dns, ra.jwt("walker", key))
    finally:
        ra.thread.stop()
        dns.stop()


def _order(walk: Walk, email: str) -> dict:
    answer = walk.ra.post("/orders", walk.token, json={
        "client": ACCOUNT, "product": SILVER, "csr": csr_pem(email)})  # fmt: skip
    assert answer.status_code in (201, 403), answer.text
    return {**answer.json(), "http": answer.status_code}


def test_a_domain_validated_through_dns_lets_the_client_order_for_it(walk: Walk) -> None:
    refused = _order(walk, f"anna@{DOMAIN}")
    assert refused["http"] == 403 and refused["failInfo"] == "badIdentity"
    requested = walk.ra.post("/domains", walk.token, json={"client": ACCOUNT, "domain": DOMAIN})
    assert requested.status_code == 201, requested.text
    record = requested.json()["txtRecord"]
    assert record["name"].endswith(DOMAIN) and requested.json()["status"] == "PENDING"
    path = f"/domains/{ACCOUNT}/{DOMAIN}"
    assert walk.ra.post(path + "/check", walk.token).json()["status"] == "PENDING"
    walk.dns.add(record["name"], "TXT", f'"{record["value"]}"')
    checked = walk.ra.post(path + "/check", walk.token)
    assert checked.status_code == 200 and checked.json()["status"] == "VALIDATED"
    assert walk.ra.get(path, walk.token).json()["validUntil"]
    listed = walk.ra.get("/domains", walk.token, params={"client": ACCOUNT}).json()
    assert [d["domain"] for d in listed] == [DOMAIN]
    issued = _order(walk, f"anna@{DOMAIN}")
    assert issued["http"] == 201 and issued["status"] == "ISSUED" and issued["certificate"]
    other = walk.ra.post("/domains", walk.token, json={"client": OTHER, "domain": DOMAIN})
    assert other.status_code == 403  # read on other.ra, not domains
    assert walk.ra.get(f"/domains/{OTHER}/{DOMAIN}", walk.token).status_code == 404
    assert walk.ra.get(f"/domains/nobody.ra/{DOMAIN}", walk.token).status_code == 404


def test_caa_forbidding_this_ca_refuses_the_rest_order(walk: Walk) -> None:
    walk.dns.add("example.org", "CAA", '0 issuemail "other.ca"')
    try:
        refused = _order(walk, "carol@example.org")
        assert refused["http"] == 403 and refused["failInfo"] == "badIdentity"
        failed = walk.ra.get(f"/orders/{refused['orderId']}", walk.token).json()
        assert failed["status"] == "FAILED" and "CAA" in failed["failureReason"]
    finally:
        walk.dns.remove("example.org", "CAA")
    assert _order(walk, "carol@example.org")["http"] == 201
