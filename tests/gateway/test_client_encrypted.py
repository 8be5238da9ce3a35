"""Mail the client says it encrypted, over real SMTP to a mandatory-encryption recipient the
gateway has no certificate for: only a body that parses as CMS EnvelopedData or
AuthEnvelopedData (made by openssl here) passes as already encrypted; a header claiming
``smime-type=enveloped-data`` above anything else gets the "no certificate" answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.devservices import SmtpSink
from gateway.metrics import Metrics
from gateway.pipeline import PipelineSettings, SmimePipeline, check_no_plaintext
from gateway.policy import MissingAction
from gateway.smime import encrypted_kind
from gateway.smtp.message import Copy, MessageRefused
from tests.gateway.certs import make_ca, openssl
from tests.gateway.test_end_to_end_smime import (
    INTERNAL,
    GatewayUnderTest,
    MemoryCertificates,
    mandatory,
    people,
)

SECRET = b"the secret numbers are 4 8 15 16 23 42"
HEADERS = (
    b"From: alice@example.org\r\n"
    b"To: bob@partner.example\r\n"
    b"Subject: numbers\r\n"
    b"MIME-Version: 1.0\r\n"
)
ENVELOPED_HEADER = (
    b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"'
)


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def body_file(directory: Path) -> Path:
    path = directory / "body.txt"
    path.write_bytes(b"Content-Type: text/plain\r\n\r\nHello Bob,\r\n" + SECRET + b".\r\n")
    return path


def openssl_encrypted(directory: Path, *args: str) -> bytes:
    """Alice's mail as her client would encrypt it to Bob (``openssl cms -encrypt``)."""
    bob_cert, _ = people(make_ca())["bob"].write(directory)
    return crlf(
        openssl(
            "cms",
            "-encrypt",
            *args,
            "-in",
            body_file(directory),
            "-from",
            "alice@example.org",
            "-to",
            "bob@partner.example",
            "-subject",
            "numbers",
            bob_cert,
        )  # fmt: skip
    )


def plain_under_enveloped_header(directory: Path) -> bytes:
    return HEADERS + ENVELOPED_HEADER + b"\r\n\r\nHello Bob,\r\n" + SECRET + b".\r\n"


def signed_data_under_enveloped_header(directory: Path) -> bytes:
    """Opaque signed-data (readable by anyone) relabelled as enveloped-data."""
    alice_cert, alice_key = people(make_ca())["alice"].write(directory)
    signed = openssl(
        "cms", "-sign", "-nodetach", "-in", body_file(directory),
        "-signer", alice_cert, "-inkey", alice_key,
        "-from", "alice@example.org", "-to", "bob@partner.example", "-subject", "numbers",
    )  # fmt: skip
    assert b"smime-type=signed-data" in signed
    return crlf(signed.replace(b"smime-type=signed-data", b"smime-type=enveloped-data"))


@pytest.fixture
def start_gateway(smtp_sink: SmtpSink) -> Iterator:
    started: list[GatewayUnderTest] = []

    def start(missing: MissingAction) -> GatewayUnderTest:
        ca = make_ca()
        settings = PipelineSettings(
            internal_domains=INTERNAL, policy=mandatory(missing), trust_anchors=(ca.cert,)
        )
        pipeline = SmimePipeline(settings, MemoryCertificates([people(ca)["alice"]]))
        started.append(GatewayUnderTest(smtp_sink, pipeline, Metrics(INTERNAL)))
        return started[-1]

    yield start
    for gateway in started:
        gateway.controller.stop()


@pytest.mark.parametrize(
    "make_message", [plain_under_enveloped_header, signed_data_under_enveloped_header]
)
@pytest.mark.parametrize(
    ("missing", "code"), [(MissingAction.REJECT, 550), (MissingAction.TEMPFAIL, 451)]
)
def test_a_header_claiming_enveloped_data_does_not_let_plaintext_out(
    start_gateway, smtp_sink: SmtpSink, tmp_path: Path, make_message, missing, code
) -> None:
    message = make_message(tmp_path)
    assert encrypted_kind(message) is None
    gateway = start_gateway(missing)
    with gateway.client() as client:
        client.ehlo()
        assert client.mail("alice@example.org")[0] == 250
        assert client.rcpt("bob@partner.example")[0] == 250
        reply_code, text = client.data(message)
    assert reply_code == code  # what "mandatory, no certificate" answers for plain mail
    assert b"bob@partner.example" in text and b"no encryption certificate" in text
    assert smtp_sink.received() == []


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (("-aes256",), "enveloped-data"),
        (("-aes256", "-stream"), "enveloped-data"),  # BER, indefinite lengths
        (("-aes-128-gcm",), "authEnveloped-data"),  # RFC 5083
    ],
)
def test_mail_the_client_encrypted_passes_as_it_is_and_bob_reads_it(
    start_gateway, smtp_sink: SmtpSink, tmp_path: Path, args, kind
) -> None:
    sealed = openssl_encrypted(tmp_path, *args)
    assert encrypted_kind(sealed) == kind
    gateway = start_gateway(MissingAction.REJECT)
    assert gateway.send("alice@example.org", ["bob@partner.example"], sealed) == {}
    [received] = smtp_sink.received()
    assert received.content == sealed
    bob_cert, bob_key = people(make_ca())["bob"].write(tmp_path)
    (tmp_path / "received.eml").write_bytes(received.content)
    opened = openssl(
        "cms", "-decrypt", "-recip", bob_cert, "-inkey", bob_key, "-in", tmp_path / "received.eml"
    )
    assert SECRET in opened
    assert gateway.metrics.count("outbound", "client-encrypted", "accepted") == 1


def test_the_plaintext_guard_parses_the_cms_not_the_header(tmp_path: Path) -> None:
    bob = {"bob@partner.example"}
    for args in (("-aes256",), ("-aes-128-gcm",)):
        sealed = openssl_encrypted(tmp_path, *args)
        check_no_plaintext([Copy(("bob@partner.example",), sealed, ("outbound", "encrypt"))], bob)
    for fake in (
        plain_under_enveloped_header(tmp_path),
        signed_data_under_enveloped_header(tmp_path),
    ):
        for actions in (("outbound", "encrypt"), ("outbound", "client-encrypted")):
            with pytest.raises(MessageRefused) as refused:
                check_no_plaintext([Copy(("bob@partner.example",), fake, actions)], bob)
            assert refused.value.reply.code == 451
