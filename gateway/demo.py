"""``cmcgate demo`` (``make demo``): the main job end to end on embedded defaults.

Everything runs on loopback in temporary directories and is stopped at the end; the
artefacts stay in ``demo-out/`` so anyone can re-check them with openssl by hand.  Each
step prints what it did; a failed step ends the demo with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import shutil
import smtplib
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from config.errors import CmcgateError

ALICE = "alice@example.org"
BOB = "bob@partner.example"
PEM = serialization.Encoding.PEM


class DemoFailed(CmcgateError):
    """A demo step did not do what it should."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo", help="run the end-to-end demo on embedded defaults (artefacts in demo-out/)"
    )
    parser.add_argument("--out", default="demo-out", help="artefact directory (default demo-out)")
    parser.set_defaults(func=run)


class Steps:
    def __init__(self) -> None:
        self.number = 0
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        self.number += 1
        print(f"[{self.number}] {text}", flush=True)

    def detail(self, text: str) -> None:
        print(f"    {text}", flush=True)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def partner_identity(now: datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey, x509.Certificate]:
    """Bob's certificate from his own organisation's CA (an external PKI, software keys)."""
    from ca.hierarchy import build_root_ca, ca_name
    from ca.profiles import build_tbs
    from ca.profiles_types import CaEndpoints, IssuanceRequest, Organization
    from ca.settings_types import Profile

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = build_root_ca(ca_key, ca_name("Partner Example CA", "Partner Example", "DE"), now=now)
    bob_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    request = IssuanceRequest(
        public_key=bob_key.public_key(),
        requested_subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BOB)]),
        emails=(BOB,),
        validity=timedelta(days=365),
    )
    organisation = Organization("Partner Example", None, "DE", ("partner.example",))
    endpoints = CaEndpoints(
        "http://pki.partner.example/ca.crl", "http://pki.partner.example/ca.cer"
    )
    prepared = build_tbs(Profile.MAILBOX, request, organisation, root, endpoints, now=now)
    return prepared.sign(ca_key), bob_key, root


def write_properties(
    work: Path, https_port: int, issuer: str, p12: Path, password: Path, token: Any
) -> Path:
    """The gateway's properties, PKI part exactly in the form of the SwissSign/Totemo seed."""
    path = work / "gateway.properties"
    path.write_text(
        "# PKI connection as a Totemo admin pastes it (reference 000), pointing at the bundled CA\n"
        "connection.ssl.protocol=https://\n"
        "connection.ssl.serverName=localhost\n"
        f"connection.ssl.serverPort={https_port}\n"
        "connection.ssl.url=/ws/cmc?account=example.ra&product=example-silver&validity=1y\n"
        "security.pkiConnection.rfc2797.requestType=POST\n"
        "security.pkiConnection.rfc2797.encodeRequestBase64=false\n"
        "security.pkiConnection.type=rfc2797\n"
        f"security.pkiConnection.rfc2797.issuerDN={issuer}\n"
        "security.pkiConnection.getFromPKIForNewIntUsers=true\n"
        "security.pkiConnection.getFromPKIForNewRecipients=true\n"
        "security.pkiConnection.certSubjectDN=/CN=Secure Mail: Gateway Certificate \n"
        "security.pkiConnection.enabled=true\n"
        "# what Totemo keeps in its GUI: access certificate (P12) and the imported root\n"
        f"cmcgate.pki.accessCertificate={p12}\n"
        f"cmcgate.pki.accessCertificatePasswordFile={password}\n"
        f"cmcgate.pki.trustedRoots={work / 'ca' / 'root-ca.pem'}\n"
        "cmcgate.gateway.internalDomains=example.org\n"
        "cmcgate.policy.sign=always\n"
        "cmcgate.policy.encrypt=allow\n"
        "# users' keys on the HSM token\n"
        "cmcgate.keys.backend=pkcs11\n"
        f"cmcgate.keys.module={token.module_path}\n"
        f"cmcgate.keys.tokenLabel={token.token_label}\n"
        f"cmcgate.keys.pinFile={token.pin_file}\n"
    )
    return path


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    step = Steps()
    with tempfile.TemporaryDirectory(prefix="cmcgate-demo-") as tmp:
        _demo(Path(tmp), out, step)
    print(f"demo OK in {time.monotonic() - step.started:.1f}s; artefacts in {out}/", flush=True)
    return 0


def _demo(work: Path, out: Path, step: Steps) -> None:  # noqa: PLR0915 - a story, told in order
    from ca.init import initialise
    from ca.keys import KeyType
    from ca.keys.softhsm import softhsm_token_context
    from ca.server import CaService, ServiceThread
    from ca.service_certs import issue_access_certificate
    from cmc.client_config import client_from_config
    from config.properties import load
    from gateway.devservices import Slapd, SmtpSink, free_port
    from gateway.keystore import KeyStore
    from gateway.pipeline import PipelineSettings, SmimePipeline
    from gateway.policy import EncryptMode, Policy, SignMode
    from gateway.relay import NextHop
    from gateway.server import GatewayHandler, start_front
    from gateway.store import CertStore
    from gateway.store_adapter import StoreCertificates
    from gateway.store_models import Source

    now = datetime.now(UTC)
    with softhsm_token_context(label="cmcgate-demo") as token, Slapd() as slapd, SmtpSink() as sink:
        step(
            f"SoftHSM2 token 'cmcgate-demo' in {token.directory}; slapd on {slapd.url};"
            f" SMTP sink on 127.0.0.1:{sink.port}"
        )

        step("bundled CA: root + S/MIME issuing CA with keys generated on the token")
        http_port = free_port()
        initialise(
            work / "ca", key_backend="pkcs11", pkcs11_module=token.module_path,
            token_label=token.token_label, pin_file=token.pin_file, key_type=KeyType.RSA3072,
            progress=step.detail, account_id="example.ra", organisation_name="Example Org",
            country="CH", email_domains=("example.org",), product_id="example-silver",
            base_url=f"http://127.0.0.1:{http_port}",
        )  # fmt: skip
        service = CaService(work / "ca", https=("127.0.0.1", 0), http=("127.0.0.1", http_port))
        ca_thread = ServiceThread(service)
        ca_thread.start()
        authority = service.ca
        step.detail(
            f"CMC endpoint https://localhost:{service.https_port}/ws/cmc (client certificates"
            f" required); CRL and CA certificates on http://127.0.0.1:{http_port}"
        )
        chain_pem = authority.issuing_cert.public_bytes(PEM) + authority.root_cert.public_bytes(PEM)
        _write(out / "ca-chain.pem", chain_pem)
        password = _write(work / "access.pass", b"demo-access-secret\n")
        access = issue_access_certificate(authority, "example.ra", b"demo-access-secret")
        p12 = _write(work / "access.p12", access.p12)
        issuer = authority.issuing_cert.subject.rfc4514_string()
        properties = write_properties(work, service.https_port, issuer, p12, password, token)
        shutil.copy(properties, out / "gateway.properties")
        account_dn = access.certificate.subject.rfc4514_string()
        step.detail(f"access certificate (P12) for account example.ra: {account_dn}")

        step(f"{BOB}'s certificate (from his own CA) is published in the directory")
        bob_cert, bob_key, partner_root = partner_identity(now)
        _write(out / "bob.key.pem", _key_pem(bob_key))
        _write(out / "bob.cert.pem", bob_cert.public_bytes(PEM))
        _write(out / "partner-ca.pem", partner_root.public_bytes(PEM))
        with slapd.connection() as conn:
            conn.add(f"ou=people,{slapd.suffix}", ["organizationalUnit"], {"ou": "people"})
            conn.add(
                f"mail={BOB},ou=people,{slapd.suffix}", ["inetOrgPerson"],
                {"cn": "Bob Partner", "sn": "Partner", "mail": BOB,
                 "userCertificate;binary": bob_cert.public_bytes(serialization.Encoding.DER)},
            )  # fmt: skip

        store = CertStore.open(f"sqlite:///{work / 'gateway.db'}")
        keys = KeyStore(token.backend())
        try:
            step(f"{ALICE} is new: key pair on the token, CMC Full PKI Request, certificate issued")
            alice_key = keys.generate_for(ALICE, KeyType.RSA2048)
            pki = load(properties).pki
            assert pki is not None
            subject, emails = pki.subject_for(ALICE, "Alice Example")
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(subject)
                .add_extension(
                    x509.SubjectAlternativeName([x509.RFC822Name(e) for e in emails]),
                    critical=False,
                )
                .sign(alice_key, hashes.SHA256())
            )
            with client_from_config(pki) as client:
                enrolled = client.enroll(csr, alice_key)
            alice_cert = enrolled.certificate
            [order] = authority.store.find_orders(transaction_id=enrolled.transaction_id)
            step.detail(
                f"CMC over HTTPS: order {order.id} {order.status.value}, serial"
                f" {alice_cert.serial_number:x}, subject {alice_cert.subject.rfc4514_string()}"
            )
            for change in order.subject_changes:
                step.detail(
                    f"CA changed {change.field}: {change.requested!r} -> {change.applied!r}"
                )
            _write(out / "alice.cert.pem", alice_cert.public_bytes(PEM))
            store.add(
                alice_cert, Source.PKI, key_label=keys.find_label(ALICE, alice_key.public_key())
            )
            store.add_chain(enrolled.chain)
            with slapd.connection() as conn:
                conn.add(
                    f"mail={ALICE},ou=people,{slapd.suffix}", ["inetOrgPerson"],
                    {"cn": ALICE, "sn": "Alice", "mail": ALICE,
                     "userCertificate;binary": alice_cert.public_bytes(serialization.Encoding.DER)},
                )  # fmt: skip
            step.detail(f"published to LDAP as mail={ALICE},ou=people,{slapd.suffix}")

            step(f"looking up {BOB} in LDAP")
            with slapd.connection() as conn:
                conn.search(slapd.suffix, f"(mail={BOB})", attributes=["userCertificate;binary"])
                found = [
                    x509.load_der_x509_certificate(v)
                    for e in conn.entries
                    for v in e["userCertificate;binary"].values
                ]
            if not found:
                raise DemoFailed(f"{BOB} not found in LDAP")
            store.add(found[0], Source.LDAP)
            step.detail(
                f"found: {found[0].subject.rfc4514_string()}"
                f" issued by {found[0].issuer.rfc4514_string()}"
            )

            step("gateway: sign always, encrypt when the recipient's certificate is known")
            settings = PipelineSettings(
                internal_domains=("example.org",),
                policy=Policy(default_sign=SignMode.ALWAYS, default_encrypt=EncryptMode.ALLOW),
                trust_anchors=(authority.root_cert, partner_root),
            )
            pipeline = SmimePipeline(settings, StoreCertificates(store, keys))
            port = free_port()
            handler = GatewayHandler(NextHop("127.0.0.1", sink.port, starttls=False), pipeline)
            controller = start_front(handler, "127.0.0.1", port, max_message_size=25 * 1024 * 1024)
            try:
                message = EmailMessage()
                message["From"] = f"Alice Example <{ALICE}>"
                message["To"] = f"Bob Partner <{BOB}>"
                message["Subject"] = "Quartalszahlen – vertraulich"
                message.set_content("Hallo Bob,\n\nanbei die Zahlen für Q3.\n\nGrüsse, Alice\n")
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                    refused = smtp.send_message(message)
                if refused:
                    raise DemoFailed(f"gateway refused recipients: {refused}")
                step.detail(
                    f"SMTP 250 from the gateway on 127.0.0.1:{port} after the next hop accepted"
                )
            finally:
                controller.stop()
            received = sink.received()
            if len(received) != 1:
                raise DemoFailed(f"the sink received {len(received)} messages, expected 1")
            delivered = _write(out / "delivered.eml", received[0].content)
            if b"application/pkcs7-mime" not in received[0].content:
                raise DemoFailed("the delivered message is not S/MIME encrypted")
            step(
                f"delivered to the sink: {delivered}"
                f" ({len(received[0].content)} bytes, enveloped-data)"
            )
        finally:
            keys.close()
            store.close()
            ca_thread.stop()

        step("proof: openssl cms -decrypt with bob's key, then -verify against the CA chain")
        decrypted = out / "decrypted.eml"
        bob_pem = str(out / "bob.cert.pem")
        result = _openssl("cms", "-decrypt", "-in", str(delivered), "-recip", bob_pem,
                          "-inkey", str(out / "bob.key.pem"), "-out", str(decrypted))  # fmt: skip
        if result.returncode != 0:
            raise DemoFailed(f"openssl cms -decrypt failed: {result.stderr.strip()}")
        verified = out / "verified.eml"
        chain = str(out / "ca-chain.pem")
        result = _openssl("cms", "-verify", "-in", str(decrypted), "-CAfile", chain,
                          "-purpose", "smimesign", "-out", str(verified))  # fmt: skip
        if result.returncode != 0 or "Verification successful" not in result.stderr:
            raise DemoFailed(f"openssl cms -verify failed: {result.stderr.strip()}")
        step.detail(f"openssl: {result.stderr.strip()}; signer {ALICE}; content in {verified}")
