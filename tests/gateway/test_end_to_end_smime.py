"""End to end over real SMTP: smtplib -> gateway + pipeline -> SMTP sink, judged by openssl."""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cmc.errors import TemporaryFailure
from gateway.certs.view import DecryptionKey, SigningIdentity
from gateway.devservices import SmtpSink, free_port
from gateway.dkim import DkimKey
from gateway.metrics import Metrics
from gateway.pipeline import PipelineSettings, SmimePipeline
from gateway.policy import EncryptMode, MissingAction, Policy, Rule, Scope
from gateway.quarantine import Quarantine
from gateway.smime import smime_kind
from gateway.smime.mime import split_message
from gateway.smtp.relay import NextHop
from gateway.smtp.server import GatewayHandler, start_front
from tests.gateway.certs import CA, Identity, make_ca, openssl
from tests.gateway.test_smime_outbound import ATTACHMENT, SUBJECT, TEXT

INTERNAL = ("example.org",)
PLAIN = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@partner.example\r\n"
    b"Subject: numbers\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <e2e@example.org>\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthe numbers are attached.\r\n"
)


class MemoryCertificates:
    """The pipeline's Certificates interface over a dict of identities (real certs and keys)."""

    def __init__(self, identities: Iterable[Identity] = (), failing: Iterable[str] = ()) -> None:
        self.identities = {i.email: i for i in identities}
        self.failing = set(failing)
        self.harvested: list[tuple[x509.Certificate, str]] = []

    def _get(self, email_: str) -> Identity | None:
        if email_.lower() in self.failing:
            raise TemporaryFailure(f"directory lookup for {email_} timed out")
        return self.identities.get(email_.lower())

    async def encryption_certificate(self, email_: str) -> x509.Certificate | None:
        identity = self._get(email_)
        return identity.cert if identity else None

    async def signing_identity(
        self, email_: str, display_name: str | None = None
    ) -> SigningIdentity | None:
        identity = self._get(email_)
        return SigningIdentity(identity.key, identity.cert, identity.chain) if identity else None

    async def decryption_keys(self, email_: str) -> Sequence[DecryptionKey]:
        identity = self._get(email_)
        if identity is None or not isinstance(
            identity.key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        ):
            return []
        return [DecryptionKey(identity.key, identity.cert)]

    async def harvest(self, certificates: Sequence[x509.Certificate], source: str) -> None:
        self.harvested += [(c, source) for c in certificates]


class GatewayUnderTest:
    def __init__(self, sink: SmtpSink, pipeline: SmimePipeline, metrics: Metrics) -> None:
        self.port = free_port()
        self.metrics = metrics
        handler = GatewayHandler(
            NextHop("127.0.0.1", sink.port, timeout=5),
            metrics.timed(pipeline),
            on_result=metrics.on_result,
        )
        self.controller = start_front(handler, "127.0.0.1", self.port, max_message_size=10**7)

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=30)

    def send(self, sender: str, recipients: list[str], message: bytes) -> dict:
        with self.client() as client:
            return client.sendmail(sender, recipients, message, mail_options=["BODY=8BITMIME"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path]:
    directory = tmp_path_factory.mktemp("pki-e2e")
    ca = make_ca()
    ca.write(directory)
    return ca, directory


@pytest.fixture
def make_gateway(smtp_sink: SmtpSink, pki, tmp_path: Path) -> Iterator:
    ca, _ = pki
    started: list[GatewayUnderTest] = []

    def make(
        certificates: MemoryCertificates,
        policy: Policy | None = None,
        dkim_keys: tuple[DkimKey, ...] = (),
    ) -> GatewayUnderTest:
        settings = PipelineSettings(
            internal_domains=INTERNAL,
            policy=policy or Policy(),
            dkim_keys=dkim_keys,
            trust_anchors=(ca.cert,),
        )
        pipeline = SmimePipeline(settings, certificates, Quarantine(tmp_path / "quarantine"))
        gateway = GatewayUnderTest(smtp_sink, pipeline, Metrics(INTERNAL))
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.controller.stop()


def people(ca: CA) -> dict[str, Identity]:
    return {
        name: ca.issue(address)
        for name, address in {
            "alice": "alice@example.org",
            "dave": "dave@example.org",
            "bob": "bob@partner.example",
            "carol": "carol@partner.example",
        }.items()
    }


def mandatory(missing: MissingAction, pattern: str = "partner.example") -> Policy:
    return Policy(
        rules=(Rule(Scope.RECIPIENT, pattern, encrypt=EncryptMode.MANDATORY, missing=missing),)
    )


def decrypt_with_openssl(directory: Path, who: Identity, message: bytes) -> bytes:
    cert, key = who.write(directory)
    path = directory / "sealed.eml"
    path.write_bytes(message)
    return openssl("cms", "-decrypt", "-recip", cert, "-inkey", key, "-in", path)


def verify_with_openssl(directory: Path, ca: CA, message: bytes) -> bytes:
    path = directory / "signed.eml"
    path.write_bytes(message)
    return openssl("cms", "-verify", "-CAfile", ca.write(directory), "-in", path)


def test_alices_signed_mail_to_a_partner_without_certificate_verifies_with_openssl(
    make_gateway, smtp_sink, pki
):
    ca, directory = pki
    who = people(ca)
    gateway = make_gateway(MemoryCertificates([who["alice"]]))
    assert gateway.send("alice@example.org", ["bob@partner.example"], PLAIN) == {}
    [received] = smtp_sink.received()
    assert smime_kind(received.content) == "signed"
    assert b"Hello Bob,\r\nthe numbers are attached." in verify_with_openssl(
        directory, ca, received.content
    )
    assert gateway.metrics.count("outbound", "sign", "accepted") == 1
    assert gateway.metrics.observations("outbound") == 1


def test_encrypted_mail_is_read_by_bob_with_openssl_and_by_alice_too(make_gateway, smtp_sink, pki):
    ca, directory = pki
    who = people(ca)
    gateway = make_gateway(MemoryCertificates([who["alice"], who["bob"]]))
    gateway.send("alice@example.org", ["bob@partner.example"], PLAIN)
    [received] = smtp_sink.received()
    assert smime_kind(received.content) == "enveloped"
    assert b"Hello Bob" not in received.content
    for reader in (who["bob"], who["alice"]):
        signed = decrypt_with_openssl(directory, reader, received.content)
        assert b"Hello Bob,\r\nthe numbers are attached." in verify_with_openssl(
            directory, ca, signed
        )
    assert gateway.metrics.count("outbound", "sign+encrypt", "accepted") == 1


def test_openssl_signed_and_encrypted_mail_to_dave_arrives_decrypted_with_a_valid_verdict(
    make_gateway, smtp_sink, pki
):
    ca, directory = pki
    who = people(ca)
    certificates = MemoryCertificates([who["dave"]])
    gateway = make_gateway(certificates)
    bob_cert, bob_key = who["bob"].write(directory)
    dave_cert, _ = who["dave"].write(directory)
    (directory / "body.txt").write_bytes(b"Content-Type: text/plain\r\n\r\nHi Dave, from Bob.\r\n")
    signed = openssl(
        "cms", "-sign", "-in", directory / "body.txt", "-signer", bob_cert, "-inkey", bob_key
    )
    sealed = openssl(
        "cms", "-encrypt", "-aes256", "-from", "Bob <bob@partner.example>",
        "-to", "dave@example.org", "-subject", "hello", dave_cert, data=signed,
    )  # fmt: skip
    sealed = sealed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # SMTP wants CRLF
    spoofed = b"X-Cmcgate-Signature: valid; signer=ceo@example.org\r\n" + sealed
    gateway.send("bob@partner.example", ["dave@example.org"], spoofed)
    [received] = smtp_sink.received()
    head = split_message(received.content)
    assert head.get_all("X-Cmcgate-Signature") == ["valid; signer=bob@partner.example"]
    assert b"Hi Dave, from Bob." in received.content
    assert smime_kind(received.content) == "signed"
    assert [c for c, _ in certificates.harvested] == [who["bob"].cert]
    assert gateway.metrics.count("inbound", "decrypt+verify-valid", "accepted") == 1


@pytest.mark.parametrize(
    ("missing", "code"), [(MissingAction.REJECT, 550), (MissingAction.TEMPFAIL, 451)]
)
def test_mandatory_encryption_without_certificate_is_refused_and_nothing_leaks(
    make_gateway, smtp_sink, pki, missing, code
):
    ca, _ = pki
    gateway = make_gateway(MemoryCertificates([people(ca)["alice"]]), mandatory(missing))
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("alice@example.org", ["bob@partner.example"], PLAIN)
    assert refused.value.smtp_code == code
    assert b"bob@partner.example" in refused.value.smtp_error
    assert smtp_sink.received() == []


def test_mandatory_hold_quarantines_durably_answers_250_and_relays_the_others(
    make_gateway, smtp_sink, pki, tmp_path
):
    ca, directory = pki
    who = people(ca)
    policy = mandatory(MissingAction.HOLD, "bob@partner.example")
    gateway = make_gateway(MemoryCertificates([who["alice"], who["carol"]]), policy)
    recipients = ["bob@partner.example", "carol@partner.example"]
    assert gateway.send("alice@example.org", recipients, PLAIN) == {}
    [held] = Quarantine(tmp_path / "quarantine").list()
    assert held.recipients == ("bob@partner.example",)
    assert held.reason == "no encryption certificate"
    assert Quarantine(tmp_path / "quarantine").get(held.id)[1] == PLAIN
    [received] = smtp_sink.received()
    assert received.rcpt_tos == ("carol@partner.example",)
    assert smime_kind(received.content) == "enveloped"
    decrypt_with_openssl(directory, who["carol"], received.content)
    assert gateway.metrics.count("outbound", "hold", "accepted") == 1


def test_mail_whose_only_recipient_is_held_gets_250_and_reaches_nobody(
    make_gateway, smtp_sink, pki, tmp_path
):
    ca, _ = pki
    gateway = make_gateway(MemoryCertificates([people(ca)["alice"]]), mandatory(MissingAction.HOLD))
    with gateway.client() as client:
        client.ehlo()
        client.mail("alice@example.org")
        client.rcpt("bob@partner.example")
        code, text = client.data(PLAIN)
    assert (code, text) == (250, b"2.0.0 OK: held in quarantine")
    assert len(Quarantine(tmp_path / "quarantine").list()) == 1
    assert smtp_sink.received() == []


def test_a_thousand_mandatory_messages_without_certificates_leak_no_plaintext(
    make_gateway, smtp_sink, pki
):
    ca, _ = pki
    policy = Policy(
        rules=(
            Rule(Scope.RECIPIENT, "reject.example", encrypt=EncryptMode.MANDATORY,
                 missing=MissingAction.REJECT),
            Rule(Scope.RECIPIENT, "tempfail.example", encrypt=EncryptMode.MANDATORY,
                 missing=MissingAction.TEMPFAIL),
        )
    )  # fmt: skip
    gateway = make_gateway(MemoryCertificates([people(ca)["alice"]]), policy)
    codes: dict[int, int] = {}
    started = time.perf_counter()
    with gateway.client() as client:
        client.ehlo()
        for n in range(1000):
            recipient = f"user{n}@" + ("reject.example" if n % 2 else "tempfail.example")
            assert client.mail("alice@example.org")[0] == 250
            assert client.rcpt(recipient)[0] == 250
            code, _ = client.data(PLAIN.replace(b"numbers", f"secret {n}".encode()))
            codes[code] = codes.get(code, 0) + 1
            client.rset()
    elapsed = time.perf_counter() - started
    assert codes == {550: 500, 451: 500}
    assert smtp_sink.received() == []
    assert gateway.metrics.count("outbound", "none", "rejected") == 500
    assert gateway.metrics.count("outbound", "none", "tempfail") == 500
    print(f"1000 refused messages over one SMTP connection in {elapsed:.2f} s")


def rich_message() -> bytes:
    """Non-ASCII subject (RFC 2047), 8-bit UTF-8 body, base64 attachment: SMTP-safe bytes."""
    attachment = base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")
    return (
        b"From: alice@example.org\r\n"
        b"To: bob@partner.example\r\n"
        b"Subject: " + SUBJECT.encode() + b"\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\r\n'
        b"\r\n"
        b"--XYZ\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + TEXT.replace("\n", "\r\n").encode() + b"\r\n"
        b"--XYZ\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + attachment + b"--XYZ--\r\n"
    )


def test_non_ascii_subject_body_and_attachment_survive_sign_and_encrypt_exactly(
    make_gateway, smtp_sink, pki
):
    ca, directory = pki
    who = people(ca)
    gateway = make_gateway(MemoryCertificates([who["alice"], who["bob"]]))
    gateway.send("alice@example.org", ["bob@partner.example"], rich_message())
    [received] = smtp_sink.received()
    assert f"Subject: {SUBJECT}\r\n".encode() in received.content
    content = verify_with_openssl(
        directory, ca, decrypt_with_openssl(directory, who["bob"], received.content)
    )
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    text, attachment = (part.get_payload(decode=True) for part in parsed.iter_parts())
    assert text == TEXT.replace("\n", "\r\n").encode()
    assert attachment == ATTACHMENT


def test_mixed_recipients_get_separate_copies_each_treated_as_its_own(make_gateway, smtp_sink, pki):
    ca, directory = pki
    who = people(ca)
    gateway = make_gateway(MemoryCertificates(who.values()))
    # bob has a certificate, erin none, dave is internal: three copies.
    recipients = ["bob@partner.example", "erin@elsewhere.example", "dave@example.org"]
    assert gateway.send("alice@example.org", recipients, PLAIN) == {}
    copies = {m.rcpt_tos: m.content for m in smtp_sink.received()}
    assert set(copies) == {(r,) for r in recipients}
    assert smime_kind(copies[("bob@partner.example",)]) == "enveloped"
    assert smime_kind(copies[("erin@elsewhere.example",)]) == "signed"
    verify_with_openssl(directory, ca, copies[("erin@elsewhere.example",)])
    assert copies[("dave@example.org",)] == PLAIN


def test_dkim_is_applied_last_and_verifies_with_dkimpy_on_the_encrypted_mail(
    make_gateway, smtp_sink, pki
):
    ca, _ = pki
    who = people(ca)
    key = DkimKey(
        "example.org", "gw", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    public = key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"gw._domainkey.example.org."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    gateway = make_gateway(MemoryCertificates([who["alice"], who["bob"]]), dkim_keys=(key,))
    gateway.send("alice@example.org", ["bob@partner.example"], PLAIN)
    [received] = smtp_sink.received()
    assert received.content.startswith(b"DKIM-Signature:")
    assert smime_kind(received.content) == "enveloped"
    assert dkimpy.verify(received.content, dnsfunc=dnsfunc)
    assert gateway.metrics.count("outbound", "sign+encrypt+dkim", "accepted") == 1


def test_a_lookup_that_fails_temporarily_gives_4xx_when_encryption_is_mandatory(
    make_gateway, smtp_sink, pki
):
    ca, _ = pki
    who = people(ca)
    certificates = MemoryCertificates([who["alice"]], failing=["bob@partner.example"])
    mandatory = Policy(
        rules=(Rule(Scope.RECIPIENT, "partner.example", encrypt=EncryptMode.MANDATORY),)
    )
    gateway = make_gateway(certificates, mandatory)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send("alice@example.org", ["bob@partner.example", "carol@partner.example"], PLAIN)
    assert refused.value.smtp_code == 451
    error = refused.value.smtp_error
    assert isinstance(error, bytes) and error.startswith(b"4.4.3")
    assert smtp_sink.received() == []


def test_a_lookup_that_fails_temporarily_with_encrypt_allow_sends_signed_only(
    make_gateway, smtp_sink, pki
):
    ca, _ = pki
    who = people(ca)
    certificates = MemoryCertificates([who["alice"]], failing=["bob@partner.example"])
    gateway = make_gateway(certificates)
    gateway.send("alice@example.org", ["bob@partner.example"], PLAIN)
    [received] = smtp_sink.received()
    assert b"multipart/signed" in received.content
    assert b"enveloped-data" not in received.content
