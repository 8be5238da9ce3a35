"""Mailbox control by email challenge against a running ``ca serve``: the code arrives at a
real SMTP sink, is posted over real HTTP to the confirmation page on the CA's plain-HTTP
listener, and the certificate that comes out is checked by ``openssl verify``."""

from __future__ import annotations

import email
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca.authority import CertificateAuthority, OrderRefused
from ca.init import initialise
from ca.keys import KeyType
from ca.ra.challenges import (
    ChallengeError,
    ChallengeExpired,
    ChallengeService,
    WrongCode,
    new_code,
    normalise_code,
)
from ca.ra.mailer import Mailer
from ca.ra.notify import Notifier
from ca.service.http import CaService, ServiceThread
from ca.settings.ra import MailSettings
from ca.store.audit import audit_records
from ca.store.challenges import ChallengeStatus
from ca.store.model import OrderStatus
from gateway.devservices import SmtpSink
from tests.certbuild import email_csr_der

ACCOUNT = "example.ra"
MBX, PLAIN = "example-mbx", "example-silver"
OUTSIDE = "carol@mailbox.example.net"
CODE_RE = re.compile(r"\b[A-Z2-7]{4}(?:-[A-Z2-7]{4}){5}\b")

EXTRA_PRODUCTS = f"""
  {MBX}:
    profile: mailbox
    validities: [1y]
    key_types: [ec-p256]
    approval: auto
    allow_simple_request: false
    publish_ldap: false
    mailbox_validation: true
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    directory: Path
    service: CaService

    @property
    def ca(self) -> CertificateAuthority:
        return self.service.ca

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.service.http_port}{path}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("ra-challenges") / "ca"
    http_port = _free_port()
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id=PLAIN,
        organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip
    ca_yaml = directory / "ca.yaml"
    text = ca_yaml.read_text().replace(f"products: [{PLAIN}]", f"products: [{PLAIN}, {MBX}]")
    ca_yaml.write_text(text + EXTRA_PRODUCTS)
    service = CaService(directory, https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
    thread = ServiceThread(service)
    thread.start()
    try:
        yield Served(directory, service)
    finally:
        thread.stop()


@pytest.fixture
def challenges(served: Served, smtp_sink: SmtpSink) -> Iterator[ChallengeService]:
    """The RA's challenge service on the running CA, mailing to the sink, hooks set the way
    ``ca/ra/services.py`` sets them."""
    ca = served.ca
    notifier = Notifier(ca, Mailer(MailSettings(port=smtp_sink.port, sender="CA <ca@x.test>")))
    service = ChallengeService(ca, notifier)
    ca.on_pending_validation = service.start
    ca.on_issued = notifier.order_issued
    served.service.ra_services = SimpleNamespace(challenges=service)  # type: ignore[attr-defined]
    original_clock = ca.clock
    try:
        yield service
    finally:
        ca.clock = original_clock
        served.service.ra_services = None  # type: ignore[attr-defined]


def _csr_der(address: str) -> bytes:
    return email_csr_der(address)


def _mail_to(sink: SmtpSink, address: str) -> EmailMessage:
    found = [m for m in sink.messages if address in m.rcpt_tos]
    assert found, f"no mail to {address}: {[m.rcpt_tos for m in sink.messages]}"
    message = email.message_from_bytes(found[-1].content, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _code_and_id(message: EmailMessage) -> tuple[str, str]:
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    code = CODE_RE.search(text)
    link = re.search(r"/ra/confirm/([A-Za-z0-9_-]+)", text)
    assert code and link, text
    return code.group(0), link.group(1)


def _pending_order(served: Served, sink: SmtpSink, address: str = OUTSIDE) -> tuple[str, str, str]:
    result = served.ca.submit(_csr_der(address), ACCOUNT, MBX, requested_by="test")
    assert result.pending and result.order.status is OrderStatus.PENDING_VALIDATION
    code, challenge_id = _code_and_id(_mail_to(sink, address))
    return result.order.id, code, challenge_id


def test_the_mailed_code_posted_to_the_page_issues_a_certificate_openssl_verifies(
    served: Served, challenges: ChallengeService, smtp_sink: SmtpSink
) -> None:
    order_id, code, challenge_id = _pending_order(served, smtp_sink)
    message = _mail_to(smtp_sink, OUTSIDE)
    assert message["Auto-Submitted"] == "auto-generated" and message["Message-ID"]
    assert f"http://127.0.0.1:{served.service.http_port}/ra/confirm/{challenge_id}" in str(
        message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    )
    # GET only shows the form (a mail scanner prefetching the link confirms nothing)
    page = requests.get(served.url(f"/ra/confirm/{challenge_id}"), timeout=10)
    assert page.status_code == 200 and "<form" in page.text and 'name="code"' in page.text
    assert served.ca.store.get_order(order_id).status is OrderStatus.PENDING_VALIDATION
    assert served.ca.store.get_challenge(challenge_id).status is ChallengeStatus.PENDING

    # typed by hand: lower case, spaces instead of dashes
    typed = code.lower().replace("-", " ")
    answer = requests.post(served.url(f"/ra/confirm/{challenge_id}"), data={"code": typed},
                           timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert "confirmed" in answer.text and "ISSUED" in answer.text
    order = served.ca.store.get_order(order_id)
    assert order.status is OrderStatus.ISSUED and order.certificate_serial
    assert served.ca.store.mailbox_confirmed(order_id, OUTSIDE.upper())

    cert = served.ca.store.get_certificate(order.certificate_serial)
    leaf = served.directory / "carol.pem"
    leaf.write_bytes(
        x509.load_der_x509_certificate(cert.der).public_bytes(serialization.Encoding.PEM)
    )
    verify = subprocess.run(
        ["openssl", "verify", "-purpose", "smimesign",
         "-CAfile", str(served.directory / "root-ca.pem"),
         "-untrusted", str(served.directory / "issuing-ca.pem"), str(leaf)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr + verify.stdout
    comments = [c.text for c in served.ca.store.comments(order_id)]
    assert any(t.startswith(f"email challenge sent to {OUTSIDE}") for t in comments)
    assert any(f"mailbox {OUTSIDE} confirmed by mailbox holder" in t for t in comments)
    # the order confirmation (on_issued) reached the holder too
    sent = challenges.notifier.list(order_id=order_id)
    assert [n.kind for n in sent] == ["email_challenge", "order_confirmation"]
    assert code not in sent[0].body  # the code is kept only as a hash
    events = [r for r in audit_records(served.ca.store) if r.event_type == "email_challenge"]
    assert any(r.subject == order_id for r in events)
    # answering again changes nothing
    again = requests.post(served.url(f"/ra/confirm/{challenge_id}"), data={"code": code},
                          timeout=30)  # fmt: skip
    assert again.status_code == 200
    assert served.ca.store.get_order(order_id).status is OrderStatus.ISSUED


def test_five_wrong_codes_fail_the_challenge_and_the_order(
    served: Served, challenges: ChallengeService, smtp_sink: SmtpSink
) -> None:
    order_id, code, challenge_id = _pending_order(served, smtp_sink)
    wrong = new_code()
    for attempt in range(1, 5):
        reply = requests.post(served.url(f"/ra/confirm/{challenge_id}"), data={"code": wrong},
                              timeout=30)  # fmt: skip
        assert reply.status_code == 400 and f"{5 - attempt} attempt(s) left" in reply.text
    last = requests.post(served.url(f"/ra/confirm/{challenge_id}"), data={"code": wrong},
                         timeout=30)  # fmt: skip
    assert last.status_code == 409 and "Traceback" not in last.text
    order = served.ca.store.get_order(order_id)
    assert order.status is OrderStatus.FAILED and "5 wrong codes" in (order.failure_reason or "")
    assert served.ca.store.get_challenge(challenge_id).status is ChallengeStatus.FAILED
    # even the right code does nothing now
    with pytest.raises(ChallengeError):
        challenges.answer(challenge_id, code)
    assert served.ca.store.get_order(order_id).status is OrderStatus.FAILED


def test_an_expired_challenge_fails_the_order(
    served: Served, challenges: ChallengeService, smtp_sink: SmtpSink
) -> None:
    order_id, code, challenge_id = _pending_order(served, smtp_sink)
    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    served.ca.clock = lambda: later
    with pytest.raises(ChallengeExpired) as expired:
        challenges.answer(challenge_id, code)
    assert expired.value.status == 410
    order = served.ca.store.get_order(order_id)
    assert order.status is OrderStatus.FAILED and "expired" in (order.failure_reason or "")
    assert any("expired" in c.text for c in served.ca.store.comments(order_id))


def test_the_expiry_job_fails_waiting_orders_whose_challenge_lapsed(
    served: Served, challenges: ChallengeService, smtp_sink: SmtpSink
) -> None:
    order_id, _code, challenge_id = _pending_order(served, smtp_sink)
    assert challenges.expire_due() == 0
    served.ca.clock = lambda: datetime.now(UTC) + timedelta(hours=25)
    assert challenges.expire_due() >= 1
    assert served.ca.store.get_order(order_id).status is OrderStatus.FAILED
    assert served.ca.store.get_challenge(challenge_id).status is ChallengeStatus.EXPIRED
    assert challenges.expire_due() == 0


def test_resend_mails_a_new_code_and_the_old_one_no_longer_works(
    served: Served, challenges: ChallengeService, smtp_sink: SmtpSink
) -> None:
    order_id, old_code, challenge_id = _pending_order(served, smtp_sink)
    before = len(smtp_sink.messages)
    challenges.resend(challenge_id, by="operator")
    assert len(smtp_sink.messages) == before + 1
    new, same_id = _code_and_id(_mail_to(smtp_sink, OUTSIDE))
    assert same_id == challenge_id and new != old_code
    with pytest.raises(WrongCode):
        challenges.answer(challenge_id, old_code)
    assert challenges.answer(challenge_id, new).status is OrderStatus.ISSUED
    assert [c.status for c in challenges.list(order_id)] == [ChallengeStatus.CONFIRMED]


def test_the_page_answers_unknown_ids_and_empty_forms_without_traces(
    served: Served, challenges: ChallengeService
) -> None:
    for method in (requests.get, requests.post):
        reply = method(served.url("/ra/confirm/no-such-challenge"), timeout=10)
        assert reply.status_code in (404, 400) and "Traceback" not in reply.text
    assert requests.get(served.url("/ra/confirm/nope"), timeout=10).status_code == 404
    posted = requests.post(served.url("/ra/confirm/nope"), data={"code": "AAAA"}, timeout=10)
    assert posted.status_code == 404


def test_without_the_ra_service_the_page_says_unavailable(served: Served) -> None:
    reply = requests.get(served.url("/ra/confirm/anything"), timeout=10)
    assert reply.status_code == 503


def test_the_same_address_on_a_product_without_mailbox_validation_is_bad_identity(
    served: Served, challenges: ChallengeService, smtp_sink: SmtpSink
) -> None:
    with pytest.raises(OrderRefused) as refused:
        served.ca.submit(_csr_der(OUTSIDE), ACCOUNT, PLAIN, requested_by="test")
    assert refused.value.category == "bad_identity"
    assert not [m for m in smtp_sink.messages if OUTSIDE in m.rcpt_tos]


def test_codes_carry_120_random_bits_and_survive_retyping() -> None:
    code = new_code()
    assert CODE_RE.fullmatch(code) and len(code.replace("-", "")) * 5 == 120
    assert normalise_code(f" {code.lower().replace('-', ' ')} ") == code
    assert normalise_code("O0I1 B8") == "OOII-BB"


def test_listing_or_resending_unknown_things_is_404(challenges: ChallengeService) -> None:
    for call in (lambda: challenges.list("ord-nope"), lambda: challenges.resend("nope")):
        with pytest.raises(ChallengeError) as refused:
            call()
        assert refused.value.status == 404
