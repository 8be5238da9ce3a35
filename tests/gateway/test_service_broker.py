"""The broker through the product itself: `cmcgate gateway run` with a properties file in the
seed's form enrols a new sender over CMC (HTTPS, client certificate) and finds the recipient's
certificate in LDAP; openssl decrypts with the recipient's key and verifies the signature."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.devservices import Slapd, SmtpSink, free_port
from tests.gateway.certs import make_ca, openssl
from tests.gateway.test_enrolment import start_bundled_ca
from tests.gateway.test_service import GatewayProcess


@pytest.fixture
def bundled(tmp_path: Path) -> Iterator[tuple]:
    ca, auto, _ = start_bundled_ca(tmp_path)
    try:
        yield ca, tmp_path / "auto.properties"
    finally:
        ca.stop()


def test_new_sender_is_enrolled_and_ldap_recipient_gets_signed_encrypted_mail(
    bundled, slapd: Slapd, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    ca, seed_properties = bundled
    partner = make_ca("Partner CA", kind="rsa")
    bob = partner.issue("bob@partner.example", kind="rsa")
    with slapd.connection() as conn:
        conn.add(
            f"mail=bob@partner.example,{slapd.suffix}", ["inetOrgPerson"],
            {"cn": "Bob", "sn": "Partner", "mail": "bob@partner.example",
             "userCertificate;binary": bob.cert.public_bytes(serialization.Encoding.DER)},
        )  # fmt: skip
    partner_root = partner.write(tmp_path)
    port = free_port()
    config = tmp_path / "gateway.properties"
    config.write_text(
        seed_properties.read_text() + f"cmcgate.gateway.listen=127.0.0.1:{port}\n"
        f"cmcgate.gateway.nextHop=127.0.0.1:{smtp_sink.port}\n"
        "cmcgate.gateway.nextHopTls=off\n"
        f"cmcgate.gateway.stateDir={tmp_path / 'state'}\n"
        f"cmcgate.gateway.trustedRoots={partner_root}\n"
        f"cmcgate.store.dsn=sqlite:///{tmp_path / 'gateway.db'}\n"
        "cmcgate.policy.sign=always\n"
        "cmcgate.policy.encrypt=allow\n"
        f"cmcgate.lookup.ldap.partners.url={slapd.url}\n"
        f"cmcgate.lookup.ldap.partners.base={slapd.suffix}\n"
    )
    gateway = GatewayProcess(config, port).start()
    try:
        message = EmailMessage()
        message["From"] = "Alice <alice@example.org>"
        message["To"] = "bob@partner.example"
        message["Subject"] = "first mail from a new user"
        message.set_content("Hello Bob\n")
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            assert client.send_message(message) == {}
    finally:
        gateway.stop()
    [received] = smtp_sink.received()
    assert b"application/pkcs7-mime" in received.content
    bob_cert, bob_key = bob.write(tmp_path)
    inner = openssl("cms", "-decrypt", "-recip", bob_cert, "-inkey", bob_key, data=received.content)
    chain = tmp_path / "ca-chain.pem"
    chain.write_bytes(
        (ca.directory / "issuing-ca.pem").read_bytes() + (ca.directory / "root-ca.pem").read_bytes()
    )
    signer = tmp_path / "signer.pem"
    openssl("cms", "-verify", "-CAfile", chain, "-purpose", "smimesign", "-signer", signer,
            data=inner)  # fmt: skip
    assert b"alice@example.org" in openssl(
        "x509", "-noout", "-ext", "subjectAltName", "-in", signer
    )
