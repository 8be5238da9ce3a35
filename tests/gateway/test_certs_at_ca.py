"""``cmcgate gateway certs revoke|fetch|pending`` against the bundled CA over HTTPS.

The CLI runs as ``cmcgate`` runs it (:func:`gateway.main.main`) with the gateway's properties
file; the CA is the real bundled CA (CMC over HTTPS with the access certificate, CRL over
HTTP); users are enrolled by the gateway's own :class:`~gateway.broker.enrolment.Enroller` built
from
the same file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509

import gateway.main
from ca.store.model import CertificateStatus
from cmc.client_config import client_from_config
from config.model import Config
from config.properties import load
from gateway import main as cmcgate_cli
from gateway.broker.enrolment import Enroller, EnrolmentPending
from gateway.certs.models import RevocationStatus, Source
from gateway.certs.setup import GatewayStores, stores_for
from gateway.certs.view import SigningIdentity
from tests.gateway.test_enrolment import BundledCa, start_bundled_ca, write_properties


@dataclass
class Site:
    ca: BundledCa
    tmp: Path

    def properties(self, product: str) -> Path:
        return write_properties(
            self.tmp, self.ca, product, f"gw-{product}",
            extra={
                "cmcgate.store.dsn": f"sqlite:///{self.tmp / product}.db",
                "cmcgate.gateway.stateDir": self.tmp / f"{product}-state",
            },
        )  # fmt: skip

    def crl_serials(self) -> set[int]:
        answer = requests.get(f"http://127.0.0.1:{self.ca.http_port}/crl/issuing.crl", timeout=10)
        answer.raise_for_status()
        return {entry.serial_number for entry in x509.load_der_x509_crl(answer.content)}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("certs-at-ca")
    ca, _auto, _manual = start_bundled_ca(tmp)
    try:
        yield Site(ca, tmp)
    finally:
        ca.stop()


@dataclass
class Gateway:
    """The gateway's stores and enroller as ``gateway run`` builds them from ``path``."""

    path: Path
    config: Config
    stores: GatewayStores
    enroller: Enroller

    def enrol(self, email: str) -> SigningIdentity:
        return self.enroller.enrol(email)


@pytest.fixture
def gateway(site: Site, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    path = site.properties(getattr(request, "param", "example-silver"))
    cfg = load(path)
    pki = cfg.pki
    assert pki is not None
    stores = stores_for(cfg)
    enroller = Enroller(
        stores.certs, stores.require_keys(), lambda: client_from_config(pki), pki,
        cfg.enrolment, state_dir=cfg.gateway.state_dir,
    )  # fmt: skip
    try:
        yield Gateway(path, cfg, stores, enroller)
    finally:
        enroller.close()
        stores.close()


def cmcgate(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cmcgate_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_revoke_revokes_a_leavers_certificate_at_the_ca_and_in_the_store(
    site: Site, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = gateway.enrol("leaver@example.org").cert
    serial = cert.serial_number
    assert serial not in site.crl_serials()

    revoke = ("gateway", "certs", "revoke", "leaver@example.org", "--config", gateway.path)
    code, out, err = cmcgate(capsys, *revoke, "--reason", "affiliationChanged")
    assert (code, err) == (0, "")
    assert f"revoked certificate {serial:x} of leaver@example.org (affiliationChanged)" in out

    # the CA's store and its CRL (served over HTTP) say revoked
    authority = site.ca.service.ca
    assert authority.store.get_certificate(serial).status is CertificateStatus.REVOKED
    revocation = authority.store.get_revocation(serial)
    assert revocation is not None and revocation.reason_name == "affiliationChanged"
    assert serial in site.crl_serials()
    # the gateway's store too: it no longer signs with it
    [record] = gateway.stores.certs.find(email="leaver@example.org")
    assert record.revocation is RevocationStatus.REVOKED
    assert gateway.stores.certs.best_for_signing("leaver@example.org") is None

    code, _, err = cmcgate(capsys, *revoke)
    assert code == 2 and "leaver@example.org has no valid certificate from the CA" in err


def test_fetch_gets_a_certificate_by_serial_and_stores_it_with_its_key(
    site: Site, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    identity = gateway.enrol("refetch@example.org")
    [lost] = gateway.stores.certs.find(email="refetch@example.org")
    gateway.stores.certs.remove(lost.fingerprint)  # e.g. a store restored from an old backup
    assert gateway.stores.certs.best_for_signing("refetch@example.org") is None

    serial = f"{identity.cert.serial_number:x}"
    code, out, err = cmcgate(capsys, "gateway", "certs", "fetch", "refetch@example.org",
                             "--serial", serial, "--config", gateway.path)  # fmt: skip
    assert (code, err) == (0, ""), err
    assert f"fetched certificate {serial} for refetch@example.org" in out
    [record] = gateway.stores.certs.find(email="refetch@example.org")
    assert record.certificate == identity.cert and record.source is Source.PKI
    assert record.key_label == lost.key_label is not None  # linked to the key it holds
    signing = gateway.stores.certs.best_for_signing("refetch@example.org")
    assert signing is not None and signing.fingerprint == record.fingerprint
    assert gateway.stores.certs.chain_for(record)[0] == site.ca.service.ca.issuing_cert

    code, _, err = cmcgate(capsys, "gateway", "certs", "fetch", "someone@example.org",
                           "--serial", serial, "--config", gateway.path)  # fmt: skip
    assert code == 2 and "no end-entity certificate for someone@example.org" in err


@pytest.mark.parametrize("gateway", ["example-manual"], indirect=True)
def test_pending_lists_orders_waiting_for_approval_and_stores_what_was_issued(
    site: Site, gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cmcgate(capsys, "gateway", "certs", "pending", "--config", gateway.path)
    assert (code, out.strip()) == (0, "no enrolments pending")
    with pytest.raises(EnrolmentPending):
        gateway.enrol("waiting@example.org")
    [order] = site.ca.orders_for("waiting@example.org")

    code, out, _ = cmcgate(capsys, "gateway", "certs", "pending", "--no-query",
                           "--config", gateway.path)  # fmt: skip
    assert code == 0 and "waiting@example.org" in out and "pending" in out

    code, out, err = cmcgate(capsys, "gateway", "certs", "pending", "--config", gateway.path)
    assert (code, err) == (0, "")
    [row] = [line for line in out.splitlines() if line.startswith("waiting@example.org")]
    assert f"order {order.id} is PENDING_AUTHORIZATION" in row  # type: ignore[attr-defined]

    site.ca.approve_all()
    code, out, _ = cmcgate(capsys, "gateway", "certs", "pending", "--config", gateway.path)
    [row] = [line for line in out.splitlines() if line.startswith("waiting@example.org")]
    [record] = gateway.stores.certs.find(email="waiting@example.org")
    assert code == 0 and f"issued: certificate {record.serial} stored" in row
    assert record.source is Source.PKI and record.key_label is not None
    code, out, _ = cmcgate(capsys, "gateway", "certs", "pending", "--config", gateway.path)
    assert out.strip() == "no enrolments pending"


def test_get_cert_answers_the_certificate_asked_for_not_the_response_signers(
    site: Site, gateway: Gateway
) -> None:
    """The CA's answer carries its CMC signer's certificate too (an end-entity certificate):
    that one must not be taken for the certificate asked for."""
    cert = gateway.enrol("asked@example.org").cert
    pki = gateway.config.pki
    assert pki is not None
    with client_from_config(pki) as client:
        found, chain = client.fetch(cert.issuer, cert.serial_number)
    assert found == cert
    assert chain == site.ca.service.ca.chain
