"""Server-side key generation (RA manual 3.4.3): the subscriber gets the key only as a
PIN-protected PKCS#12, the PIN and the one-time link by separate mails; the key is never
stored or written in the clear; unpicked files are purged after the retention period.

openssl is the judge of the PKCS#12; the pick-up link is served over real HTTP by the aiohttp
handler the REST API mounts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from datetime import timedelta
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ca.authority import CertificateAuthority
from ca.ra.keygen import KeygenError, KeygenService, p12_pickup_handler
from ca.ra.mailer import Mailer
from ca.ra.notify import Notifier, NotifyError
from ca.settings.ra import MailSettings
from ca.store.model import CertificateStatus, OrderStatus
from ca.store.notifications import NotificationStatus
from gateway.devservices import SmtpSink
from tests.ca.ra_p12_support import (
    ACCOUNT,
    DOMAIN,
    MANUAL_P12,
    P12,
    SILVER,
    RecordingNotifier,
    openssl,
)


def _token(notifier: RecordingNotifier) -> str:
    return str(notifier.of("p12_pickup")[-1]["url"]).rsplit("/", 1)[1]


def test_the_subscriber_opens_the_picked_up_pkcs12_with_the_mailed_pin_in_openssl(
    ca: CertificateAuthority, ca_dir: Path, tmp_path: Path
) -> None:
    notifier = RecordingNotifier()
    service = KeygenService(ca, notifier)
    result = service.order(ACCOUNT, P12, ["Alice@" + DOMAIN], requested_by="ra-operator")

    order = ca.store.get_order(result.order_id)
    assert order.status is OrderStatus.ISSUED and order.requested_by == "ra-operator"
    assert [c["kind"] for c in notifier.calls] == ["p12_pin", "p12_pickup"]  # two mails
    pin_mail, link_mail = notifier.calls
    assert pin_mail["to"] == link_mail["to"] == "alice@example.org"
    assert "url" not in pin_mail and "pin" not in link_mail
    pin = str(pin_mail["pin"])
    url = str(link_mail["url"])
    assert url.startswith("https://ra.example.org:8444/pki/api/v2/p12/")
    assert pin not in url

    stored = ca.store.pkcs12_bytes_of(result.order_id)
    assert stored is not None and b"PRIVATE KEY" not in stored
    with pytest.raises(ValueError):  # no password: the stored file does not open
        pkcs12.load_key_and_certificates(stored, None)

    p12_file = tmp_path / "alice.p12"
    p12_file.write_bytes(service.pickup(_token(notifier)))
    opened = openssl("pkcs12", "-in", str(p12_file), "-passin", f"pass:{pin}", "-nodes")
    assert opened.returncode == 0, opened.stderr
    text = opened.stdout
    assert b"friendlyName: alice@example.org" in text
    key_pem = text[text.index(b"-----BEGIN PRIVATE KEY-----") :]
    key = serialization.load_pem_private_key(
        key_pem[: key_pem.index(b"-----END PRIVATE KEY-----") + 25], None
    )
    certificate = x509.load_der_x509_certificate(result.certificate_der)
    assert key.public_key() == certificate.public_key()
    assert text.count(b"-----BEGIN CERTIFICATE-----") == 3  # leaf, issuing CA, root

    wrong = openssl("pkcs12", "-in", str(p12_file), "-passin", "pass:WRONGPIN1234", "-nodes")
    assert wrong.returncode != 0 and b"PRIVATE KEY" not in wrong.stdout

    # the key never reached the CA's files (database, WAL, logs): neither DER nor PEM
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    scalar = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    pem_body = b"".join(key_pem.splitlines()[1:3])
    for path in ca_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert der not in data and scalar not in data and pem_body not in data, path

    view = service.status(result.order_id)
    assert view.picked_up_at is not None and not view.available
    assert ca.store.pkcs12_bytes_of(result.order_id) is None  # gone with the pick-up
    with pytest.raises(KeygenError) as again:
        service.pickup(_token(notifier))
    assert again.value.status == 410
    with pytest.raises(KeygenError) as unknown:
        service.pickup("x" * 43)
    assert unknown.value.status == 404


def test_an_rsa_key_of_the_products_list_can_be_chosen(ca: CertificateAuthority) -> None:
    notifier = RecordingNotifier()
    result = KeygenService(ca, notifier).order(
        ACCOUNT, P12, ["bob@example.org"], requested_by="ra", key_type="rsa2048"
    )
    cert = x509.load_der_x509_certificate(result.certificate_der)
    assert result.key_type == "rsa2048" and cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_an_unpicked_pkcs12_is_purged_after_the_retention_period(
    ca: CertificateAuthority,
) -> None:
    notifier = RecordingNotifier()
    service = KeygenService(ca, notifier)
    result = service.order(ACCOUNT, P12, ["carol@example.org"], requested_by="ra")
    assert ca.settings.ra.pkcs12.retention_days == 90
    assert result.pickup_expires - result.pkcs12.created_at == timedelta(days=90)
    assert service.purge_due(now=ca.clock() + timedelta(days=89)) == 0
    real_clock = ca.clock
    ca.clock = lambda: real_clock() + timedelta(days=91)  # expired, not purged yet
    with pytest.raises(KeygenError) as expired:
        service.pickup(_token(notifier))
    assert expired.value.status == 410 and "expired" in str(expired.value)
    ca.clock = real_clock
    assert ca.store.pkcs12_bytes_of(result.order_id) is not None
    assert service.purge_due(now=ca.clock() + timedelta(days=91)) == 1
    assert ca.store.pkcs12_bytes_of(result.order_id) is None
    assert service.status(result.order_id).purged_at is not None
    with pytest.raises(KeygenError) as gone:
        service.pickup(_token(notifier))
    assert gone.value.status == 410
    assert service.purge_due(now=ca.clock() + timedelta(days=200)) == 0


@pytest.mark.parametrize(
    ("product", "email", "key_type", "status"),
    [
        (SILVER, "dave@example.org", None, 400),  # key_generation: csr
        (P12, "dave@elsewhere.example", None, 403),  # not a validated domain: cannot wait
        (MANUAL_P12, "dave@example.org", None, 409),  # an operator would have to approve
        (P12, "dave@example.org", "ec-p384", 400),  # not one of the product's key types
        ("no-such-product", "dave@example.org", None, 404),
    ],
)
def test_keygen_refuses_before_a_key_or_an_order_exists(
    ca: CertificateAuthority, product: str, email: str, key_type: str | None, status: int
) -> None:
    notifier = RecordingNotifier()
    with pytest.raises(KeygenError) as refused:
        KeygenService(ca, notifier).order(
            ACCOUNT, product, [email], requested_by="ra", key_type=key_type
        )
    assert refused.value.status == status
    assert ca.store.find_orders() == [] and notifier.calls == []


def _undone(ca: CertificateAuthority, failed: KeygenError) -> str:
    """A key-generation order whose mails did not leave: 503, the PKCS#12 purged, the
    certificate revoked; its order id."""
    assert failed.status == 503
    order_id = failed.order_id
    assert order_id is not None
    assert ca.store.pkcs12_bytes_of(order_id) is None
    serial = ca.store.get_order(order_id).certificate_serial
    assert serial is not None
    assert ca.store.get_certificate(serial).status is CertificateStatus.REVOKED
    return order_id


def test_a_pin_mail_that_cannot_be_sent_revokes_the_certificate_and_purges_the_file(
    ca: CertificateAuthority,
) -> None:
    notifier = RecordingNotifier(fail_on="p12_pickup")
    with pytest.raises(KeygenError) as failed:
        KeygenService(ca, notifier).order(ACCOUNT, P12, ["erin@example.org"], requested_by="ra")
    _undone(ca, failed.value)


def test_a_pin_the_real_notifier_could_not_deliver_undoes_the_order_too(
    ca: CertificateAuthority,
) -> None:
    """The real Notifier records an SMTP failure (a FAILED row) and returns; it does not
    raise. A PIN that never left cannot be resent (it is not stored): the PKCS#12 could never
    be opened, so it is purged and its certificate revoked, and no link is mailed."""
    with socket.socket() as probe:  # a loopback port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        dead_port = int(probe.getsockname()[1])
    notifier = Notifier(ca, Mailer(MailSettings(port=dead_port), timeout=5))
    with pytest.raises(KeygenError) as failed:
        KeygenService(ca, notifier).order(ACCOUNT, P12, ["ivan@example.org"], requested_by="ra")
    order_id = _undone(ca, failed.value)
    rows = notifier.list(order_id=order_id)
    assert [(n.kind, n.status) for n in rows] == [("p12_pin", NotificationStatus.FAILED)]


def test_neither_the_pin_nor_the_pickup_token_is_kept_in_the_notifications_table(
    ca: CertificateAuthority, smtp_sink: SmtpSink
) -> None:
    """Only the token's SHA-256 is stored (the link is a credential, like the PIN): the
    recorded copies of both mails withhold them, and they cannot be resent from the table."""
    notifier = Notifier(ca, Mailer(MailSettings(port=smtp_sink.port)))
    result = KeygenService(ca, notifier).order(ACCOUNT, P12, ["jana@example.org"],
                                               requested_by="ra")  # fmt: skip
    mailed = "\n".join(
        message_from_bytes(m.content, policy=default).get_body(("plain",)).get_content()  # type: ignore[union-attr]
        for m in smtp_sink.messages if "jana@example.org" in m.rcpt_tos
    )  # fmt: skip
    token = re.search(r"/pki/api/v2/p12/([A-Za-z0-9_-]+)", mailed)
    pin = re.search(r"is:\s+([A-Z2-9]{12})\b", mailed)
    assert token and pin, mailed
    rows = notifier.list(order_id=result.order_id)
    assert [n.kind for n in rows] == ["p12_pin", "p12_pickup"]
    for row in rows:
        assert token.group(1) not in row.body + row.subject
        assert pin.group(1) not in row.body + row.subject
        with pytest.raises(NotifyError) as refused:
            notifier.resend(row.id, by="operator")
        assert refused.value.status == 409


def test_the_pickup_link_is_served_once_over_http(ca: CertificateAuthority) -> None:
    notifier = RecordingNotifier()
    service = KeygenService(ca, notifier)
    service.order(ACCOUNT, P12, ["frank@example.org"], requested_by="ra")
    token = _token(notifier)

    async def run() -> list[tuple[int, str, bytes]]:
        app = web.Application()
        app.router.add_get("/pki/api/v2/p12/{token}", p12_pickup_handler(lambda: service))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        replies = []
        try:
            async with aiohttp.ClientSession() as client:
                for t in (token, token, "not-a-token"):
                    async with client.get(f"http://127.0.0.1:{port}/pki/api/v2/p12/{t}") as r:
                        replies.append((r.status, r.content_type, await r.read()))
        finally:
            await runner.cleanup()
        return replies

    first, second, bad = asyncio.run(run())
    assert first[0] == 200 and first[1] == "application/x-pkcs12"
    pin = str(notifier.of("p12_pin")[-1]["pin"])
    key, cert, _ = pkcs12.load_key_and_certificates(first[2], pin.encode())
    assert key is not None and cert is not None
    assert second[0] == 410 and second[1] == "application/problem+json"
    assert b'"status": 410' in second[2]
    assert bad[0] == 404 and bad[1] == "application/problem+json"


@pytest.mark.parametrize(
    ("emails", "subject"),
    [([], None), (["not-an-address"], None), (["gina@example.org"], "garbage")],
)
def test_bad_input_is_refused_with_400_and_orders_nothing(
    ca: CertificateAuthority, emails: list[str], subject: str | None
) -> None:
    notifier = RecordingNotifier()
    with pytest.raises(KeygenError) as refused:
        KeygenService(ca, notifier).order(ACCOUNT, P12, emails, requested_by="ra", subject=subject)
    assert refused.value.status == 400
    assert ca.store.find_orders() == [] and notifier.calls == []


def test_one_address_given_as_text_is_one_address(ca: CertificateAuthority) -> None:
    result = KeygenService(ca, RecordingNotifier()).order(
        ACCOUNT, P12, "hank@example.org", requested_by="ra"
    )
    assert ca.store.get_order(result.order_id).emails == ("hank@example.org",)


def test_products_that_need_mail_without_ra_mail_are_named_in_a_warning(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    from ca.ra.services import RaServices

    assert not ca.settings.ra.mail_configured
    with caplog.at_level(logging.WARNING, logger="ca.ra.services"):
        RaServices.build(ca)
    [warning] = [r.getMessage() for r in caplog.records if r.name == "ca.ra.services"]
    assert P12 in warning and "no ra.mail" in warning and "127.0.0.1:25" in warning
