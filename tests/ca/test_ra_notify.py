"""RA mail notifications against a real SMTP sink: delivery and the notifications table,
an outage recorded and resent, mutes, expiry warnings (with additional renewal emails, once
per threshold however often the job runs), the message format and the operator's CLI."""

from __future__ import annotations

import email
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from ca.authority import CertificateAuthority
from ca.init import initialise
from ca.keys import KeyType
from ca.ra.mailer import Mailer, MailError, build_message
from ca.ra.notify import Notifier, NotifyError
from ca.ra.templates import TEMPLATES, TemplateError, render
from ca.settings.ra import MailSettings
from ca.store.audit import audit_records
from ca.store.model import CertificateView
from ca.store.notifications import NotificationStatus
from gateway.devservices import SmtpSink
from gateway.main import main
from tests.certbuild import email_csr_der

ACCOUNT = "example.ra"
PRODUCT = "example-silver"

SAMPLE_FIELDS = {
    "order_confirmation": {"order_id": "ord-1", "product": "p", "emails": ("a@x.org",),
                           "status": "ISSUED"},
    "email_challenge": {"order_id": "ord-1", "email": "a@x.org", "code": "ABCD-EFGH",
                        "url": "http://ca/ra/confirm/x", "expires": "2030-01-01 00:00 UTC"},
    "p12_pin": {"order_id": "ord-1", "pin": "123456"},
    "p12_pickup": {"order_id": "ord-1", "url": "https://ra/p12/x", "expires": "2030-01-01"},
    "expiry_warning": {"serial": "0a", "subject": "CN=a", "not_after": "2030-01-01", "days": 7},
    "renewal_csr_needed": {"order_id": "ord-1", "serial": "0a", "url": "https://ra/renew/x"},
}  # fmt: skip


@dataclass
class Bundled:
    directory: Path
    ca: CertificateAuthority


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundled]:
    directory = tmp_path_factory.mktemp("ra-notify") / "ca"
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url="http://127.0.0.1:8080", account_id=ACCOUNT, email_domains=("example.org",),
        product_id=PRODUCT, organization_identifier="NTRCH-CHE-123.456.789",
    )  # fmt: skip
    ca = CertificateAuthority.open(directory / "ca.yaml")
    try:
        yield Bundled(directory, ca)
    finally:
        ca.close()


def _mailer(port: int) -> Mailer:
    return Mailer(MailSettings(port=port, sender="Zertifikatsstelle Zürich <ca@example.org>"))


@pytest.fixture
def notifier(bundled: Bundled, smtp_sink: SmtpSink) -> Iterator[Notifier]:
    notifier = Notifier(bundled.ca, _mailer(smtp_sink.port))
    bundled.ca.on_issued = notifier.order_issued
    try:
        yield notifier
    finally:
        bundled.ca.on_issued = lambda order, certificate: None


def _issue(ca: CertificateAuthority, address: str, cn: str | None = None) -> CertificateView:
    result = ca.submit(email_csr_der(address, cn=cn), ACCOUNT, PRODUCT, requested_by="test")
    assert result.certificate is not None
    return ca.store.get_certificate(result.certificate.serial_number)


def _parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def _to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [_parsed(m.content) for m in sink.messages if address in m.rcpt_tos]


def test_every_kind_renders_and_a_missing_field_or_kind_is_refused() -> None:
    assert set(SAMPLE_FIELDS) == set(TEMPLATES)
    for kind, fields in SAMPLE_FIELDS.items():
        subject, body = render(kind, fields)
        assert "$" not in subject + body and "\n" not in subject
        for value in fields.values():
            text = ", ".join(value) if isinstance(value, tuple) else str(value)
            assert text in subject + body, (kind, text)
    with pytest.raises(TemplateError, match="missing field"):
        render("p12_pin", {"order_id": "x"})
    with pytest.raises(TemplateError, match="unknown notification kind"):
        render("newsletter", {})


def test_an_issued_order_mails_a_confirmation_recorded_as_sent(
    bundled: Bundled, notifier: Notifier, smtp_sink: SmtpSink
) -> None:
    cert = _issue(bundled.ca, "erin@example.org")
    [message] = _to(smtp_sink, "erin@example.org")
    assert cert.order_id and cert.order_id in str(message["Subject"])
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] and message["Message-ID"]
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    # the display name is not ASCII: RFC 2047 on the wire, the same text decoded
    raw = [m.content for m in smtp_sink.messages if "erin@example.org" in m.rcpt_tos][0]
    assert b"=?utf-8?" in raw.lower()
    assert str(message["From"]) == "Zertifikatsstelle Zürich <ca@example.org>"
    [row] = notifier.list(order_id=cert.order_id)
    assert row.kind == "order_confirmation" and row.status is NotificationStatus.SENT
    assert row.serial == cert.serial and row.attempts == 1 and row.sent_at is not None
    events = [r for r in audit_records(bundled.ca.store) if r.event_type == "notification"]
    assert any(r.subject == cert.order_id for r in events)


def test_without_ra_mail_in_ca_yaml_issuance_mails_and_records_nothing(
    bundled: Bundled, smtp_sink: SmtpSink
) -> None:
    assert not bundled.ca.settings.ra.mail_configured  # ca init's ca.yaml has no ra.mail
    notifier = Notifier(bundled.ca)  # the mailer ca.yaml gives: none configured
    bundled.ca.on_issued = notifier.order_issued
    try:
        cert = _issue(bundled.ca, "gina@example.org")
    finally:
        bundled.ca.on_issued = lambda order, certificate: None
    assert notifier.list(order_id=cert.order_id) == []
    assert notifier.expiry_warnings(cert.not_after - timedelta(days=1)) == 0
    assert _to(smtp_sink, "gina@example.org") == []


def test_an_smtp_outage_is_recorded_failed_and_resend_delivers_later(bundled: Bundled) -> None:
    sink = SmtpSink()  # its port, nothing listening yet
    notifier = Notifier(bundled.ca, _mailer(sink.port))
    order_id = _issue(bundled.ca, "frank@example.org").order_id
    row = notifier.send("renewal_csr_needed", "frank@example.org", order_id=order_id,
                        serial="1f", url="https://ra.example.org/csr/246810")  # fmt: skip
    assert row.status is NotificationStatus.FAILED and row.last_error and row.attempts == 1
    assert notifier.list(status="failed", recipient="FRANK@example.org") == [row]
    sink.start()
    try:
        again = notifier.resend(row.id, by="operator")
        assert again.status is NotificationStatus.SENT and again.attempts == 2
        [message] = _to(sink, "frank@example.org")
        assert "246810" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        sink.data_reply = "451 4.3.0 try later"
        refused = notifier.resend(row.id, by="operator")
        assert refused.status is NotificationStatus.FAILED and "451" in (refused.last_error or "")
    finally:
        sink.stop()
    with pytest.raises(MailError):
        _mailer(sink.port).send(build_message("ca@example.org", "x@example.org", "s", "b"))
    with pytest.raises(NotifyError) as unknown:
        notifier.resend(10**9, by="operator")
    assert unknown.value.status == 404


def test_a_muted_address_gets_no_notifications_but_still_its_challenges(
    bundled: Bundled, notifier: Notifier, smtp_sink: SmtpSink
) -> None:
    notifier.mute("Gina@Example.org", by="gina")
    assert notifier.muted("gina@example.org")
    cert = _issue(bundled.ca, "gina@example.org")
    [confirmation] = notifier.list(order_id=cert.order_id)
    assert confirmation.status is NotificationStatus.MUTED and confirmation.attempts == 0
    fields = SAMPLE_FIELDS["email_challenge"] | {"email": "gina@example.org",
                                                 "order_id": cert.order_id}  # fmt: skip
    challenge = notifier.send("email_challenge", "gina@example.org", **fields)
    assert challenge.status is NotificationStatus.SENT
    assert len(_to(smtp_sink, "gina@example.org")) == 1
    notifier.unmute("gina@example.org", by="gina")
    assert not notifier.muted("gina@example.org")
    fields = SAMPLE_FIELDS["order_confirmation"] | {"order_id": cert.order_id}
    assert notifier.send("order_confirmation", "gina@example.org", **fields).status is (
        NotificationStatus.SENT
    )
    details = [
        r.details for r in audit_records(bundled.ca.store) if r.subject == "gina@example.org"
    ]
    assert [d["event"] for d in details] == ["mute", "unmute"]
    with pytest.raises(NotifyError):
        notifier.mute("not an address", by="gina")


def test_expiry_warnings_reach_the_holder_and_renewal_emails_once_per_threshold(
    bundled: Bundled, notifier: Notifier, smtp_sink: SmtpSink
) -> None:
    cert = _issue(bundled.ca, "hugo@example.org", cn="Hugo Zoë")
    assert notifier.set_renewal_emails(cert.serial, ["Ops@Example.org", "ops@example.org"],
                                       by="operator") == ("ops@example.org",)  # fmt: skip
    assert notifier.renewal_emails(cert.serial) == ("ops@example.org",)

    def warnings_for(serial: str) -> list[tuple[str, str]]:
        rows = [n for n in notifier.list(serial=serial) if n.kind == "expiry_warning"]
        return sorted((n.recipient, n.subject) for n in rows)

    assert notifier.expiry_warnings(cert.not_after - timedelta(days=40)) == 0
    month = cert.not_after - timedelta(days=20)
    assert notifier.expiry_warnings(month) >= 2
    first = warnings_for(cert.serial)
    assert [r for r, _ in first] == ["hugo@example.org", "ops@example.org"]
    assert all("expires in 20 days" in s for _, s in first)
    [to_ops] = _to(smtp_sink, "ops@example.org")
    assert cert.subject in to_ops.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # the job runs again, and after a restart (a new notifier): nothing new for this one
    notifier.expiry_warnings(month + timedelta(hours=1))
    Notifier(bundled.ca, notifier.mailer).expiry_warnings(month + timedelta(days=1))
    assert warnings_for(cert.serial) == first
    week = cert.not_after - timedelta(days=5)
    notifier.expiry_warnings(week)
    notifier.expiry_warnings(week + timedelta(hours=2))
    second = warnings_for(cert.serial)
    assert len(second) == 4 and sum("expires in 5 days" in s for _, s in second) == 2
    assert len(_to(smtp_sink, "hugo@example.org")) == 3  # confirmation + two warnings
    # a revoked certificate is not warned about
    revoked = _issue(bundled.ca, "ivan@example.org")
    bundled.ca.revoke(revoked.serial_number, "superseded", by="operator", comment=None)
    notifier.expiry_warnings(revoked.not_after - timedelta(days=5))
    assert warnings_for(revoked.serial) == []
    with pytest.raises(NotifyError):
        notifier.set_renewal_emails("ffffffffff", ["a@example.org"], by="operator")


def test_the_operator_cli_lists_resends_mutes_and_sets_renewal_emails(
    bundled: Bundled, notifier: Notifier, smtp_sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_yaml = bundled.directory / "ca.yaml"
    original = ca_yaml.read_text()
    ca_yaml.write_text(
        original + f'\nra:\n  mail: {{host: 127.0.0.1, port: {smtp_sink.port}, '
        'from: "CA <ca@example.org>"}\n'
    )  # fmt: skip
    try:
        cert = _issue(bundled.ca, "ida@example.org")
        d = ["--dir", str(bundled.directory)]
        assert (
            main(["ca", "notifications", "list", "--order", str(cert.order_id), "--json", *d]) == 0
        )
        listed = capsys.readouterr().out
        assert "ida@example.org" in listed and '"SENT"' in listed
        [row] = notifier.list(order_id=cert.order_id)
        assert main(["ca", "notifications", "resend", str(row.id), *d]) == 0
        assert len(_to(smtp_sink, "ida@example.org")) == 2
        assert main(["ca", "notifications", "mute", "ida@example.org", *d]) == 0
        assert notifier.muted("ida@example.org")
        assert main(["ca", "notifications", "unmute", "ida@example.org", *d]) == 0
        assert not notifier.muted("ida@example.org")
        assert main(["ca", "renewal-emails", cert.serial, "team@example.org", *d]) == 0
        assert notifier.renewal_emails(cert.serial) == ("team@example.org",)
        capsys.readouterr()
        assert main(["ca", "renewal-emails", cert.serial, *d]) == 0
        assert capsys.readouterr().out.strip() == "team@example.org"
        assert main(["ca", "renewal-emails", cert.serial, "--clear", *d]) == 0
        assert notifier.renewal_emails(cert.serial) == ()
        assert main(["ca", "notifications", "resend", "999999", *d]) != 0
        assert "Traceback" not in capsys.readouterr().err
    finally:
        ca_yaml.write_text(original)


def test_bad_input_is_a_clear_error_with_its_http_status(
    bundled: Bundled, notifier: Notifier
) -> None:
    before = len(notifier.list())
    cases = [
        (lambda: notifier.list(status="bogus"), 400),
        (lambda: notifier.renewal_emails("not hex"), 400),
        (lambda: notifier.set_renewal_emails("abcdef0123", ["a@example.org"], by="x"), 404),
        (lambda: notifier.set_renewal_emails("abcdef0123", ["no address"], by="x"), 400),
        (lambda: notifier.send("order_confirmation", "bad@", order_id=None), 400),
        (lambda: notifier.send("newsletter", "a@example.org"), 400),
    ]
    for call, status in cases:
        with pytest.raises((NotifyError, TemplateError)) as refused:
            call()
        assert refused.value.status == status, refused.value
    assert len(notifier.list()) == before  # nothing was recorded


def test_ca_serve_schedules_expiry_warnings_and_challenge_expiry(bundled: Bundled) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from ca.ra.challenges import schedule_challenge_expiry
    from ca.ra.notify import schedule_expiry_warnings

    scheduler = BackgroundScheduler(timezone="UTC")
    schedule_expiry_warnings(scheduler, lambda: bundled.ca)
    schedule_challenge_expiry(scheduler, lambda: bundled.ca)
    assert {job.id for job in scheduler.get_jobs()} == {"expiry-warnings", "challenge-expiry"}


def test_a_pin_or_a_code_is_mailed_but_never_stored_and_such_mails_are_not_resent(
    bundled: Bundled, notifier: Notifier, smtp_sink: SmtpSink
) -> None:
    order_id = _issue(bundled.ca, "jana@example.org").order_id
    row = notifier.send("p12_pin", "jana@example.org", order_id=order_id, pin="913572468")
    assert row.status is NotificationStatus.SENT
    assert "913572468" not in row.body and "[withheld]" in row.body
    mails = [m for m in _to(smtp_sink, "jana@example.org") if "PIN" in str(m["Subject"])]
    assert "913572468" in mails[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    with pytest.raises(NotifyError) as refused:
        notifier.resend(row.id, by="operator")
    assert refused.value.status == 409


class HeldSmtp:
    """A real SMTP listener that accepts a connection and holds its greeting until
    released (a hung or overloaded mail server), then refuses with 554."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = int(self.sock.getsockname()[1])
        self.connected, self.go_on = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _peer = self.sock.accept()
        except OSError:
            return
        with conn:
            self.connected.set()
            self.go_on.wait(60)
            conn.sendall(b"554 5.3.2 not accepting mail now\r\n")
            try:
                conn.recv(1024)
            except OSError:
                pass

    def stop(self) -> None:
        self.go_on.set()
        self.sock.close()
        self.thread.join(10)


def test_an_order_confirmation_does_not_hold_the_issuance_while_smtp_hangs(
    bundled: Bundled,
) -> None:
    """``ca serve``'s notifier (background): the certificate is handed out while the SMTP
    server still holds its greeting; the row is there at once and says what happened later."""
    server = HeldSmtp()
    notifier = Notifier(bundled.ca, _mailer(server.port), background=True)
    bundled.ca.on_issued = notifier.order_issued
    try:
        cert = _issue(bundled.ca, "hugo@example.org")  # returned: the mail is still held
        [row] = notifier.list(order_id=cert.order_id)
        assert row.kind == "order_confirmation" and row.attempts == 0
        assert row.status is NotificationStatus.FAILED and row.last_error == "not sent yet"
        assert server.connected.wait(30)  # the outbox is talking to the server meanwhile
    finally:
        server.go_on.set()
        notifier.flush(60)
        bundled.ca.on_issued = lambda order, certificate: None
        server.stop()
    [row] = notifier.list(order_id=cert.order_id)
    assert row.attempts == 1 and row.status is NotificationStatus.FAILED
    assert "554" in (row.last_error or "")
