"""Issue #15's acceptance walk, in one piece, as an integration would go: an API key from the
operator -> JWT -> domain request -> TXT published on the suite's DNS server -> validated ->
order over REST -> certificate (openssl verifies it) -> revoked -> on the CRL served over HTTP;
then the refusals: an expired JWT, a wrong audience, a rolled-over key after 7 days (and its
JWTs), a client without the revoke permission — 401/403 — and an unvalidated domain refused
over REST (403) as over CMC (tests/ca/test_ra_domains_cmc.py). The clock that moves is the
CA's own (``ca.clock``), which the RA checks every time claim and key lifetime against."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
import requests

from tests.ca.ra_fixtures import ACCOUNT, SILVER, RaRunning, csr_pem, start_ra
from tests.fixtures.dns import DnsServer

DOMAIN = "integration-kunde.ch"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RaRunning, DnsServer]]:
    dns = DnsServer(tmp_path).start()
    ra_yaml = f"ra:\n  dns: {{nameservers: [127.0.0.1], port: {dns.port}, timeout_seconds: 2}}\n"
    ra = start_ra(tmp_path, ra_yaml=ra_yaml)
    try:
        yield ra, dns
    finally:
        ra.thread.stop()
        dns.stop()


def _openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_integration_walk_and_its_refusals(running: tuple[RaRunning, DnsServer]) -> None:
    ra, dns = running
    ca = ra.service.ca
    # the operator makes the service user and its key (cmcgate ca api-user add / api-key create)
    key = ra.user("billing", {ACCOUNT: ["read", "issue", "revoke", "domains"]})
    reader = ra.user("reader", {ACCOUNT: ["read", "issue"]})
    token = ra.jwt("billing", key)

    # an address in a domain nobody validated yet: refused, the failed order named
    email = f"anna@{DOMAIN}"
    body = {"client": ACCOUNT, "product": SILVER, "csr": csr_pem(email)}
    refused = ra.post("/orders", token, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json()["failInfo"] == "badIdentity" and refused.json()["orderId"]

    # domain -> TXT on the DNS server -> validated
    requested = ra.post("/domains", token, json={"client": ACCOUNT, "domain": DOMAIN})
    assert requested.status_code == 201, requested.text
    record = requested.json()["txtRecord"]
    dns.add(record["name"], "TXT", f'"{record["value"]}"')
    checked = ra.post(f"/domains/{ACCOUNT}/{DOMAIN}/check", token)
    assert checked.status_code == 200 and checked.json()["status"] == "VALIDATED", checked.text

    # order -> certificate
    ordered = ra.post("/orders", token, json={**body, "csr": csr_pem(email)})
    assert ordered.status_code == 201, ordered.text
    order = ordered.json()
    assert order["status"] == "ISSUED"
    cert_file = ra.directory.parent / "anna.pem"
    cert_file.write_text(order["certificate"])
    chain = str(ra.directory / "ca-chain.pem")
    assert ": OK" in _openssl("verify", "-CAfile", chain, "-purpose", "smimesign", str(cert_file))
    serial = order["certificateSerial"]

    # a client without the revoke permission may not revoke; one with it may
    reader_token = ra.jwt("reader", reader)
    denied = ra.post(f"/certificates/{serial}/revoke", reader_token, json={"reason": "superseded"})
    assert denied.status_code == 403, denied.text
    revoked = ra.post(
        f"/certificates/{serial}/revoke", token, json={"reason": "keyCompromise", "comment": "x"}
    )
    assert revoked.status_code == 200, revoked.text
    crl = requests.get(f"http://127.0.0.1:{ra.service.http_port}/crl/issuing.crl", timeout=30)
    crl_file = ra.directory.parent / "issuing.crl"
    crl_file.write_bytes(crl.content)
    text = _openssl("crl", "-inform", "DER", "-in", str(crl_file), "-noout", "-text")
    assert serial.upper().lstrip("0") in text.replace(":", "").upper()
    assert "Key Compromise" in text

    # a wrong audience (signed with the RA's own secret: only the audience is wrong)
    now = ca.clock()
    claims = {"iss": ca.settings.ra.jwt.issuer, "sub": "billing", "iat": now, "nbf": now,
              "exp": now + timedelta(hours=1), "jti": "walk-1"}  # fmt: skip
    kid = jwt.get_unverified_header(token)["kid"]
    secret = ra.auth.secret()
    wrong_aud = jwt.encode({**claims, "aud": "another API"}, secret, "HS256", {"kid": kid})
    assert ra.get("/clients", wrong_aud).status_code == 401
    right = jwt.encode({**claims, "aud": ca.settings.ra.jwt.audience}, secret, "HS256",
                       {"kid": kid})  # fmt: skip
    assert ra.get("/clients", right).status_code == 200

    # the key is rolled over: old key and its JWTs work for 7 days, not after
    new_key = ra.auth.roll_key("billing", by="operator")
    real_clock = ca.clock
    start = real_clock()
    try:
        ca.clock = lambda: start + timedelta(hours=9)  # type: ignore[method-assign]
        expired = ra.get("/clients", token)  # made at `start`, valid 8 h
        assert expired.status_code == 401
        assert "invalid_token" in expired.headers.get("WWW-Authenticate", "")
        ca.clock = lambda: start + timedelta(days=6)  # type: ignore[method-assign]
        old_jwt = ra.jwt("billing", key)
        assert ra.get("/clients", old_jwt).status_code == 200
        ca.clock = lambda: start + timedelta(days=7, hours=1)  # type: ignore[method-assign]
        assert ra.post("/jwt", json={"userName": "billing", "apiKey": key}).status_code == 401
        assert ra.get("/clients", old_jwt).status_code == 401  # its key is gone with it
        assert ra.get("/clients", ra.jwt("billing", new_key)).status_code == 200
    finally:
        ca.clock = real_clock  # type: ignore[method-assign]
