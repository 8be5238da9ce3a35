"""The RA REST API over the RA's other services, over real HTTPS and a real SMTP sink:
server-side key orders with the PKCS#12 pick-up, notifications and resend, renewal."""

from __future__ import annotations

import email
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message

import pytest

from ca.store.audit import audit_records
from gateway.devservices import SmtpSink
from tests.ca.ra_fixtures import ACCOUNT, OTHER, SILVER, RaRunning, csr_pem, start_ra

P12 = "example-p12"
P12_PRODUCT = f"""
  {P12}:
    profile: mailbox
    validities: [1y]
    key_types: [ec-p256, rsa2048]
    approval: auto
    allow_simple_request: false
    publish_ldap: false
    key_generation: pkcs12
"""
ALL = ["read", "issue", "revoke", "approve", "publish", "comment", "domains"]


@dataclass
class Mailing:
    ra: RaRunning
    sink: SmtpSink
    token: str

    def mails_to(self, address: str) -> list[Message]:
        return [email.message_from_bytes(m.content) for m in self.sink.received()
                if address in m.rcpt_tos]  # fmt: skip


@pytest.fixture(scope="module")
def mailing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailing]:
    sink = SmtpSink().start()
    ra_yaml = f"ra:\n  mail: {{host: 127.0.0.1, port: {sink.port}, from: 'CA <ca@x.test>'}}\n"
    ra = start_ra(tmp_path_factory.mktemp("ra-services"), ra_yaml=ra_yaml,
                  products=P12_PRODUCT, product_ids=(P12,))  # fmt: skip
    try:
        yield Mailing(ra, sink, ra.jwt("mailer", ra.user("mailer", {ACCOUNT: ALL})))
    finally:
        ra.thread.stop()
        sink.stop()


def _text(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def test_a_server_side_key_is_picked_up_once_with_the_mailed_pin(mailing: Mailing) -> None:
    ra = mailing.ra
    answer = ra.post("/orders", mailing.token, json={
        "client": ACCOUNT, "product": P12, "keyGeneration": "pkcs12",
        "email": "p12@example.org"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert order["status"] == "ISSUED" and "certificate" in order
    mails = {" ".join(str(m["Subject"]).split()): _text(m)
             for m in mailing.mails_to("p12@example.org")}  # fmt: skip
    pin_mail = next(text for subject, text in mails.items() if subject.startswith("PIN for"))
    link_mail = next(text for subject, text in mails.items() if "ready for download" in subject)
    pin_match = re.search(r"^\s+(\S+)\s*$", pin_mail, re.M)
    link_match = re.search(r"(https://\S+/p12/\S+)", link_mail)
    assert pin_match and link_match
    pin, link = pin_match.group(1), link_match.group(1)
    token = link.rsplit("/", 1)[1]
    picked = ra.get(f"/p12/{token}")
    assert picked.status_code == 200
    assert picked.headers["Content-Type"].startswith("application/x-pkcs12")
    opened = subprocess.run(
        ["openssl", "pkcs12", "-nokeys", "-passin", f"pass:{pin}"], input=picked.content,
        capture_output=True, check=False,
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    assert b"BEGIN CERTIFICATE" in opened.stdout
    again = ra.get(f"/p12/{token}")
    assert again.status_code == 410
    assert again.headers["Content-Type"].startswith("application/problem+json")
    subjects = [r.subject for r in audit_records(ra.service.ca.store) if r.event_type == "api_call"]
    assert "GET /pki/api/v2/p12/{token}" in subjects
    assert not any(token in (s or "") for s in subjects)  # the credential is not audited


def test_notifications_are_listed_without_their_text_and_resent(mailing: Mailing) -> None:
    ra = mailing.ra
    order = ra.post("/orders", mailing.token, json={
        "client": ACCOUNT, "product": SILVER, "csr": csr_pem("note@example.org"),
        "renewalEmails": ["boss@example.org"]}).json()  # fmt: skip
    ra.service.ra_services.notifier.flush(60)  # ca serve sends confirmations in the background
    listed = ra.get("/notifications", mailing.token, params={"order": order["id"]}).json()
    assert [n["kind"] for n in listed] == ["order_confirmation"]
    assert "body" not in listed[0] and listed[0]["status"] == "SENT"
    before = len(mailing.mails_to("note@example.org"))
    resent = ra.post(f"/notifications/{listed[0]['id']}/resend", mailing.token)
    assert resent.status_code == 200, resent.text
    assert len(mailing.mails_to("note@example.org")) == before + 1
    by_serial = ra.get("/notifications", mailing.token,
                       params={"serial": order["certificateSerial"]}).json()  # fmt: skip
    assert [n["id"] for n in by_serial] == [listed[0]["id"]]
    services = ra.service.ra_services
    assert services is not None
    assert services.notifier.renewal_emails(order["certificateSerial"]) == ("boss@example.org",)
    assert ra.post("/notifications/999999/resend", mailing.token).status_code == 404


def test_a_certificate_is_renewed_with_a_csr_now_or_later(mailing: Mailing) -> None:
    ra = mailing.ra
    first = ra.post(
        "/orders",
        mailing.token,
        json={"client": ACCOUNT, "product": SILVER, "csr": csr_pem("renew@example.org")},
    ).json()
    # fmt: skip
    serial = first["certificateSerial"]
    renewed = ra.post(f"/certificates/{serial}/renew", mailing.token,
                      json={"csr": csr_pem("renew@example.org")})  # fmt: skip
    assert renewed.status_code == 201, renewed.text
    assert renewed.json()["status"] == "ISSUED" and renewed.json()["id"] != first["id"]
    waiting = ra.post(f"/certificates/{serial}/renew", mailing.token, json={})
    assert waiting.status_code == 201, waiting.text
    assert waiting.json()["status"] == "PENDING_CSR_RENEWAL"
    order_id = waiting.json()["id"]
    provided = ra.post(f"/orders/{order_id}/csr", mailing.token,
                       json={"csr": csr_pem("renew@example.org")})  # fmt: skip
    assert provided.status_code == 200, provided.text
    assert provided.json()["status"] == "ISSUED"
    again = ra.post(f"/orders/{order_id}/csr", mailing.token,
                    json={"csr": csr_pem("renew@example.org")})  # fmt: skip
    assert again.status_code == 409


def test_another_clients_user_neither_sees_nor_resends_the_notifications(
    mailing: Mailing,
) -> None:
    ra = mailing.ra
    order = ra.post(
        "/orders",
        mailing.token,
        json={"client": ACCOUNT, "product": SILVER, "csr": csr_pem("private@example.org")},
    ).json()
    mine = ra.get("/notifications", mailing.token, params={"order": order["id"]}).json()
    assert mine and all(n["orderId"] == order["id"] for n in mine)  # fmt: skip
    stranger = ra.jwt("stranger", ra.user("stranger", {OTHER: ["read", "issue"]}))
    assert [n for n in ra.get("/notifications", stranger).json()
            if n["orderId"] == order["id"]] == []  # fmt: skip
    for params in ({"order": order["id"]}, {"serial": order["certificateSerial"]}):
        assert ra.get("/notifications", stranger, params=params).status_code == 404
    before = len(mailing.mails_to("private@example.org"))
    refused = ra.post(f"/notifications/{mine[0]['id']}/resend", stranger)
    assert refused.status_code == 404, refused.text
    reader = ra.jwt("reader-only", ra.user("reader-only", {ACCOUNT: ["read"]}))
    assert ra.post(f"/notifications/{mine[0]['id']}/resend", reader).status_code == 403
    assert len(mailing.mails_to("private@example.org")) == before
