"""One story on real services: CMC enrolment over HTTPS, LDAP publication, revocation.

The bundled CA (software keys) is initialised with ``ca.ldap`` pointing at a private slapd and
served by :class:`ca.service.http.CaService` over HTTPS on loopback with client certificates.  The
gateway side is the real CMC client, configured from a properties file in the seed's form.
The publisher is run directly (``LdapPublisher.run_due``); the service's own 10 s publication
schedule is taken out so that nothing races the test's runs.

    enrol alice -> openssl verify -purpose smimesign -> publish -> her DER in LDAP
    slapd down  -> enrol bob (issued) -> publish job RETRY -> slapd up -> his DER in LDAP
    revoke alice over CMC -> serial in the CRL served over HTTP -> unpublish -> value gone
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.init import initialise
from ca.keys import KeyType
from ca.publish.publisher import LdapPublisher
from ca.service.certs import issue_access_certificate
from ca.service.http import CaService, ServiceThread
from ca.store.model import JobKind, JobStatus
from cmc.client import CmcClient
from cmc.client_config import client_from_config
from config.properties import load
from config.totemo import pki_connection_properties
from gateway.devservices import Slapd, free_port
from tests.certbuild import email_csr

ACCOUNT, PRODUCT = "example.ra", "example-silver"
PEOPLE = "ou=people,dc=example,dc=org"
CERT = "userCertificate;binary"
PASSWORD = b"access-secret-e2e"
DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


@dataclass
class Stack:
    directory: Path
    service: CaService
    props: Path
    slapd: Slapd

    def client(self) -> CmcClient:
        pki = load(self.props).pki
        assert pki is not None
        return client_from_config(pki)

    def publisher(self) -> LdapPublisher:
        ldap = self.service.ca.settings.ca.ldap
        assert ldap is not None
        return LdapPublisher(ldap, self.service.ca.store)

    def ldap_values(self, email: str) -> dict[str, list[bytes]]:
        """DN -> ``userCertificate;binary`` values of the entries with this mail, from slapd."""
        with self.slapd.connection() as conn:
            conn.search(PEOPLE, f"(mail={email})", attributes=[CERT])
            return {
                r["dn"]: list(r["raw_attributes"].get(CERT, []))
                for r in conn.response
                if r["type"] == "searchResEntry"
            }

    @property
    def crl_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}/crl/issuing.crl"


def _write_seed_properties(tmp: Path, port: int, p12: Path, issuer: str, roots: Path) -> Path:
    """The Totemo/SwissSign keys verbatim, pointed at the bundled CA (as the demo does)."""
    password = tmp / "p12.pass"
    password.write_bytes(PASSWORD + b"\n")
    path = tmp / "gateway.properties"
    path.write_text(
        pki_connection_properties(
            server_name="localhost",
            server_port=port,
            account=ACCOUNT,
            product=PRODUCT,
            issuer_dn=issuer,
            access_p12=p12,
            access_password_file=password,
            trusted_roots=roots,
            type_="rfc5272",
            extra={
                "cmcgate.pki.retries": 1,
                "cmcgate.gateway.internalDomains": "example.org",
                "cmcgate.keys.backend": "software",
                "cmcgate.keys.directory": tmp / "gw-keys",
                "cmcgate.keys.passphraseFile": password,
            },
        )  # fmt: skip
    )
    return path


def _without_scheduled_publication(scheduler: Any, _service: CaService) -> None:
    scheduler.remove_job("ldap-publish")  # the test runs the publisher itself


@pytest.fixture
def stack(tmp_path: Path, slapd: Slapd) -> Iterator[Stack]:
    with slapd.connection() as conn:
        assert conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"}), conn.result
    ldap_pass = tmp_path / "ldap.pass"
    ldap_pass.write_text(slapd.admin_password + "\n")
    directory = tmp_path / "ca"
    http_port = free_port()
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id=PRODUCT,
        organization_identifier="NTRCH-CHE-123.456.789",
        ldap_url=slapd.url, ldap_bind_dn=slapd.admin_dn, ldap_base_dn=PEOPLE,
        ldap_password_file=str(ldap_pass),
    )  # fmt: skip
    service = CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
    service.extra_jobs = _without_scheduled_publication  # type: ignore[attr-defined]
    thread = ServiceThread(service)
    thread.start()
    try:
        access = issue_access_certificate(service.ca, ACCOUNT, PASSWORD)
        p12 = tmp_path / f"{ACCOUNT}.p12"
        p12.write_bytes(access.p12)
        issuer = service.ca.issuing_cert.subject.rfc4514_string()
        props = _write_seed_properties(
            tmp_path, service.https_port, p12, issuer, directory / "root-ca.pem"
        )
        yield Stack(directory, service, props, slapd)
    finally:
        thread.stop()


def _csr(email: str) -> tuple[x509.CertificateSigningRequest, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return email_csr(key, email), key


def _enrol(stack: Stack, email: str) -> x509.Certificate:
    csr, key = _csr(email)
    with stack.client() as client:
        cert = client.enroll(csr, key).certificate
    assert cert.public_key() == key.public_key()
    return cert


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def _publish_job(stack: Stack, cert: x509.Certificate, kind: JobKind) -> Any:
    (job,) = [j for j in stack.service.ca.store.find_jobs(serial=cert.serial_number)
              if j.kind is kind]  # fmt: skip
    return job


def test_enrolled_over_cmc_published_to_ldap_revoked_into_the_crl_and_out_of_ldap(
    stack: Stack,
) -> None:
    store = stack.service.ca.store
    alice_dn = f"mail=alice@example.org,{PEOPLE}"
    bob_dn = f"mail=bob@example.org,{PEOPLE}"

    # 1. alice is enrolled over HTTPS with the access certificate; openssl accepts the result
    alice = _enrol(stack, "alice@example.org")
    leaf = stack.directory / "alice.pem"
    leaf.write_bytes(alice.public_bytes(PEM))
    verify = _openssl(
        "verify", "-purpose", "smimesign", "-CAfile", str(stack.directory / "root-ca.pem"),
        "-untrusted", str(stack.directory / "issuing-ca.pem"), str(leaf),
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr + verify.stdout

    # 2. the publication job queued at issuance puts her DER on mail=alice@example.org
    assert _publish_job(stack, alice, JobKind.PUBLISH).status is JobStatus.PENDING
    run = stack.publisher().run_due()
    assert (run.published, run.retried, run.failed) == (1, 0, 0), run.errors
    assert stack.ldap_values("alice@example.org") == {alice_dn: [alice.public_bytes(DER)]}

    # 3. with the directory down, bob's enrolment still succeeds; only his publication waits
    stack.slapd.pause()
    bob = _enrol(stack, "bob@example.org")
    recorded = store.get_certificate(bob.serial_number)
    assert recorded.der == bob.public_bytes(DER) and recorded.order_id is not None
    assert store.get_order(recorded.order_id).status.value == "ISSUED"
    t0 = datetime.now(UTC)
    down = stack.publisher().run_due(now=t0)
    assert (down.published, down.retried, down.failed) == (0, 1, 0)
    waiting = _publish_job(stack, bob, JobKind.PUBLISH)
    assert waiting.status is JobStatus.RETRY
    assert "cannot reach" in (waiting.last_error or "")

    stack.slapd.start()
    up = stack.publisher().run_due(now=t0 + timedelta(minutes=2))
    assert (up.published, up.retried, up.failed) == (1, 0, 0), up.errors
    assert _publish_job(stack, bob, JobKind.PUBLISH).status is JobStatus.SUCCESS
    assert stack.ldap_values("bob@example.org") == {bob_dn: [bob.public_bytes(DER)]}

    # 4. alice's certificate is revoked over CMC: in the CRL served over HTTP, out of LDAP
    with stack.client() as client:
        client.revoke(alice.issuer, alice.serial_number, "key_compromise")
    answer = requests.get(stack.crl_url, timeout=5)
    assert answer.status_code == 200
    crl_file = stack.directory / "fetched-issuing.crl"
    crl_file.write_bytes(answer.content)
    crl_text = _openssl(
        "crl", "-inform", "DER", "-in", str(crl_file),
        "-CAfile", str(stack.directory / "issuing-ca.pem"), "-noout", "-text",
    )  # fmt: skip
    assert crl_text.returncode == 0, crl_text.stderr
    assert "verify OK" in crl_text.stderr + crl_text.stdout
    listed = {int(s, 16) for s in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", crl_text.stdout)}
    assert alice.serial_number in listed
    assert bob.serial_number not in listed
    assert "Key Compromise" in crl_text.stdout

    assert _publish_job(stack, alice, JobKind.UNPUBLISH).status is JobStatus.PENDING
    gone = stack.publisher().run_due()
    assert (gone.unpublished, gone.retried, gone.failed) == (1, 0, 0), gone.errors
    assert stack.ldap_values("alice@example.org") == {alice_dn: []}  # entries are never deleted
    assert stack.ldap_values("bob@example.org") == {bob_dn: [bob.public_bytes(DER)]}
