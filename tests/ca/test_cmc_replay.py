"""A request the CA saw before (same transactionId and senderNonce), over real HTTPS.

A client resends a request whose answer it did not get: the CA answers what it did for the
original (the certificate it issued, the pendToken of the order waiting for approval) and
orders nothing; a replay that would do something new (another certification request under
the same transactionId and senderNonce, a revocation again, a replay after the window) is
refused with badRequest as before.  See :mod:`ca.service.replay`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from ca.authority import CertificateAuthority
from ca.service.cmc import CmcService, Query
from cmc.client import EnrollmentPending
from cmc.messages.api import (
    RevokeRequest,
    build_full_request,
    build_revoke_request,
    new_transaction_id,
)
from cmc.transport.pkcs12 import load_pkcs12
from tests.ca import test_cmc_server
from tests.ca.test_cmc_server import (
    ACCOUNT,
    PASSWORD,
    SILVER,
    Running,
    _csr,
    _raw_exchange,
    _status_of,
)

running = test_cmc_server.running  # the fixture, for this module too


def test_a_resent_request_the_ca_issued_is_answered_with_the_same_certificate(
    running: Running,
) -> None:
    store = running.service.ca.store
    csr, key = _csr("resent@example.org")
    with running.client() as client:
        prepared = client.prepare_enrollment(csr, key)
        first = client.poll(prepared)  # sends the request
        again = client.poll(prepared)  # the very same bytes once more
    assert again.certificate == first.certificate
    [order] = store.find_orders(transaction_id=prepared.transaction_id)
    assert order.status.value == "ISSUED"
    issued = store.find_certificates(email="resent@example.org")
    assert [c.der for c in issued] == [first.certificate.public_bytes(Encoding.DER)]


def test_a_resent_request_waiting_for_approval_gets_its_pend_token_then_its_certificate(
    running: Running,
) -> None:
    csr, key = _csr("resent-manual@example.org")
    with running.client_for(f"/ws/cmc?account={ACCOUNT}&product=example-manual") as client:
        prepared = client.prepare_enrollment(csr, key)
        with pytest.raises(EnrollmentPending) as first:
            client.poll(prepared)
        with pytest.raises(EnrollmentPending) as again:
            client.poll(prepared)
        token = first.value.pending.pend_token
        assert again.value.pending.pend_token == token
        order = running.service.ca.store.find_order_by_pend_token(token)
        assert order is not None
        running.service.ca.approve(order.id, "test-operator")
        issued = client.poll(prepared)
    assert issued.certificate.public_key() == key.public_key()
    assert len(running.service.ca.store.find_orders(transaction_id=prepared.transaction_id)) == 1


def test_a_replay_with_another_certification_request_is_refused(running: Running) -> None:
    signer = running.access_signer()
    nonce, txid = os.urandom(16), new_transaction_id()
    first, _ = _csr("replay-first@example.org")
    other, _ = _csr("replay-other@example.org")
    request = build_full_request(signer=signer, requests=[first], sender_nonce=nonce,
                                 transaction_id=txid)  # fmt: skip
    assert _status_of(running, _raw_exchange(running, request.der))[0] is None
    forged = build_full_request(signer=signer, requests=[other], sender_nonce=nonce,
                                transaction_id=txid)  # fmt: skip
    fail_info, text = _status_of(running, _raw_exchange(running, forged.der))
    assert fail_info == "badRequest" and "replayed" in (text or "")
    assert running.service.ca.store.find_certificates(email="replay-other@example.org") == []


def test_a_replayed_revocation_is_refused(running: Running) -> None:
    csr, key = _csr("replay-revoke@example.org")
    with running.client() as client:
        cert = client.enroll(csr, key).certificate
    revoke = build_revoke_request(
        RevokeRequest(cert.issuer, cert.serial_number, "superseded"),
        signer=running.access_signer(),
    )
    assert _status_of(running, _raw_exchange(running, revoke.der))[0] is None
    fail_info, text = _status_of(running, _raw_exchange(running, revoke.der))
    assert fail_info == "badRequest" and "revocation is not repeated" in (text or "")


def test_a_replay_after_the_window_is_refused(running: Running) -> None:
    """The same CA behind a CMC service whose replay window has passed (0 here)."""
    csr, key = _csr("replay-late@example.org")
    with running.client() as client:
        prepared = client.prepare_enrollment(csr, key)
        client.poll(prepared)
    late = _service(running, running.service.ca, replay_window=timedelta(0))
    fail_info, text = _status_of(running, _handle(running, late, prepared.request_der))
    assert fail_info == "badRequest" and "more than 0 days ago" in (text or "")
    assert len(running.service.ca.store.find_certificates(email="replay-late@example.org")) == 1


def test_a_resent_request_whose_order_failed_while_the_ca_was_unavailable_is_ordered_again(
    running: Running,
) -> None:
    """The first attempt meets the CA with its key store closed: the order fails, the answer is
    tryLater.  The very same request sent again (the client never saw that answer) is issued."""
    store = running.service.ca.store
    csr, key = _csr("resent-after-outage@example.org")
    with running.client() as client:
        prepared = client.prepare_enrollment(csr, key)
    outage = CertificateAuthority.open(running.directory / "ca.yaml")
    try:
        outage.keys.close()
        answer = _handle(running, _service(running, outage), prepared.request_der)
    finally:
        outage.store.close()
    assert _status_of(running, answer)[0] == "tryLater"
    with running.client() as client:
        issued = client.poll(prepared)
    orders = store.find_orders(transaction_id=prepared.transaction_id)
    assert [o.status.value for o in orders] == ["FAILED", "ISSUED"]
    certificates = store.find_certificates(email="resent-after-outage@example.org")
    assert [c.der for c in certificates] == [issued.certificate.public_bytes(Encoding.DER)]


def _service(running: Running, ca: CertificateAuthority, **kwargs: Any) -> CmcService:
    """Another CMC service (no sockets) over ``ca``, signing with the running CA's signer."""
    material = running.service.material
    return CmcService(ca, material.signer, material.infra_cert, **kwargs)


def _handle(running: Running, service: CmcService, request_der: bytes) -> bytes:
    p12 = (running.directory.parent / f"{ACCOUNT}.p12").read_bytes()
    access = load_pkcs12(p12, PASSWORD).certificate
    query = Query(ACCOUNT, SILVER)
    return service.handle(request_der, "application/pkcs7-mime", query, access).body
