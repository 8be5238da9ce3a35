"""Totemo's ``issuerDN`` against the bundled CA's real hierarchy (root -> S/MIME issuing CA).

SwissSign's guide puts a root DN into ``issuerDN``; the bundled CA issues under an issuing CA
below its root, over CMC on HTTPS with a client certificate.  A root ``issuerDN`` must keep
the certificate; a DN off the chain must be refused before the CA issues anything whenever
the chain is known in advance (configured CA chain, or an earlier answer), and a certificate
issued all the same must not stay valid at the CA with nobody holding its key.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ca.store.model import CertificateStatus, OrderStatus
from cmc.client_config import client_from_config
from cmc.errors import IssuerMismatch
from config.model import PkiConnection
from config.properties import load
from gateway.certs.models import Source
from gateway.devservices import SmtpSink
from tests.certbuild import email_csr
from tests.gateway import test_enrolment as enrolment
from tests.gateway.test_enrolment import BundledCa, Gateway, make_gateway

__all__ = ["make_gateway"]  # the fixture, used with this module's `bundled`

OFF_CHAIN = "CN=Not On The Chain CA,O=Elsewhere AG,C=CH"


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, ...]]:
    tmp = tmp_path_factory.mktemp("issuer-ca")
    with enrolment.running_bundled_ca(tmp) as (ca, auto, manual):
        yield ca, auto, manual, tmp


def _pki(bundled: tuple[object, ...], name: str, issuer_dn: str, roots: str) -> PkiConnection:
    ca, tmp = bundled[0], bundled[3]
    assert isinstance(ca, BundledCa) and isinstance(tmp, Path)
    path = enrolment.write_properties(
        tmp, ca, "example-silver", name, issuer_dn=issuer_dn, trusted_roots=roots
    )
    pki = load(path).pki
    assert pki is not None
    return pki


def _csr(email: str) -> tuple[rsa.RSAPrivateKey, x509.CertificateSigningRequest]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, email_csr(key, email)


def _crl_serials(ca: BundledCa) -> set[int]:
    answer = requests.get(f"http://127.0.0.1:{ca.http_port}/crl/issuing.crl", timeout=10)
    answer.raise_for_status()
    crl = x509.load_der_x509_crl(answer.content)
    return {entry.serial_number for entry in crl}


def test_a_root_issuer_dn_keeps_the_certificate_and_it_signs(
    bundled: tuple[object, ...],
    make_gateway: Callable[..., Gateway],
    smtp_sink: SmtpSink,
    tmp_path: Path,
) -> None:
    ca = bundled[0]
    assert isinstance(ca, BundledCa)
    root = ca.service.ca.root_cert.subject
    assert ca.service.ca.issuing_cert.issuer == root != ca.service.ca.issuing_cert.subject
    gateway = make_gateway(pki=_pki(bundled, "root-dn", root.rfc4514_string(), "root-ca.pem"))
    gateway.send("rooted@example.org")
    [record] = gateway.store.find(email="rooted@example.org")
    assert record.source is Source.PKI and record.certificate.issuer != root
    [delivered] = smtp_sink.received()
    assert enrolment.openssl_signer(tmp_path, ca, delivered.content) == record.certificate
    [order] = ca.orders_for("rooted@example.org")
    assert order.status is OrderStatus.ISSUED  # type: ignore[attr-defined]
    serial = record.certificate.serial_number
    assert ca.service.ca.store.get_certificate(serial).status is CertificateStatus.VALID


def test_an_off_chain_issuer_dn_is_refused_before_sending_when_the_ca_chain_is_configured(
    bundled: tuple[object, ...], make_gateway: Callable[..., Gateway], smtp_sink: SmtpSink
) -> None:
    """trustedRoots = the CA's chain file (issuing CA + root), as SwissSign hands it out."""
    ca = bundled[0]
    assert isinstance(ca, BundledCa)
    gateway = make_gateway(pki=_pki(bundled, "off-configured", OFF_CHAIN, "ca-chain.pem"))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("offchain@example.org")
    assert refused.value.smtp_code == 451  # sign=always and no certificate
    assert ca.orders_for("offchain@example.org") == []  # the CA was never asked
    assert gateway.store.find(email="offchain@example.org") == []
    assert smtp_sink.received() == []


def test_after_one_answer_an_off_chain_issuer_dn_is_refused_before_sending(
    bundled: tuple[object, ...],
) -> None:
    """Only the root is configured: the first request cannot be judged in advance; its
    certificate is not kept and is revoked at the CA.  The answer showed the chain, so the
    next request is refused before it leaves."""
    ca = bundled[0]
    assert isinstance(ca, BundledCa)
    pki = _pki(bundled, "off-learned", OFF_CHAIN, "root-ca.pem")
    with client_from_config(pki) as client:
        key, csr = _csr("first@example.org")
        with pytest.raises(IssuerMismatch, match="names none of them"):
            client.enroll(csr, key)
        [order] = ca.orders_for("first@example.org")
        orphan = ca.service.ca.store.get_certificate(order.certificate_serial)  # type: ignore[attr-defined]
        assert orphan.status is CertificateStatus.REVOKED
        revocation = ca.service.ca.store.get_revocation(orphan.serial)
        assert revocation is not None and revocation.reason_name == "cessationOfOperation"
        assert orphan.serial_number in _crl_serials(ca)

        key, csr = _csr("second@example.org")
        with pytest.raises(IssuerMismatch, match="refused before sending"):
            client.enroll(csr, key)
        assert ca.orders_for("second@example.org") == []
