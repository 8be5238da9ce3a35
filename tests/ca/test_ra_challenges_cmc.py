"""Mailbox control over real CMC/HTTPS: a gateway enrols an address outside the account's
validated domains on a product with ``mailbox_validation``. The CMC answer is ``pending``
with a pendToken, the email challenge reaches a real SMTP sink, the holder posts the code to
the confirmation page over real HTTP, and the gateway's queryPending then gets the
certificate (and a resend of the original request answers with the same certificate).
Also: a second confirmation racing the first does not fail the issuance the first started."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding

from ca.ra.challenges import normalise_code
from ca.store.model import OrderStatus, OrderView
from cmc.client import EnrollmentPending
from gateway.devservices import SmtpSink
from tests.ca.ra_cmc_support import CmcServed, served_cmc_ca
from tests.ca.test_cmc_server import ACCOUNT, _csr

MBX = "example-mbx"
OUTSIDE = "dora@mailbox.example.net"
CODE_RE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){5}\b")
LINK_RE = re.compile(r"/ra/confirm/([A-Za-z0-9_-]+)")


@dataclass
class Served(CmcServed):
    sink: SmtpSink


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    sink = SmtpSink().start()

    def with_mailbox_product(doc: dict[str, Any]) -> None:
        doc["products"][MBX] = {
            "profile": "mailbox", "validities": ["1y"], "key_types": ["ec-p256"],
            "approval": "auto", "allow_simple_request": False, "publish_ldap": False,
            "mailbox_validation": True,
        }  # fmt: skip
        doc["accounts"][ACCOUNT]["products"] = ["example-silver", MBX]
        doc["ra"] = {"mail": {"host": "127.0.0.1", "port": sink.port, "from": "CA <ca@x.test>"}}

    try:
        with served_cmc_ca(tmp_path_factory.mktemp("cmc-challenges"), MBX,
                           with_mailbox_product) as cmc:  # fmt: skip
            yield Served(cmc.service, cmc.props, sink)
    finally:
        sink.stop()


def _challenge_mail(sink: SmtpSink, address: str) -> tuple[str, str]:
    found = [m for m in sink.messages if address in m.rcpt_tos]
    assert found, f"no mail to {address}: {[m.rcpt_tos for m in sink.messages]}"
    message = message_from_bytes(found[-1].content, policy=default)
    assert isinstance(message, EmailMessage)
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    code, link = CODE_RE.search(text), LINK_RE.search(text)
    assert code and link, text
    return code.group(0), link.group(1)


def test_a_gateway_enrolment_waits_for_the_mailbox_and_query_pending_gets_the_certificate(
    served: Served,
) -> None:
    csr, key = _csr(OUTSIDE)
    with served.client() as client:
        prepared = client.prepare_enrollment(csr, key)
        with pytest.raises(EnrollmentPending) as waiting:
            client.poll(prepared)
    pending = waiting.value.pending
    assert pending.pend_token
    order = served.service.ca.store.find_order_by_pend_token(pending.pend_token)
    assert order is not None and order.status is OrderStatus.PENDING_VALIDATION
    assert order.emails == (OUTSIDE,)

    # asking before the holder answered: still pending, same token
    with served.client() as client, pytest.raises(EnrollmentPending) as again:
        client.poll(pending)
    assert again.value.pending.pend_token == pending.pend_token

    code, challenge_id = _challenge_mail(served.sink, OUTSIDE)
    answer = requests.post(served.url(f"/ra/confirm/{challenge_id}"), data={"code": code},
                           timeout=30)  # fmt: skip
    assert answer.status_code == 200 and "ISSUED" in answer.text, answer.text

    with served.client() as client:
        result = client.poll(pending)
    assert result.certificate.public_key() == key.public_key()
    issued = served.service.ca.store.get_order(order.id)
    assert issued.status is OrderStatus.ISSUED
    assert int(issued.certificate_serial or "0", 16) == result.certificate.serial_number
    # the gateway's retry of its original request (no pendToken kept) gets the same one
    with served.client() as client:
        resent = client.poll(prepared)
    assert resent.certificate.serial_number == result.certificate.serial_number


def test_a_second_worker_resuming_an_order_another_one_took_leaves_that_issuance_alone(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two mailbox confirmations (or a confirmation and a renewal CSR) at once: both find
    the order waiting, one claims it. The other must not fail the order under the first."""
    ca, address = served.service.ca, "erin@mailbox.example.net"
    csr, _key = _csr(address)
    result = ca.submit(csr.public_bytes(Encoding.DER), ACCOUNT, MBX, requested_by="test")
    order_id = result.order.id
    assert result.order.status is OrderStatus.PENDING_VALIDATION
    code, challenge_id = _challenge_mail(served.sink, address)
    _challenge, matched = ca.store.answer_challenge(
        challenge_id, normalise_code(code), by="test", max_attempts=5
    )
    assert matched
    real = ca.mailbox_confirmed

    def first_worker_claims_it_meanwhile(order: OrderView, email: str) -> bool:
        monkeypatch.setattr(ca, "mailbox_confirmed", real)
        ca.store.advance(order.id, OrderStatus.KEY_VALIDATION, OrderStatus.GENERATE_TBS)
        return real(order, email)

    monkeypatch.setattr(ca, "mailbox_confirmed", first_worker_claims_it_meanwhile)
    late = ca.resume(order_id, actor="second confirmation")
    assert late.pending and late.order.status is OrderStatus.GENERATE_TBS
    assert ca.store.get_order(order_id).status is OrderStatus.GENERATE_TBS
    ca.store.fail(order_id, "test over: nobody is issuing it")


def test_answering_again_resumes_an_order_a_crash_left_waiting_after_its_confirmation(
    served: Served,
) -> None:
    """The challenge was CONFIRMED but the CA stopped before it resumed the order (nothing
    else ever would: PENDING_VALIDATION is a wait, not a lost order). The holder posting the
    code again, as the page invites, gets the order issued."""
    ca, address = served.service.ca, "fritz@mailbox.example.net"
    csr, _key = _csr(address)
    result = ca.submit(csr.public_bytes(Encoding.DER), ACCOUNT, MBX, requested_by="test")
    code, challenge_id = _challenge_mail(served.sink, address)
    _challenge, matched = ca.store.answer_challenge(
        challenge_id, normalise_code(code), by="mailbox holder", max_attempts=5
    )  # confirmed, then the process died
    assert matched
    assert ca.store.get_order(result.order.id).status is OrderStatus.PENDING_VALIDATION
    again = requests.post(served.url(f"/ra/confirm/{challenge_id}"), data={"code": code},
                          timeout=30)  # fmt: skip
    assert again.status_code == 200, again.text
    assert ca.store.get_order(result.order.id).status is OrderStatus.ISSUED


def test_the_scheduler_resumes_a_confirmed_order_a_crash_left_waiting(served: Served) -> None:
    ca, address = served.service.ca, "gret@mailbox.example.net"
    csr, _key = _csr(address)
    result = ca.submit(csr.public_bytes(Encoding.DER), ACCOUNT, MBX, requested_by="test")
    code, challenge_id = _challenge_mail(served.sink, address)
    _challenge, matched = ca.store.answer_challenge(
        challenge_id, normalise_code(code), by="mailbox holder", max_attempts=5
    )  # confirmed, then the process died
    assert matched
    service = served.service.ra_services
    assert service is not None
    assert service.challenges.resume_confirmed() == 0  # confirmed just now: left alone
    assert service.challenges.resume_confirmed(older_than=timedelta(0)) == 1
    assert ca.store.get_order(result.order.id).status is OrderStatus.ISSUED
