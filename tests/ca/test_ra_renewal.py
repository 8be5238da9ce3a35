"""Renewal (RA manual: PENDING_CSR_RENEWAL, renewal info with the preceding certificates):
a new order linked to the certificate it renews, released by a CSR through the same checks
as a first order; PKCS#12 certificates get a new server-made key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.authority import CertificateAuthority, IssueResult, OrderRefused
from ca.ra.keygen import KeygenResult, KeygenService
from ca.ra.renewal import RenewalError, RenewalService
from ca.store.model import OrderStatus, OrderView
from gateway.main import main as cli_main
from tests.ca.ra_p12_support import ACCOUNT, P12, SILVER, RecordingNotifier, csr_der

S = OrderStatus


def _issued(ca: CertificateAuthority, email: str) -> str:
    result = ca.submit(csr_der(email), ACCOUNT, SILVER, requested_by="test")
    assert result.certificate is not None
    return format(result.certificate.serial_number, "x")


def test_a_renewal_with_a_csr_is_issued_and_names_its_predecessor(
    ca: CertificateAuthority,
) -> None:
    old = _issued(ca, "alice@example.org")
    service = RenewalService(ca, RecordingNotifier())
    result = service.renew(old, by="ra-operator", csr_der=csr_der("alice@example.org"))
    assert isinstance(result, IssueResult) and result.certificate is not None
    new = format(result.certificate.serial_number, "x")
    assert result.order.status is S.ISSUED and result.order.emails == ("alice@example.org",)
    statuses = [c.to_status for c in ca.store.history(result.order.id)]
    assert statuses[:3] == [S.NEW, S.PENDING_CSR_RENEWAL, S.KEY_VALIDATION]
    assert statuses[-1] is S.ISSUED
    assert [c.serial for c in service.predecessors(new)] == [old]
    assert ca.store.renewal_orders(old) == [result.order.id]

    third = service.renew(new, by="ra-operator", csr_der=csr_der("alice@example.org"))
    assert isinstance(third, IssueResult) and third.certificate is not None
    newest = format(third.certificate.serial_number, "x")
    assert [c.serial for c in service.predecessors(newest)] == [new, old]


def test_without_a_csr_the_renewal_waits_and_the_mailed_csr_releases_it(
    ca: CertificateAuthority,
) -> None:
    old = _issued(ca, "bob@example.org")
    notifier = RecordingNotifier()
    service = RenewalService(ca, notifier)
    waiting = service.renew(old, by="ra-operator")
    assert isinstance(waiting, OrderView)
    assert waiting.status is S.PENDING_CSR_RENEWAL and waiting.csr_der is None
    (mail,) = notifier.of("renewal_csr_needed")
    assert mail["to"] == "bob@example.org" and mail["order_id"] == waiting.id
    assert mail["serial"] == old
    assert mail["url"] == f"https://ra.example.org:8444/pki/api/v2/orders/{waiting.id}/csr"

    with pytest.raises(RenewalError) as bad:  # bad input changes nothing
        service.provide_csr(waiting.id, b"not a csr", by="bob")
    assert bad.value.status == 400
    with pytest.raises(RenewalError) as other:  # a CSR for someone else's mailbox
        service.provide_csr(waiting.id, csr_der("mallory@example.org"), by="bob")
    assert other.value.status == 400 and "mallory@example.org" in str(other.value)
    assert ca.store.get_order(waiting.id).status is S.PENDING_CSR_RENEWAL
    assert ca.store.get_order(waiting.id).csr_der is None

    pem = x509.load_der_x509_csr(csr_der("bob@example.org")).public_bytes(
        serialization.Encoding.PEM
    )
    issued = service.provide_csr(waiting.id, pem, by="bob")
    assert issued.certificate is not None and issued.order.status is S.ISSUED
    assert issued.order.certificate_serial != old
    assert [c.serial for c in service.predecessors(issued.order.certificate_serial or "")] == [old]

    with pytest.raises(RenewalError) as again:
        service.provide_csr(waiting.id, pem, by="bob")
    assert again.value.status == 409


def test_of_two_renewal_csrs_uploaded_at_once_only_the_first_is_used(
    ca: CertificateAuthority,
) -> None:
    waiting = RenewalService(ca, RecordingNotifier()).renew(_issued(ca, "cem@example.org"), by="op")
    assert isinstance(waiting, OrderView)
    first = csr_der("cem@example.org")
    # the first upload has stored its CSR and is on its way to issuance when the second comes
    ca.store.set_csr(waiting.id, first, first=True)
    with pytest.raises(OrderRefused, match="has its CSR already"):
        ca.resume(waiting.id, actor="cem", csr_der=csr_der("cem@example.org"))
    assert ca.store.get_order(waiting.id).csr_der == first
    assert ca.store.get_order(waiting.id).status is S.PENDING_CSR_RENEWAL


def test_a_revoked_or_unknown_certificate_is_not_renewed(ca: CertificateAuthority) -> None:
    serial = _issued(ca, "carol@example.org")
    ca.revoke(serial, "keyCompromise", by="test")
    service = RenewalService(ca, RecordingNotifier())
    with pytest.raises(RenewalError) as revoked:
        service.renew(serial, by="ra")
    assert revoked.value.status == 409
    with pytest.raises(RenewalError) as unknown:
        service.renew("abcdef123", by="ra")
    assert unknown.value.status == 404
    assert len(ca.store.find_orders()) == 1  # nothing was ordered


def test_a_pkcs12_certificate_is_renewed_with_a_new_server_made_key(
    ca: CertificateAuthority,
) -> None:
    notifier = RecordingNotifier()
    first = KeygenService(ca, notifier).order(ACCOUNT, P12, ["dave@example.org"], requested_by="ra")
    renewal = RenewalService(ca, notifier).renew(first.serial, by="ra")
    assert isinstance(renewal, KeygenResult) and renewal.serial != first.serial
    old_key = x509.load_der_x509_certificate(first.certificate_der).public_key()
    new_key = x509.load_der_x509_certificate(renewal.certificate_der).public_key()
    assert old_key != new_key
    assert len(notifier.of("p12_pin")) == 2 and len(notifier.of("p12_pickup")) == 2
    assert ca.store.renewed_serial(renewal.order_id) == first.serial


def test_cmcgate_ca_renew_with_a_csr_file(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with CertificateAuthority.open(ca_dir / "ca.yaml") as ca:
        old = _issued(ca, "erin@example.org")
    csr_file = tmp_path / "renew.csr"
    csr_file.write_bytes(csr_der("erin@example.org"))
    capsys.readouterr()
    assert cli_main(["ca", "renew", old, "--csr", str(csr_file), "--dir", str(ca_dir)]) == 0
    out = capsys.readouterr().out
    assert " ISSUED serial " in out, out
