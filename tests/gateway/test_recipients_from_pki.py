"""``getFromPKIForNewRecipients``: external recipients' certificates fetched from the PKI.

The bundled CA (HTTPS, client certificates) publishes what it issues to a real slapd, as
SwissSign publishes to its directory.  The gateway is built from a properties file in the
seed's form (:func:`gateway.smtp.service.start`, in this process so its lookup can be inspected)
with ``cmcgate.pki.directory.*`` naming that slapd.  bob@partner.example is a customer of
the same PKI; alice@example.org is internal and enrolled on her first mail.

true  -> bob's certificate is found in the PKI's directory at once, the mail is encrypted
         to it (openssl decrypts with bob's key) and signed;
false -> the PKI is not asked (no lookup is built, no search sent): the mail goes out signed
         but not encrypted, as for any recipient without a certificate.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ca.publish.publisher import LdapPublisher
from config.properties import load
from gateway.certs.models import Source
from gateway.devservices import Slapd, SmtpSink, free_port
from gateway.smime import smime_kind
from gateway.smtp.service import RunningGateway, start
from tests.gateway.certs import openssl
from tests.gateway.test_enrolment import ACCOUNT, BundledCa, start_bundled_ca, write_properties

PEOPLE = "ou=people,dc=example,dc=org"


@dataclass
class Pki:
    ca: BundledCa
    tmp: Path
    slapd: Slapd
    bob_cert: Path
    bob_key: Path
    bob: x509.Certificate


@pytest.fixture
def pki(tmp_path: Path, slapd: Slapd) -> Iterator[Pki]:
    with slapd.connection() as conn:
        assert conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"}), conn.result
    ldap_pass = tmp_path / "ldap.pass"
    ldap_pass.write_text(slapd.admin_password + "\n")
    ca, _auto, _manual = start_bundled_ca(
        tmp_path, email_domains=("example.org", "partner.example"), ldap_url=slapd.url,
        ldap_bind_dn=slapd.admin_dn, ldap_base_dn=PEOPLE, ldap_password_file=str(ldap_pass),
    )  # fmt: skip
    try:
        # bob, a customer of the same PKI: issued and published by the CA, his key is his
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bob")]))
            .add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name("bob@partner.example")]), False
            )
            .sign(key, hashes.SHA256())
        )
        authority = ca.service.ca
        issued = authority.submit(
            csr.public_bytes(serialization.Encoding.DER), ACCOUNT, "example-silver",
            requested_by="test:bob",
        )  # fmt: skip
        assert issued.certificate is not None
        ldap = authority.settings.ca.ldap
        assert ldap is not None
        run = LdapPublisher(ldap, authority.store).run_due()
        assert run.published == 1, run.errors
        bob_cert, bob_key = tmp_path / "bob.pem", tmp_path / "bob.key"
        bob_cert.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
        bob_key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        yield Pki(ca, tmp_path, slapd, bob_cert, bob_key, issued.certificate)
    finally:
        ca.stop()


def run_gateway(pki: Pki, smtp_sink: SmtpSink, *, fetch: bool) -> RunningGateway:
    port = free_port()
    name = "fetch" if fetch else "nofetch"
    path = write_properties(
        pki.tmp, pki.ca, "example-silver", name, fetch_for_recipients=fetch,
        extra={
            "cmcgate.pki.directory.url": pki.slapd.url,
            "cmcgate.pki.directory.base": PEOPLE,
            "cmcgate.gateway.listen": f"127.0.0.1:{port}",
            "cmcgate.gateway.nextHop": f"127.0.0.1:{smtp_sink.port}",
            "cmcgate.gateway.nextHopTls": "off",
            "cmcgate.gateway.stateDir": pki.tmp / f"{name}-state",
            "cmcgate.store.dsn": f"sqlite:///{pki.tmp / name}.db",
            "cmcgate.policy.sign": "always",
            "cmcgate.policy.encrypt": "allow",
        },
    )  # fmt: skip
    config = load(path)
    assert config.pki is not None and config.pki.fetch_for_recipients is fetch
    return start(config)


def send(gateway: RunningGateway) -> None:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = "bob@partner.example"
    message["Subject"] = "first mail to a partner"
    message.set_content("Hello Bob\n")
    listen = gateway.config.gateway.listen
    with smtplib.SMTP(listen.host, listen.port, timeout=60) as client:
        assert client.send_message(message) == {}


def test_true_fetches_the_recipients_certificate_from_the_pki_and_encrypts(
    pki: Pki, smtp_sink: SmtpSink
) -> None:
    gateway = run_gateway(pki, smtp_sink, fetch=True)
    try:
        send(gateway)
        lookup = gateway.broker.lookup
        assert lookup is not None and lookup.searches == 1
        lookup.flush()
        [found] = gateway.stores.certs.find(email="bob@partner.example")
    finally:
        gateway.stop()
    assert found.certificate == pki.bob and found.source is Source.LDAP
    [received] = smtp_sink.received()
    assert smime_kind(received.content) == "enveloped"
    inner = openssl("cms", "-decrypt", "-recip", pki.bob_cert, "-inkey", pki.bob_key,
                    data=received.content)  # fmt: skip
    assert smime_kind(inner) == "signed" and b"Hello Bob" in inner


def test_false_does_not_ask_the_pki_and_the_mail_goes_as_without_a_certificate(
    pki: Pki, smtp_sink: SmtpSink
) -> None:
    gateway = run_gateway(pki, smtp_sink, fetch=False)
    try:
        send(gateway)
        assert gateway.broker.lookup is None  # nothing would ask any directory
        assert gateway.stores.certs.find(email="bob@partner.example") == []
    finally:
        gateway.stop()
    [received] = smtp_sink.received()
    assert smime_kind(received.content) == "signed"  # signed, not encrypted
    assert b"Hello Bob" in received.content
